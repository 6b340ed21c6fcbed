//! Start-up and shutdown of the inventory service: flags, connections, the micro service.

use std::time::Duration;

use clap::Parser;
use switchyard::config::{CommonArgs, parse_duration};
use switchyard::contracts::{CheckRequest, ReleaseRequest, ReserveRequest, RestockRequest, StockRequest};
use switchyard::db::{Db, DbError};
use switchyard::micro::{MicroError, ServiceError, ServiceHandle, ServiceSpec};
use switchyard::names;
use switchyard::nats::ConnectError;
use switchyard::shutdown::Shutdown;

use crate::store::Inventory;

/// inventory-service: stock and reservations, served as the NATS micro service `inventory`.
#[derive(Debug, Clone, Parser)]
#[command(name = "inventory-service", version, about)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Time after which a reservation that was never committed may be released.
    #[arg(long, env = "RESERVATION_TTL", value_parser = parse_duration, default_value = "15m")]
    pub reservation_ttl: Duration,

    /// Requests this instance handles at once; more wait in the subscription.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Nats(#[from] ConnectError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("failed to start the micro service")]
    Micro(#[from] MicroError),
}

/// A running inventory service.
pub struct App {
    client: async_nats::Client,
    service: ServiceHandle,
    inventory: Inventory,
}

impl App {
    /// Connects to NATS and the database, migrates, and starts serving `inventory.*`.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let instance = config.common.instance_id();
        let db = Db::connect(&config.common.database_url_for(names::INVENTORY_SERVICE), &crate::MIGRATIONS)
            .await?;
        let client =
            switchyard::nats::connect(&config.common.nats, names::INVENTORY_SERVICE, &instance).await?;
        let inventory = Inventory::new(db, config.reservation_ttl);
        let service = spec(&inventory).max_in_flight(config.max_in_flight).start(client.clone()).await?;
        tracing::info!(instance = %instance, id = %service.id(), "inventory-service ready");
        Ok(App { client, service, inventory })
    }

    /// The micro service instance id.
    pub fn service_id(&self) -> &str {
        self.service.id()
    }

    /// The inventory logic, for tests and tools.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Serves until `shutdown` fires, then answers in-flight requests, drains NATS and closes the
    /// database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        shutdown.wait().await;
        tracing::info!("inventory-service stopping");
        self.service.stop().await;
        switchyard::nats::drain(&self.client, Duration::from_secs(5)).await;
        self.inventory.db().close().await;
        tracing::info!("inventory-service stopped");
    }
}

/// The `inventory` micro service: its endpoints and their handlers.
pub fn spec(inventory: &Inventory) -> ServiceSpec {
    let (check, reserve, release, restock, stock) =
        (inventory.clone(), inventory.clone(), inventory.clone(), inventory.clone(), inventory.clone());
    ServiceSpec::new(names::INVENTORY_SERVICE, env!("CARGO_PKG_VERSION"))
        .description("Stock levels and reservations")
        .endpoint("check", names::INVENTORY_CHECK, move |request: CheckRequest| {
            let inventory = check.clone();
            async move { inventory.check(&request).await.map_err(ServiceError::from) }
        })
        .endpoint("reserve", names::INVENTORY_RESERVE, move |request: ReserveRequest| {
            let inventory = reserve.clone();
            async move { inventory.reserve(&request).await.map_err(ServiceError::from) }
        })
        .endpoint("release", names::INVENTORY_RELEASE, move |request: ReleaseRequest| {
            let inventory = release.clone();
            async move { inventory.release(&request).await.map_err(ServiceError::from) }
        })
        .endpoint("restock", names::INVENTORY_RESTOCK, move |request: RestockRequest| {
            let inventory = restock.clone();
            async move { inventory.restock(&request).await.map_err(ServiceError::from) }
        })
        .endpoint("stock", names::INVENTORY_STOCK, move |request: StockRequest| {
            let inventory = stock.clone();
            async move { inventory.stock(&request).await.map_err(ServiceError::from) }
        })
}
