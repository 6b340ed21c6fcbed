//! What an operator sees of a stack `switchyard up` started: one order's trace across the four
//! service processes (exported with OTLP/HTTP to a receiver in this test), and every service's
//! `/metrics`, parsed by the Python Prometheus client and checked against the orders placed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;
use switchyard::testkit::eventually;

use crate::{Up, field, number_after};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    /// The resource's `service.version`.
    version: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    millis: f64,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// An OTLP/HTTP traces receiver (protobuf) on a free port; what it gets lands in the vector.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
                let mut received = Vec::new();
                for resource in request.resource_spans {
                    let attribute = |key: &str| {
                        resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == key)
                            .map(|kv| text(&kv.value))
                            .unwrap_or_default()
                    };
                    let (service, version) = (attribute("service.name"), attribute("service.version"));
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            received.push(Span {
                                service: service.clone(),
                                version: version.clone(),
                                name: span.name.clone(),
                                kind: span.kind,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                millis: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)
                                    as f64
                                    / 1e6,
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                                    .collect(),
                            });
                        }
                    }
                }
                sink.lock().unwrap().extend(received);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, spans)
}

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// The spans of `trace` as an indented tree, for the failure message (and the record).
fn tree(spans: &[Span], parent: &str, depth: usize, out: &mut String) {
    for span in spans.iter().filter(|s| s.parent == parent) {
        out.push_str(&format!(
            "{}{} [{}] {:.2} ms\n",
            "  ".repeat(depth),
            span.name,
            span.service,
            span.millis
        ));
        tree(spans, &span.span_id, depth + 1, out);
    }
}

#[tokio::test]
async fn one_order_is_one_trace_across_every_service_process() {
    let (endpoint, received) = otlp_receiver().await;
    let dir = switchyard::testkit::temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start_with_env(
        &data_dir,
        &["--otlp-endpoint", &endpoint],
        // Export every 200 ms instead of every 5 s; JSON logs.
        &[("OTEL_BSP_SCHEDULE_DELAY", "200"), ("LOG_FORMAT", "json")],
    )
    .await;
    assert!(startup.iter().any(|l| l.contains("traces") && l.contains(&endpoint)), "{startup:?}");
    let ready = startup.last().unwrap();
    let (nats_url, http_url) = (field(ready, "nats_url"), field(ready, "http_url"));

    let client = crate::ops_client(&nats_url).await;
    let restocked = client
        .request(contracts::names::INVENTORY_RESTOCK, r#"{"sku":"TRACE-1","quantity":5}"#.into())
        .await
        .unwrap();
    assert!(restocked.headers.is_none(), "{:?}", restocked);

    // The caller's trace is continued: its trace id, its span as the HTTP span's parent.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(format!("{http_url}/orders"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&serde_json::json!({"user_id": "tracer", "email": "tracer@example.com", "items": [{"sku": "TRACE-1", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);

    let of_trace = || -> Vec<Span> {
        received.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    };
    // The whole lifecycle: audit records the created, stock_committed and confirmation_sent events.
    let processed = |spans: &[Span]| {
        ["process inventory", "process email", "publish confirmation_sent"]
            .iter()
            .all(|name| spans.iter().any(|s| s.name == *name))
            && spans.iter().filter(|s| s.name == "process audit").count() == 3
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = of_trace();
        if processed(&spans) && spans.iter().any(|s| s.name == "inventory.reserve" && s.kind == SERVER) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let mut shown = String::new();
            tree(&spans, caller_span, 0, &mut shown);
            let all: Vec<String> =
                spans.iter().map(|s| format!("{} [{}] parent {}", s.name, s.service, s.parent)).collect();
            panic!("not every service's span arrived within 30 s:\n{shown}\nall:\n{}", all.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = of_trace();
    let mut shown = String::new();
    tree(&spans, caller_span, 0, &mut shown);
    println!("trace {trace_id}:\n{shown}");

    let one = |name: &str, kind: Option<i32>, service: &str| -> Span {
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == name && s.service == service && kind.is_none_or(|k| s.kind == k))
            .collect();
        assert!(!found.is_empty(), "no {name} span of {service}:\n{shown}");
        found[0].clone()
    };
    assert!(spans.iter().all(|s| s.version == env!("CARGO_PKG_VERSION")), "service.version on every span");
    let http = one("POST /orders", Some(SERVER), "order-service");
    assert_eq!(http.parent, caller_span, "{shown}");
    assert_eq!(http.attributes.get("http.response.status_code").map(String::as_str), Some("201"), "{shown}");
    let breaker = one("breaker inventory", None, "order-service");
    assert_eq!(breaker.parent, http.span_id, "{shown}");
    assert_eq!(breaker.attributes.get("breaker.outcome").map(String::as_str), Some("success"), "{shown}");
    let call = one("inventory.reserve", Some(CLIENT), "order-service");
    assert_eq!(call.parent, breaker.span_id, "{shown}");
    assert_eq!(call.attributes.get("outcome").map(String::as_str), Some("ok"), "{shown}");
    let handler = one("inventory.reserve", Some(SERVER), "inventory-service");
    assert_eq!(handler.parent, call.span_id, "the handler is the call's child, across processes:\n{shown}");
    let publish = one("publish created", Some(PRODUCER), "order-service");
    assert_eq!(publish.parent, http.span_id, "the outbox keeps the request's context:\n{shown}");
    for (consumer, service) in
        [("inventory", "inventory-service"), ("email", "email-service"), ("audit", "audit-service")]
    {
        let process: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == format!("process {consumer}") && s.service == service && s.kind == CONSUMER)
            .collect();
        assert!(
            process.iter().any(|s| s.parent == publish.span_id),
            "{consumer} processes the created event as the publish's child:\n{shown}"
        );
    }
    // Lifecycle events the consumers publish continue the trace from their process span.
    let parent_name = |span: &Span| {
        spans.iter().find(|s| s.span_id == span.parent).map(|s| s.name.clone()).unwrap_or_default()
    };
    let committed = one("publish stock_committed", Some(PRODUCER), "inventory-service");
    assert_eq!(parent_name(&committed), "process inventory", "{shown}");
    let confirmed = one("publish confirmation_sent", Some(PRODUCER), "email-service");
    assert_eq!(parent_name(&confirmed), "process email", "{shown}");
    // audit processes each of the three events as its publish's child.
    let mut audited: Vec<String> =
        spans.iter().filter(|s| s.name == "process audit").map(parent_name).collect();
    audited.sort();
    assert_eq!(
        audited,
        ["publish confirmation_sent", "publish created", "publish stock_committed"],
        "{shown}"
    );

    // A log line written while handling an event carries that event's trace: a poison event
    // in a known trace is dead-lettered, and the warning says which trace.
    let poison_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{poison_trace}-b7ad6b7169203331-01").as_str());
    let js = async_nats::jetstream::new(client);
    js.publish_with_headers("events.orders.created.poison", headers, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let log_path = data_dir.join("logs").join("inventory-service.log");
    let mut line = Value::Null;
    eventually(Duration::from_secs(20), "the dead-letter warning in inventory-service's log", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        line = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "message dead-lettered")
            .unwrap_or(Value::Null);
        std::future::ready(!line.is_null())
    })
    .await;
    assert_eq!(line["trace_id"], poison_trace, "{line}");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    // The dead letter keeps the trace.
    let letter = js
        .get_stream("DLQ")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("dlq.ORDERS.inventory")
        .await
        .expect("inventory's dead letter");
    let traceparent = letter.headers.get("traceparent").map(|v| v.as_str().to_string()).unwrap_or_default();
    assert!(traceparent.contains(poison_trace), "{traceparent}");
    drop(up);
}

/// The samples of one scrape, as prometheus_client parsed them.
struct Scraped(Vec<Value>);

impl Scraped {
    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
            .map(|s| s["value"].as_f64().unwrap_or(0.0))
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s["name"] == name)
    }

    fn family_type(&self, family: &str) -> Option<String> {
        self.0
            .iter()
            .find(|s| s["family"] == family)
            .map(|s| s["type"].as_str().unwrap_or_default().to_string())
    }
}

/// Scrapes every endpoint with the Python client's parser.
async fn scrape(endpoints: &[(String, String)]) -> Result<HashMap<String, Scraped>, String> {
    let script = switchyard::testkit::workspace_root().join("tests/interop/scrape_metrics.py");
    let output = tokio::process::Command::new(switchyard::testkit::python())
        .arg(script)
        .args(endpoints.iter().map(|(service, url)| format!("{service}={url}")))
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let parsed: HashMap<String, Vec<Value>> =
        serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    Ok(parsed.into_iter().map(|(service, samples)| (service, Scraped(samples))).collect())
}

#[tokio::test]
async fn every_service_serves_metrics_that_add_up_to_the_orders_placed() {
    let dir = switchyard::testkit::temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start(&data_dir, &[]).await;
    // `up` says where each service's /metrics is.
    let endpoints: Vec<(String, String)> = startup
        .iter()
        .filter_map(|line| line.trim_start().strip_prefix("metrics"))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            (words.next().unwrap().to_string(), words.next().unwrap().to_string())
        })
        .collect();
    let services: Vec<&str> = endpoints.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        services,
        ["inventory-service", "email-service", "audit-service", "order-service"],
        "{startup:?}"
    );

    let (demo, ok) = up.run(&["demo", "--orders", "40", "--quiet"]).await;
    assert!(ok, "{demo}");
    let (accepted, mut out_of_stock) =
        (number_after(&demo, "accepted") as f64, number_after(&demo, "out of stock") as f64);
    assert_eq!(accepted + out_of_stock, 40.0, "{demo}");
    // And one order that cannot be served: 1 unit in stock, 2 asked.
    let ready = startup.last().unwrap();
    let client = crate::ops_client(&field(ready, "nats_url")).await;
    client
        .request(contracts::names::INVENTORY_RESTOCK, r#"{"sku":"SCARCE-1","quantity":1}"#.into())
        .await
        .unwrap();
    let refused = reqwest::Client::new()
        .post(format!("{}/orders", field(ready, "http_url")))
        .json(&serde_json::json!({"user_id": "u", "items": [{"sku": "SCARCE-1", "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    out_of_stock += 1.0;
    let placed = accepted + out_of_stock;

    // The consumers may still be acking the last events, the relays publishing: scrape until the
    // figures settle.
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let scraped = loop {
        let scraped = scrape(&endpoints).await.expect("every /metrics parses");
        let acks = |service: &str, consumer: &str| {
            scraped[service].sum("switchyard_consumer_acks_total", &[("consumer", consumer)])
        };
        let published = |service: &str| scraped[service].sum("switchyard_outbox_published_total", &[]);
        // Inventory's relay publishes the reservations' expiry timers with its next round.
        let settled = acks("inventory-service", "inventory") == accepted
            && acks("email-service", "email") == accepted
            && acks("audit-service", "audit") == 3.0 * accepted
            && published("order-service") == accepted
            && published("inventory-service") == 2.0 * accepted
            && published("email-service") == accepted;
        if settled {
            break scraped;
        }
        last = format!(
            "acks inventory {} email {} audit {}",
            acks("inventory-service", "inventory"),
            acks("email-service", "email"),
            acks("audit-service", "audit")
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumers' acks never matched the orders: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = last;

    let orders = &scraped["order-service"];
    assert_eq!(orders.sum("switchyard_orders_total", &[("outcome", "accepted")]), accepted);
    assert_eq!(orders.sum("switchyard_orders_total", &[("outcome", "out_of_stock")]), out_of_stock);
    let post = [("method", "POST"), ("route", "/orders")];
    assert_eq!(
        orders.sum("switchyard_http_request_duration_seconds_count", &[post[0], post[1], ("status", "201")]),
        accepted
    );
    assert_eq!(
        orders.sum("switchyard_http_request_duration_seconds_count", &[post[0], post[1], ("status", "409")]),
        out_of_stock
    );
    // Histograms with buckets: the +Inf bucket holds every request.
    assert_eq!(
        orders.sum(
            "switchyard_http_request_duration_seconds_bucket",
            &[post[0], post[1], ("status", "201"), ("le", "+Inf")]
        ),
        accepted
    );
    assert_eq!(orders.family_type("switchyard_http_request_duration_seconds").as_deref(), Some("histogram"));
    // Every reserve the client sent, the inventory endpoint handled.
    let sent =
        orders.sum("switchyard_client_request_duration_seconds_count", &[("subject", "inventory.reserve")]);
    assert_eq!(sent, placed);
    let inventory = &scraped["inventory-service"];
    assert_eq!(
        inventory
            .sum("switchyard_micro_request_duration_seconds_count", &[("endpoint", "inventory.reserve")]),
        sent
    );
    assert_eq!(
        inventory.sum(
            "switchyard_micro_request_duration_seconds_count",
            &[("endpoint", "inventory.reserve"), ("status", "ok")]
        ),
        placed,
        "out of stock is an answer, not an error"
    );
    assert_eq!(orders.sum("switchyard_breaker_state", &[("breaker", "inventory")]), 0.0);
    assert_eq!(
        orders.sum("switchyard_breaker_calls_total", &[("breaker", "inventory"), ("outcome", "success")]),
        placed
    );
    // Each order's created event from order-service, stock_committed and the reservation's
    // expiry timer (scheduled on TIMERS) from inventory, confirmation_sent from email: all
    // published, nothing left behind.
    for (service, per_order) in [("order-service", 1.0), ("inventory-service", 2.0), ("email-service", 1.0)] {
        let scraped = &scraped[service];
        assert_eq!(scraped.sum("switchyard_outbox_published_total", &[]), accepted * per_order, "{service}");
        assert_eq!(scraped.sum("switchyard_outbox_backlog_rows", &[]), 0.0, "{service}");
        assert_eq!(scraped.sum("switchyard_outbox_oldest_age_seconds", &[]), 0.0, "{service}");
    }
    for (service, consumer, events) in [
        ("inventory-service", "inventory", accepted),
        ("email-service", "email", accepted),
        ("audit-service", "audit", 3.0 * accepted),
    ] {
        let scraped = &scraped[service];
        let label = [("consumer", consumer)];
        assert_eq!(scraped.sum("switchyard_consumer_deliveries_total", &label), events, "{service}");
        assert_eq!(scraped.sum("switchyard_consumer_naks_total", &label), 0.0, "{service}");
        assert_eq!(scraped.sum("switchyard_consumer_pending_messages", &label), 0.0, "{service}");
        assert_eq!(scraped.sum("switchyard_consumer_ack_pending_messages", &label), 0.0, "{service}");
        assert_eq!(scraped.sum("switchyard_dlq_messages", &label), 0.0, "{service}");
        assert!(scraped.has("switchyard_consumer_batch_size_bucket"), "{service}");
        assert_eq!(
            scraped.sum("switchyard_consumer_batch_size_sum", &label),
            events,
            "every delivery is in one batch: {service}"
        );
    }
    drop(up);
}
