//! Per-client fairness on `POST /orders`: one user (or one peer address) that floods is answered
//! 429 with `Retry-After` and a JSON body, and everybody else's orders still pass.

use serde_json::json;

use crate::helpers::spawn_stack_with;

fn body(user: &str) -> serde_json::Value {
    json!({ "user_id": user, "items": [{ "sku": "FAIR-1", "quantity": 1 }] })
}

#[tokio::test]
async fn a_flooding_user_is_limited_and_another_users_orders_still_pass() {
    // Rate 1/s, burst 5: a flood of 30 gets its 5 (and maybe one refill), no more.
    let app = spawn_stack_with(&["--rate-limit-per-user", "1", "--rate-limit-burst", "5"]).await;
    app.restock("FAIR-1", 1000).await;
    let flooder = body("flooder");
    let flood: Vec<_> = futures_util::future::join_all((0..30).map(|_| app.post_order(&flooder, None))).await;
    let accepted = flood.iter().filter(|a| a.status == 201).count();
    let limited: Vec<_> = flood.iter().filter(|a| a.status == 429).collect();
    assert!((5..=7).contains(&accepted), "the burst and no more: {accepted} accepted");
    assert_eq!(accepted + limited.len(), 30, "every other answer is 429");
    let refused = limited[0];
    assert_eq!(refused.body["error"], "rate_limited", "{}", refused.body);
    let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    // Another user is untouched by the flood.
    for _ in 0..5 {
        let answer = app.post_order(&body("patient"), None).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    let metrics = app.raw(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("switchyard_http_rate_limited_total{limit=\"user\"}")),
        "the refusals are counted"
    );
    assert!(metrics.contains("outcome=\"rate_limited\""), "and tallied as an order outcome");
}

#[tokio::test]
async fn one_peer_address_is_limited_whatever_user_it_claims() {
    let app = spawn_stack_with(&["--rate-limit-per-peer", "0.5", "--rate-limit-burst", "3"]).await;
    app.restock("FAIR-1", 1000).await;
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(app.post_order(&body(&format!("user-{n}")), None).await.status);
    }
    assert_eq!(&statuses[..3], &[201, 201, 201], "{statuses:?}");
    assert_eq!(&statuses[3..], &[429, 429], "{statuses:?}");
}
