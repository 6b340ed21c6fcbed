use bytes::Bytes;
use contracts::names;
use contracts::{GetOrderRequest, Order};
use serde_json::json;
use switchyard::client::RequestError;
use uuid::Uuid;

use crate::helpers::{order_body, spawn_stack, spawn_stack_on_postgres};

#[tokio::test]
async fn an_order_in_stock_is_created_reserved_and_readable() {
    let app = spawn_stack().await;
    app.restock("A-1", 10).await;

    let created = app.post_order(&order_body("A-1", 2), None).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "accepted");
    assert_eq!(created.body["user_id"], "u1");
    assert_eq!(created.body["items"], json!([{ "sku": "A-1", "quantity": 2 }]));
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.headers["location"], format!("/orders/{id}").as_str());
    app.settled_stock("A-1", 8).await;

    let fetched = app.get(&format!("/orders/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, created.body);
}

#[tokio::test]
async fn an_order_out_of_stock_gets_409_with_the_missing_skus_and_reserves_nothing() {
    let app = spawn_stack().await;
    app.restock("A-1", 1).await;
    app.restock("B-2", 1).await;
    let body = json!({ "user_id": "u1", "items": [{ "sku": "A-1", "quantity": 1 }, { "sku": "B-2", "quantity": 2 }] });
    let answer = app.post_order(&body, None).await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.body["error"], "out_of_stock");
    assert_eq!(answer.body["unavailable_ids"], json!(["B-2"]));
    app.settled_stock("A-1", 1).await;
    app.settled_stock("B-2", 1).await;
}

#[tokio::test]
async fn an_order_for_an_unknown_sku_gets_422_unknown_sku_not_out_of_stock() {
    let app = spawn_stack().await;
    app.restock("A-1", 1).await;
    app.restock("B-2", 1).await;
    // One known line in stock, one known but short, one unknown: the unknown one decides.
    let body = json!({ "user_id": "u1", "items": [
        { "sku": "A-1", "quantity": 1 }, { "sku": "B-2", "quantity": 5 }, { "sku": "NOPE", "quantity": 1 }
    ] });
    let answer = app.post_order(&body, None).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.body["error"], "unknown_sku");
    assert_eq!(answer.body["unknown_ids"], json!(["NOPE"]));
    assert!(answer.body["message"].as_str().unwrap().contains("NOPE"), "{}", answer.body);
    app.settled_stock("A-1", 1).await;
    app.settled_stock("B-2", 1).await;
}

#[tokio::test]
async fn an_unknown_order_is_404_and_a_malformed_id_is_400() {
    let app = spawn_stack().await;
    let missing = app.get(&format!("/orders/{}", Uuid::new_v4())).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"], "not_found");
    let malformed = app.get("/orders/not-a-uuid").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.body["error"], "bad_request");
}

#[tokio::test]
async fn orders_get_over_nats_returns_the_order_or_a_404_micro_error() {
    let app = spawn_stack().await;
    app.restock("A-1", 1).await;
    let created = app.post_order(&order_body("A-1", 1), None).await;
    let id: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();

    let order: Order =
        app.requests.request(names::ORDERS_GET, &GetOrderRequest { order_id: id }).await.unwrap();
    assert_eq!(order.id, id);
    assert_eq!(order.email.as_deref(), Some("u1@example.com"));

    let err = app
        .requests
        .request::<_, Order>(names::ORDERS_GET, &GetOrderRequest { order_id: Uuid::new_v4() })
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Service { code: 404, .. }), "{err:?}");
    let err = app
        .requests
        .request_raw(names::ORDERS_GET, Bytes::from_static(b"[]"), std::time::Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Service { code: 400, .. }), "{err:?}");
}

#[tokio::test]
async fn health_reports_ready_and_metrics_count_orders_and_breaker_state() {
    let app = spawn_stack().await;
    assert_eq!(app.get("/health/live").await.status, 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["nats"], "connected");

    app.restock("A-1", 1).await;
    assert_eq!(app.post_order(&order_body("A-1", 1), None).await.status, 201);
    assert_eq!(app.post_order(&order_body("A-1", 1), None).await.status, 409);
    let metrics =
        app.http.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    // The recorder is the process's: other tests here count too, so "at least".
    let value = |name: &str, labels: &[&str]| sample(&metrics, name, labels).unwrap_or(0.0);
    assert!(value("switchyard_orders_total", &["outcome=\"accepted\""]) >= 1.0, "{metrics}");
    assert!(value("switchyard_orders_total", &["outcome=\"out_of_stock\""]) >= 1.0, "{metrics}");
    assert!(sample(&metrics, "switchyard_breaker_state", &["breaker=\"inventory\""]).is_some(), "{metrics}");
    let created = ["method=\"POST\"", "route=\"/orders\"", "status=\"201\""];
    assert!(value("switchyard_http_request_duration_seconds_count", &created) >= 1.0, "{metrics}");
    // A histogram with buckets, not only a sum.
    let inf = [created.as_slice(), &["le=\"+Inf\""]].concat();
    assert!(value("switchyard_http_request_duration_seconds_bucket", &inf) >= 1.0, "{metrics}");
    let reserve = ["subject=\"inventory.reserve\"", "outcome=\"ok\""];
    assert!(value("switchyard_client_request_duration_seconds_count", &reserve) >= 1.0, "{metrics}");
    assert!(sample(&metrics, "switchyard_outbox_backlog_rows", &[]).is_some(), "{metrics}");
}

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|label| rest.contains(label))).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn readiness_fails_when_nats_is_gone() {
    let mut app = spawn_stack().await;
    app.nats.kill();
    switchyard::testkit::eventually(
        std::time::Duration::from_secs(10),
        "readiness to report 503",
        || async { app.get("/health/ready").await.status == 503 },
    )
    .await;
    // Still alive, just not ready.
    assert_eq!(app.get("/health/live").await.status, 200);
}

#[tokio::test]
async fn orders_work_the_same_on_postgres() {
    let app = spawn_stack_on_postgres().await;
    app.restock("A-1", 3).await;
    let created = app.post_order(&order_body("A-1", 3), Some("pg-key-1")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let replay = app.post_order(&order_body("A-1", 3), Some("pg-key-1")).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.body["id"], created.body["id"]);
    assert_eq!(app.post_order(&order_body("A-1", 1), None).await.status, 409);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/orders/{id}")).await.body, created.body);
    app.settled_stock("A-1", 0).await;
}

#[tokio::test]
async fn shutdown_drains_and_the_port_stops_answering() {
    let mut app = spawn_stack().await;
    app.restock("A-1", 1).await;
    assert_eq!(app.post_order(&order_body("A-1", 1), None).await.status, 201);
    app.orders.take().unwrap().stop().await;
    let result = app.http.get(format!("{}/health/live", app.base_url)).send().await;
    assert!(result.is_err(), "the HTTP port is closed after shutdown");
}
