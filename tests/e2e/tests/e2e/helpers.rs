//! One helper every end-to-end test uses: a real nats-server and all four services in process,
//! each on its own fresh SQLite database, order-service's HTTP API on a free port.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use clap::Parser;
use contracts::names;
use contracts::{RestockReply, RestockRequest, StockReply};
use serde_json::{Value, json};
use switchyard::Shutdown;
use switchyard::client::RequestClient;
use switchyard::testkit::{NatsServer, TestDatabase, eventually};
use tokio::task::JoinHandle;

/// A service running in this process.
pub struct Running {
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Running {
    pub fn spawn<F>(run: impl FnOnce(Shutdown) -> F) -> Running
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Running { shutdown, task }
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.trigger();
        switchyard::testkit::joined(self.task, "the service to stop").await;
    }
}

/// Flags every consumer service gets in tests: quick redelivery, so failure tests stay short.
const CONSUMER_FLAGS: [&str; 4] = ["--ack-wait", "2s", "--retry-backoff", "100ms,200ms"];

/// The whole stack.
pub struct Stack {
    pub nats: NatsServer,
    pub data: switchyard::testkit::TempDir,
    pub inventory_db: TestDatabase,
    pub orders_db: TestDatabase,
    pub email_db: TestDatabase,
    pub audit_db: TestDatabase,
    pub inventory: Vec<Running>,
    pub emails: Vec<Running>,
    pub audits: Vec<Running>,
    pub orders: Option<Running>,
    pub base_url: String,
    pub http: reqwest::Client,
    pub requests: RequestClient,
    pub js: jetstream::Context,
    /// Whether the server runs the repo's nats.conf, each service logging in as its own user.
    pub secure: bool,
}

/// Development passwords the secure stack sets for nats.conf's `$..._PASSWORD` variables.
pub const PASSWORDS: [(&str, &str, &str); 8] = [
    ("inventory", "INVENTORY_PASSWORD", "test-inventory"),
    ("orders", "ORDERS_PASSWORD", "test-orders"),
    ("email", "EMAIL_PASSWORD", "test-email"),
    ("audit", "AUDIT_PASSWORD", "test-audit"),
    ("ops", "OPS_PASSWORD", "test-ops"),
    ("sys", "SYS_PASSWORD", "test-sys"),
    ("partner", "PARTNER_PASSWORD", "test-partner"),
    ("loyalty", "LOYALTY_PASSWORD", "test-loyalty"),
];

/// The test password of `user`.
pub fn password(user: &str) -> &'static str {
    PASSWORDS.iter().find(|(u, _, _)| *u == user).map(|(_, _, p)| *p).unwrap_or_default()
}

/// Connects to the secure stack's server as `user`, reporting server errors (permission
/// violations) on the returned channel.
pub async fn connect_as(
    nats: &NatsServer,
    user: &str,
) -> (async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password(user).into())
        .custom_inbox_prefix(switchyard::config::inbox_prefix_for(user))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = tx.send(err.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap_or_else(|err| panic!("connect as {user}: {err}"));
    (client, rx)
}

impl Stack {
    pub fn common(&self, db: &TestDatabase, user: &str) -> Vec<String> {
        let mut args = vec![
            "--nats-url".into(),
            self.nats.url(),
            "--database-url".into(),
            db.url().into(),
            "--data-dir".into(),
            self.data.path().display().to_string(),
        ];
        if self.secure {
            args.extend(["--nats-user".into(), user.into(), "--nats-password".into(), password(user).into()]);
        } else {
            // No authorization: each service may declare the streams itself.
            args.push("--declare-streams".into());
        }
        args
    }

    /// The email directory.
    pub fn email_dir(&self) -> PathBuf {
        self.data.path().join("emails")
    }

    /// Messages the broker delivered to each client of `service` (see [`inbox_deliveries`]).
    pub async fn inbox_deliveries(&self, service: &str) -> Vec<u64> {
        inbox_deliveries(&[self.nats.monitor_url().expect("the test server has a monitoring port")], service)
            .await
    }

    /// Starts another inventory-service instance.
    pub async fn add_inventory(&mut self) {
        let mut args = vec!["inventory-service".to_string()];
        args.extend(self.common(&self.inventory_db, "inventory"));
        args.extend(CONSUMER_FLAGS.iter().map(|s| s.to_string()));
        let app = inventory_service::App::build(inventory_service::Config::parse_from(args))
            .await
            .expect("inventory");
        self.inventory.push(Running::spawn(|s| app.run_until_stopped(s)));
    }

    /// Starts another email-service instance.
    pub async fn add_email(&mut self) {
        self.add_email_with(&[]).await
    }

    /// Starts another email-service instance with `extra` flags (say, `--smtp-url`).
    pub async fn add_email_with(&mut self, extra: &[&str]) {
        let mut args = vec!["email-service".to_string()];
        args.extend(self.common(&self.email_db, "email"));
        args.extend(CONSUMER_FLAGS.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let app = email_service::App::build(email_service::Config::parse_from(args)).await.expect("email");
        self.emails.push(Running::spawn(|s| app.run_until_stopped(s)));
    }

    /// Starts another audit-service instance.
    pub async fn add_audit(&mut self) {
        let mut args = vec!["audit-service".to_string()];
        args.extend(self.common(&self.audit_db, "audit"));
        args.extend(CONSUMER_FLAGS.iter().map(|s| s.to_string()));
        let app = audit_service::App::build(audit_service::Config::parse_from(args)).await.expect("audit");
        self.audits.push(Running::spawn(|s| app.run_until_stopped(s)));
    }

    /// Restocks `sku`.
    pub async fn restock(&self, sku: &str, quantity: u32) -> RestockReply {
        self.requests
            .request(names::INVENTORY_RESTOCK, &RestockRequest { sku: sku.into(), quantity })
            .await
            .expect("restock")
    }

    /// (available, reserved) of `sku`.
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        let reply: StockReply =
            self.requests.request(names::INVENTORY_STOCK, &json!({ "skus": [sku] })).await.expect("stock");
        (reply.items[0].available, reply.items[0].reserved)
    }

    /// Places an order for `quantity` of `sku`; returns (status, body).
    pub async fn order(&self, sku: &str, quantity: u32) -> (u16, Value) {
        let body = json!({ "user_id": "u1", "email": "u1@example.com", "items": [{ "sku": sku, "quantity": quantity }] });
        let response =
            self.http.post(format!("{}/orders", self.base_url)).json(&body).send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Cancels an order; returns the status.
    pub async fn cancel(&self, id: &str) -> u16 {
        let url = format!("{}/orders/{id}/cancel", self.base_url);
        self.http.post(url).send().await.expect("cancel").status().as_u16()
    }

    /// Messages in `ORDERS` on `filter` (e.g. `events.orders.created.*`).
    pub async fn events(&self, filter: &str) -> u64 {
        switchyard::testkit::subject_count(&self.js, names::ORDERS_STREAM, filter).await
    }

    /// Rows of a consumer service's inbox.
    pub async fn inbox(&self, db: &TestDatabase, consumer: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(db.url()).await.expect("connect");
        let n = switchyard::inbox::count(&pool, consumer).await.expect("inbox count");
        pool.close().await;
        n
    }

    /// Waits until `filter` has `n` events in `ORDERS`.
    pub async fn wait_events(&self, filter: &str, n: u64) {
        let what = format!("{n} events on {filter}");
        eventually(Duration::from_secs(30), &what, || async { self.events(filter).await == n }).await;
    }
}

/// Runs a `SELECT COUNT(*)` on a test database.
pub async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    switchyard::testkit::count(db.url(), sql).await
}

/// The whole stack with one instance of each service, on a server without authentication.
pub async fn spawn_stack() -> Stack {
    spawn(false, false).await
}

/// The whole stack with every service on its own fresh Postgres database.
pub async fn spawn_stack_on_postgres() -> Stack {
    spawn(false, true).await
}

/// The whole stack on a server running the repo's nats.conf: every service logs in as its own
/// least-privilege user; the test's own client logs in as `ops`.
pub async fn spawn_secure_stack() -> Stack {
    spawn(true, false).await
}

async fn spawn(secure: bool, postgres: bool) -> Stack {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = if secure {
        let mut builder =
            NatsServer::builder().config(switchyard::testkit::workspace_root().join("nats.conf"));
        for (_, variable, password) in PASSWORDS {
            builder = builder.env(variable, password);
        }
        builder.start()
    } else {
        NatsServer::start()
    };
    let data = switchyard::testkit::temp_dir();
    let (inventory_db, orders_db, email_db, audit_db) = if postgres {
        (
            TestDatabase::postgres().await,
            TestDatabase::postgres().await,
            TestDatabase::postgres().await,
            TestDatabase::postgres().await,
        )
    } else {
        (TestDatabase::sqlite(), TestDatabase::sqlite(), TestDatabase::sqlite(), TestDatabase::sqlite())
    };
    let client = if secure { connect_as(&nats, "ops").await.0 } else { nats.client().await };
    let js = jetstream::new(client.clone());
    if secure {
        // The operator's step: services under nats.conf may only verify the streams.
        switchyard::streams::ensure_streams(
            &js,
            contracts::streams::ALL,
            &switchyard::streams::StreamSettings::default(),
        )
        .await
        .expect("provision the streams as ops");
        js.create_or_update_key_value(switchyard::shared_breaker::bucket_config(1))
            .await
            .expect("provision the shared breakers' bucket as ops");
    }
    let mut stack = Stack {
        data,
        inventory_db,
        orders_db,
        email_db,
        audit_db,
        inventory: Vec::new(),
        emails: Vec::new(),
        audits: Vec::new(),
        orders: None,
        base_url: String::new(),
        http: reqwest::Client::new(),
        requests: RequestClient::new(client, Duration::from_secs(10)),
        js,
        nats,
        secure,
    };
    stack.add_inventory().await;
    stack.add_email().await;
    stack.add_audit().await;
    let mut args = vec!["order-service".to_string()];
    args.extend(stack.common(&stack.orders_db, "orders"));
    args.extend(["--http-addr".to_string(), "127.0.0.1:0".to_string()]);
    let app =
        order_service::App::build(order_service::Config::parse_from(args)).await.expect("order-service");
    stack.base_url = format!("http://127.0.0.1:{}", app.port());
    stack.orders = Some(Running::spawn(|s| async move {
        app.run_until_stopped(s).await.expect("order-service runs and stops cleanly");
    }));
    stack
}

/// Messages the broker delivered to each client named `<service>-<instance>` on its own inbox
/// subscriptions (a pull consumer's deliveries arrive there; the client's wildcard inbox for
/// request replies and publish acks is left out), one figure per connection, read from each
/// server's `/connz` (a cluster's nodes each know their own clients): the broker's own count of
/// who got what.
pub async fn inbox_deliveries(monitors: &[String], service: &str) -> Vec<u64> {
    let prefix = format!("{service}-");
    let mut found = Vec::new();
    for monitor in monitors {
        for connection in &connections(monitor).await {
            if !connection["name"].as_str().is_some_and(|n| n.starts_with(&prefix)) {
                continue;
            }
            let delivered = connection["subscriptions_list_detail"]
                .as_array()
                .map(|subs| {
                    subs.iter()
                        .filter(|s| {
                            s["subject"]
                                .as_str()
                                .is_some_and(|s| s.starts_with("_INBOX") && !s.ends_with('*'))
                        })
                        .filter_map(|s| s["msgs"].as_u64())
                        .sum()
                })
                .unwrap_or(0);
            found.push(delivered);
        }
    }
    found
}

/// The client connections a server's monitoring port lists (`/connz`, with each one's
/// subscriptions and their message counts).
pub async fn connections(monitor: &str) -> Vec<Value> {
    let connz: Value = reqwest::get(format!("{monitor}/connz?subs=detail&limit=1024"))
        .await
        .expect("connz answers")
        .json()
        .await
        .expect("connz is JSON");
    connz["connections"].as_array().cloned().expect("connz lists connections")
}
