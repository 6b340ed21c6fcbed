use std::time::{Duration, Instant};

use switchyard::testkit::eventually;

use crate::helpers::{count, spawn_stack, spawn_stack_on_postgres};

#[tokio::test]
async fn two_instances_of_each_consumer_share_the_work_and_apply_each_event_once() {
    let mut stack = spawn_stack().await;
    stack.add_inventory().await;
    stack.add_email().await;
    stack.add_audit().await;
    stack.restock("A-1", 1000).await;
    let mut calls = Vec::new();
    for _ in 0..100 {
        let (http, url) = (stack.http.clone(), format!("{}/orders", stack.base_url));
        calls.push(tokio::spawn(async move {
            let body = serde_json::json!({ "user_id": "u", "email": "u@example.com", "items": [{ "sku": "A-1", "quantity": 1 }] });
            http.post(url).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 201);
    }
    stack.wait_events("events.orders.stock_committed.*", 100).await;
    stack.wait_events("events.orders.confirmation_sent.*", 100).await;
    eventually(Duration::from_secs(20), "the audit trail to hold 300 events", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 300
    })
    .await;
    assert_eq!(stack.stock("A-1").await, (900, 0));
    assert_eq!(stack.inbox(&stack.inventory_db, "inventory").await, 100);
    assert_eq!(count(&stack.email_db, "SELECT COUNT(*) FROM emails").await, 100);
    assert_eq!(
        std::fs::read_dir(stack.email_dir())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
            .count(),
        100
    );
    // The work was shared: the broker delivered a fair part of the events to each instance of
    // each consumer (100 events per consumer; a pull loop's idle status messages are a handful).
    for service in ["inventory", "email", "audit"] {
        let split = stack.inbox_deliveries(service).await;
        assert_eq!(split.len(), 2, "two {service} connections: {split:?}");
        assert!(split.iter().all(|&n| n >= 15), "each {service} instance got its share: {split:?}");
        println!("{service}: deliveries per instance {split:?}");
    }
    // Settled: once every service has stopped (each finishes and flushes what it holds), nothing
    // more can arrive, and the counts are the same.
    if let Some(orders) = stack.orders.take() {
        orders.stop().await;
    }
    for service in stack.inventory.drain(..).chain(stack.emails.drain(..)).chain(stack.audits.drain(..)) {
        service.stop().await;
    }
    assert_eq!(stack.events("events.orders.stock_committed.*").await, 100);
    assert_eq!(stack.events("events.orders.confirmation_sent.*").await, 100);
}

/// One run of 1,000 orders (100 of them deliberately out of stock), with the figures that must
/// reconcile printed for the record: accepted orders = created events = commits = emails, and
/// the audit trail holds every event of the stream.
#[tokio::test]
async fn a_thousand_orders_reconcile_across_every_consumer() {
    let stack = spawn_stack().await;
    stack.restock("BULK", 900).await;
    let started = Instant::now();
    let (mut accepted, mut out_of_stock) = (0, 0);
    let mut calls = Vec::new();
    for chunk in 0..10 {
        let (http, url) = (stack.http.clone(), format!("{}/orders", stack.base_url));
        calls.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..100 {
                let body = serde_json::json!({ "user_id": format!("u{chunk}-{n}"), "email": "u@example.com", "items": [{ "sku": "BULK", "quantity": 1 }] });
                statuses.push(http.post(&url).json(&body).send().await.unwrap().status().as_u16());
            }
            statuses
        }));
    }
    for call in calls {
        for status in call.await.unwrap() {
            match status {
                201 => accepted += 1,
                409 => out_of_stock += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let placed = started.elapsed();
    assert_eq!((accepted, out_of_stock), (900, 100));
    stack.wait_events("events.orders.stock_committed.*", 900).await;
    stack.wait_events("events.orders.confirmation_sent.*", 900).await;
    let total_events = stack.events("events.orders.>").await;
    eventually(Duration::from_secs(30), "the audit trail to catch up", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await as u64 == total_events
    })
    .await;
    let settled = started.elapsed();

    let created = stack.events("events.orders.created.*").await;
    let commits = stack.inbox(&stack.inventory_db, "inventory").await;
    let emails = count(&stack.email_db, "SELECT COUNT(*) FROM emails").await;
    let audit_rows = count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await;
    let dead_letters = switchyard::dlq::list(&stack.js, 10_000).await.unwrap().len();
    println!(
        "1000 orders: accepted {accepted}, out of stock {out_of_stock}; events in ORDERS {total_events} \
         (created {created}); inventory commits {commits}; emails {emails}; audit rows {audit_rows}; \
         dead letters {dead_letters}; placed in {placed:?}, all consumers settled in {settled:?}"
    );
    assert_eq!(created, 900);
    assert_eq!(commits, 900);
    assert_eq!(emails, 900);
    assert_eq!(total_events, 900 * 3);
    assert_eq!(audit_rows as u64, total_events);
    assert_eq!(dead_letters, 0);
    assert_eq!(stack.stock("BULK").await, (0, 0));
}

#[tokio::test]
async fn on_postgres_every_consumer_applies_each_event_once_and_cancellations_release_stock() {
    let mut stack = spawn_stack_on_postgres().await;
    stack.add_inventory().await;
    stack.add_email().await;
    stack.restock("A-1", 100).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        let (status, order) = stack.order("A-1", 2).await;
        assert_eq!(status, 201);
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    for id in &ids[..10] {
        assert_eq!(stack.cancel(id).await, 200);
    }
    stack.wait_events("events.orders.stock_released.*", 10).await;
    stack.wait_events("events.orders.confirmation_sent.*", 30).await;
    eventually(Duration::from_secs(20), "stock to settle on Postgres", || async {
        stack.stock("A-1").await == (60, 0)
    })
    .await;
    assert_eq!(stack.inbox(&stack.inventory_db, "inventory").await, 40);
    assert_eq!(count(&stack.email_db, "SELECT COUNT(*) FROM emails").await, 30);
    eventually(Duration::from_secs(20), "the audit trail on Postgres", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 30 * 3 + 10 * 2
    })
    .await;
    assert_eq!(count(&stack.orders_db, "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await, 0);
}
