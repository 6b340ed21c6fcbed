use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use switchyard::Shutdown;
use switchyard::testkit::{NatsServer, TestDatabase, eventually};

/// order-service as a real process, so it can be killed with SIGKILL.
pub struct OrderProcess {
    child: Child,
    pub base_url: String,
}

impl OrderProcess {
    pub fn start(nats: &NatsServer, db: &TestDatabase) -> OrderProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_order-service"))
            .args(["--nats-url", &nats.url(), "--database-url", db.url(), "--http-addr", "127.0.0.1:0"])
            .arg("--declare-streams")
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start order-service");
        let stderr = child.stderr.take().expect("stderr");
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "order-service ready"
                {
                    let _ = found.send(event["http"].as_str().unwrap_or_default().to_string());
                }
            }
        });
        let address = address.recv_timeout(Duration::from_secs(30)).expect("order-service ready line");
        OrderProcess { child, base_url: format!("http://{address}") }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `deadline` for it to exit.
    pub fn wait(mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for OrderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn events_on(js: &async_nats::jetstream::Context, filter: &str) -> u64 {
    switchyard::testkit::subject_count(js, "ORDERS", filter).await
}

async fn pending_outbox(db: &TestDatabase) -> i64 {
    switchyard::testkit::count(db.url(), "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await
}

#[tokio::test]
async fn events_committed_before_a_sigkill_are_published_once_after_the_restart() {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let mut nats = NatsServer::start();
    let (inventory_db, orders_db) = (TestDatabase::sqlite(), TestDatabase::sqlite());
    let inventory = inventory_service::App::build(inventory_service::Config::parse_from([
        "inventory-service",
        "--nats-url",
        &nats.url(),
        "--database-url",
        inventory_db.url(),
        "--declare-streams",
    ]))
    .await
    .unwrap();
    let inventory_stop = Shutdown::new();
    let inventory_task = tokio::spawn(inventory.run_until_stopped(inventory_stop.clone()));
    let js = async_nats::jetstream::new(nats.client().await);
    let requests = switchyard::client::RequestClient::new(nats.client().await, Duration::from_secs(5));
    let _: contracts::RestockReply = requests
        .request("inventory.restock", &serde_json::json!({ "sku": "A-1", "quantity": 100 }))
        .await
        .unwrap();

    let orders = OrderProcess::start(&nats, &orders_db);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let body = serde_json::json!({ "user_id": "u1", "items": [{ "sku": "A-1", "quantity": 1 }] });
        let response = http.post(format!("{}/orders", orders.base_url)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        let order: serde_json::Value = response.json().await.unwrap();
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(20), "10 created events", || async {
        events_on(&js, "events.orders.created.*").await == 10
    })
    .await;

    // NATS goes away; the cancellations commit with their events waiting in the outbox; then the
    // process is killed before it could publish them.
    nats.kill();
    for id in &ids {
        let response = http.post(format!("{}/orders/{id}/cancel", orders.base_url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    orders.kill();
    assert_eq!(pending_outbox(&orders_db).await, 10);

    nats.restart();
    let restarted = OrderProcess::start(&nats, &orders_db);
    eventually(Duration::from_secs(30), "the restarted relay to publish every waiting event", || async {
        pending_outbox(&orders_db).await == 0
    })
    .await;
    eventually(Duration::from_secs(20), "10 cancelled events", || async {
        events_on(&js, "events.orders.cancelled.*").await == 10
    })
    .await;
    assert_eq!(events_on(&js, "events.orders.created.*").await, 10, "nothing republished twice");
    eventually(Duration::from_secs(20), "the stock to come back", || async {
        let stock: contracts::StockReply =
            requests.request("inventory.stock", &serde_json::json!({ "skus": ["A-1"] })).await.unwrap();
        (stock.items[0].available, stock.items[0].reserved) == (100, 0)
    })
    .await;
    drop(restarted);
    inventory_stop.trigger();
    inventory_task.await.unwrap();
}
