//! The model service, run as its own process against a real nats-server with the repo's
//! nats.conf (logging in as its own `loyalty` user), beside a real inventory-service.

use std::process::Stdio;
use std::time::Duration;

use async_nats::HeaderMap;
use clap::Parser;
use contracts::{Item, OrderCreated, RestockRequest, names};
use serde_json::{Value, json};
use switchyard::client::{RequestClient, RequestError};
use switchyard::config::NatsArgs;
use switchyard::streams::{EventStream, StreamSettings, ensure_streams};
use switchyard::testkit::{
    NatsServer, TestDatabase, eventually, joined, subject_count, temp_dir, workspace_root,
};
use switchyard::{Shutdown, telemetry};

const USERS: [&str; 4] = ["inventory", "ops", "sys", "loyalty"];
const LOYALTY: EventStream = EventStream {
    name: "LOYALTY",
    subjects: &["events.loyalty.>"],
    description: "Loyalty points awarded",
    schedules: false,
};

fn secure_nats() -> NatsServer {
    let mut builder = NatsServer::builder().config(workspace_root().join("nats.conf"));
    for variable in ["INVENTORY", "ORDERS", "EMAIL", "AUDIT", "OPS", "SYS", "PARTNER", "LOYALTY"] {
        builder = builder.env(format!("{variable}_PASSWORD"), format!("test-{}", variable.to_lowercase()));
    }
    builder.start()
}

fn login(nats: &NatsServer, user: &str) -> NatsArgs {
    assert!(USERS.contains(&user));
    let mut args = NatsArgs::plain(nats.url());
    args.nats_user = Some(user.into());
    args.nats_password = Some(format!("test-{user}"));
    args
}

async fn created(js: &async_nats::jetstream::Context, event_id: uuid::Uuid, user: &str, quantity: u32) {
    let order_id = uuid::Uuid::new_v4();
    let event = OrderCreated {
        event_id,
        order_id,
        user_id: user.into(),
        email: None,
        items: vec![Item { sku: "A-1".into(), quantity }],
        created_at: "2026-11-28T12:00:00Z".into(),
    };
    let mut headers = HeaderMap::new();
    // A fresh message id each time: the stream keeps a repeat, so only the service's inbox stops it.
    headers.insert(async_nats::header::NATS_MESSAGE_ID, uuid::Uuid::new_v4().to_string().as_str());
    let subject = names::order_event_subject(names::order_event::CREATED, &order_id);
    let payload = serde_json::to_vec(&event).unwrap().into();
    js.publish_with_headers(subject, headers, payload).await.unwrap().await.unwrap();
}

#[tokio::test]
async fn the_model_service_earns_points_once_answers_and_falls_back() {
    telemetry::init(switchyard::config::LogFormat::Text);
    let nats = secure_nats();
    let ops = switchyard::nats::connect(&login(&nats, "ops"), "test", "loyalty").await.unwrap();
    let js = async_nats::jetstream::new(ops.clone());
    // The operator declares the streams (LOYALTY sized to fit beside ORDERS in nats.conf's 8 GB
    // store); the service only verifies them.
    ensure_streams(&js, contracts::streams::ALL, &StreamSettings::default()).await.unwrap();
    let small = StreamSettings { max_bytes: 256 * 1024 * 1024, ..StreamSettings::default() };
    switchyard::streams::ensure(&js, LOYALTY.config(&small)).await.unwrap();

    // A real inventory-service, for the service's calls through the breaker.
    let (inventory_db, data) = (TestDatabase::sqlite(), temp_dir());
    let inventory_args = login(&nats, "inventory");
    let inventory = inventory_service::App::build(inventory_service::Config::parse_from([
        "inventory-service",
        "--nats-url",
        &inventory_args.nats_url,
        "--nats-user",
        "inventory",
        "--nats-password",
        "test-inventory",
        "--database-url",
        inventory_db.url(),
    ]))
    .await
    .unwrap();
    let stop_inventory = Shutdown::new();
    let inventory = tokio::spawn(inventory.run_until_stopped(stop_inventory.clone()));
    let requests = RequestClient::new(ops.clone(), Duration::from_secs(5));
    let restock = RestockRequest { sku: "A-1".into(), quantity: 100 };
    eventually(Duration::from_secs(30), "inventory to take a restock", || async {
        requests.request::<_, Value>(names::INVENTORY_RESTOCK, &restock).await.is_ok()
    })
    .await;

    let mut service = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalty-service"))
        .args(["--nats-url", &nats.url(), "--nats-user", "loyalty", "--nats-password", "test-loyalty"])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--breaker-timeout", "1s"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "loyalty to answer its micro PING", || async {
        ops.request("$SRV.PING.loyalty", "".into()).await.is_ok()
    })
    .await;

    // Three orders, one of them delivered twice: points are earned once per order.
    let repeated = uuid::Uuid::new_v4();
    created(&js, repeated, "u1", 2).await;
    created(&js, uuid::Uuid::new_v4(), "u1", 3).await;
    created(&js, repeated, "u1", 2).await;
    created(&js, uuid::Uuid::new_v4(), "u2", 1).await;
    let points = |user: &'static str| {
        let requests = requests.clone();
        async move {
            let reply: Value = requests.request("loyalty.points", &json!({ "user_id": user })).await.unwrap();
            reply["points"].as_i64().unwrap()
        }
    };
    eventually(Duration::from_secs(30), "u1 to have 5 points and u2 1", || async {
        points("u1").await == 5 && points("u2").await == 1
    })
    .await;
    // Each award announced once, through the outbox.
    eventually(Duration::from_secs(30), "three awards in LOYALTY", || async {
        subject_count(&js, "LOYALTY", "events.loyalty.awarded.*").await == 3
    })
    .await;

    // A quote asks inventory through the breaker...
    let quote = json!({ "items": [{ "sku": "A-1", "quantity": 4 }] });
    let reply: Value = requests.request("loyalty.quote", &quote).await.unwrap();
    assert_eq!((reply["points"].as_i64(), reply["available"].as_bool()), (Some(4), Some(true)));
    // ...and with inventory gone, still answers, without that one field.
    stop_inventory.trigger();
    joined(inventory, "inventory-service to stop").await;
    let reply: Value = requests.request("loyalty.quote", &quote).await.unwrap();
    assert_eq!((reply["points"].as_i64(), reply["available"].clone()), (Some(4), Value::Null));

    // Bad input is a micro error naming the field, not a crash.
    let err = requests.request::<_, Value>("loyalty.points", &json!({ "user_id": " " })).await.unwrap_err();
    assert!(
        matches!(&err, RequestError::Service { code: 400, message, .. } if message == "user_id must not be empty"),
        "{err:?}"
    );
    let err = requests.request::<_, Value>("loyalty.quote", &json!({ "items": [] })).await.unwrap_err();
    assert!(matches!(err, RequestError::Service { code: 400, .. }), "{err:?}");

    // SIGTERM: it finishes what it holds and exits 0.
    let pid = service.id().expect("running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), service.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(subject_count(&js, "LOYALTY", "events.loyalty.awarded.*").await, 3);
}
