use std::time::Duration;

use switchyard::dlq;
use switchyard::testkit::eventually;

use crate::helpers::{count, spawn_stack};

#[tokio::test]
async fn a_poison_event_is_dead_lettered_by_every_consumer_and_the_flow_goes_on() {
    let stack = spawn_stack().await;
    stack.restock("A-1", 10).await;
    stack.js.publish("events.orders.created.x", "{not json".into()).await.unwrap().await.unwrap();
    eventually(Duration::from_secs(15), "three dead letters", || async {
        dlq::list(&stack.js, 10).await.map(|l| l.len()).unwrap_or(0) == 3
    })
    .await;
    let letters = dlq::list(&stack.js, 10).await.unwrap();
    let mut consumers: Vec<&str> = letters.iter().map(|l| l.consumer.as_str()).collect();
    consumers.sort();
    assert_eq!(consumers, vec!["audit", "email", "inventory"]);
    assert!(letters.iter().all(|l| l.reason == "poison" && l.deliveries == 1 && l.payload == "{not json"));
    assert!(letters.iter().all(|l| l.error.contains("undecodable payload")), "{letters:?}");

    // The consumers keep going.
    assert_eq!(stack.order("A-1", 1).await.0, 201);
    stack.wait_events("events.orders.confirmation_sent.*", 1).await;
    stack.wait_events("events.orders.stock_committed.*", 1).await;
}

#[tokio::test]
async fn events_committed_while_nats_is_down_go_out_once_when_it_returns() {
    let mut stack = spawn_stack().await;
    stack.restock("A-1", 100).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (status, order) = stack.order("A-1", 1).await;
        assert_eq!(status, 201);
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    stack.wait_events("events.orders.created.*", 20).await;

    // NATS goes away; cancelling still commits (status + outbox row), nothing can be published.
    stack.nats.kill();
    for id in &ids {
        assert_eq!(stack.cancel(id).await, 200);
    }
    assert_eq!(count(&stack.orders_db, "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await, 20);

    stack.nats.restart();
    eventually(Duration::from_secs(30), "the outbox to drain", || async {
        count(&stack.orders_db, "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await == 0
    })
    .await;
    stack.wait_events("events.orders.cancelled.*", 20).await;
    stack.wait_events("events.orders.stock_released.*", 20).await;
    // None lost, none doubled, and every cancellation's stock is back on the shelf exactly once.
    eventually(Duration::from_secs(20), "stock to return", || async { stack.stock("A-1").await == (100, 0) })
        .await;
    assert_eq!(stack.events("events.orders.created.*").await, 20);
    assert_eq!(stack.events("events.orders.cancelled.*").await, 20);
}

#[tokio::test]
async fn a_stopped_consumer_service_catches_up_from_its_durable_when_it_returns() {
    let mut stack = spawn_stack().await;
    stack.restock("A-1", 100).await;
    for running in stack.emails.drain(..) {
        running.stop().await;
    }
    for _ in 0..10 {
        assert_eq!(stack.order("A-1", 1).await.0, 201);
    }
    stack.wait_events("events.orders.stock_committed.*", 10).await;
    assert_eq!(
        stack.events("events.orders.confirmation_sent.*").await,
        0,
        "nobody sends while email is down"
    );
    stack.add_email().await;
    stack.wait_events("events.orders.confirmation_sent.*", 10).await;
    assert_eq!(count(&stack.email_db, "SELECT COUNT(*) FROM emails").await, 10);
}
