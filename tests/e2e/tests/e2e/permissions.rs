use std::time::Duration;

use contracts::names;
use contracts::{HistoryReply, HistoryRequest};
use switchyard::testkit::eventually;

use crate::helpers::{Running, connect_as, count, password, spawn_secure_stack};

#[tokio::test]
async fn every_service_works_under_its_own_least_privilege_user() {
    let stack = spawn_secure_stack().await;
    stack.restock("A-1", 10).await;
    let (status, order) = stack.order("A-1", 2).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    stack.wait_events("events.orders.stock_committed.*", 1).await;
    stack.wait_events("events.orders.confirmation_sent.*", 1).await;
    eventually(Duration::from_secs(10), "the audit trail", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 3
    })
    .await;
    let history: HistoryReply = stack
        .requests
        .request(names::AUDIT_HISTORY, &HistoryRequest { order_id: id.parse().unwrap() })
        .await
        .unwrap();
    assert_eq!(history.events.len(), 3);
    // The SSE route's ordered consumer is allowed too.
    let mut response = stack.http.get(format!("{}/orders/{id}/events", stack.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first =
        tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: created"), "{first:?}");
    // Cancelling goes through the orders user's outbox and inventory's consumer.
    assert_eq!(stack.cancel(&id).await, 200);
    stack.wait_events("events.orders.stock_released.*", 1).await;
}

async fn violation(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a permissions violation is reported")
        .expect("error channel open")
}

#[tokio::test]
async fn publishes_and_subscribes_outside_a_users_permissions_are_denied() {
    let stack = spawn_secure_stack().await;

    // email-service may not publish to inventory.* nor serve it.
    let (email, mut errors) = connect_as(&stack.nats, "email").await;
    email.publish("inventory.check", "{}".into()).await.unwrap();
    email.flush().await.unwrap();
    let err = violation(&mut errors).await;
    assert!(err.to_lowercase().contains("permissions violation") && err.contains("inventory.check"), "{err}");
    let _sub = email.subscribe("inventory.*").await.unwrap();
    email.flush().await.unwrap();
    let err = violation(&mut errors).await;
    assert!(err.to_lowercase().contains("permissions violation") && err.contains("inventory.*"), "{err}");

    // Only inventory-service may subscribe to inventory.*: not even order-service.
    let (orders, mut errors) = connect_as(&stack.nats, "orders").await;
    let _sub = orders.subscribe("inventory.reserve").await.unwrap();
    orders.flush().await.unwrap();
    assert!(violation(&mut errors).await.to_lowercase().contains("permissions violation"));

    // inventory-service cannot forge an order event, nor read another service's consumer.
    let (inventory, mut errors) = connect_as(&stack.nats, "inventory").await;
    inventory.publish("events.orders.created.x", "{}".into()).await.unwrap();
    inventory.flush().await.unwrap();
    assert!(violation(&mut errors).await.contains("events.orders.created.x"));
    inventory.publish("$JS.API.CONSUMER.MSG.NEXT.ORDERS.email", "1".into()).await.unwrap();
    inventory.flush().await.unwrap();
    assert!(violation(&mut errors).await.to_lowercase().contains("permissions violation"));

    // Replays: no service may publish a replay (only ops), nor take another consumer's.
    let (email, mut errors) = connect_as(&stack.nats, "email").await;
    email.publish("replay.ORDERS.email.events.orders.created.x", "{}".into()).await.unwrap();
    email.flush().await.unwrap();
    assert!(violation(&mut errors).await.contains("replay.ORDERS.email.events.orders.created.x"));
    let (audit, mut errors) = connect_as(&stack.nats, "audit").await;
    audit.publish("$JS.API.CONSUMER.MSG.NEXT.REPLAY.ORDERS_email", "1".into()).await.unwrap();
    audit.flush().await.unwrap();
    assert!(violation(&mut errors).await.contains("$JS.API.CONSUMER.MSG.NEXT.REPLAY.ORDERS_email"));
    audit.publish("$JS.API.CONSUMER.CREATE.REPLAY.ORDERS_email", "{}".into()).await.unwrap();
    audit.flush().await.unwrap();
    assert!(violation(&mut errors).await.contains("$JS.API.CONSUMER.CREATE.REPLAY.ORDERS_email"));
    // ops may: a replay published by ops reaches the stream.
    let ack =
        stack.js.publish("replay.ORDERS.email.events.orders.created.x", "{}".into()).await.unwrap().await;
    assert!(ack.is_ok(), "ops publishes replays: {ack:?}");

    // A service may ping itself (container health checks), and answers as itself.
    let pong = inventory.request("$SRV.PING.inventory", "".into()).await.unwrap();
    assert!(String::from_utf8_lossy(&pong.payload).contains("\"name\":\"inventory\""));

    // No anonymous access, and a wrong password is refused.
    assert!(async_nats::connect(stack.nats.url()).await.is_err(), "anonymous clients are refused");
    let wrong =
        async_nats::ConnectOptions::with_user_and_password("ops".into(), format!("{}x", password("ops")))
            .connect(stack.nats.url())
            .await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn order_service_shares_its_breaker_under_nats_conf() {
    use clap::Parser;
    let stack = spawn_secure_stack().await;
    stack.restock("B-1", 10).await;
    // A second order-service, as `orders`, sharing its inventory breaker through BREAKERS.
    let db = switchyard::testkit::TestDatabase::sqlite();
    let mut args = vec!["order-service".to_string()];
    args.extend(stack.common(&db, "orders"));
    args.extend(
        ["--http-addr", "127.0.0.1:0", "--breaker-shared", "--instance-id", "shared"].map(String::from),
    );
    let app =
        order_service::App::build(order_service::Config::parse_from(args)).await.expect("order-service");
    let (breaker, base) = (app.breaker(), format!("http://127.0.0.1:{}/orders", app.port()));
    let running = Running::spawn(|s| async move {
        app.run_until_stopped(s).await.expect("order-service runs and stops cleanly");
    });
    // Another instance (ops writes its record) opens the breaker for a second: this one follows.
    let kv = stack.js.get_key_value(switchyard::shared_breaker::BUCKET).await.expect("bucket");
    let until_ms = (std::time::SystemTime::now() + Duration::from_secs(1))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let open = serde_json::json!({ "state": "open", "until_ms": until_ms, "by": "elsewhere" });
    kv.put("inventory", serde_json::to_vec(&open).unwrap().into()).await.expect("put");
    eventually(Duration::from_secs(10), "the breaker to open", || async {
        breaker.state() == switchyard::BreakerState::Open
    })
    .await;
    // Past it, this instance claims the probe (a compare-and-set), its order succeeds, and it
    // writes `closed` for the others: every KV operation it needs is allowed.
    eventually(Duration::from_secs(10), "an order through the probe", || async {
        let body = serde_json::json!({ "user_id": "u", "items": [{ "sku": "B-1", "quantity": 1 }] });
        stack.http.post(&base).json(&body).send().await.is_ok_and(|r| r.status() == 201)
    })
    .await;
    eventually(Duration::from_secs(10), "the closed record", || async {
        let entry = kv.get("inventory").await.ok().flatten();
        let record: Option<serde_json::Value> = entry.and_then(|v| serde_json::from_slice(&v).ok());
        record.is_some_and(|r| r["state"] == "closed" && r["by"] == "shared")
    })
    .await;
    running.stop().await;
}
