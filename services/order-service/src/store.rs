//! Orders in the service's database.

use contracts::{Item, Order, OrderStatus};
use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use switchyard::db::Db;
use switchyard::group_commit::{GroupCommit, GroupCommitError, GroupWrite, WriteFuture};
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
    inserts: GroupCommit<NewOrders>,
}

/// The most orders recorded in one transaction.
const MAX_INSERT_BATCH: usize = 128;

/// An order to record, with its `created` event.
#[derive(Debug)]
pub struct NewOrder {
    /// The order.
    pub order: Order,
    /// The request's idempotency key, if it had one.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request body.
    pub fingerprint: String,
    /// The `created` event.
    pub event: OutboxEvent,
}

/// What recording a [`NewOrder`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The order and its event are recorded.
    Recorded,
    /// An order with this id or idempotency key was there already: nothing was written.
    Conflict,
}

/// Writes a batch of new orders: one multi-row insert into `orders` (a row that conflicts is
/// skipped), one into the outbox for the orders recorded.
struct NewOrders;

impl GroupWrite for NewOrders {
    type Op = NewOrder;
    type Output = Inserted;

    fn write_all<'a>(
        &'a self,
        tx: &'a mut AnyConnection,
        orders: &'a [NewOrder],
    ) -> WriteFuture<'a, Inserted> {
        Box::pin(async move {
            let sql = format!(
                "INSERT INTO orders (id, user_id, email, items, status, created_at, updated_at, idempotency_key, \
                 request_fingerprint) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                switchyard::db::value_rows(orders.len(), 9)
            );
            let sql = switchyard::db::positional(switchyard::db::Backend::of(tx), sql);
            let mut insert = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for new in orders {
                let order = &new.order;
                let items =
                    serde_json::to_string(&order.items).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                insert = insert
                    .bind(order.id.to_string())
                    .bind(order.user_id.as_str())
                    .bind(order.email.as_deref())
                    .bind(items)
                    .bind(order.status.as_str())
                    .bind(order.created_at.as_str())
                    .bind(order.created_at.as_str())
                    .bind(new.idempotency_key.as_deref())
                    .bind(new.fingerprint.as_str());
            }
            let recorded: HashSet<String> = insert.fetch_all(&mut *tx).await?.into_iter().collect();
            let outcomes: Vec<Inserted> = orders
                .iter()
                .map(|new| {
                    if recorded.contains(&new.order.id.to_string()) {
                        Inserted::Recorded
                    } else {
                        Inserted::Conflict
                    }
                })
                .collect();
            let events: Vec<OutboxEvent> = orders
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| **outcome == Inserted::Recorded)
                .map(|(new, _)| new.event.clone())
                .collect();
            outbox::enqueue_all(tx, &events).await?;
            Ok(outcomes)
        })
    }
}

const COLUMNS: &str = "id, user_id, email, items, status, created_at, request_fingerprint";

impl OrderStore {
    /// Orders on `db`. Starts the task that records new orders, so it must be called inside a
    /// Tokio runtime.
    pub fn new(db: Db) -> Self {
        let inserts = GroupCommit::start(db.clone(), "orders", NewOrders, MAX_INSERT_BATCH);
        OrderStore { db, inserts }
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records a new order and its `created` event, committed with the other orders placed at
    /// the same time (one transaction, one statement per table, see [`GroupCommit`]).
    /// [`Inserted::Conflict`] means the id or idempotency key exists already.
    pub async fn insert(&self, order: NewOrder) -> Result<Inserted, GroupCommitError> {
        self.inserts.write(order).await
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
