//! The reservation TTL: a reservation that is not committed in time goes back on the shelf
//! (`stock_released`), an order whose created event comes after that is not committed twice but
//! parked, and a commit that wins the race is never released by a later sweep.

use std::time::Duration;

use async_nats::jetstream;
use contracts::names;
use contracts::{OrderCreated, ReleaseReply, ReleaseRequest, ReserveReply, ReserveRequest, StockReply};
use switchyard::dlq;
use switchyard::testkit::eventually;
use uuid::Uuid;

use crate::helpers::{TestInventory, item, spawn_inventory_with};

pub(crate) async fn stock(app: &TestInventory, sku: &str) -> (i64, i64) {
    let reply: StockReply =
        app.call(names::INVENTORY_STOCK, &serde_json::json!({ "skus": [sku] })).await.expect("stock");
    (reply.items[0].available, reply.items[0].reserved)
}

async fn reserve(app: &TestInventory, order: Uuid, sku: &str, quantity: u32) {
    let request = ReserveRequest { order_id: order, items: vec![item(sku, quantity)] };
    let reply: ReserveReply = app.call(names::INVENTORY_RESERVE, &request).await.expect("reserve");
    assert!(reply.reserved);
}

pub(crate) async fn publish_created(js: &jetstream::Context, order: Uuid, sku: &str, quantity: u32) {
    let event = OrderCreated {
        event_id: Uuid::new_v4(),
        order_id: order,
        user_id: "u1".into(),
        email: None,
        items: vec![item(sku, quantity)],
        created_at: switchyard::time::now_rfc3339(),
    };
    let subject = names::order_event_subject(names::order_event::CREATED, &order);
    js.publish(subject, serde_json::to_vec(&event).expect("json").into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

async fn events(js: &jetstream::Context, filter: &str) -> u64 {
    switchyard::testkit::subject_count(js, names::ORDERS_STREAM, filter).await
}

#[tokio::test]
async fn an_expired_reservation_is_released_and_a_late_created_event_is_parked_not_committed() {
    let app = spawn_inventory_with(&["--reservation-ttl", "300ms", "--sweep-interval", "100ms"]).await;
    let js = jetstream::new(app.nats.client().await);
    app.restock("A-1", 5).await;
    let order = Uuid::new_v4();
    reserve(&app, order, "A-1", 2).await;
    assert_eq!(stock(&app, "A-1").await, (3, 2));

    // Nobody commits it: the sweeper puts it back and says so.
    eventually(Duration::from_secs(30), "the expired reservation to be released", || async {
        stock(&app, "A-1").await == (5, 0)
    })
    .await;
    let released = format!("events.orders.stock_released.{order}");
    eventually(Duration::from_secs(30), "stock_released", || async { events(&js, &released).await == 1 })
        .await;
    let message = js
        .get_stream("ORDERS")
        .await
        .expect("ORDERS")
        .get_last_raw_message_by_subject(&released)
        .await
        .expect("event");
    assert!(String::from_utf8_lossy(&message.payload).contains("expired"), "{:?}", message.payload);
    // A release on request now says it was released; the stock is not put back twice.
    let reply: ReleaseReply =
        app.call(names::INVENTORY_RELEASE, &ReleaseRequest { order_id: order }).await.expect("release");
    assert!(reply.released);
    assert_eq!(stock(&app, "A-1").await, (5, 0));

    // The order's created event arrives late: the stock is not taken off the shelf, the event is
    // parked in the DLQ with the reason.
    publish_created(&js, order, "A-1", 2).await;
    eventually(Duration::from_secs(30), "the late event's dead letter", || async {
        dlq::list(&js, 10).await.map(|l| l.len() == 1).unwrap_or(false)
    })
    .await;
    let letter = dlq::list(&js, 10).await.expect("letters").remove(0);
    assert_eq!((letter.consumer.as_str(), letter.reason.as_str()), ("inventory", "poison"));
    assert!(letter.error.contains("released (expired) before the commit"), "{letter:?}");
    assert_eq!(stock(&app, "A-1").await, (5, 0));
    assert_eq!(events(&js, "events.orders.stock_committed.*").await, 0);
}

#[tokio::test]
async fn a_commit_that_wins_the_race_is_never_released_and_release_then_answers_409() {
    // A TTL that passes during the test, and a sweeper the test runs itself.
    let app = spawn_inventory_with(&["--reservation-ttl", "300ms", "--sweep-interval", "1h"]).await;
    let js = jetstream::new(app.nats.client().await);
    app.restock("A-1", 5).await;
    let order = Uuid::new_v4();
    reserve(&app, order, "A-1", 2).await;
    publish_created(&js, order, "A-1", 2).await;
    let committed = format!("events.orders.stock_committed.{order}");
    eventually(Duration::from_secs(30), "stock_committed", || async { events(&js, &committed).await == 1 })
        .await;
    assert_eq!(stock(&app, "A-1").await, (3, 0));

    // Past the TTL, a sweep finds the committed reservation and leaves it alone.
    let db = switchyard::Db::connect(app.db.url(), &inventory_service::MIGRATIONS).await.expect("db");
    let inventory = inventory_service::Inventory::new(db.clone(), Duration::from_millis(300));
    eventually(Duration::from_secs(30), "the reservation's TTL to pass", || async {
        let passed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE expires_at < $1")
            .bind(switchyard::time::now_unix_millis())
            .fetch_one(db.pool())
            .await
            .expect("query");
        passed == 1
    })
    .await;
    assert_eq!(inventory_service::events::release_expired(&inventory).await.expect("sweep"), 0);
    assert_eq!(stock(&app, "A-1").await, (3, 0));
    assert_eq!(events(&js, "events.orders.stock_released.*").await, 0);
    // Its stock has left the shelf: a release on request is a conflict, a 409 micro error.
    let err = app
        .call::<_, ReleaseReply>(names::INVENTORY_RELEASE, &ReleaseRequest { order_id: order })
        .await
        .unwrap_err();
    assert!(matches!(&err, switchyard::RequestError::Service { code: 409, .. }), "{err:?}");
    assert_eq!(stock(&app, "A-1").await, (3, 0));
}
