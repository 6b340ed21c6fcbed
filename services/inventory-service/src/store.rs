//! The inventory logic on its database: check, reserve, release, restock, stock.
//!
//! Reserve is all-or-nothing and never oversells: each line is one conditional
//! `UPDATE ... WHERE available >= quantity` inside a write transaction, and a reserve short of a
//! line puts back the lines it took, so concurrent reserves serialise on the rows they touch
//! (Postgres row locks, SQLite's single writer). The reserves that arrive together are written
//! in one transaction (group commit); on Postgres it locks its stock rows in SKU order first, so
//! two replicas' batches over the same SKUs cannot deadlock. The reservation row keyed by order
//! id makes a repeated reserve answer the same and reserve nothing more.

use std::time::Duration;

use contracts::names::order_event;
use contracts::{
    CheckReply, CheckRequest, ReleaseReply, ReleaseRequest, ReserveReply, ReserveRequest, RestockReply,
    RestockRequest, StockLevel, StockReply, StockRequest,
};
use std::collections::HashSet;

use sqlx::{AnyConnection, Row};
use switchyard::db::{Backend, Db};
use switchyard::deadline;
use switchyard::group_commit::{GroupCommit, GroupCommitError, GroupWrite, WriteFuture};
use switchyard::micro::ServiceError;
use switchyard::outbox::{self, RelayWaker};
use switchyard::time::{now_rfc3339, now_unix_millis};
use uuid::Uuid;

/// Why an inventory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The request conflicts with the reservation's state.
    #[error("{0}")]
    Conflict(String),
    /// The caller's deadline passed before the work was done; nothing was written.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// A batch of reserves failed to commit.
    #[error("database error")]
    Write(#[from] GroupCommitError),
}

impl From<InventoryError> for ServiceError {
    fn from(err: InventoryError) -> Self {
        match err {
            InventoryError::Conflict(message) => ServiceError::conflict(message),
            InventoryError::DeadlineExceeded(message) => ServiceError::deadline_exceeded(message),
            InventoryError::Db(err) => ServiceError::internal(err),
            InventoryError::Write(err) => ServiceError::internal(err),
        }
    }
}

/// Status of a reservation row.
pub(crate) mod status {
    pub const RESERVED: &str = "reserved";
    pub const COMMITTED: &str = "committed";
    pub const RELEASED: &str = "released";
}

/// The inventory, on its database.
#[derive(Debug, Clone)]
pub struct Inventory {
    db: Db,
    reserves: GroupCommit<Reserves>,
    reservation_ttl: Duration,
    waker: RelayWaker,
    timers: bool,
}

impl Inventory {
    /// Inventory on `db`; reservations expire `reservation_ttl` after they are made unless
    /// committed. Starts the task that writes reservations, so it must be called inside a Tokio
    /// runtime.
    pub fn new(db: Db, reservation_ttl: Duration) -> Self {
        let reserves = GroupCommit::start(db.clone(), "reservations", Reserves, MAX_RESERVE_BATCH);
        Inventory { db, reserves, reservation_ttl, waker: RelayWaker::default(), timers: false }
    }

    /// Schedules each reservation's expiry as a message the broker fires (stream `TIMERS`),
    /// written to the outbox in the reservation's own transaction.
    pub fn with_broker_timers(mut self) -> Self {
        self.timers = true;
        self
    }

    /// Wakes `waker` whenever this inventory commits an outbox event.
    pub fn with_relay(mut self, waker: RelayWaker) -> Self {
        self.waker = waker;
        self
    }

    /// Wakes the outbox relay.
    pub fn wake_relay(&self) {
        self.waker.wake();
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Are all items available? Unknown SKUs are unavailable. One query for all lines.
    pub async fn check(&self, request: &CheckRequest) -> Result<CheckReply, InventoryError> {
        let sql = format!(
            "SELECT sku, available FROM stock WHERE sku IN ({})",
            switchyard::db::placeholders(1, request.items.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for item in &request.items {
            query = query.bind(&item.sku);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut available = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            available.insert(row.try_get::<String, _>("sku")?, row.try_get::<i64, _>("available")?);
        }
        let unavailable_ids: Vec<String> = request
            .items
            .iter()
            .filter(|item| available.get(&item.sku).copied().unwrap_or(0) < i64::from(item.quantity))
            .map(|item| item.sku.clone())
            .collect();
        let unknown_ids =
            unavailable_ids.iter().filter(|sku| !available.contains_key(*sku)).cloned().collect();
        Ok(CheckReply { all_available: unavailable_ids.is_empty(), unavailable_ids, unknown_ids })
    }

    /// The SKUs of `skus` that are not in the catalogue, in the same order.
    async fn unknown(&self, skus: &[String]) -> Result<Vec<String>, InventoryError> {
        let sql =
            format!("SELECT sku FROM stock WHERE sku IN ({})", switchyard::db::placeholders(1, skus.len()));
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for sku in skus {
            query = query.bind(sku);
        }
        let known: std::collections::HashSet<String> =
            query.fetch_all(self.db.pool()).await?.into_iter().collect();
        Ok(skus.iter().filter(|sku| !known.contains(*sku)).cloned().collect())
    }

    /// Reserves all items for the order, or none. Idempotent per order id. Committed with the
    /// other reserves that arrive meanwhile (see [`Reserves`]).
    pub async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveReply, InventoryError> {
        let order_id = request.order_id.to_string();
        // A reservation made concurrently elsewhere (another replica, on Postgres) means the
        // next attempt finds it and answers like it.
        let mut lines: Vec<(String, i64)> =
            request.items.iter().map(|item| (item.sku.clone(), i64::from(item.quantity))).collect();
        lines.sort();
        for _ in 0..3 {
            let expires_at = now_unix_millis() + self.reservation_ttl.as_millis() as i64;
            let timer = if self.timers {
                Some(
                    expiry_event(request.order_id, expires_at)
                        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
                )
            } else {
                None
            };
            let op = Reserve {
                order_id: order_id.clone(),
                lines: lines.clone(),
                expires_at,
                timer,
                deadline: deadline::current(),
            };
            let reserved =
                ReserveReply { reserved: true, unavailable_ids: Vec::new(), unknown_ids: Vec::new() };
            // The relay is not woken for the timer: it goes out with the next round (a consumer's
            // commit wakes it, or its poll), batched with others, instead of a round of claim,
            // publish and mark per reservation on the write slot the reservations need.
            match self.reserves.write(op).await? {
                Reserved::Now | Reserved::Before => return Ok(reserved),
                Reserved::Released => {
                    return Err(InventoryError::Conflict(format!(
                        "the reservation of order {order_id} was released"
                    )));
                }
                Reserved::Short(short) => {
                    let unavailable_ids: Vec<String> = request
                        .items
                        .iter()
                        .filter(|i| short.contains(&i.sku))
                        .map(|i| i.sku.clone())
                        .collect();
                    let unknown_ids = self.unknown(&unavailable_ids).await?;
                    return Ok(ReserveReply { reserved: false, unavailable_ids, unknown_ids });
                }
                Reserved::Expired => {
                    return Err(InventoryError::DeadlineExceeded(format!(
                        "the caller's deadline passed before the reservation of order {order_id} was written"
                    )));
                }
                Reserved::Concurrent => {}
            }
        }
        Err(InventoryError::Conflict(format!(
            "the reservation of order {order_id} is being changed concurrently"
        )))
    }

    /// Puts a reserved order's stock back. Idempotent; `released: false` when the order has no
    /// reservation; a conflict when its stock already left the shelf.
    pub async fn release(&self, request: &ReleaseRequest) -> Result<ReleaseReply, InventoryError> {
        let order_id = request.order_id.to_string();
        let mut tx = self.db.begin_write().await?;
        let released = match reservation_status(&mut tx, &order_id).await?.as_deref() {
            None => false,
            Some(status::RELEASED) => true,
            Some(status::COMMITTED) => {
                return Err(InventoryError::Conflict(format!(
                    "the reservation of order {order_id} is committed: its stock has left the shelf"
                )));
            }
            Some(_) => {
                release_reserved(&mut tx, request.order_id, "released on request", None).await?;
                true
            }
        };
        tx.commit().await?;
        self.waker.wake();
        Ok(ReleaseReply { released })
    }

    /// Adds units to a SKU, creating it when new.
    pub async fn restock(&self, request: &RestockRequest) -> Result<RestockReply, InventoryError> {
        let mut tx = self.db.begin_write().await?;
        let available: i64 = sqlx::query_scalar(
            "INSERT INTO stock (sku, available, reserved) VALUES ($1, $2, 0) \
             ON CONFLICT (sku) DO UPDATE SET available = stock.available + excluded.available \
             RETURNING available",
        )
        .bind(&request.sku)
        .bind(i64::from(request.quantity))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RestockReply { sku: request.sku.clone(), available })
    }

    /// Stock levels of the asked SKUs (zeros for unknown ones), or of every SKU, sorted by SKU.
    pub async fn stock(&self, request: &StockRequest) -> Result<StockReply, InventoryError> {
        let mut items = Vec::new();
        if request.skus.is_empty() {
            let rows = sqlx::query("SELECT sku, available, reserved FROM stock ORDER BY sku")
                .fetch_all(self.db.pool())
                .await?;
            for row in rows {
                items.push(StockLevel {
                    sku: row.try_get("sku")?,
                    available: row.try_get("available")?,
                    reserved: row.try_get("reserved")?,
                });
            }
        } else {
            let mut skus = request.skus.clone();
            skus.sort();
            skus.dedup();
            for sku in skus {
                let row = sqlx::query("SELECT available, reserved FROM stock WHERE sku = $1")
                    .bind(&sku)
                    .fetch_optional(self.db.pool())
                    .await?;
                let (available, reserved) = match row {
                    Some(row) => (row.try_get("available")?, row.try_get("reserved")?),
                    None => (0, 0),
                };
                items.push(StockLevel { sku, available, reserved });
            }
        }
        Ok(StockReply { items })
    }
}

/// The most reserves written in one transaction.
const MAX_RESERVE_BATCH: usize = 64;

/// One reserve, as [`Reserves`] writes it.
#[derive(Debug)]
struct Reserve {
    order_id: String,
    /// `(sku, quantity)` in SKU order.
    lines: Vec<(String, i64)>,
    expires_at: i64,
    timer: Option<outbox::OutboxEvent>,
    /// The caller's deadline: past it, the reserve is not written (the caller has its 504).
    deadline: Option<tokio::time::Instant>,
}

/// What a [`Reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reserved {
    /// Every line is reserved now.
    Now,
    /// The order was reserved before (or earlier in the same batch): nothing more is reserved.
    Before,
    /// The order's reservation was released: it cannot be reserved again.
    Released,
    /// These SKUs are short; nothing was reserved.
    Short(Vec<String>),
    /// The caller's deadline had passed; nothing was reserved.
    Expired,
    /// A reservation of the order appeared meanwhile (another replica): try again.
    Concurrent,
}

/// Writes a batch of reserves in one transaction: the batch's existing reservations in one
/// query, each line a conditional `UPDATE ... WHERE available >= quantity` (a reserve short of a
/// line puts back the lines it took), then the reservations, their lines and their expiry
/// timers with one multi-row insert each.
struct Reserves;

impl GroupWrite for Reserves {
    type Op = Reserve;
    type Output = Reserved;

    fn write_all<'a>(&'a self, tx: &'a mut AnyConnection, ops: &'a [Reserve]) -> WriteFuture<'a, Reserved> {
        Box::pin(async move {
            let backend = Backend::of(tx);
            let now = tokio::time::Instant::now();
            let mut ids: Vec<&str> = ops.iter().map(|op| op.order_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let existing = reservation_statuses(tx, &ids).await?;
            let any_lines = ops.iter().any(|op| !op.lines.is_empty());
            if backend == Backend::Postgres && any_lines {
                // Take the batch's stock rows in SKU order before updating any, so two batches
                // (two replicas) over the same SKUs cannot deadlock.
                let mut skus: Vec<&str> =
                    ops.iter().flat_map(|op| op.lines.iter().map(|(sku, _)| sku.as_str())).collect();
                skus.sort_unstable();
                skus.dedup();
                let sql = format!(
                    "SELECT sku FROM stock WHERE sku IN ({}) ORDER BY sku FOR UPDATE",
                    switchyard::db::placeholders(1, skus.len())
                );
                let mut lock = sqlx::query(sqlx::AssertSqlSafe(sql));
                for sku in &skus {
                    lock = lock.bind(*sku);
                }
                lock.execute(&mut *tx).await?;
            }

            let mut outcomes = Vec::with_capacity(ops.len());
            let mut reserved_here: HashSet<&str> = HashSet::new();
            for op in ops {
                let outcome = if let Some(status) = existing.get(&op.order_id) {
                    if status == status::RELEASED { Reserved::Released } else { Reserved::Before }
                } else if reserved_here.contains(op.order_id.as_str()) {
                    Reserved::Before
                } else if op.deadline.is_some_and(|deadline| deadline <= now) {
                    Reserved::Expired
                } else {
                    let short = take_lines(tx, &op.lines).await?;
                    if short.is_empty() {
                        reserved_here.insert(op.order_id.as_str());
                        Reserved::Now
                    } else {
                        Reserved::Short(short)
                    }
                };
                outcomes.push(outcome);
            }

            let new: Vec<&Reserve> = ops
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| **outcome == Reserved::Now)
                .map(|(op, _)| op)
                .collect();
            if new.is_empty() {
                return Ok(outcomes);
            }
            let sql = format!(
                "INSERT INTO reservations (order_id, expires_at, status, created_at, updated_at) VALUES {} \
                 ON CONFLICT DO NOTHING RETURNING order_id",
                switchyard::db::value_rows(new.len(), 5)
            );
            let sql = switchyard::db::positional(backend, sql);
            let now_text = now_rfc3339();
            let mut insert = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for op in &new {
                insert = insert
                    .bind(op.order_id.as_str())
                    .bind(op.expires_at)
                    .bind(status::RESERVED)
                    .bind(now_text.as_str())
                    .bind(now_text.as_str());
            }
            let inserted: HashSet<String> = insert.fetch_all(&mut *tx).await?.into_iter().collect();

            // A reservation that appeared since the batch read them (another replica's commit):
            // give this batch's lines back and let the caller ask again.
            for (op, outcome) in ops.iter().zip(outcomes.iter_mut()) {
                if *outcome == Reserved::Now && !inserted.contains(&op.order_id) {
                    put_back(tx, &op.lines).await?;
                    *outcome = Reserved::Concurrent;
                }
            }
            let recorded: Vec<&Reserve> =
                new.into_iter().filter(|op| inserted.contains(&op.order_id)).collect();
            let lines: Vec<(&str, &str, i64)> = recorded
                .iter()
                .flat_map(|op| {
                    op.lines.iter().map(|(sku, quantity)| (op.order_id.as_str(), sku.as_str(), *quantity))
                })
                .collect();
            if !lines.is_empty() {
                let sql = format!(
                    "INSERT INTO reservation_items (order_id, sku, quantity) VALUES {}",
                    switchyard::db::value_rows(lines.len(), 3)
                );
                let sql = switchyard::db::positional(backend, sql);
                let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (order_id, sku, quantity) in lines {
                    insert = insert.bind(order_id).bind(sku).bind(quantity);
                }
                insert.execute(&mut *tx).await?;
            }
            let timers: Vec<outbox::OutboxEvent> =
                recorded.iter().filter_map(|op| op.timer.clone()).collect();
            outbox::enqueue_all(tx, &timers).await?;
            Ok(outcomes)
        })
    }
}

/// Takes each line's quantity from `available` to `reserved`, all or none: the SKUs that are
/// short (then the lines taken are put back).
async fn take_lines(tx: &mut AnyConnection, lines: &[(String, i64)]) -> Result<Vec<String>, sqlx::Error> {
    let mut taken = Vec::with_capacity(lines.len());
    let mut short = Vec::new();
    for (sku, quantity) in lines {
        let updated = sqlx::query(
            "UPDATE stock SET available = available - $1, reserved = reserved + $1 \
             WHERE sku = $2 AND available >= $1",
        )
        .bind(*quantity)
        .bind(sku.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            short.push(sku.clone());
        } else {
            taken.push((sku.clone(), *quantity));
        }
    }
    if !short.is_empty() {
        put_back(tx, &taken).await?;
    }
    Ok(short)
}

/// Moves each line's quantity from `reserved` back to `available`.
async fn put_back(tx: &mut AnyConnection, lines: &[(String, i64)]) -> Result<(), sqlx::Error> {
    for (sku, quantity) in lines {
        sqlx::query("UPDATE stock SET available = available + $1, reserved = reserved - $1 WHERE sku = $2")
            .bind(*quantity)
            .bind(sku.as_str())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The status of an order's reservation, inside a transaction.
pub(crate) async fn reservation_status(
    conn: &mut sqlx::AnyConnection,
    order_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// The lines of an order's reservation.
pub(crate) async fn reservation_lines(
    conn: &mut sqlx::AnyConnection,
    order_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT sku, quantity FROM reservation_items WHERE order_id = $1 ORDER BY sku")
        .bind(order_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(|row| Ok((row.try_get("sku")?, row.try_get("quantity")?))).collect()
}

/// The rows `select` (a query ending in `WHERE order_id IN`) finds for `order_ids`, in one query;
/// `then` follows the list (say, an `ORDER BY`).
async fn rows_of_orders(
    conn: &mut sqlx::AnyConnection,
    select: &str,
    order_ids: &[&str],
    then: &str,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let sql = format!("{select} ({}){then}", switchyard::db::placeholders(1, order_ids.len()));
    let sql = switchyard::db::positional(switchyard::db::Backend::of(conn), sql);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in order_ids {
        query = query.bind(*id);
    }
    query.fetch_all(conn).await
}

/// The statuses of the reservations of `order_ids` (those that exist), in one query.
pub(crate) async fn reservation_statuses(
    conn: &mut sqlx::AnyConnection,
    order_ids: &[&str],
) -> Result<std::collections::HashMap<String, String>, sqlx::Error> {
    let select = "SELECT order_id, status FROM reservations WHERE order_id IN";
    let rows = rows_of_orders(conn, select, order_ids, "").await?;
    rows.iter().map(|row| Ok((row.try_get("order_id")?, row.try_get("status")?))).collect()
}

/// The lines `(order_id, sku, quantity)` of the reservations of `order_ids`, in one query.
pub(crate) async fn reservations_lines(
    conn: &mut sqlx::AnyConnection,
    order_ids: &[&str],
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let select = "SELECT order_id, sku, quantity FROM reservation_items WHERE order_id IN";
    let rows = rows_of_orders(conn, select, order_ids, " ORDER BY order_id, sku").await?;
    rows.iter()
        .map(|row| Ok((row.try_get("order_id")?, row.try_get("sku")?, row.try_get("quantity")?)))
        .collect()
}

/// Committed stock leaves the shelf: `reserved` goes down by each `(sku, quantity)`, in one
/// statement.
pub(crate) async fn take_reserved(
    conn: &mut sqlx::AnyConnection,
    per_sku: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    if per_sku.is_empty() {
        return Ok(());
    }
    let cases =
        (0..per_sku.len()).map(|i| format!("WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2)).collect::<Vec<_>>();
    let skus = (0..per_sku.len()).map(|i| format!("${}", 2 * i + 1)).collect::<Vec<_>>();
    let sql = format!(
        "UPDATE stock SET reserved = reserved - (CASE sku {} END) WHERE sku IN ({})",
        cases.join(" "),
        skus.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (sku, quantity) in per_sku {
        query = query.bind(*sku).bind(*quantity);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Sets the status of the reservations of `order_ids`, in one statement.
pub(crate) async fn set_statuses(
    conn: &mut sqlx::AnyConnection,
    order_ids: &[&str],
    status: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE reservations SET status = $1, updated_at = $2 WHERE order_id IN ({})",
        switchyard::db::placeholders(3, order_ids.len())
    );
    let sql = switchyard::db::positional(switchyard::db::Backend::of(conn), sql);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(status).bind(now_rfc3339());
    for id in order_ids {
        query = query.bind(*id);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Sets a reservation's status.
pub(crate) async fn set_status(
    conn: &mut sqlx::AnyConnection,
    order_id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET status = $1, updated_at = $2 WHERE order_id = $3")
        .bind(status)
        .bind(now_rfc3339())
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts a reserved (not committed) order's stock back and records `stock_released`, inside the
/// caller's transaction.
pub(crate) async fn release_reserved(
    conn: &mut sqlx::AnyConnection,
    order_id: Uuid,
    reason: &str,
    cause_traceparent: Option<&str>,
) -> Result<(), sqlx::Error> {
    let id = order_id.to_string();
    let lines = reservation_lines(conn, &id).await?;
    put_back(conn, &lines).await?;
    set_status(conn, &id, status::RELEASED).await?;
    let event =
        contracts::OrderLifecycle::event(order_event::STOCK_RELEASED, order_id, reason, cause_traceparent)
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    outbox::enqueue(conn, &event).await
}

/// The payload of a reservation's expiry timer (`timers.reservations.*.<order_id>`), internal to
/// inventory-service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReservationExpiry {
    /// The order whose reservation expires.
    pub order_id: Uuid,
    /// When, as scheduled (RFC 3339).
    pub expires_at: String,
}

/// The schedule of `order_id`'s expiry at `expires_at_ms`, for the outbox: published to
/// `timers.reservations.schedule.<id>` with `Nats-Schedule: @at <time>` (whole seconds, rounded
/// up) and `Nats-Schedule-Target: timers.reservations.expire.<id>`, so the broker publishes the
/// expiry then, whatever happens to this process in between.
fn expiry_event(order_id: Uuid, expires_at_ms: i64) -> Result<outbox::OutboxEvent, serde_json::Error> {
    let seconds = (expires_at_ms + 999).div_euclid(1000);
    let at = time::OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let at = switchyard::time::format_rfc3339(at);
    let timer = ReservationExpiry { order_id, expires_at: at.clone() };
    let mut event = outbox::OutboxEvent::new(
        Uuid::new_v4(),
        contracts::names::reservation_schedule_subject(&order_id),
        &timer,
        outbox::current_traceparent(),
    )?;
    event.headers.insert(SCHEDULE_HEADER.to_string(), format!("@at {at}"));
    event
        .headers
        .insert(SCHEDULE_TARGET_HEADER.to_string(), contracts::names::reservation_expire_subject(&order_id));
    Ok(event)
}

/// JetStream's schedule header (nats-server 2.12+).
pub const SCHEDULE_HEADER: &str = "Nats-Schedule";
/// Where a scheduled message is published when it fires.
pub const SCHEDULE_TARGET_HEADER: &str = "Nats-Schedule-Target";
