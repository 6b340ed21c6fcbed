//! Orders in the service's database.

use contracts::{Item, Order, OrderStatus};
use sqlx::Row;
use sqlx::any::AnyRow;
use switchyard::db::Db;
use switchyard::outbox::{self, OutboxEvent};
use uuid::Uuid;

/// Why an order could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// A stored row does not decode (a bug or a hand-edited row).
    #[error("stored order {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
}

/// An order as stored, with the fingerprint of the request that made it.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    /// The order.
    pub order: Order,
    /// Fingerprint of the request body.
    pub fingerprint: String,
}

/// The orders table.
#[derive(Debug, Clone)]
pub struct OrderStore {
    db: Db,
}

const COLUMNS: &str = "id, user_id, email, items, status, created_at, request_fingerprint";

impl OrderStore {
    /// Orders on `db`.
    pub fn new(db: Db) -> Self {
        OrderStore { db }
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a new order and its `created` event in one transaction. A unique violation means
    /// the id or idempotency key exists already.
    pub async fn insert(
        &self,
        order: &Order,
        idempotency_key: Option<&str>,
        fingerprint: &str,
        event: &OutboxEvent,
    ) -> Result<(), sqlx::Error> {
        let items = serde_json::to_string(&order.items).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, email, items, status, created_at, updated_at, idempotency_key, \
             request_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
        )
        .bind(order.id.to_string())
        .bind(&order.user_id)
        .bind(order.email.as_deref())
        .bind(items)
        .bind(order.status.as_str())
        .bind(&order.created_at)
        .bind(idempotency_key)
        .bind(fingerprint)
        .execute(&mut *tx)
        .await?;
        outbox::enqueue(&mut tx, event).await?;
        tx.commit().await
    }

    /// Marks an accepted order cancelled and writes the event made by `event` for it, in one
    /// transaction. Returns the order as it is now, and whether this call cancelled it (false: it
    /// was cancelled before). `None` when there is no such order.
    pub async fn cancel(
        &self,
        id: Uuid,
        event: impl FnOnce(&Order) -> Result<OutboxEvent, serde_json::Error>,
    ) -> Result<Option<(Order, bool)>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE id = $1")))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut order = decode(&row)?.order;
        if order.status == OrderStatus::Cancelled {
            return Ok(Some((order, false)));
        }
        sqlx::query("UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(OrderStatus::Cancelled.as_str())
            .bind(switchyard::time::now_rfc3339())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        order.status = OrderStatus::Cancelled;
        let event =
            event(&order).map_err(|e| StoreError::Corrupt { id: id.to_string(), reason: e.to_string() })?;
        outbox::enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some((order, true)))
    }

    /// The order with this id.
    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE id = $1")))
            .bind(id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| decode(&row).map(|stored| stored.order)).transpose()
    }

    /// The order made with this idempotency key.
    pub async fn find_by_idempotency_key(&self, key: &str) -> Result<Option<StoredOrder>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM orders WHERE idempotency_key = $1"
        )))
        .bind(key)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| decode(&row)).transpose()
    }
}

fn decode(row: &AnyRow) -> Result<StoredOrder, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| StoreError::Corrupt { id: id.clone(), reason };
    let items: String = row.try_get("items")?;
    let status: String = row.try_get("status")?;
    let order = Order {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(e.to_string()))?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        items: serde_json::from_str::<Vec<Item>>(&items).map_err(|e| corrupt(e.to_string()))?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        created_at: row.try_get("created_at")?,
    };
    Ok(StoredOrder { order, fingerprint: row.try_get("request_fingerprint")? })
}
