//! Reservation expiry as a timer in the broker: reserving schedules a message on `TIMERS`
//! (`Nats-Schedule: @at <expiry>`); when it fires, the reservation is released unless it was
//! committed meanwhile. The timer lives in the broker, so it fires on time across a restart of
//! inventory-service.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use contracts::names;
use contracts::{ReserveReply, ReserveRequest};
use switchyard::testkit::{eventually, subject_count};
use uuid::Uuid;

use crate::helpers::{TestInventory, item, spawn_inventory_with};
use crate::sweeper::{publish_created, stock};

async fn reserve(app: &TestInventory, order: Uuid, quantity: u32) {
    let request = ReserveRequest { order_id: order, items: vec![item("T-1", quantity)] };
    let reply: ReserveReply = app.call(names::INVENTORY_RESERVE, &request).await.expect("reserve");
    assert!(reply.reserved);
}

#[tokio::test]
async fn an_unconfirmed_reservation_is_released_by_the_broker_on_time_across_a_restart() {
    // No periodic sweep (the default): only the broker's timers release reservations.
    let mut app = spawn_inventory_with(&["--reservation-ttl", "3s"]).await;
    let js = jetstream::new(app.nats.client().await);
    app.restock("T-1", 10).await;
    let (lost, kept) = (Uuid::new_v4(), Uuid::new_v4());
    let reserved_at = Instant::now();
    reserve(&app, lost, 2).await;
    reserve(&app, kept, 3).await;
    assert_eq!(stock(&app, "T-1").await, (5, 5));

    // Each reservation's expiry is scheduled in the broker.
    eventually(Duration::from_secs(10), "two schedules in TIMERS", || async {
        subject_count(&js, names::TIMERS_STREAM, "timers.reservations.schedule.*").await == 2
    })
    .await;
    let schedule = js
        .get_stream(names::TIMERS_STREAM)
        .await
        .expect("TIMERS")
        .get_last_raw_message_by_subject(&names::reservation_schedule_subject(&lost))
        .await
        .expect("the schedule");
    let header = |name: &str| schedule.headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default();
    assert!(header("Nats-Schedule").starts_with("@at "), "{:?}", schedule.headers);
    assert_eq!(header("Nats-Schedule-Target"), names::reservation_expire_subject(&lost));

    // `kept` is committed (its created event arrives); `lost` never is.
    publish_created(&js, kept, "T-1", 3).await;
    let committed = format!("events.orders.stock_committed.{kept}");
    eventually(Duration::from_secs(10), "kept's commit", || async {
        subject_count(&js, names::ORDERS_STREAM, &committed).await == 1
    })
    .await;

    // inventory-service restarts before the expiry (the new instance has a TTL of 15 minutes:
    // the timer already scheduled is what counts).
    app.instances.remove(0).stop().await;
    app.add_instance().await;
    assert!(reserved_at.elapsed() < Duration::from_secs(3), "restarted before the expiry");

    // The broker fires lost's timer: released on time, with its stock_released event.
    let released = format!("events.orders.stock_released.{lost}");
    eventually(Duration::from_secs(15), "lost's release", || async {
        subject_count(&js, names::ORDERS_STREAM, &released).await == 1
    })
    .await;
    let after = reserved_at.elapsed();
    eprintln!("released {after:?} after the reservation (TTL 3 s)");
    assert!(after >= Duration::from_secs(3), "not before its TTL: {after:?}");
    assert!(after < Duration::from_secs(8), "on time: {after:?}");
    assert_eq!(stock(&app, "T-1").await, (7, 0), "lost's 2 back on the shelf, kept's 3 gone");

    // kept's timer fired too, and changed nothing.
    eventually(Duration::from_secs(10), "both timers fired", || async {
        subject_count(&js, names::TIMERS_STREAM, "timers.reservations.expire.*").await == 2
    })
    .await;
    eventually(Duration::from_secs(10), "the timers durable drained", || async {
        let stream = js.get_stream(names::TIMERS_STREAM).await.expect("TIMERS");
        let info = stream.consumer_info(names::INVENTORY_TIMERS_CONSUMER).await.expect("info");
        info.num_pending == 0 && info.num_ack_pending == 0
    })
    .await;
    assert_eq!(
        subject_count(&js, names::ORDERS_STREAM, &format!("events.orders.stock_released.{kept}")).await,
        0
    );
    assert_eq!(stock(&app, "T-1").await, (7, 0));
}
