//! Fuzzing every route of the HTTP API: random methods, paths (with bytes that are not UTF-8),
//! headers and bodies, and structure-aware mutations of valid orders, against a real stack. No
//! request gets a 5xx (inventory is up), and every error answer is the documented JSON.
//! `FUZZ_CASES` sets the number of requests (the suite sends 200).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::spawn_stack;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

/// One request: method, path, content type, idempotency key, body.
#[derive(Debug, Clone)]
struct Fuzzed {
    method: &'static str,
    path: String,
    content_type: Option<String>,
    key: Option<String>,
    body: Vec<u8>,
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("6ef1143e-b1bb-5d80-bf8d-a5636e9cdafa".to_string()),
        Just(uuid::Uuid::nil().to_string()),
        Just("%FF%FE".to_string()),
        Just("%00".to_string()),
        Just("..".to_string()),
        "[a-zA-Z0-9%._~-]{0,40}",
        Just("a".repeat(5000)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/orders".to_string()),
        segment().prop_map(|s| format!("/orders/{s}")),
        segment().prop_map(|s| format!("/orders/{s}/cancel")),
        segment().prop_map(|s| format!("/orders/{s}/events")),
        Just("/health/live".to_string()),
        Just("/health/ready".to_string()),
        (segment(), segment()).prop_map(|(a, b)| format!("/{a}/{b}")),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(json!("A-1")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid order with one field replaced, or something else entirely.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let order =
        json!({ "user_id": "u1", "email": "u1@example.com", "items": [{ "sku": "A-1", "quantity": 1 }] });
    let field = prop_oneof![Just("user_id"), Just("email"), Just("items"), Just("reason"), Just("other")];
    prop_oneof![
        (field, json_value()).prop_map(move |(f, v)| {
            let mut order = order.clone();
            order[f] = v;
            serde_json::to_vec(&order).unwrap_or_default()
        }),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        proptest::collection::vec(any::<u8>(), 0..300),
        Just(Vec::new()),
    ]
}

fn fuzzed() -> impl Strategy<Value = Fuzzed> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("PATCH")],
        path(),
        proptest::option::of(prop_oneof![
            Just("application/json".to_string()),
            Just("application/merge-patch+json".to_string()),
            Just("text/plain".to_string()),
            "[ -~]{0,30}",
        ]),
        proptest::option::of("[ -~]{0,300}"),
        body(),
    )
        .prop_map(|(method, path, content_type, key, body)| Fuzzed {
            method,
            path,
            content_type,
            key,
            body,
        })
}

#[test]
fn no_request_gets_a_5xx_and_every_error_is_json() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let app = runtime.block_on(async {
        let app = spawn_stack().await;
        app.restock("A-1", 1_000_000).await;
        app
    });
    let address = app.base_url.trim_start_matches("http://").to_string();
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    runner
        .run(&fuzzed(), |request| {
            let (status, head, body) = runtime.block_on(send(&address, &request));
            prop_assert!(status != 0, "no answer to {request:?}:\n{head}");
            prop_assert!(status < 500, "{status} for {request:?}:\n{head}\n{body}");
            if status >= 400 {
                let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                prop_assert!(
                    error["error"].is_string() && error["message"].is_string(),
                    "{status} without the JSON error body for {request:?}:\n{head}\n{body}"
                );
            }
            Ok(())
        })
        .expect("every fuzzed request is answered without a 5xx, errors in JSON");
    drop(runtime);
}

/// Sends the request raw (any path bytes, any header) and reads the status, head and body.
async fn send(address: &str, request: &Fuzzed) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return (0, String::new(), String::new());
    };
    let mut head =
        format!("{} {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", request.method, request.path);
    if let Some(content_type) = &request.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(key) = &request.key {
        head.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", request.body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&request.body);
    if stream.write_all(&bytes).await.is_err() {
        return (0, String::new(), String::new());
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut raw)).await;
    if read.is_err() {
        return (0, "no answer within 30 s".into(), String::new());
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
