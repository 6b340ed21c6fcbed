//! One helper every inventory test uses: a real nats-server, a fresh database and the service.

use std::time::Duration;

use clap::Parser;
use contracts::names;
use contracts::{Item, RestockReply, RestockRequest};
use inventory_service::{App, Config};
use serde::de::DeserializeOwned;
use switchyard::Shutdown;
use switchyard::client::{RequestClient, RequestError};
use switchyard::testkit::{NatsServer, TestDatabase};
use tokio::task::JoinHandle;

/// A running inventory instance and the way to stop it.
pub struct Instance {
    pub id: String,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Instance {
    /// Stops the instance and waits until it has drained.
    pub async fn stop(self) {
        self.shutdown.trigger();
        switchyard::testkit::joined(self.task, "inventory-service to stop").await;
    }
}

/// NATS, a database, and one or more inventory instances on them.
pub struct TestInventory {
    pub nats: NatsServer,
    pub db: TestDatabase,
    pub client: RequestClient,
    pub instances: Vec<Instance>,
}

impl TestInventory {
    /// Starts another instance on the same NATS and database.
    pub async fn add_instance(&mut self) {
        let instance = start_instance(&self.nats, &self.db, &[]).await;
        self.instances.push(instance);
    }

    /// A typed request to an inventory subject.
    pub async fn call<Req: serde::Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Resp, RequestError> {
        self.client.request(subject, request).await
    }

    /// Adds `quantity` of `sku`.
    pub async fn restock(&self, sku: &str, quantity: u32) -> RestockReply {
        self.call(names::INVENTORY_RESTOCK, &RestockRequest { sku: sku.into(), quantity })
            .await
            .expect("restock")
    }
}

async fn start_instance(nats: &NatsServer, db: &TestDatabase, flags: &[&str]) -> Instance {
    let url = nats.url();
    let data = std::env::temp_dir().join("unused").display().to_string();
    let mut args = vec!["inventory-service", "--nats-url", &url, "--database-url", db.url()];
    args.extend(["--data-dir", &data, "--declare-streams"]);
    args.extend_from_slice(flags);
    let config = Config::parse_from(args);
    let app = App::build(config).await.expect("inventory-service starts");
    let id = app.service_id().to_string();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Instance { id, shutdown, task }
}

/// Inventory on SQLite.
pub async fn spawn_inventory() -> TestInventory {
    spawn_on(TestDatabase::sqlite(), &[]).await
}

/// Inventory on SQLite with extra flags (say, a short `--reservation-ttl`).
pub async fn spawn_inventory_with(flags: &[&str]) -> TestInventory {
    spawn_on(TestDatabase::sqlite(), flags).await
}

/// Inventory on a fresh Postgres database.
pub async fn spawn_inventory_on_postgres() -> TestInventory {
    spawn_on(TestDatabase::postgres().await, &[]).await
}

async fn spawn_on(db: TestDatabase, flags: &[&str]) -> TestInventory {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = NatsServer::start();
    let instance = start_instance(&nats, &db, flags).await;
    let client = RequestClient::new(nats.client().await, Duration::from_secs(10));
    TestInventory { nats, db, client, instances: vec![instance] }
}

/// An order line.
pub fn item(sku: &str, quantity: u32) -> Item {
    Item { sku: sku.into(), quantity }
}
