//! The inventory's side of the asynchronous path: the durable consumer `inventory` on `ORDERS`
//! (created: commit the reservation, cancelled: release it, each once), the durable
//! `inventory_timers` on `TIMERS` (a reservation's expiry, fired by the broker: release it unless
//! it was committed or released meanwhile), and the sweep that releases reservations whose TTL
//! passed without a timer (at start-up, and every `--sweep-interval` when set).

use std::time::Duration;

use contracts::names::{self, order_event};
use contracts::{OrderCancelled, OrderCreated};
use sqlx::AnyConnection;
use switchyard::consumer::{Apply, ApplyFuture, ConsumerSpec, Delivery, HandleError};
use switchyard::outbox::{self, TRACEPARENT};
use switchyard::shutdown::Shutdown;
use switchyard::{inbox, time};
use uuid::Uuid;

use crate::store::{Inventory, release_reserved, reservation_lines, reservation_status, set_status, status};

/// The `inventory` consumer: order created and cancelled events. One event per transaction by
/// default: its transactions take the same write slot (SQLite) and stock rows (Postgres) as the
/// synchronous reservations, and batches of them measurably slowed POST /orders (BENCHMARKS.md).
pub fn consumer_spec() -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(
        names::ORDERS_STREAM,
        names::INVENTORY_CONSUMER,
        vec!["events.orders.created.*".into(), "events.orders.cancelled.*".into()],
    );
    spec.max_batch = 1;
    spec
}

/// Applies one event for the `inventory` consumer inside `tx` (the consumer commits it, together
/// with the other events of its batch).
pub async fn apply(tx: &mut AnyConnection, delivery: &Delivery) -> Result<(), HandleError> {
    let kind = names::order_event_kind(&delivery.subject).unwrap_or_default();
    let trace = delivery.header(TRACEPARENT);
    match kind {
        order_event::CREATED => {
            let event: OrderCreated = delivery.json()?;
            commit(tx, &event, trace).await
        }
        order_event::CANCELLED => {
            let event: OrderCancelled = delivery.json()?;
            cancel(tx, &event, trace).await
        }
        other => Err(HandleError::Poison(format!("the inventory consumer does not handle {other:?} events"))),
    }
}

/// The `inventory` consumer commits and releases reservations by group commit.
impl Apply for Inventory {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(apply(tx, delivery))
    }

    fn committed(&self) {
        self.wake_relay();
    }
}

/// Commits the order's reservation: its stock leaves the shelf, once.
async fn commit(
    tx: &mut AnyConnection,
    event: &OrderCreated,
    trace: Option<&str>,
) -> Result<(), HandleError> {
    let order_id = event.order_id.to_string();
    if !inbox::record(tx, names::INVENTORY_CONSUMER, &event.event_id.to_string()).await? {
        return Ok(());
    }
    match reservation_status(tx, &order_id).await?.as_deref() {
        Some(status::RESERVED) => {
            let lines = reservation_lines(tx, &order_id).await?;
            for (sku, quantity) in &lines {
                sqlx::query("UPDATE stock SET reserved = reserved - $1 WHERE sku = $2")
                    .bind(quantity)
                    .bind(sku)
                    .execute(&mut *tx)
                    .await?;
            }
            set_status(tx, &order_id, status::COMMITTED).await?;
            let units: i64 = lines.iter().map(|(_, q)| q).sum();
            let detail = format!("{units} units of {} SKUs left the shelf", lines.len());
            let event = contracts::OrderLifecycle::event(
                order_event::STOCK_COMMITTED,
                event.order_id,
                detail,
                trace,
            )?;
            outbox::enqueue(tx, &event).await?;
        }
        Some(status::COMMITTED) => {}
        Some(_) => {
            return Err(HandleError::Poison(format!(
                "order {order_id} was accepted but its reservation was released (expired) before the commit"
            )));
        }
        None => return Err(HandleError::Poison(format!("order {order_id} has no reservation to commit"))),
    }
    Ok(())
}

/// Releases a cancelled order's stock, once: a reservation goes back to available; committed
/// stock is returned to the shelf.
async fn cancel(
    tx: &mut AnyConnection,
    event: &OrderCancelled,
    trace: Option<&str>,
) -> Result<(), HandleError> {
    let order_id = event.order_id.to_string();
    if !inbox::record(tx, names::INVENTORY_CONSUMER, &event.event_id.to_string()).await? {
        return Ok(());
    }
    match reservation_status(tx, &order_id).await?.as_deref() {
        Some(status::RESERVED) => {
            release_reserved(tx, event.order_id, &format!("cancelled: {}", event.reason), trace).await?;
        }
        Some(status::COMMITTED) => {
            for (sku, quantity) in reservation_lines(tx, &order_id).await? {
                sqlx::query("UPDATE stock SET available = available + $1 WHERE sku = $2")
                    .bind(quantity)
                    .bind(&sku)
                    .execute(&mut *tx)
                    .await?;
            }
            set_status(tx, &order_id, status::RELEASED).await?;
            let detail = format!("cancelled after commit, stock returned to the shelf: {}", event.reason);
            let event =
                contracts::OrderLifecycle::event(order_event::STOCK_RELEASED, event.order_id, detail, trace)?;
            outbox::enqueue(tx, &event).await?;
        }
        Some(_) => {}
        None => tracing::warn!(%order_id, "cancelled order had no reservation"),
    }
    Ok(())
}

/// The `inventory_timers` consumer: reservation expiries as the broker fires them.
pub fn timers_spec() -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(
        names::TIMERS_STREAM,
        names::INVENTORY_TIMERS_CONSUMER,
        vec![names::RESERVATION_EXPIRE_FILTER.into()],
    );
    spec.max_batch = 1;
    spec
}

/// Applies reservation expiries: a reservation still reserved is released (its stock goes back,
/// `stock_released` is published); one committed or released meanwhile is left alone, so a timer
/// that fires twice, or after the commit, changes nothing.
#[derive(Debug, Clone)]
pub struct Expiries(pub Inventory);

impl Apply for Expiries {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(async move {
            let timer: crate::store::ReservationExpiry = delivery.json()?;
            let order_id = timer.order_id.to_string();
            if reservation_status(tx, &order_id).await?.as_deref() == Some(status::RESERVED) {
                let trace = delivery.header(TRACEPARENT);
                release_reserved(tx, timer.order_id, "reservation expired before it was committed", trace)
                    .await?;
                tracing::info!(%order_id, "reservation expired: released");
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.0.wake_relay();
    }
}

/// Releases reservations whose TTL passed without a commit. Returns how many it released.
pub async fn release_expired(inventory: &Inventory) -> Result<usize, sqlx::Error> {
    let expired: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM reservations WHERE status = $1 AND expires_at < $2 ORDER BY expires_at LIMIT 500",
    )
    .bind(status::RESERVED)
    .bind(time::now_unix_millis())
    .fetch_all(inventory.db().pool())
    .await?;
    let mut released = 0;
    for order_id in expired {
        let Ok(id) = Uuid::parse_str(&order_id) else { continue };
        let mut tx = inventory.db().begin_write().await?;
        // Checked again inside the write transaction: a commit may have won the race.
        if reservation_status(&mut tx, &order_id).await?.as_deref() == Some(status::RESERVED) {
            release_reserved(&mut tx, id, "reservation expired before it was committed", None).await?;
            released += 1;
        }
        tx.commit().await?;
    }
    if released > 0 {
        tracing::info!(released, "released expired reservations");
        inventory.wake_relay();
    }
    Ok(released)
}

/// Runs [`release_expired`] once, then every `interval` until `shutdown` (zero: once only).
pub async fn run_sweeper(inventory: Inventory, interval: Duration, shutdown: Shutdown) {
    if let Err(err) = release_expired(&inventory).await {
        tracing::warn!(error = %err, "reservation sweep failed");
    }
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => break,
        }
        if let Err(err) = release_expired(&inventory).await {
            tracing::warn!(error = %err, "reservation sweep failed");
        }
    }
}
