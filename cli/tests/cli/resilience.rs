//! Resilience against real processes: two inventory-service processes on one Postgres behind one
//! order-service; under a steady load of orders one inventory is hung (SIGSTOP, its NATS
//! connection still open), resumed, then killed and started again. Every order is accepted: a
//! hung or dead replica costs latency (retries of the idempotent reserve), not orders.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use contracts::names;
use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use switchyard::testkit::{NatsServer, TestDatabase, eventually, free_port, temp_dir};
use tokio::process::{Child, Command};

fn binary(name: &str) -> std::path::PathBuf {
    crate::switchyard().with_file_name(name)
}

/// `binary` on `nats` (declaring the streams), its data under `data/<instance>`, killed on drop.
fn service(binary_name: &str, nats: &NatsServer, data: &Path, instance: &str, extra: &[&str]) -> Child {
    Command::new(binary(binary_name))
        .args(["--nats-url", &nats.url(), "--declare-streams", "--instance-id", instance, "--data-dir"])
        .arg(data.join(instance))
        .args(extra)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("{binary_name} starts: {err}"))
}

fn inventory(nats: &NatsServer, db: &TestDatabase, data: &Path, instance: &str) -> Child {
    service("inventory-service", nats, data, instance, &["--database-url", db.url()])
}

/// order-service `instance` on a free port with `extra` flags, and its base URL.
fn order_service(nats: &NatsServer, data: &Path, instance: &str, extra: &[&str]) -> (Child, String) {
    let address = format!("127.0.0.1:{}", free_port().expect("a free port"));
    let mut flags = vec!["--http-addr", &address];
    flags.extend_from_slice(extra);
    (service("order-service", nats, data, instance, &flags), format!("http://{address}"))
}

/// Waits until order-service at `base` is ready and `inventories` inventory instances answer.
async fn ready(http: &reqwest::Client, base: &str, client: &async_nats::Client, inventories: usize) {
    eventually(Duration::from_secs(60), "order-service ready and the inventories up", || async {
        let ready =
            http.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status().is_success());
        ready && inventory_instances(client).await == inventories
    })
    .await;
}

async fn restock(client: &async_nats::Client, sku: String, quantity: u32) {
    let requests = switchyard::RequestClient::new(client.clone(), Duration::from_secs(10));
    let restock = contracts::RestockRequest { sku, quantity };
    let _: contracts::RestockReply =
        requests.request(names::INVENTORY_RESTOCK, &restock).await.expect("restock");
}

/// How many `inventory` instances answer `$SRV.PING.inventory` within 250 ms.
async fn inventory_instances(client: &async_nats::Client) -> usize {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else { return 0 };
    if client.publish_with_reply("$SRV.PING.inventory", inbox, "".into()).await.is_err() {
        return 0;
    }
    let mut seen = 0;
    while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_millis(250), replies.next()).await {
        // Nobody there is a "no responders" status, not an instance.
        if reply.status.is_none() {
            seen += 1;
        }
    }
    seen
}

/// Stops `pid` (SIGSTOP) and waits until every one of its threads is stopped: the kernel stops a
/// process's threads one after another, and on a busy machine one may still run for a while.
async fn hang(pid: Pid) {
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let tasks = format!("/proc/{pid}/task");
    eventually(Duration::from_secs(10), "every thread of the process stopped", || async {
        let Ok(entries) = std::fs::read_dir(&tasks) else { return false };
        entries.flatten().all(|task| {
            // The state is the field after the command's closing parenthesis.
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('T' | 't')))
            })
        })
    })
    .await;
}

#[derive(Default)]
struct Load {
    accepted: AtomicU64,
    refused: AtomicU64,
    slowest_ms: AtomicU64,
    stop: AtomicBool,
}

impl Load {
    fn done(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst) + self.refused.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, more: u64, what: &str) {
        let target = self.done() + more;
        eventually(Duration::from_secs(60), what, || async { self.done() >= target }).await;
    }
}

#[tokio::test]
async fn a_hung_then_killed_inventory_replica_costs_latency_not_orders() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let db = TestDatabase::postgres().await;
    let data = temp_dir();
    let mut first = inventory(&nats, &db, data.path(), "inv-a");
    let _second = inventory(&nats, &db, data.path(), "inv-b");
    // An attempt is abandoned after 250 ms; 12 attempts outlast the 1.5 s hang below.
    let retries =
        ["--request-retry-timeout", "250ms", "--request-retry-attempts", "12", "--breaker-timeout", "6s"];
    let (_orders, base) = order_service(&nats, data.path(), "orders", &retries);
    let http = reqwest::Client::new();
    ready(&http, &base, &client, 2).await;
    // One SKU per client: a hung instance holding one SKU's row lock stalls that client alone.
    for worker in 0..8 {
        restock(&client, format!("HANG-{worker}"), 1_000_000).await;
    }

    // Eight clients order one unit each, one order after another.
    let load = Arc::new(Load::default());
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (load, http, url) = (load.clone(), http.clone(), format!("{base}/orders"));
        workers.push(tokio::spawn(async move {
            let body = serde_json::json!({ "user_id": format!("u{worker}"), "items": [{ "sku": format!("HANG-{worker}"), "quantity": 1 }] });
            while !load.stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let status = http.post(&url).json(&body).send().await.map(|r| r.status().as_u16());
                load.slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                match status {
                    Ok(201) => load.accepted.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("order refused: {other:?}");
                        load.refused.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    load.wait_for(200, "200 orders before the hang").await;

    // Hung: the process stops, its connection stays open, NATS keeps sending it half the requests.
    let pid = Pid::from_raw(first.id().expect("pid") as i32);
    hang(pid).await;
    let hung_at = load.done();
    // The hang lasts a fixed 1.5 s: it is the scenario, not a wait for a condition.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during_hang = load.done() - hung_at;
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    load.wait_for(200, "200 orders after the hang").await;

    // Killed: requests in flight to it are lost; then it starts again and rejoins.
    first.kill().await.expect("SIGKILL");
    load.wait_for(200, "200 orders with one inventory").await;
    let _first_again = inventory(&nats, &db, data.path(), "inv-a2");
    eventually(Duration::from_secs(60), "the restarted inventory answering discovery", || async {
        inventory_instances(&client).await == 2
    })
    .await;
    load.wait_for(200, "200 orders after the restart").await;
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker");
    }

    let stats: serde_json::Value = {
        let reply = client.request("$SRV.STATS.orders", "".into()).await.expect("orders stats");
        serde_json::from_slice(&reply.payload).expect("stats JSON")
    };
    let data = &stats["endpoints"][0]["data"];
    eprintln!(
        "accepted {} refused {} (during the 1.5 s hang: {} orders); slowest {} ms; retry {}; breaker {}",
        load.accepted.load(Ordering::SeqCst),
        load.refused.load(Ordering::SeqCst),
        during_hang,
        load.slowest_ms.load(Ordering::SeqCst),
        data["retry"],
        data["breaker"]["totals"],
    );
    assert_eq!(load.refused.load(Ordering::SeqCst), 0, "no order failed");
    assert!(
        data["retry"]["recovered"].as_u64().unwrap_or(0) >= 1,
        "some reserves succeeded on a retry: {data}"
    );
    assert_eq!(data["breaker"]["opened"], 0, "the breaker never opened: {data}");
}

/// The value of `series` (a full series name with labels) on a `/metrics` page, 0 when absent.
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else { return -1.0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn three_order_services_share_one_breaker_against_a_dead_inventory() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let http = reqwest::Client::new();
    let mut bases = Vec::new();
    let mut processes = Vec::new();
    for instance in ["a", "b", "c"] {
        let flags = ["--breaker-shared", "--breaker-volume-threshold", "3", "--breaker-reset-timeout", "60s"];
        let (process, base) = order_service(&nats, data.path(), instance, &flags);
        processes.push(process);
        bases.push(base);
    }
    let client = nats.client().await;
    for base in &bases {
        ready(&http, base, &client, 0).await;
    }
    let state = "switchyard_breaker_state{breaker=\"inventory\"}";
    let failures = "switchyard_breaker_calls_total{breaker=\"inventory\",outcome=\"failure\"}";
    let order = serde_json::json!({ "user_id": "u", "items": [{ "sku": "DEAD-1", "quantity": 1 }] });

    // No inventory at all: instance a's calls fail until its breaker opens.
    eventually(Duration::from_secs(30), "instance a's breaker to open", || async {
        let answer = http.post(format!("{}/orders", bases[0])).json(&order).send().await;
        assert_eq!(answer.map(|a| a.status().as_u16()).ok(), Some(503));
        metric(&http, &bases[0], state).await == 1.0
    })
    .await;
    let opened = Instant::now();
    eventually(Duration::from_secs(10), "instances b and c to open", || async {
        metric(&http, &bases[1], state).await == 1.0 && metric(&http, &bases[2], state).await == 1.0
    })
    .await;
    eprintln!("instances b and c opened {:?} after a", opened.elapsed());
    assert!(opened.elapsed() < Duration::from_secs(2), "within the bound: {:?}", opened.elapsed());
    // b and c never called the dead inventory, and refuse at once.
    for base in &bases[1..] {
        let answer = http.post(format!("{base}/orders")).json(&order).send().await.expect("answer");
        assert_eq!(answer.status().as_u16(), 503);
        assert!(answer.headers().contains_key("retry-after"));
        assert_eq!(metric(&http, base, failures).await, 0.0, "{base} made no call");
    }
    drop(processes);
}

#[tokio::test]
async fn a_stalled_inventory_never_works_for_an_order_already_answered() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let db = TestDatabase::postgres().await;
    let data = temp_dir();
    let metrics_port = free_port().expect("a free port");
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let flags = ["--database-url", db.url(), "--metrics-addr", &metrics_addr];
    let mut inventory = service("inventory-service", &nats, data.path(), "inventory", &flags);
    let (_orders, base) = order_service(&nats, data.path(), "orders", &["--http-request-timeout", "500ms"]);
    let metrics = format!("http://{metrics_addr}");
    let http = reqwest::Client::new();
    ready(&http, &base, &client, 1).await;
    restock(&client, "SLOW-1".into(), 10).await;
    let requests = switchyard::RequestClient::new(client.clone(), Duration::from_secs(10));

    // Inventory stalls (SIGSTOP); an order waits its 500 ms and is answered 503 timeout.
    let pid = Pid::from_raw(inventory.id().expect("pid") as i32);
    hang(pid).await;
    let order = serde_json::json!({ "user_id": "u", "items": [{ "sku": "SLOW-1", "quantity": 1 }] });
    let answer = http.post(format!("{base}/orders")).json(&order).send().await.expect("answer");
    assert_eq!(answer.status().as_u16(), 503);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["error"], "timeout", "{body}");

    // Inventory resumes with the reserve (and its retries) in its queue: their deadlines have
    // passed, so it drops them unhandled and nothing is reserved for an order nobody placed. The
    // deadline and the 503 are the same instant: a reserve read within a millisecond of it (the
    // wall clock in whole milliseconds) starts and is cancelled while running instead, with the
    // same effect (its transaction rolls back).
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let dropped = |stage: &str| {
        format!("switchyard_micro_deadline_dropped_total{{endpoint=\"inventory.reserve\",stage=\"{stage}\"}}")
    };
    eventually(Duration::from_secs(30), "the stale reserves dropped", || async {
        metric(&http, &metrics, &dropped("queued")).await + metric(&http, &metrics, &dropped("running")).await
            >= 1.0
    })
    .await;
    let stock: contracts::StockReply = requests
        .request(names::INVENTORY_STOCK, &serde_json::json!({ "skus": ["SLOW-1"] }))
        .await
        .expect("stock");
    assert_eq!((stock.items[0].available, stock.items[0].reserved), (10, 0), "nothing reserved");
    assert_eq!(
        metric(
            &http,
            &metrics,
            "switchyard_micro_request_duration_seconds_count{endpoint=\"inventory.reserve\",status=\"ok\"}"
        )
        .await,
        0.0
    );
    let _ = inventory.kill().await;
}
