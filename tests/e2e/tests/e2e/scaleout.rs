//! Scale-out as users run it: a 3-node NATS cluster, two instances of every service, each pair
//! sharing one Postgres database. Orders go through both order-service instances (the same
//! Idempotency-Key on both makes one order), both relays drain one outbox, both instances of each
//! consumer share its durable, and a few thousand orders reconcile exactly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
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

/// A service kind of the fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Inventory,
    Email,
    Audit,
    Orders,
}

/// One running instance.
struct Instance {
    kind: Kind,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    /// order-service's `/orders` URL.
    base: Option<String>,
}

/// Instances of every service on one cluster, each kind on its own Postgres database, and the
/// order-service URLs a load balancer would send to.
struct Fleet {
    urls: String,
    dbs: [TestDatabase; 4],
    data: switchyard::testkit::TempDir,
    instances: Vec<Instance>,
    balancer: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    async fn new(cluster: &NatsCluster) -> Fleet {
        Fleet {
            urls: cluster.urls(),
            dbs: [
                TestDatabase::postgres().await,
                TestDatabase::postgres().await,
                TestDatabase::postgres().await,
                TestDatabase::postgres().await,
            ],
            data: switchyard::testkit::temp_dir(),
            instances: Vec::new(),
            balancer: Arc::default(),
        }
    }

    fn db(&self, kind: Kind) -> &TestDatabase {
        &self.dbs[kind as usize]
    }

    fn args(&self, name: &str, kind: Kind) -> Vec<String> {
        crate::cluster::cluster_args(name, &self.urls, self.db(kind), self.data.path())
    }

    /// Starts an instance of `kind` and, for order-service, puts it behind the balancer once it
    /// answers `/health/ready`.
    async fn start(&mut self, kind: Kind) {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let (task, base) = match kind {
            Kind::Inventory => {
                let config = inventory_service::Config::parse_from(self.args("inventory-service", kind));
                let app = inventory_service::App::build(config).await.expect("inventory-service");
                (tokio::spawn(app.run_until_stopped(stop)), None)
            }
            Kind::Email => {
                let config = email_service::Config::parse_from(self.args("email-service", kind));
                let app = email_service::App::build(config).await.expect("email-service");
                (tokio::spawn(app.run_until_stopped(stop)), None)
            }
            Kind::Audit => {
                let config = audit_service::Config::parse_from(self.args("audit-service", kind));
                let app = audit_service::App::build(config).await.expect("audit-service");
                (tokio::spawn(app.run_until_stopped(stop)), None)
            }
            Kind::Orders => {
                let mut args = self.args("order-service", kind);
                args.extend(
                    ["--http-addr", "127.0.0.1:0", "--breaker-volume-threshold", "100000"].map(String::from),
                );
                let config = order_service::Config::parse_from(args);
                let app = order_service::App::build(config).await.expect("order-service");
                let base = format!("http://127.0.0.1:{}", app.port());
                let task = tokio::spawn(async move {
                    app.run_until_stopped(stop).await.expect("order-service runs and stops cleanly");
                });
                eventually(Duration::from_secs(30), "the new order-service to be ready", || async {
                    let ready = reqwest::get(format!("{base}/health/ready")).await;
                    ready.is_ok_and(|r| r.status().is_success())
                })
                .await;
                let base = format!("{base}/orders");
                self.balancer.lock().expect("balancer").push(base.clone());
                (task, Some(base))
            }
        };
        self.instances.push(Instance { kind, shutdown, task, base });
    }

    /// Stops the oldest instance of `kind` as SIGTERM would, after taking it out of the balancer.
    async fn stop_oldest(&mut self, kind: Kind) {
        let index = self.instances.iter().position(|i| i.kind == kind).expect("an instance of the kind");
        let instance = self.instances.remove(index);
        if let Some(base) = &instance.base {
            self.balancer.lock().expect("balancer").retain(|b| b != base);
        }
        instance.shutdown.trigger();
        joined(instance.task, "an instance to stop").await;
    }

    async fn stop_all(&mut self) {
        for instance in self.instances.drain(..) {
            instance.shutdown.trigger();
            joined(instance.task, "a service to stop").await;
        }
    }
}

const KINDS: [Kind; 4] = [Kind::Inventory, Kind::Email, Kind::Audit, Kind::Orders];

/// A fresh 3-node cluster with two instances of every service, `STOCK` units of `BULK`, and the
/// test's own JetStream context.
async fn two_of_everything() -> (NatsCluster, Fleet, jetstream::Context) {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let cluster = NatsCluster::start(3, "");
    wait_for_replicated_streams(&cluster).await;
    let mut fleet = Fleet::new(&cluster).await;
    for _ in 0..2 {
        for kind in KINDS {
            fleet.start(kind).await;
        }
    }
    let args = switchyard::config::NatsArgs::plain(fleet.urls.clone());
    let client = switchyard::nats::connect(&args, "test", "fleet").await.expect("connect");
    let requests = switchyard::client::RequestClient::new(client.clone(), Duration::from_secs(5));
    let restock = contracts::RestockRequest { sku: "BULK".into(), quantity: STOCK as u32 };
    let _: contracts::RestockReply =
        requests.request(names::INVENTORY_RESTOCK, &restock).await.expect("restock");
    (cluster, fleet, jetstream::new(client))
}

#[tokio::test]
async fn two_instances_of_every_service_on_postgres_and_a_cluster_reconcile_exactly() {
    let (cluster, mut fleet, js) = two_of_everything().await;
    let bases = fleet.balancer.lock().expect("balancer").clone();
    let (inventory_db, orders_db, email_db, audit_db) =
        (fleet.db(Kind::Inventory), fleet.db(Kind::Orders), fleet.db(Kind::Email), fleet.db(Kind::Audit));

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
    fleet.stop_all().await;
}

/// Waits until `ORDERS` holds at least `count` created events: orders are flowing.
async fn created_at_least(js: &jetstream::Context, count: u64) {
    eventually(Duration::from_secs(60), "orders to flow", || async {
        try_subject_count(js, names::ORDERS_STREAM, "events.orders.created.*").await.is_ok_and(|n| n >= count)
    })
    .await;
}

/// Order load for a rolling restart: 8 clients posting orders back to back, round robin over the
/// balancer's list, each order with its own Idempotency-Key. A client does what the API asks of
/// it: a 503 (with Retry-After, capped at 1 s) or a connection closed under it is sent again with
/// the same key, for up to 60 s; a retried order must still be exactly one order. Every retry is
/// counted and shown.
struct Load {
    stop: Shutdown,
    lanes: Vec<tokio::task::JoinHandle<Lane>>,
}

/// What one load client saw: the ids of its accepted orders, its failures and its retries.
#[derive(Default)]
struct Lane {
    ids: Vec<String>,
    failed: Vec<String>,
    retried: Vec<String>,
}

fn start_load(fleet: &Fleet) -> Load {
    let stop = Shutdown::new();
    let http = reqwest::Client::new();
    let mut lanes = Vec::new();
    for lane in 0..8 {
        let (http, balancer, stop) = (http.clone(), fleet.balancer.clone(), stop.clone());
        lanes.push(tokio::spawn(async move {
            let Lane { mut ids, mut failed, mut retried } = Lane::default();
            let mut n = lane;
            while !stop.is_triggered() {
                let body = serde_json::json!({ "user_id": format!("r{n}"), "email": "u@example.com", "items": [{ "sku": "BULK", "quantity": 1 }] });
                let mut outcome = None;
                let give_up = Instant::now() + Duration::from_secs(60);
                let mut attempt = 0;
                while Instant::now() < give_up {
                    let base = {
                        let bases = balancer.lock().expect("balancer");
                        bases[(n + attempt) % bases.len()].clone()
                    };
                    attempt += 1;
                    let sent = http.post(&base).header("Idempotency-Key", format!("roll-{n}")).json(&body).send().await;
                    match sent {
                        Ok(response) if response.status().as_u16() == 201 => {
                            let order: serde_json::Value = response.json().await.expect("order json");
                            outcome = Some(Ok(order["id"].as_str().expect("id").to_string()));
                            break;
                        }
                        Ok(response) if response.status().as_u16() == 503 => {
                            let after = response
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(1);
                            retried.push(response.text().await.unwrap_or_default());
                            let wait = Duration::from_secs(after).min(Duration::from_secs(1));
                            tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
                        }
                        Ok(response) => {
                            let status = response.status();
                            outcome = Some(Err(format!("{status} {}", response.text().await.unwrap_or_default())));
                            break;
                        }
                        Err(err) => {
                            retried.push(format!("{base}: {err}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                match outcome {
                    Some(Ok(id)) => ids.push(id),
                    Some(Err(err)) => failed.push(err),
                    None => failed.push(format!("order {n}: no answer in 60 s ({attempt} attempts)")),
                }
                n += 8;
            }
            Lane { ids, failed, retried }
        }));
    }
    Load { stop, lanes }
}

/// Stops the load once 50 more orders were created, and checks that no order failed and every
/// effect happened exactly once. Returns the accepted orders and the retried requests.
async fn finish_load(load: Load, fleet: &Fleet, js: &jetstream::Context) -> (u64, Vec<String>) {
    let created_at_end =
        try_subject_count(js, names::ORDERS_STREAM, "events.orders.created.*").await.unwrap_or(0);
    created_at_least(js, created_at_end + 50).await;
    load.stop.trigger();
    let (mut ids, mut failed, mut retried, mut answers) = (HashSet::new(), Vec::new(), Vec::new(), 0);
    for lane in load.lanes {
        let Lane { ids: lane_ids, failed: lane_failed, retried: lane_retried } =
            joined(lane, "a load client").await;
        answers += lane_ids.len();
        ids.extend(lane_ids);
        failed.extend(lane_failed);
        retried.extend(lane_retried);
    }
    assert!(failed.is_empty(), "failed orders during the rolling restart: {failed:?}");
    assert_eq!(ids.len(), answers, "every order is its own, retried or not");
    let accepted = ids.len() as u64;
    eventually(Duration::from_secs(120), "every consumer to apply every event", || async {
        let events = |filter| try_subject_count(js, names::ORDERS_STREAM, filter);
        events("events.orders.created.*").await == Ok(accepted)
            && events("events.orders.stock_committed.*").await == Ok(accepted)
            && events("events.orders.confirmation_sent.*").await == Ok(accepted)
            && try_count(fleet.db(Kind::Audit).url(), "SELECT COUNT(*) FROM audit_events").await.ok()
                == Some(3 * accepted as i64)
            // A publish whose ack was lost with a node is published again (the stream drops the
            // repeat) and only then marked sent: the outbox drains after the events are in.
            && try_count(fleet.db(Kind::Orders).url(), "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await.ok()
                == Some(0)
    })
    .await;
    let (orders_db, inventory_db) = (fleet.db(Kind::Orders).url(), fleet.db(Kind::Inventory).url());
    assert_eq!(count(orders_db, "SELECT COUNT(*) FROM orders").await, accepted as i64);
    assert_eq!(
        count(inventory_db, "SELECT COUNT(*) FROM inbox WHERE consumer = 'inventory'").await,
        accepted as i64
    );
    assert_eq!(count(fleet.db(Kind::Email).url(), "SELECT COUNT(*) FROM emails").await, accepted as i64);
    assert_eq!(
        count(inventory_db, "SELECT available FROM stock WHERE sku = 'BULK'").await,
        STOCK - accepted as i64
    );
    assert_eq!(dlq::list(js, 10).await.expect("dlq").len(), 0, "no dead letters");
    (accepted, retried)
}

/// Every service's instances restarted one at a time (SIGTERM as `stop_oldest` does, then a new
/// one, ready before the next) while orders flow: no order fails, no effect is lost or doubled.
#[tokio::test]
async fn a_rolling_restart_of_every_service_under_load_fails_no_order_and_loses_no_effect() {
    let (_cluster, mut fleet, js) = two_of_everything().await;
    let load = start_load(&fleet);
    created_at_least(&js, 50).await;

    // The roll: each kind in turn, each of its two instances in turn.
    let started = Instant::now();
    for kind in KINDS {
        for _ in 0..2 {
            fleet.stop_oldest(kind).await;
            fleet.start(kind).await;
        }
    }
    let rolled = started.elapsed();
    let (accepted, retried) = finish_load(load, &fleet, &js).await;
    println!(
        "rolling restart: 8 instances (2 of each service) restarted one at a time in {rolled:?} under load; \
         {accepted} orders accepted, 0 failed, {} requests retried with their key {retried:?}; created = \
         commits = emails = {accepted}, {} audit rows, outbox drained, 0 dead letters",
        retried.len(),
        3 * accepted
    );
    fleet.stop_all().await;
}

/// The three NATS nodes restarted one at a time (SIGTERM, start again on the same port and store,
/// wait until its JetStream is current, then the next) while orders flow through two instances
/// of every service: no order fails, no effect is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_the_three_nats_nodes_under_load_fails_no_order_and_loses_no_effect() {
    let (mut cluster, mut fleet, js) = two_of_everything().await;
    let load = start_load(&fleet);
    created_at_least(&js, 50).await;

    let started = Instant::now();
    let http = reqwest::Client::new();
    for node in 0..cluster.nodes.len() {
        let before =
            try_subject_count(&js, names::ORDERS_STREAM, "events.orders.created.*").await.unwrap_or(0);
        // The restart blocks while the node stops and starts: the services and the load go on.
        tokio::task::block_in_place(|| cluster.nodes[node].restart_gracefully());
        let monitor = cluster.nodes[node].monitor_url().expect("monitor url");
        eventually(Duration::from_secs(60), "the restarted node's JetStream to be current", || {
            let (http, monitor) = (http.clone(), monitor.clone());
            async move {
                let health = http.get(format!("{monitor}/healthz")).send().await;
                health.is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        // Orders go on through each step.
        created_at_least(&js, before + 20).await;
    }
    let rolled = started.elapsed();
    let (accepted, retried) = finish_load(load, &fleet, &js).await;
    println!(
        "NATS rolling restart: 3 nodes restarted one at a time in {rolled:?} under load; {accepted} orders \
         accepted, 0 failed, {} requests retried with their key; every effect once, 0 dead letters",
        retried.len()
    );
    fleet.stop_all().await;
}
