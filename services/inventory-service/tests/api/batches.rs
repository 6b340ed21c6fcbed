//! The `inventory` consumer's group commit: a batch of created events commits its reservations
//! set-based (one statement per table). Each reservation is committed once, whatever the batch
//! holds (a redelivery, a second event for one order, a repeat of the whole batch); a batch with an
//! event that cannot be committed fails whole, so the consumer applies it event by event; a batch
//! with another kind of event is applied in order.

use contracts::names::{self, order_event};
use contracts::{OrderCancelled, OrderCreated, ReleaseReply, ReleaseRequest, ReserveReply, ReserveRequest};
use inventory_service::events::apply_all;
use switchyard::consumer::{Delivery, HandleError};
use switchyard::db::Db;
use uuid::Uuid;

use crate::helpers::{TestInventory, item, spawn_inventory, spawn_inventory_on_postgres};
use crate::sweeper::stock;

async fn reserve(app: &TestInventory, lines: &[(&str, u32)]) -> Uuid {
    let order = Uuid::new_v4();
    let items = lines.iter().map(|(sku, quantity)| item(sku, *quantity)).collect();
    let reply: ReserveReply = app
        .call(names::INVENTORY_RESERVE, &ReserveRequest { order_id: order, items })
        .await
        .expect("reserve");
    assert!(reply.reserved, "{reply:?}");
    order
}

fn delivery(subject: String, payload: Vec<u8>, seq: u64) -> Delivery {
    Delivery {
        subject,
        payload: payload.into(),
        headers: None,
        stream_seq: seq,
        delivered: 1,
        published: time::OffsetDateTime::now_utc(),
        replay_of: None,
        span: tracing::Span::none(),
    }
}

fn created(event_id: Uuid, order: Uuid, seq: u64) -> Delivery {
    let event = OrderCreated {
        event_id,
        order_id: order,
        user_id: "u1".into(),
        email: None,
        items: vec![],
        created_at: switchyard::time::now_rfc3339(),
    };
    let subject = names::order_event_subject(order_event::CREATED, &order);
    delivery(subject, serde_json::to_vec(&event).expect("json"), seq)
}

fn cancelled(order: Uuid, seq: u64) -> Delivery {
    let event = OrderCancelled {
        event_id: Uuid::new_v4(),
        order_id: order,
        reason: "changed my mind".into(),
        cancelled_at: switchyard::time::now_rfc3339(),
    };
    let subject = names::order_event_subject(order_event::CANCELLED, &order);
    delivery(subject, serde_json::to_vec(&event).expect("json"), seq)
}

/// Applies `batch` in one write transaction, committed when it succeeds.
async fn apply(db: &Db, batch: &[Delivery]) -> Result<(), HandleError> {
    let refs: Vec<&Delivery> = batch.iter().collect();
    let mut tx = db.begin_write().await.expect("begin");
    match apply_all(&mut tx, &refs).await {
        Ok(()) => {
            tx.commit().await.expect("commit");
            Ok(())
        }
        Err(err) => {
            tx.rollback().await.expect("rollback");
            Err(err)
        }
    }
}

async fn committed_events(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE subject LIKE 'events.orders.stock_committed.%'")
        .fetch_one(db.pool())
        .await
        .expect("count")
}

async fn a_batch_commits_each_reservation_once(app: TestInventory) {
    app.restock("A-1", 100).await;
    app.restock("B-2", 100).await;
    let one = reserve(&app, &[("A-1", 2)]).await;
    let two = reserve(&app, &[("A-1", 3), ("B-2", 1)]).await;
    let three = reserve(&app, &[("B-2", 4)]).await;
    assert_eq!((stock(&app, "A-1").await, stock(&app, "B-2").await), ((95, 5), (95, 5)));
    let db = Db::connect(app.db.url(), &inventory_service::MIGRATIONS).await.expect("the inventory database");

    // One batch: three orders, one event delivered twice, a second event for order two.
    let first = Uuid::new_v4();
    let batch = vec![
        created(first, one, 1),
        created(Uuid::new_v4(), two, 2),
        created(first, one, 3),
        created(Uuid::new_v4(), three, 4),
        created(Uuid::new_v4(), two, 5),
    ];
    apply(&db, &batch).await.expect("the batch applies");
    assert_eq!((stock(&app, "A-1").await, stock(&app, "B-2").await), ((95, 0), (95, 0)));
    assert_eq!(committed_events(&db).await, 3);
    // The whole batch again (a redelivery after a lost ack): nothing more.
    apply(&db, &batch).await.expect("the repeat applies");
    assert_eq!((stock(&app, "A-1").await, stock(&app, "B-2").await), ((95, 0), (95, 0)));
    assert_eq!(committed_events(&db).await, 3);

    // A batch with a released reservation fails whole and changes nothing: the consumer then
    // applies its events one by one and dead-letters that one alone.
    let released = reserve(&app, &[("A-1", 1)]).await;
    let reply: ReleaseReply =
        app.call(names::INVENTORY_RELEASE, &ReleaseRequest { order_id: released }).await.expect("release");
    assert!(reply.released);
    let four = reserve(&app, &[("B-2", 2)]).await;
    let poisoned = vec![created(Uuid::new_v4(), four, 6), created(Uuid::new_v4(), released, 7)];
    let err = apply(&db, &poisoned).await.expect_err("a released reservation cannot be committed");
    assert!(matches!(err, HandleError::Poison(_)), "{err:?}");
    assert_eq!(stock(&app, "B-2").await, (93, 2), "order four still reserved, not committed");
    // Nor does an order without any reservation.
    let unknown = vec![created(Uuid::new_v4(), four, 8), created(Uuid::new_v4(), Uuid::new_v4(), 9)];
    assert!(apply(&db, &unknown).await.is_err());

    // A batch with a cancellation is applied in sequence: committed, then returned to the shelf.
    apply(&db, &[created(Uuid::new_v4(), four, 10), cancelled(four, 11)]).await.expect("in order");
    assert_eq!(stock(&app, "B-2").await, (95, 0));
    assert_eq!(committed_events(&db).await, 4);
    db.close().await;
}

#[tokio::test]
async fn a_batch_of_created_events_commits_each_reservation_once_on_sqlite() {
    a_batch_commits_each_reservation_once(spawn_inventory().await).await;
}

#[tokio::test]
async fn a_batch_of_created_events_commits_each_reservation_once_on_postgres() {
    a_batch_commits_each_reservation_once(spawn_inventory_on_postgres().await).await;
}
