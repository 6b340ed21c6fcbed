//! Scale-out as users run it: a 3-node NATS cluster, two instances of every service, each pair
//! sharing one Postgres database. Orders go through both order-service instances (the same
//! Idempotency-Key on both makes one order), both relays drain one outbox, both instances of each
//! consumer share its durable, and a few thousand orders reconcile exactly.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use contracts::names;
use switchyard::testkit::{
    NatsCluster, TestDatabase, count, eventually, joined, try_count, try_subject_count,
};
use switchyard::{Shutdown, dlq};

use crate::cluster::wait_for_replicated_streams;

const PLAIN: usize = 1800;
const KEYED: usize = 100;
const STOCK: i64 = 100_000;

#[tokio::test]
async fn two_instances_of_every_service_on_postgres_and_a_cluster_reconcile_exactly() {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let cluster = NatsCluster::start(3, "");
    wait_for_replicated_streams(&cluster).await;
    let urls = cluster.urls();
    let (inventory_db, orders_db, email_db, audit_db) = (
        TestDatabase::postgres().await,
        TestDatabase::postgres().await,
        TestDatabase::postgres().await,
        TestDatabase::postgres().await,
    );
    let data = switchyard::testkit::temp_dir();
    let args = |name: &str, db: &TestDatabase| {
        let mut args: Vec<String> = vec![name.into()];
        args.extend(
            ["--nats-url", &urls, "--database-url", db.url(), "--stream-replicas", "3", "--declare-streams"]
                .map(String::from),
        );
        args.extend(["--data-dir".to_string(), data.path().display().to_string()]);
        args
    };
    let shutdown = Shutdown::new();
    let mut tasks = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let inventory = inventory_service::App::build(inventory_service::Config::parse_from(args(
            "inventory-service",
            &inventory_db,
        )))
        .await
        .expect("inventory-service");
        tasks.push(tokio::spawn(inventory.run_until_stopped(shutdown.clone())));
        let email =
            email_service::App::build(email_service::Config::parse_from(args("email-service", &email_db)))
                .await
                .expect("email-service");
        tasks.push(tokio::spawn(email.run_until_stopped(shutdown.clone())));
        let audit =
            audit_service::App::build(audit_service::Config::parse_from(args("audit-service", &audit_db)))
                .await
                .expect("audit-service");
        tasks.push(tokio::spawn(audit.run_until_stopped(shutdown.clone())));
        let mut order_args = args("order-service", &orders_db);
        order_args
            .extend(["--http-addr", "127.0.0.1:0", "--breaker-volume-threshold", "100000"].map(String::from));
        let orders = order_service::App::build(order_service::Config::parse_from(order_args))
            .await
            .expect("order-service");
        bases.push(format!("http://127.0.0.1:{}/orders", orders.port()));
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            orders.run_until_stopped(stop).await.expect("order-service runs and stops cleanly");
        }));
    }

    let client =
        switchyard::nats::connect(&switchyard::config::NatsArgs::plain(urls.clone()), "test", "scaleout")
            .await
            .expect("connect");
    let js = jetstream::new(client.clone());
    let requests = switchyard::client::RequestClient::new(client.clone(), Duration::from_secs(5));
    let _: contracts::RestockReply = requests
        .request(
            names::INVENTORY_RESTOCK,
            &contracts::RestockRequest { sku: "BULK".into(), quantity: STOCK as u32 },
        )
        .await
        .expect("restock");

    // Plain orders, alternating between the two order-service instances, 24 at a time; then one
    // key per pair of requests sent to both instances at once.
    let started = Instant::now();
    let http = reqwest::Client::new();
    let body = |user: String| serde_json::json!({ "user_id": user, "email": "u@example.com", "items": [{ "sku": "BULK", "quantity": 1 }] });
    let mut calls = Vec::new();
    for lane in 0..24 {
        let (http, bases) = (http.clone(), bases.clone());
        calls.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (lane..PLAIN).step_by(24) {
                let response =
                    http.post(&bases[n % 2]).json(&body(format!("u{n}"))).send().await.expect("post");
                assert_eq!(response.status().as_u16(), 201, "order {n}");
                let order: serde_json::Value = response.json().await.expect("order json");
                ids.push(order["id"].as_str().expect("id").to_string());
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for call in calls {
        ids.extend(joined(call, "a lane of orders").await);
    }
    assert_eq!(ids.len(), PLAIN, "every plain order is its own");
    let mut keyed_ids = HashSet::new();
    for k in 0..KEYED {
        let send = |base: String| {
            let http = http.clone();
            let body = body(format!("k{k}"));
            async move {
                let response = http
                    .post(base)
                    .header("Idempotency-Key", format!("scaleout-{k}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status().as_u16(), 201);
                let order: serde_json::Value = response.json().await.expect("order json");
                order["id"].as_str().expect("id").to_string()
            }
        };
        let (a, b) = tokio::join!(send(bases[0].clone()), send(bases[1].clone()));
        assert_eq!(a, b, "one key on two instances is one order");
        keyed_ids.insert(a);
    }
    assert_eq!(keyed_ids.len(), KEYED);
    let placed = started.elapsed();
    let accepted = (PLAIN + KEYED) as u64;

    // Exact reconciliation once every consumer has applied every event.
    eventually(Duration::from_secs(180), "every consumer to apply every event", || async {
        let events = |filter| try_subject_count(&js, names::ORDERS_STREAM, filter);
        events("events.orders.created.*").await == Ok(accepted)
            && events("events.orders.stock_committed.*").await == Ok(accepted)
            && events("events.orders.confirmation_sent.*").await == Ok(accepted)
            && try_count(audit_db.url(), "SELECT COUNT(*) FROM audit_events").await.ok()
                == Some(3 * accepted as i64)
    })
    .await;
    let settled = started.elapsed();
    assert_eq!(count(orders_db.url(), "SELECT COUNT(*) FROM orders").await, accepted as i64);
    assert_eq!(count(orders_db.url(), "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await, 0);
    assert_eq!(
        count(orders_db.url(), "SELECT COUNT(*) FROM outbox").await,
        accepted as i64,
        "one created event per order"
    );
    assert_eq!(
        count(inventory_db.url(), "SELECT COUNT(*) FROM inbox WHERE consumer = 'inventory'").await,
        accepted as i64
    );
    assert_eq!(count(email_db.url(), "SELECT COUNT(*) FROM emails").await, accepted as i64);
    assert_eq!(
        count(inventory_db.url(), "SELECT available FROM stock WHERE sku = 'BULK'").await,
        STOCK - accepted as i64
    );
    assert_eq!(dlq::list(&js, 10).await.expect("dlq").len(), 0, "no dead letters");
    // Both relays drained the one outbox (a sent row names the relay that published it), and both
    // instances of each consumer did part of the work.
    let relays =
        count(orders_db.url(), "SELECT COUNT(DISTINCT claimed_by) FROM outbox WHERE sent_at_ms IS NOT NULL")
            .await;
    assert_eq!(relays, 2, "both order-service relays published");
    let monitors: Vec<String> = cluster.nodes.iter().filter_map(|n| n.monitor_url()).collect();
    let mut splits = Vec::new();
    for service in ["inventory", "email", "audit"] {
        let split = crate::helpers::inbox_deliveries(&monitors, service).await;
        assert_eq!(split.len(), 2, "two {service} connections: {split:?}");
        assert!(
            split.iter().all(|&n| n >= accepted / 10),
            "each {service} instance got its share: {split:?}"
        );
        splits.push(format!("{service} {split:?}"));
    }
    println!(
        "scale-out run: 3 NATS nodes, 2 instances each of order-, inventory-, email- and audit-service on 4 \
         Postgres databases; {accepted} orders ({PLAIN} plain alternating between the order-service \
         instances, {KEYED} keys each sent to both at once) placed in {placed:?}, every consumer settled \
         in {settled:?}; {accepted} created = commits = emails, {} audit rows, outbox drained by both relays, \
         0 dead letters; deliveries per instance: {}",
        3 * accepted,
        splits.join(", ")
    );
    shutdown.trigger();
    for task in tasks {
        joined(task, "a service to stop").await;
    }
}
