//! Start-up and shutdown of the inventory service: flags, connections, the micro service, the
//! durable consumers (order events, reservation expiry timers), the start-up sweep and the outbox
//! relay.

use std::time::Duration;

use clap::Parser;
use contracts::names;
use contracts::{CheckRequest, ReleaseRequest, ReserveRequest, RestockRequest, StockRequest};
use switchyard::config::{CommonArgs, ConsumerArgs, parse_duration};
use switchyard::consumer::{Consumer, ConsumerError};
use switchyard::micro::{MicroError, ServiceError, ServiceHandle, ServiceSpec};
use switchyard::outbox::Relay;
use switchyard::platform::{Platform, PlatformError};
use switchyard::shutdown::Shutdown;

use crate::events;
use crate::store::Inventory;

/// inventory-service: stock and reservations, served as the NATS micro service `inventory`, and
/// the durable consumer `inventory` that commits or releases reservations as orders progress.
#[derive(Debug, Clone, Parser)]
#[command(name = "inventory-service", version, about)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,

    /// Time after which a reservation that was never committed is released (by a timer the
    /// broker fires: a scheduled message on the TIMERS stream).
    #[arg(long, env = "RESERVATION_TTL", value_parser = parse_duration, default_value = "15m")]
    pub reservation_ttl: Duration,

    /// How often to look for expired reservations in the database as well, a backstop for
    /// reservations without a timer (made by an older version); 0: only once, at start-up.
    #[arg(long, env = "SWEEP_INTERVAL", value_parser = parse_duration, default_value = "0")]
    pub sweep_interval: Duration,

    /// Requests this instance handles at once; more wait in the subscription.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("failed to start the micro service")]
    Micro(#[from] MicroError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// A running inventory service.
pub struct App {
    platform: Platform,
    service: ServiceHandle,
    inventory: Inventory,
    consumer: Consumer,
    timers: Consumer,
    relay: Relay,
    sweep_interval: Duration,
}

impl App {
    /// Connects to NATS and the database, migrates, declares the streams, binds the consumer and
    /// starts serving `inventory.*`.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let platform = Platform::connect(
            &config.common,
            names::INVENTORY_SERVICE,
            &crate::MIGRATIONS,
            &[contracts::streams::ORDERS, contracts::streams::TIMERS],
        )
        .await?;
        let relay = platform.relay();
        let inventory = Inventory::new(platform.db.clone(), config.reservation_ttl)
            .with_relay(relay.waker())
            .with_broker_timers();
        let consumer = platform.consumer(config.consumer.apply(events::consumer_spec()), inventory.clone());
        consumer.bind().await?;
        let timers = platform
            .consumer(config.consumer.apply(events::timers_spec()), events::Expiries(inventory.clone()));
        timers.bind().await?;
        let service =
            spec(&inventory).max_in_flight(config.max_in_flight).start(platform.client.clone()).await?;
        tracing::info!(instance = %platform.instance, id = %service.id(), "inventory-service ready");
        Ok(App {
            platform,
            service,
            inventory,
            consumer,
            timers,
            relay,
            sweep_interval: config.sweep_interval,
        })
    }

    /// The micro service instance id.
    pub fn service_id(&self) -> &str {
        self.service.id()
    }

    /// The inventory logic, for tests and tools.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Serves until `shutdown` fires; then stops taking events and requests, finishes and acks
    /// in-flight work, publishes what it committed, drains NATS and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        let App { platform, service, inventory, consumer, timers, relay, sweep_interval } = self;
        let relay = platform.spawn_relay(relay);
        let sweeper = tokio::spawn(events::run_sweeper(inventory.clone(), sweep_interval, shutdown.clone()));
        let consumer_task = tokio::spawn(consumer.run(shutdown.clone()));
        let timers_task = tokio::spawn(timers.run(shutdown.clone()));

        shutdown.wait().await;
        tracing::info!("inventory-service stopping");
        // In-flight requests, events and the sweep finish side by side.
        let (consumed, timed, swept, _) = tokio::join!(consumer_task, timers_task, sweeper, service.stop());
        for (what, result) in [("inventory consumer", consumed), ("timers consumer", timed)] {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "{what} failed"),
                Err(err) => tracing::error!(error = %err, "{what} task failed"),
            }
        }
        if let Err(err) = swept {
            tracing::error!(error = %err, "sweeper task failed");
        }
        platform.stop(Some(relay), None).await;
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
