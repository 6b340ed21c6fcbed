use reqwest::Method;
use serde_json::json;

use crate::helpers::{answer, spawn_stack};

#[tokio::test]
async fn malformed_json_is_a_400_with_a_json_body() {
    let app = spawn_stack().await;
    let response = app
        .raw(Method::POST, "/orders")
        .header("content-type", "application/json")
        .body("{\"user_id\": ")
        .send()
        .await
        .unwrap();
    let answer = answer(response).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "bad_request");
    assert!(answer.body["message"].as_str().unwrap().starts_with("invalid json"), "{}", answer.body);
}

#[tokio::test]
async fn well_formed_json_that_breaks_the_contract_is_a_422_naming_the_field() {
    let app = spawn_stack().await;
    let cases = [
        (
            json!({ "user_id": "u1", "items": [{ "sku": "A-1", "quantity": 0 }] }),
            "items[0].quantity must be between 1 and 1000000",
        ),
        (json!({ "user_id": "u1", "items": [] }), "items must not be empty"),
        (json!({ "user_id": "", "items": [{ "sku": "A-1", "quantity": 1 }] }), "user_id must not be empty"),
        (
            json!({ "user_id": "u1", "items": [{ "sku": "A 1", "quantity": 1 }] }),
            "items[0].sku must not contain whitespace",
        ),
        (
            json!({ "user_id": "u1", "email": "x", "items": [{ "sku": "A", "quantity": 1 }] }),
            "email must be an address like user@example.com",
        ),
    ];
    for (body, message) in cases {
        let answer = app.post_order(&body, None).await;
        assert_eq!(answer.status, 422, "{body}");
        assert_eq!(answer.body["error"], "validation_failed");
        assert_eq!(answer.body["message"], message);
    }
    // Wrong types and missing fields are 422 too.
    for body in [
        json!({ "items": [{ "sku": "A", "quantity": 1 }] }),
        json!({ "user_id": "u1", "items": [{ "sku": "A", "quantity": -1 }] }),
    ] {
        let answer = app.post_order(&body, None).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
    }
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415_and_an_oversized_one_is_413() {
    let app = spawn_stack().await;
    let plain = answer(app.raw(Method::POST, "/orders").body("{}").send().await.unwrap()).await;
    assert_eq!(plain.status, 415);
    assert_eq!(plain.body["error"], "unsupported_media_type");

    let huge = format!("{{\"user_id\":\"{}\"}}", "x".repeat(100 * 1024));
    let big = answer(
        app.raw(Method::POST, "/orders")
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.body["error"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let app = spawn_stack().await;
    let missing = app.get("/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"], "not_found");
    let wrong = answer(app.raw(Method::DELETE, "/orders").send().await.unwrap()).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.body["error"], "method_not_allowed");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400() {
    let app = spawn_stack().await;
    let answer =
        app.post_order(&json!({ "user_id": "u1", "items": [{ "sku": "A", "quantity": 1 }] }), Some("")).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["message"].as_str().unwrap().contains("Idempotency-Key"), "{}", answer.body);
}
