use std::time::{Duration, Instant};

use contracts::names;
use futures_util::StreamExt;
use switchyard::breaker::BreakerState;
use switchyard::testkit::eventually;

use crate::helpers::{order_body, spawn_stack_with};

const FAST_BREAKER: &[&str] =
    &["--breaker-timeout", "500ms", "--breaker-volume-threshold", "3", "--breaker-reset-timeout", "1s"];

#[tokio::test]
async fn a_stopped_inventory_gives_503_then_the_breaker_answers_at_once_then_orders_recover() {
    let mut app = spawn_stack_with(FAST_BREAKER).await;
    app.restock("A-1", 100).await;
    assert_eq!(app.post_order(&order_body("A-1", 1), None).await.status, 201);
    app.stop_inventory().await;

    // No responders: each call fails at once (a failure, not a timeout of the breaker).
    for _ in 0..3 {
        let answer = app.post_order(&order_body("A-1", 1), None).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.body["error"], "inventory_unavailable");
        assert!(answer.headers.contains_key("retry-after"));
    }
    // Two failures after one success open it (volume 3, over 50 %): the third is rejected.
    let totals = app.breaker.snapshot().totals;
    assert_eq!(
        (totals.failures, totals.timeouts, totals.rejects),
        (2, 0, 1),
        "no responders fail at once: {totals:?}"
    );
    // Open: it answers without calling inventory.
    assert_eq!(app.breaker.state(), BreakerState::Open);

    // While open, the breaker answers without calling inventory, even once it is back.
    app.start_inventory().await;
    let rejects_before = app.breaker.snapshot().totals.rejects;
    let answer = app.post_order(&order_body("A-1", 1), None).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(app.breaker.snapshot().totals.rejects, rejects_before + 1);

    // After the reset timeout a trial goes through and closes the breaker.
    eventually(Duration::from_secs(30), "an order to succeed after the reset timeout", || async {
        app.post_order(&order_body("A-1", 1), None).await.status == 201
    })
    .await;
    assert_eq!(app.breaker.state(), BreakerState::Closed);
    app.settled_stock("A-1", 98).await;
}

#[tokio::test]
async fn a_hung_inventory_times_out_into_a_503_and_does_not_hold_callers() {
    let mut app = spawn_stack_with(FAST_BREAKER).await;
    // Something takes inventory.reserve requests and never answers; it joins the queue group
    // before inventory leaves it, so the subject never goes without interest.
    let nats = app.nats.client().await;
    let mut black_hole =
        nats.queue_subscribe(names::INVENTORY_RESERVE, names::QUEUE_GROUP.into()).await.unwrap();
    nats.flush().await.unwrap();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    let swallow = tokio::spawn(async move {
        while black_hole.next().await.is_some() {
            let _ = held_tx.send(());
        }
    });
    app.stop_inventory().await;

    let started = Instant::now();
    let answer = app.post_order(&order_body("A-1", 1), None).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(started.elapsed() >= Duration::from_millis(450), "it waited for the breaker's timeout");
    assert_eq!(app.breaker.snapshot().totals.timeouts, 1);
    held_rx.recv().await.expect("the hung inventory got the first call");

    // Callers in parallel are not queued behind each other: all five reach inventory while the
    // first is still waiting for its answer.
    let mut calls = Vec::new();
    for _ in 0..5 {
        let http = app.http.clone();
        let url = format!("{}/orders", app.base_url);
        calls.push(tokio::spawn(async move {
            http.post(url).json(&order_body("A-1", 1)).send().await.unwrap().status()
        }));
    }
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(30), held_rx.recv())
            .await
            .expect("a call in flight")
            .unwrap();
    }
    assert!(!calls[0].is_finished(), "the five calls were in flight at once");
    for call in calls {
        assert_eq!(call.await.unwrap().as_u16(), 503);
    }
    assert_eq!(app.breaker.snapshot().totals.timeouts, 6);
    swallow.abort();
}

#[tokio::test]
async fn at_capacity_further_requests_are_refused_at_once_and_served_again_after() {
    let mut app = spawn_stack_with(&[
        "--http-max-in-flight",
        "2",
        "--breaker-timeout",
        "3s",
        "--breaker-volume-threshold",
        "100",
    ])
    .await;
    // A hung inventory keeps two order requests in flight for the breaker timeout.
    let nats = app.nats.client().await;
    let mut black_hole =
        nats.queue_subscribe(names::INVENTORY_RESERVE, names::QUEUE_GROUP.into()).await.unwrap();
    nats.flush().await.unwrap();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    let swallow = tokio::spawn(async move {
        while black_hole.next().await.is_some() {
            let _ = held_tx.send(());
        }
    });
    app.stop_inventory().await;
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let (http, url) = (app.http.clone(), format!("{}/orders", app.base_url));
        hanging.push(tokio::spawn(async move {
            http.post(url).json(&order_body("A-1", 1)).send().await.unwrap().status().as_u16()
        }));
    }
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), held_rx.recv()).await.unwrap().unwrap();
    }

    // Both slots are taken: the next order request is refused at once, health checks still answer.
    let refused = app.post_order(&order_body("A-1", 1), None).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(held_rx.try_recv().is_err(), "refused without calling inventory");
    assert_eq!(refused.body["error"], "overloaded", "{}", refused.body);
    assert_eq!(refused.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(app.get("/health/live").await.status, 200);

    // Once the two hung requests time out, the slots are free again.
    for call in hanging {
        assert_eq!(call.await.unwrap(), 503);
    }
    let served = app.post_order(&order_body("A-1", 1), None).await;
    assert_eq!(served.status, 503, "{}", served.body);
    assert_eq!(
        served.body["error"], "inventory_unavailable",
        "no longer refused for capacity: {}",
        served.body
    );
    swallow.abort();
}
