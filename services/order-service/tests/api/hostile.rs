//! A hostile HTTP client: stalled bodies, huge declared lengths, paths that are not UTF-8,
//! arrays where objects belong. Every answer is the documented JSON error, and nobody's stall
//! costs a well-behaved client anything.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestStack, order_body, spawn_stack, spawn_stack_with};

/// Sends raw bytes on a new connection and returns the stream.
async fn send_raw(app: &TestStack, bytes: &[u8]) -> TcpStream {
    let address = app.base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads one HTTP response (status, headers, body) from `stream`, within `deadline`.
async fn read_response(stream: &mut TcpStream, deadline: Duration) -> (u16, String, Value) {
    let mut raw = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if length.is_some_and(|length| body.len() >= length) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(deadline, read).await.expect("a response within the deadline");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn assert_json_error(status: u16, head: &str, body: &Value, want: u16, code: &str) {
    assert_eq!(status, want, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn stalled_bodies_hold_no_order_slot_and_get_408() {
    // Four slots; twenty clients that send headers and 10 of 100 body bytes, then stall.
    let app = spawn_stack_with(&["--http-max-in-flight", "4", "--http-body-timeout", "2s"]).await;
    app.restock("A-1", 10).await;
    let request = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user_id\"";
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(send_raw(&app, request.as_bytes()).await);
    }
    // Meanwhile, a well-behaved client places an order: it is served, not shed.
    let started = Instant::now();
    let good = app.post_order(&order_body("A-1", 1), None).await;
    let latency = started.elapsed();
    assert_eq!(good.status, 201, "a good order while 20 clients stall: {}", good.body);
    println!("20 stalled connections on 4 slots: a good order got {} in {latency:?}", good.status);
    // Each stalled client gets 408 once its body deadline passes.
    for mut stream in stalled {
        let (status, head, body) = read_response(&mut stream, Duration::from_secs(30)).await;
        assert_json_error(status, &head, &body, 408, "request_timeout");
    }
    app.settled_stock("A-1", 9).await;
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_at_once_on_every_route() {
    // Long deadlines: a server that waited for the body would not answer within the test's.
    let app = spawn_stack_with(&["--http-body-timeout", "120s", "--http-request-timeout", "120s"]).await;
    let id = uuid::Uuid::new_v4();
    for (method, path) in [
        ("POST", "/orders".to_string()),
        ("POST", format!("/orders/{id}/cancel")),
        ("GET", format!("/orders/{id}")),
        ("GET", "/health/live".to_string()),
        ("PUT", "/no/such/route".to_string()),
    ] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        );
        let mut stream = send_raw(&app, request.as_bytes()).await;
        let (status, head, body) = read_response(&mut stream, Duration::from_secs(30)).await;
        assert_json_error(status, &head, &body, 413, "payload_too_large");
    }
}

#[tokio::test]
async fn framework_errors_are_the_documented_json_on_every_route() {
    let app = spawn_stack().await;
    let cases = [
        ("GET /orders/%FF%FE HTTP/1.1", 400, "bad_request"),
        ("POST /orders/%FF%FE/cancel HTTP/1.1", 400, "bad_request"),
        ("GET /orders/%FF%FE/events HTTP/1.1", 400, "bad_request"),
        ("GET /no/such/route HTTP/1.1", 404, "not_found"),
        ("DELETE /orders HTTP/1.1", 405, "method_not_allowed"),
        ("PATCH /health/live HTTP/1.1", 405, "method_not_allowed"),
    ];
    for (line, want, code) in cases {
        let mut stream =
            send_raw(&app, format!("{line}\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
        let (status, head, body) = read_response(&mut stream, Duration::from_secs(30)).await;
        assert_json_error(status, &head, &body, want, code);
    }
    // A malformed header the application reads, and a body that is not JSON.
    let bad_key = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: \r\nContent-Length: 2\r\n\r\n{}";
    let (status, head, body) =
        read_response(&mut send_raw(&app, bad_key.as_bytes()).await, Duration::from_secs(30)).await;
    assert!(status == 400 || status == 422, "{head}\n{body}");
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
    let text = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}";
    let (status, head, body) =
        read_response(&mut send_raw(&app, text.as_bytes()).await, Duration::from_secs(30)).await;
    assert_json_error(status, &head, &body, 415, "unsupported_media_type");
}

#[tokio::test]
async fn a_json_array_is_not_an_order() {
    let app = spawn_stack().await;
    app.restock("A-1", 10).await;
    let positional = json!(["u1", null, [{ "sku": "A-1", "quantity": 1 }]]);
    let answer = app.post_order(&positional, None).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.body["error"], "validation_failed");
    assert!(answer.body["message"].as_str().unwrap().contains("expected a JSON object"), "{}", answer.body);
    for body in [json!([]), json!("order"), json!(42), json!(null)] {
        let answer = app.post_order(&body, None).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
    }
    app.settled_stock("A-1", 10).await;
}

/// True once the server has closed `stream` (a read returns end of file or an error).
async fn closed(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn connections_are_bounded_per_peer_and_stalled_headers_and_idle_ones_are_closed() {
    let app = spawn_stack_with(&[
        "--http-max-connections-per-peer",
        "3",
        "--http-header-timeout",
        "1s",
        "--http-idle-timeout",
        "2s",
    ])
    .await;
    let address = app.base_url.trim_start_matches("http://").to_string();
    // Three connections from this address are open (each answered a request, kept alive)...
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = send_raw(&app, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (status, _, _) = read_response(&mut stream, Duration::from_secs(30)).await;
        assert_eq!(status, 200);
        open.push(stream);
    }
    // ...so a fourth is closed at once, unanswered.
    let mut fourth = TcpStream::connect(&address).await.expect("connect");
    fourth.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.ok();
    let mut buffer = [0u8; 64];
    let first = tokio::time::timeout(Duration::from_secs(30), fourth.read(&mut buffer)).await;
    assert!(
        matches!(first, Ok(Ok(0)) | Ok(Err(_))),
        "a fourth connection from one peer is closed without an answer: {first:?}"
    );
    // The kept-alive ones are closed once idle, and the peer may connect again.
    for stream in &mut open {
        assert!(closed(stream, Duration::from_secs(30)).await, "an idle kept-alive connection is closed");
    }
    let mut again = send_raw(&app, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, _, _) = read_response(&mut again, Duration::from_secs(30)).await;
    assert_eq!(status, 200);
    drop(again);
    // Headers that never end: the connection is closed after the header deadline.
    let mut stalled = send_raw(&app, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(closed(&mut stalled, Duration::from_secs(30)).await, "a stalled header is closed");
}
