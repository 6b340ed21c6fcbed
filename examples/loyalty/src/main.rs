//! loyalty-service: a team's own service on Switchyard, in one file. It earns a customer a point
//! per unit ordered (durable consumer `loyalty` on `ORDERS`, exactly once), announces it
//! (`events.loyalty.awarded.<order_id>` through the outbox, stream `LOYALTY`), answers
//! `loyalty.points` and `loyalty.quote` (micro), and asks inventory through a breaker.
use std::sync::Arc;

use clap::Parser;
use contracts::{CheckReply, CheckRequest, Item, OrderCreated, names};
use serde::{Deserialize, Serialize};
use switchyard::client::GuardedClient;
use switchyard::consumer::{Apply, ApplyFuture, ConsumerSpec, Delivery};
use switchyard::contract::{ContractError, Validate};
use switchyard::db::{Db, Migrations};
use switchyard::outbox::{self, OutboxEvent, RelayWaker};
use switchyard::platform::Platform;
use switchyard::streams::EventStream;
use switchyard::{ServiceError, ServiceSpec, Shutdown, config, inbox};

/// The stream this service publishes to (an operator declares it, like `ORDERS`).
const LOYALTY: EventStream = EventStream {
    name: "LOYALTY",
    subjects: &["events.loyalty.>"],
    description: "Loyalty points awarded",
    schedules: false,
};
const POINTS: &str = "CREATE TABLE points (user_id TEXT PRIMARY KEY, points BIGINT NOT NULL)";
/// Its schema, the platform's outbox and inbox included.
const MIGRATIONS: Migrations = switchyard::migrations![1 => "points": POINTS; outbox = 2, inbox = 3];

/// loyalty-service: points for orders.
#[derive(Debug, Clone, Parser)]
#[command(name = "loyalty-service", version, about)]
struct Config {
    #[command(flatten)]
    common: config::CommonArgs,
    #[command(flatten)]
    consumer: config::ConsumerArgs,
    #[command(flatten)]
    breaker: config::BreakerArgs,
    #[command(flatten)]
    retry: config::RetryArgs,
}

/// `loyalty.points` asks a user's points (`points` is ignored on the way in).
#[derive(Debug, Serialize, Deserialize)]
struct Points {
    user_id: String,
    #[serde(default)]
    points: i64,
}
/// `loyalty.quote`: the points `items` would earn, and whether inventory has them (`null`: it did
/// not answer).
#[derive(Debug, Serialize, Deserialize)]
struct Quote {
    items: Vec<Item>,
    #[serde(default)]
    points: i64,
    available: Option<bool>,
}
impl Validate for Points {
    fn validate(&self) -> Result<(), ContractError> {
        let blank = self.user_id.trim().is_empty();
        if blank { Err(ContractError::Invalid("user_id must not be empty".into())) } else { Ok(()) }
    }
}
impl Validate for Quote {
    fn validate(&self) -> Result<(), ContractError> {
        contracts::validate_items(&self.items)
    }
}

/// The consumer's handler: inbox row, points and outbox row in one transaction.
struct Award(RelayWaker);
impl Apply for Award {
    fn apply<'a>(&'a self, tx: &'a mut sqlx::AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(async move {
            let order: OrderCreated = delivery.json()?;
            if !inbox::record(tx, "loyalty", &order.event_id.to_string()).await? {
                return Ok(()); // applied before: a redelivery changes nothing
            }
            let points: i64 = order.items.iter().map(|item| i64::from(item.quantity)).sum();
            sqlx::query("INSERT INTO points (user_id, points) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET points = points.points + $2")
                .bind(&order.user_id).bind(points).execute(&mut *tx).await?;
            let awarded = Points { user_id: order.user_id.clone(), points };
            let subject = format!("events.loyalty.awarded.{}", order.order_id);
            let trace = delivery
                .header(outbox::TRACEPARENT)
                .map(str::to_string)
                .unwrap_or_else(outbox::current_traceparent);
            let event = OutboxEvent::new(uuid::Uuid::new_v4(), subject, &awarded, trace)?;
            Ok(outbox::enqueue(tx, &event).await?)
        })
    }
    fn committed(&self) {
        self.0.wake();
    }
}

async fn points(db: Db, request: Points) -> Result<Points, ServiceError> {
    let points: Option<i64> = sqlx::query_scalar("SELECT points FROM points WHERE user_id = $1")
        .bind(&request.user_id)
        .fetch_optional(db.pool())
        .await
        .map_err(ServiceError::internal)?;
    Ok(Points { user_id: request.user_id, points: points.unwrap_or(0) })
}

async fn quote(inventory: Arc<GuardedClient>, request: Quote) -> Result<Quote, ServiceError> {
    let check = CheckRequest { items: request.items.clone() };
    // A dead inventory costs the answer one field, never the answer.
    let reply: Option<CheckReply> =
        inventory.call_or_else(names::INVENTORY_CHECK, &check, Some, |_| None).await;
    let available = reply.map(|reply| reply.all_available);
    let points = request.items.iter().map(|item| i64::from(item.quantity)).sum();
    Ok(Quote { items: request.items, points, available })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchyard::telemetry::exit_code(run(Config::parse(), Shutdown::on_signals()).await)
}

async fn run(mut config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    // Logs, and traces exported when --otlp-endpoint is set (flushed when it drops).
    let _telemetry = config.common.install_telemetry("loyalty-service", env!("CARGO_PKG_VERSION"))?;
    let streams = [contracts::streams::ORDERS, LOYALTY];
    let platform = Platform::connect(&config.common, "loyalty", &MIGRATIONS, &streams).await?;
    let relay = platform.relay();
    let spec = ConsumerSpec::new(names::ORDERS_STREAM, "loyalty", vec!["events.orders.created.*".into()]);
    let consumer = platform.consumer(config.consumer.apply(spec), Award(relay.waker()));
    consumer.bind().await?;
    let breaker = config.breaker.to_config();
    // inventory.check is a read: retried (within the breaker's timeout and the retry budget).
    let inventory = GuardedClient::new(platform.client.clone(), names::INVENTORY_SERVICE, breaker)
        .with_retry(config.retry.to_policy(), names::IDEMPOTENT);
    let inventory = Arc::new(inventory);
    inventory.breaker_arc().observe(&platform.scrape); // its state on /metrics (--metrics-addr)
    let db = platform.db.clone();
    let service = ServiceSpec::new("loyalty", env!("CARGO_PKG_VERSION"))
        .description("Loyalty points for orders")
        .endpoint("points", "loyalty.points", move |request: Points| points(db.clone(), request))
        .endpoint("quote", "loyalty.quote", move |request: Quote| quote(inventory.clone(), request))
        .start(platform.client.clone())
        .await?;
    let relay = platform.spawn_relay(relay);
    let consumed = consumer.run(shutdown).await; // until SIGINT or SIGTERM: in-flight events finish
    platform.stop(Some(relay), Some(service)).await;
    Ok(consumed?)
}
