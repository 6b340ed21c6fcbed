//! One helper every order test uses: a real nats-server, inventory-service and order-service,
//! each service on its own fresh database, the HTTP API on a free port.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use contracts::names;
use contracts::{RestockReply, RestockRequest};
use serde_json::{Value, json};
use switchyard::Shutdown;
use switchyard::breaker::Breaker;
use switchyard::client::RequestClient;
use switchyard::testkit::{NatsServer, TestDatabase};
use tokio::task::JoinHandle;

/// A running service task and its shutdown signal.
pub struct Running {
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Running {
    /// Triggers shutdown and waits for the service to finish.
    pub async fn stop(self) {
        self.shutdown.trigger();
        switchyard::testkit::joined(self.task, "the service to stop").await;
    }
}

/// The stack a test talks to.
pub struct TestStack {
    pub nats: NatsServer,
    pub inventory_db: TestDatabase,
    #[allow(dead_code)] // kept so the database lives as long as the stack
    pub orders_db: TestDatabase,
    pub inventory: Option<Running>,
    pub orders: Option<Running>,
    pub base_url: String,
    pub http: reqwest::Client,
    pub breaker: Arc<Breaker>,
    pub requests: RequestClient,
}

/// Extra flags for order-service, e.g. short breaker timings.
pub type Flags<'a> = &'a [&'a str];

/// The stack on SQLite with default flags.
pub async fn spawn_stack() -> TestStack {
    spawn_stack_with(&[]).await
}

/// The stack on SQLite with extra order-service flags.
pub async fn spawn_stack_with(flags: Flags<'_>) -> TestStack {
    spawn(TestDatabase::sqlite(), TestDatabase::sqlite(), flags).await
}

/// The stack with both services on fresh Postgres databases.
pub async fn spawn_stack_on_postgres() -> TestStack {
    spawn(TestDatabase::postgres().await, TestDatabase::postgres().await, &[]).await
}

async fn spawn(inventory_db: TestDatabase, orders_db: TestDatabase, flags: Flags<'_>) -> TestStack {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = NatsServer::start();
    let inventory = start_inventory(&nats, &inventory_db).await;
    let mut args = vec![
        "order-service".to_string(),
        "--nats-url".into(),
        nats.url(),
        "--database-url".into(),
        orders_db.url().into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--declare-streams".into(),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    let app = order_service::App::build(order_service::Config::parse_from(args))
        .await
        .expect("order-service starts");
    let base_url = format!("http://127.0.0.1:{}", app.port());
    let breaker = app.breaker();
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { app.run_until_stopped(shutdown).await.expect("order-service runs") }
    });
    let requests = RequestClient::new(nats.client().await, Duration::from_secs(10));
    TestStack {
        nats,
        inventory_db,
        orders_db,
        inventory: Some(inventory),
        orders: Some(Running { shutdown, task }),
        base_url,
        http: reqwest::Client::new(),
        breaker,
        requests,
    }
}

async fn start_inventory(nats: &NatsServer, db: &TestDatabase) -> Running {
    let config = inventory_service::Config::parse_from([
        "inventory-service",
        "--nats-url",
        &nats.url(),
        "--database-url",
        db.url(),
        "--declare-streams",
    ]);
    let app = inventory_service::App::build(config).await.expect("inventory-service starts");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Running { shutdown, task }
}

/// An HTTP answer: status, headers and JSON body (Null when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestStack {
    /// Stops inventory-service.
    pub async fn stop_inventory(&mut self) {
        if let Some(inventory) = self.inventory.take() {
            inventory.stop().await;
        }
    }

    /// Starts inventory-service again on its database.
    pub async fn start_inventory(&mut self) {
        self.inventory = Some(start_inventory(&self.nats, &self.inventory_db).await);
    }

    /// Adds stock through `inventory.restock`.
    pub async fn restock(&self, sku: &str, quantity: u32) -> RestockReply {
        self.requests
            .request(names::INVENTORY_RESTOCK, &RestockRequest { sku: sku.into(), quantity })
            .await
            .expect("restock")
    }

    /// Stock of one SKU as (available, reserved).
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        let reply: contracts::StockReply =
            self.requests.request(names::INVENTORY_STOCK, &json!({ "skus": [sku] })).await.expect("stock");
        (reply.items[0].available, reply.items[0].reserved)
    }

    /// Waits until every reservation of `sku` is committed (nothing reserved) and `available`
    /// units are left; panics after 30 s.
    pub async fn settled_stock(&self, sku: &str, available: i64) {
        let what = format!("{sku} to settle at {available} available, 0 reserved");
        switchyard::testkit::eventually(Duration::from_secs(30), &what, || async {
            self.stock(sku).await == (available, 0)
        })
        .await;
    }

    /// `POST /orders` with a JSON body and an optional Idempotency-Key.
    pub async fn post_order(&self, body: &Value, key: Option<&str>) -> Answer {
        let mut request = self.http.post(format!("{}/orders", self.base_url)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        answer(request.send().await.expect("POST /orders")).await
    }

    /// `GET <path>`.
    pub async fn get(&self, path: &str) -> Answer {
        answer(self.http.get(format!("{}{path}", self.base_url)).send().await.expect("GET")).await
    }

    /// A raw request, for bodies and headers the typed helpers never send.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base_url))
    }
}

/// Reads an HTTP response into an [`Answer`].
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("response body");
    let json = headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        // Every JSON body, success or error, ends its line (curl's output does not run into the prompt).
        assert!(bytes.ends_with(b"}\n"), "a JSON body without its final newline: {bytes:?}");
    }
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, headers, body }
}

/// An order body for `user_id` with one line.
pub fn order_body(sku: &str, quantity: u32) -> Value {
    json!({ "user_id": "u1", "email": "u1@example.com", "items": [{ "sku": sku, "quantity": quantity }] })
}
