//! The permission matrix: every user of nats.conf times every class of operation, against a real
//! nats-server running the repo's nats.conf with the whole stack up. Each cell is allowed exactly
//! where the README's permission table says, and denied everywhere else.
//!
//! How a cell is decided, without sleeps: the operation is sent, then a marker (a subscription
//! to `matrix.marker.<n>`, which no user may make), then a flush. The server answers in order, so
//! the marker's permission violation arrives after the operation's, if there is one: the
//! operation is denied exactly when its violation comes before the marker's.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::helpers::{Stack, connect_as, password, spawn_secure_stack};

/// The users with a password in nats.conf (ops last: its allowed operations delete the scratch
/// stream the others try to touch).
const USERS: [&str; 7] = ["inventory", "orders", "email", "audit", "partner", "loyalty", "ops"];

/// What an operation does on the wire.
enum Wire {
    /// Publish (with a reply subject) to the subject.
    Publish(String, Bytes),
    /// Subscribe to the subject.
    Subscribe(String),
}

/// One cell's operation.
struct Op {
    /// The class of operation, as the matrix names it.
    class: &'static str,
    wire: Wire,
}

impl Op {
    fn publish(class: &'static str, subject: impl Into<String>, body: impl Into<Bytes>) -> Op {
        Op { class, wire: Wire::Publish(subject.into(), body.into()) }
    }

    fn subscribe(class: &'static str, subject: impl Into<String>) -> Op {
        Op { class, wire: Wire::Subscribe(subject.into()) }
    }

    fn subject(&self) -> &str {
        match &self.wire {
            Wire::Publish(subject, _) | Wire::Subscribe(subject) => subject,
        }
    }
}

/// The durable a user owns on ORDERS, if any.
fn own_durable(user: &str) -> Option<&'static str> {
    match user {
        "inventory" => Some("inventory"),
        "email" => Some("email"),
        "audit" => Some("audit"),
        "partner" => Some("partner"),
        "loyalty" => Some("loyalty"),
        _ => None,
    }
}

/// Another user's durable (ops, which may touch any, is given the scratch consumer instead).
fn other_durable(user: &str) -> (&'static str, &'static str) {
    match user {
        "ops" => ("SCRATCH", "scratch"),
        "email" => ("ORDERS", "inventory"),
        _ => ("ORDERS", "email"),
    }
}

/// Whether the README's table allows `user` the operation of class `class`.
fn allowed(user: &str, class: &str) -> bool {
    let service = matches!(user, "inventory" | "orders" | "email" | "audit" | "loyalty");
    let owns_durable = own_durable(user).is_some();
    match class {
        "call inventory.check" => matches!(user, "partner" | "loyalty" | "ops"),
        "call inventory.reserve" => matches!(user, "orders" | "ops"),
        "call orders.get" => matches!(user, "partner" | "ops"),
        "publish created event" => matches!(user, "orders" | "ops"),
        "publish stock_committed event" => matches!(user, "inventory" | "ops"),
        "publish confirmation_sent event" => matches!(user, "email" | "ops"),
        "publish email's dead letter" => matches!(user, "email" | "ops"),
        "publish a replay" => user == "ops",
        "write the inventory breaker ($KV.BREAKERS.inventory)" => matches!(user, "orders" | "ops"),
        "serve inventory.*" => user == "inventory",
        "serve orders.*" => user == "orders",
        "subscribe to order events" => user == "ops",
        "subscribe to every reply (_INBOX.>)" => false,
        "subscribe to another user's replies" => false,
        "subscribe to its own replies" => true,
        "discover every service ($SRV.PING)" => matches!(user, "partner" | "ops"),
        "ping inventory ($SRV.PING.inventory)" => matches!(user, "inventory" | "partner" | "ops"),
        "answer discovery (subscribe $SRV.PING)" => service,
        "stream info ORDERS" => true,
        "stream create" | "stream update" | "stream purge" | "stream delete" => user == "ops",
        "consumer create own durable"
        | "consumer pull own durable"
        | "consumer ack own durable"
        | "consumer info own durable" => owns_durable,
        "consumer delete own durable" => false,
        "consumer re-point another durable"
        | "consumer delete another durable"
        | "consumer pull another durable"
        | "consumer ack another durable"
        | "consumer info another durable" => user == "ops",
        other => panic!("no expectation for {other}"),
    }
}

/// `$JS.API.CONSUMER.CREATE.<stream>.<durable>[.<filter>]`, as clients send it.
fn create_subject(stream: &str, config: &pull::Config) -> String {
    let durable = config.durable_name.clone().unwrap_or_default();
    if config.filter_subject.is_empty() {
        format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}")
    } else {
        format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.{}", config.filter_subject)
    }
}

fn create_body(stream: &str, config: &pull::Config) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({ "stream_name": stream, "config": config })).expect("config JSON"))
}

/// The operations tried as `user`, in order (consumer operations before stream deletion).
async fn operations(user: &str, js: &jetstream::Context) -> Vec<Op> {
    let mut ops = vec![
        Op::publish("call inventory.check", "inventory.check", r#"{"items":[{"sku":"M","quantity":1}]}"#),
        Op::publish("call inventory.reserve", "inventory.reserve", "{}"),
        Op::publish(
            "call orders.get",
            "orders.get",
            r#"{"order_id":"00000000-0000-0000-0000-000000000000"}"#,
        ),
        Op::publish("publish created event", "events.orders.created.matrix", "{not json"),
        Op::publish("publish stock_committed event", "events.orders.stock_committed.matrix", "{not json"),
        Op::publish("publish confirmation_sent event", "events.orders.confirmation_sent.matrix", "{not json"),
        Op::publish("publish email's dead letter", "dlq.ORDERS.email", "{not json"),
        Op::publish("publish a replay", "replay.ORDERS.email.events.orders.created.matrix", "{not json"),
        Op::publish("write the inventory breaker ($KV.BREAKERS.inventory)", "$KV.BREAKERS.inventory", "{}"),
        Op::subscribe("serve inventory.*", "inventory.*"),
        Op::subscribe("serve orders.*", "orders.*"),
        Op::subscribe("subscribe to order events", "events.orders.>"),
        Op::subscribe("subscribe to every reply (_INBOX.>)", "_INBOX.>"),
        Op::subscribe(
            "subscribe to another user's replies",
            if user == "ops" { "_INBOX_orders.>" } else { "_INBOX_ops.>" },
        ),
        Op::subscribe("subscribe to its own replies", format!("_INBOX_{user}.>")),
        Op::publish("discover every service ($SRV.PING)", "$SRV.PING", ""),
        Op::publish("ping inventory ($SRV.PING.inventory)", "$SRV.PING.inventory", ""),
        Op::subscribe("answer discovery (subscribe $SRV.PING)", "$SRV.PING"),
        Op::publish("stream info ORDERS", "$JS.API.STREAM.INFO.ORDERS", ""),
    ];
    let orders = js.get_stream("ORDERS").await.expect("ORDERS");
    if let Some(durable) = own_durable(user) {
        let config = orders.consumer_info(durable).await.expect("own durable").config.clone();
        let config = pull::Config {
            durable_name: config.durable_name,
            filter_subject: config.filter_subject,
            filter_subjects: config.filter_subjects,
            ack_policy: config.ack_policy,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            max_ack_pending: config.max_ack_pending,
            deliver_policy: config.deliver_policy,
            description: config.description,
            ..Default::default()
        };
        ops.push(Op::publish(
            "consumer create own durable",
            create_subject("ORDERS", &config),
            create_body("ORDERS", &config),
        ));
        ops.push(Op::publish(
            "consumer pull own durable",
            format!("$JS.API.CONSUMER.MSG.NEXT.ORDERS.{durable}"),
            r#"{"batch":1,"no_wait":true}"#,
        ));
        ops.push(Op::publish(
            "consumer ack own durable",
            format!("$JS.ACK.ORDERS.{durable}.1.999999.999999.0.0"),
            "+ACK",
        ));
        ops.push(Op::publish(
            "consumer info own durable",
            format!("$JS.API.CONSUMER.INFO.ORDERS.{durable}"),
            "",
        ));
        ops.push(Op::publish(
            "consumer delete own durable",
            format!("$JS.API.CONSUMER.DELETE.ORDERS.{durable}"),
            "",
        ));
    }
    let (stream, other) = other_durable(user);
    let repointed = pull::Config {
        durable_name: Some(other.to_string()),
        filter_subject: if stream == "SCRATCH" {
            "scratch.>".into()
        } else {
            "events.orders.created.matrix".into()
        },
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    ops.extend([
        Op::publish(
            "consumer re-point another durable",
            create_subject(stream, &repointed),
            create_body(stream, &repointed),
        ),
        Op::publish(
            "consumer pull another durable",
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{other}"),
            r#"{"batch":1,"no_wait":true}"#,
        ),
        Op::publish(
            "consumer ack another durable",
            format!("$JS.ACK.{stream}.{other}.1.999999.999999.0.0"),
            "+ACK",
        ),
        Op::publish("consumer info another durable", format!("$JS.API.CONSUMER.INFO.{stream}.{other}"), ""),
        Op::publish(
            "consumer delete another durable",
            format!("$JS.API.CONSUMER.DELETE.{stream}.{other}"),
            "",
        ),
    ]);
    let scratch =
        json!({ "name": "SCRATCH", "subjects": ["scratch.>"], "storage": "memory", "num_replicas": 1 });
    let created = json!({ "name": format!("MATRIX_{user}"), "subjects": [format!("matrix.{user}.>")], "storage": "memory", "num_replicas": 1 });
    ops.extend([
        Op::publish("stream create", format!("$JS.API.STREAM.CREATE.MATRIX_{user}"), created.to_string()),
        Op::publish("stream update", "$JS.API.STREAM.UPDATE.SCRATCH", scratch.to_string()),
        Op::publish("stream purge", "$JS.API.STREAM.PURGE.SCRATCH", ""),
        Op::publish("stream delete", "$JS.API.STREAM.DELETE.SCRATCH", ""),
    ]);
    ops
}

/// Tries `op`; true when the server allowed it (see the module doc).
async fn attempt(
    client: &async_nats::Client,
    violations: &mut UnboundedReceiver<String>,
    op: &Op,
    n: usize,
) -> bool {
    let _subscription = match &op.wire {
        Wire::Publish(subject, body) => {
            client
                .publish_with_reply(subject.clone(), client.new_inbox(), body.clone())
                .await
                .expect("publish");
            None
        }
        Wire::Subscribe(subject) => Some(client.subscribe(subject.clone()).await.expect("subscribe")),
    };
    let marker = format!("matrix.marker.{n}");
    let _marker = client.subscribe(marker.clone()).await.expect("subscribe to the marker");
    client.flush().await.expect("flush");
    let op_violation = format!("\"{}\"", op.subject());
    let marker_violation = format!("\"{marker}\"");
    let mut denied = false;
    loop {
        let violation = tokio::time::timeout(Duration::from_secs(10), violations.recv())
            .await
            .expect("the marker's violation arrives")
            .expect("violations channel");
        if violation.contains(&marker_violation) {
            return !denied;
        }
        if violation.contains(&op_violation) {
            denied = true;
        }
    }
}

async fn scratch(stack: &Stack) {
    let stream = stack
        .js
        .create_stream(stream::Config {
            name: "SCRATCH".into(),
            subjects: vec!["scratch.>".into()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("scratch stream");
    stream
        .create_consumer(pull::Config { durable_name: Some("scratch".into()), ..Default::default() })
        .await
        .expect("scratch consumer");
}

#[tokio::test]
async fn every_user_times_every_operation_is_allowed_exactly_where_the_table_says() {
    let stack = spawn_secure_stack().await;
    scratch(&stack).await;
    // partner's and loyalty's own durables, each made by its user as the README says it may.
    for user in ["partner", "loyalty"] {
        let (client, _) = connect_as(&stack.nats, user).await;
        jetstream::new(client)
            .get_stream("ORDERS")
            .await
            .expect("the user reads ORDERS")
            .create_consumer(pull::Config {
                durable_name: Some(user.into()),
                filter_subject: "events.orders.created.*".into(),
                ..Default::default()
            })
            .await
            .expect("the user creates its own durable");
    }

    let (mut tried, mut allowed_count, mut denied_count) = (0, 0, 0);
    let mut wrong = Vec::new();
    let mut n = 0;
    for user in USERS {
        let (client, mut violations) = connect_as(&stack.nats, user).await;
        for op in operations(user, &stack.js).await {
            n += 1;
            let got = attempt(&client, &mut violations, &op, n).await;
            let want = allowed(user, op.class);
            tried += 1;
            if got {
                allowed_count += 1;
            } else {
                denied_count += 1;
            }
            if got != want {
                wrong.push(format!(
                    "{user}: {} ({}) was {}, the table says {}",
                    op.class,
                    op.subject(),
                    if got { "allowed" } else { "denied" },
                    if want { "allowed" } else { "denied" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {tried} cells differ from the table:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    println!(
        "permission matrix: {tried} cells, {allowed_count} allowed, {denied_count} denied, all as the table says"
    );
    assert!(tried > 150, "{tried}");

    // Nobody else gets in: no anonymous client, no wrong password.
    let anonymous = async_nats::connect(stack.nats.url()).await;
    assert!(
        matches!(&anonymous, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
        "{anonymous:?}"
    );
    for user in USERS {
        let wrong =
            async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{}x", password(user)))
                .connect(stack.nats.url())
                .await;
        assert!(
            matches!(&wrong, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
            "{user} with a wrong password: {wrong:?}"
        );
    }

    // The services still work after the matrix (nothing it was denied happened).
    stack.restock("A-1", 5).await;
    let (status, order) = stack.order("A-1", 1).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("id");
    stack.wait_events(&format!("events.orders.stock_committed.{id}"), 1).await;
    stack.wait_events(&format!("events.orders.confirmation_sent.{id}"), 1).await;
}
