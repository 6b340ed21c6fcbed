//! SIGTERM and --http-request-timeout, against a real order-service process and broker.

use std::time::Duration;

use contracts::names;
use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use switchyard::testkit::{NatsServer, TestDatabase, eventually};

use crate::crash::OrderProcess;
use crate::helpers::{order_body, spawn_stack_with};

#[tokio::test]
async fn sigterm_lets_the_order_in_flight_finish_and_its_event_go_out() {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = NatsServer::start();
    let db = TestDatabase::sqlite();
    let order = OrderProcess::start(&nats, &db);
    // A slow inventory: it takes the reservation, says so, and answers only when told.
    let client = nats.client().await;
    let mut reserves =
        client.queue_subscribe(names::INVENTORY_RESERVE, names::QUEUE_GROUP.into()).await.unwrap();
    client.flush().await.unwrap();
    let (taken, mut taken_rx) = tokio::sync::mpsc::unbounded_channel();
    let (answer, answer_rx) = tokio::sync::oneshot::channel::<()>();
    let responder = client.clone();
    let inventory = tokio::spawn(async move {
        let request = reserves.next().await.expect("a reserve request");
        let _ = taken.send(());
        let _ = answer_rx.await;
        let reply = request.reply.expect("a reply subject");
        responder.publish(reply, r#"{"reserved":true,"unavailable_ids":[]}"#.into()).await.unwrap();
        responder.flush().await.unwrap();
    });
    let http = reqwest::Client::new();
    let url = format!("{}/orders", order.base_url);
    let post = tokio::spawn(async move { http.post(url).json(&order_body("A-1", 1)).send().await });
    tokio::time::timeout(Duration::from_secs(30), taken_rx.recv())
        .await
        .expect("the request reaches inventory");

    // SIGTERM while the order is in flight; then inventory answers.
    kill(Pid::from_raw(order.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
    answer.send(()).expect("inventory task");
    let response =
        tokio::time::timeout(Duration::from_secs(30), post).await.expect("answered").unwrap().expect("HTTP");
    assert_eq!(response.status(), 201, "the order in flight is finished, not dropped");
    let created: serde_json::Value = response.json().await.unwrap();
    let status = order.wait(Duration::from_secs(30)).expect("order-service exits after SIGTERM");
    assert!(status.success(), "a clean exit: {status}");
    inventory.await.unwrap();
    // Its event was committed with it and published before the exit (or by the next start).
    let js = async_nats::jetstream::new(client);
    let subject = format!("events.orders.created.{}", created["id"].as_str().unwrap());
    eventually(Duration::from_secs(10), "the order's created event in ORDERS", || async {
        switchyard::testkit::subject_count(&js, "ORDERS", &subject).await == 1
    })
    .await;
}

#[tokio::test]
async fn the_request_timeout_answers_503_timeout_before_a_slower_breaker() {
    // The breaker would wait 20 s; the request timeout is 300 ms.
    let mut app = spawn_stack_with(&["--http-request-timeout", "300ms", "--breaker-timeout", "20s"]).await;
    let nats = app.nats.client().await;
    let mut black_hole =
        nats.queue_subscribe(names::INVENTORY_RESERVE, names::QUEUE_GROUP.into()).await.unwrap();
    nats.flush().await.unwrap();
    let swallow = tokio::spawn(async move { while black_hole.next().await.is_some() {} });
    app.stop_inventory().await;
    let answer = app.post_order(&order_body("A-1", 1), None).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.body["error"], "timeout",
        "the request timeout answered, not the breaker: {}",
        answer.body
    );
    assert_eq!(app.breaker.snapshot().totals.timeouts, 0, "the breaker never timed out");
    swallow.abort();
}
