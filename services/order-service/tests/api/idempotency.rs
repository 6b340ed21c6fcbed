use crate::helpers::{order_body, spawn_stack};

#[tokio::test]
async fn an_idempotency_key_replay_returns_the_same_order_and_reserves_nothing_more() {
    let app = spawn_stack().await;
    app.restock("A-1", 10).await;
    let first = app.post_order(&order_body("A-1", 3), Some("key-1")).await;
    assert_eq!(first.status, 201);
    assert!(first.headers.get("idempotent-replayed").is_none());

    let replay = app.post_order(&order_body("A-1", 3), Some("key-1")).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, first.body);
    app.settled_stock("A-1", 7).await;

    // A new key is a new order.
    let other = app.post_order(&order_body("A-1", 3), Some("key-2")).await;
    assert_eq!(other.status, 201);
    assert_ne!(other.body["id"], first.body["id"]);
    app.settled_stock("A-1", 4).await;
}

#[tokio::test]
async fn a_key_reused_for_a_different_request_is_a_422() {
    let app = spawn_stack().await;
    app.restock("A-1", 10).await;
    assert_eq!(app.post_order(&order_body("A-1", 1), Some("key-1")).await.status, 201);
    let reused = app.post_order(&order_body("A-1", 2), Some("key-1")).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.body["error"], "idempotency_key_reused");
    app.settled_stock("A-1", 9).await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order() {
    let app = spawn_stack().await;
    app.restock("A-1", 100).await;
    let mut calls = Vec::new();
    for _ in 0..10 {
        let http = app.http.clone();
        let url = format!("{}/orders", app.base_url);
        calls.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .header("Idempotency-Key", "same")
                .json(&order_body("A-1", 5))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["id"].clone())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for call in calls {
        let (status, id) = call.await.unwrap();
        assert_eq!(status, 201);
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 1, "one order id for one key: {ids:?}");
    app.settled_stock("A-1", 95).await;
}

#[tokio::test]
async fn an_out_of_stock_attempt_leaves_the_key_free_for_a_retry() {
    let app = spawn_stack().await;
    app.restock("A-1", 1).await;
    assert_eq!(app.post_order(&order_body("A-1", 2), Some("retry-me")).await.status, 409);
    app.restock("A-1", 1).await;
    assert_eq!(app.post_order(&order_body("A-1", 2), Some("retry-me")).await.status, 201);
}
