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

use crate::store::{
    Inventory, release_reserved, reservation_lines, reservation_status, reservation_statuses,
    reservations_lines, set_status, set_statuses, status, take_reserved,
};

/// The `inventory` consumer: order created and cancelled events, by group commit. Its
/// transactions take the same write slot (SQLite) and stock rows (Postgres) as the synchronous
/// reservations, so a batch of created events is applied set-based ([`apply_all`]): a handful of
/// statements whatever its size, not six or seven per event (BENCHMARKS.md).
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec::new(
        names::ORDERS_STREAM,
        names::INVENTORY_CONSUMER,
        vec!["events.orders.created.*".into(), "events.orders.cancelled.*".into()],
    )
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

    fn apply_all<'a>(&'a self, tx: &'a mut AnyConnection, deliveries: &'a [&'a Delivery]) -> ApplyFuture<'a> {
        Box::pin(apply_all(tx, deliveries))
    }

    fn committed(&self) {
        self.wake_relay();
    }
}

/// Applies a batch for the `inventory` consumer inside `tx`. A batch of created events (the
/// common case) commits its reservations set-based, with one statement per table whatever its
/// size, so the write slot that the synchronous reservations share is held about as long as for
/// one event; a batch with any other event is applied event by event, in order.
pub async fn apply_all(tx: &mut AnyConnection, deliveries: &[&Delivery]) -> Result<(), HandleError> {
    let mut created = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if names::order_event_kind(&delivery.subject) != Some(order_event::CREATED) {
            for delivery in deliveries {
                apply(tx, delivery).await?;
            }
            return Ok(());
        }
        created.push((*delivery, delivery.json::<OrderCreated>()?));
    }
    let event_ids: Vec<String> = created.iter().map(|(_, event)| event.event_id.to_string()).collect();
    let ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
    let fresh = inbox::record_all(tx, names::INVENTORY_CONSUMER, &ids).await?;
    // Each order once (a second created event for it would find it committed).
    let mut orders: Vec<(&Delivery, &OrderCreated, String)> = Vec::new();
    for ((delivery, event), event_id) in created.iter().zip(&event_ids) {
        let order_id = event.order_id.to_string();
        if fresh.contains(event_id) && !orders.iter().any(|(_, _, seen)| *seen == order_id) {
            orders.push((delivery, event, order_id));
        }
    }
    if orders.is_empty() {
        return Ok(());
    }
    let order_ids: Vec<&str> = orders.iter().map(|(_, _, id)| id.as_str()).collect();
    let statuses = reservation_statuses(tx, &order_ids).await?;
    let mut reserved = Vec::with_capacity(orders.len());
    for (delivery, event, order_id) in &orders {
        match statuses.get(order_id).map(String::as_str) {
            Some(status::RESERVED) => reserved.push((*delivery, *event, order_id.as_str())),
            Some(status::COMMITTED) => {}
            // Released or missing: the batch is rolled back and applied event by event, where this
            // event is dead-lettered with its reason.
            _ => return Err(HandleError::Poison(format!("order {order_id} has no reservation to commit"))),
        }
    }
    if reserved.is_empty() {
        return Ok(());
    }
    let reserved_ids: Vec<&str> = reserved.iter().map(|(_, _, id)| *id).collect();
    let lines = reservations_lines(tx, &reserved_ids).await?;
    let mut per_sku: Vec<(&str, i64)> = Vec::new();
    for (_, sku, quantity) in &lines {
        match per_sku.iter_mut().find(|(s, _)| s == sku) {
            Some((_, total)) => *total += quantity,
            None => per_sku.push((sku, *quantity)),
        }
    }
    // Skus in one order, so two transactions never take the same rows in opposite orders.
    per_sku.sort_unstable();
    take_reserved(tx, &per_sku).await?;
    set_statuses(tx, &reserved_ids, status::COMMITTED).await?;
    let mut events = Vec::with_capacity(reserved.len());
    for (delivery, event, order_id) in &reserved {
        let mine = lines.iter().filter(|(id, _, _)| id == order_id);
        let (skus, units) = mine.fold((0, 0), |(skus, units), (_, _, quantity)| (skus + 1, units + quantity));
        let detail = format!("{units} units of {skus} SKUs left the shelf");
        let trace = delivery.header(TRACEPARENT);
        events.push(contracts::OrderLifecycle::event(
            order_event::STOCK_COMMITTED,
            event.order_id,
            detail,
            trace,
        )?);
    }
    outbox::enqueue_all(tx, &events).await?;
    Ok(())
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

/// The `inventory_timers` consumer: reservation expiries as the broker fires them, by group
/// commit (one query finds which of a batch's reservations are still reserved).
pub fn timers_spec() -> ConsumerSpec {
    ConsumerSpec::new(
        names::TIMERS_STREAM,
        names::INVENTORY_TIMERS_CONSUMER,
        vec![names::RESERVATION_EXPIRE_FILTER.into()],
    )
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
                expire(tx, &timer, delivery).await?;
            }
            Ok(())
        })
    }

    /// Most timers find their reservation committed long ago: one query for the whole batch,
    /// then a release for each one still reserved.
    fn apply_all<'a>(&'a self, tx: &'a mut AnyConnection, deliveries: &'a [&'a Delivery]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let timers = deliveries
                .iter()
                .map(|delivery| delivery.json::<crate::store::ReservationExpiry>())
                .collect::<Result<Vec<_>, _>>()?;
            let order_ids: Vec<String> = timers.iter().map(|timer| timer.order_id.to_string()).collect();
            let ids: Vec<&str> = order_ids.iter().map(String::as_str).collect();
            let mut statuses = reservation_statuses(tx, &ids).await?;
            for ((timer, delivery), order_id) in timers.iter().zip(deliveries).zip(&order_ids) {
                // Taken out once released: a timer that fires twice in a batch releases once.
                if statuses.get(order_id).map(String::as_str) == Some(status::RESERVED) {
                    statuses.remove(order_id);
                    expire(tx, timer, delivery).await?;
                }
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.0.wake_relay();
    }
}

/// Releases a reservation whose timer fired while it was still reserved.
async fn expire(
    tx: &mut AnyConnection,
    timer: &crate::store::ReservationExpiry,
    delivery: &Delivery,
) -> Result<(), HandleError> {
    let trace = delivery.header(TRACEPARENT);
    release_reserved(tx, timer.order_id, "reservation expired before it was committed", trace).await?;
    tracing::info!(order_id = %timer.order_id, "reservation expired: released");
    Ok(())
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
