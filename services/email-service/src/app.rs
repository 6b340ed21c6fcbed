//! Start-up and shutdown of the email service, and its event handler.

use std::time::Duration;

use clap::Parser;
use contracts::OrderCreated;
use contracts::names::{self, order_event};
use lettre::message::Mailbox;
use sqlx::AnyConnection;
use switchyard::config::{CommonArgs, ConsumerArgs};
use switchyard::consumer::{
    Apply, ApplyFuture, Consumer, ConsumerError, ConsumerSpec, Delivery, HandleError,
};
use switchyard::db::Db;
use switchyard::micro::{ServiceHandle, ServiceSpec};
use switchyard::outbox::{self, Relay, RelayWaker, TRACEPARENT};
use switchyard::platform::{Platform, PlatformError};
use switchyard::shutdown::Shutdown;
use switchyard::{inbox, time};

use crate::mailer::{self, Mailer, MailerError};

/// email-service: one confirmation email per accepted order.
#[derive(Debug, Clone, Parser)]
#[command(name = "email-service", version, about)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,

    /// Send over SMTP at this URL (`smtp://host:port`) instead of writing .eml files under
    /// <data-dir>/emails.
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,

    /// The From address of confirmations.
    #[arg(long, env = "MAIL_FROM", default_value = "Switchyard <orders@switchyard.local>")]
    pub mail_from: Mailbox,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Mailer(#[from] MailerError),
    #[error("failed to start the micro service")]
    Micro(#[from] switchyard::micro::MicroError),
}

/// What the handler needs.
#[derive(Debug, Clone)]
pub struct Emailer {
    db: Db,
    mailer: Mailer,
    from: Mailbox,
    waker: RelayWaker,
}

impl Emailer {
    /// Confirmations recorded as sent.
    pub async fn sent(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM emails").fetch_one(self.db.pool()).await
    }

    /// Sends the confirmation of one `created` event, unless it was sent before. Outside any
    /// write transaction, so a slow SMTP server holds up neither the other handlers nor the
    /// relay; the order-keyed emails row and file name keep it to one email.
    async fn send(&self, delivery: &Delivery) -> Result<(), HandleError> {
        let order: OrderCreated = delivery.json()?;
        let Some(to) = order.email.as_deref() else { return Ok(()) };
        let order_id = order.order_id.to_string();
        let already: Option<String> = sqlx::query_scalar("SELECT order_id FROM emails WHERE order_id = $1")
            .bind(&order_id)
            .fetch_optional(self.db.pool())
            .await?;
        if already.is_none() {
            let message = mailer::confirmation(&order, &self.from, to)?;
            self.mailer.send(&order_id, &message).await?;
        }
        Ok(())
    }

    /// Records a sent confirmation inside `tx`, once, with its `confirmation_sent` event.
    async fn record(&self, tx: &mut AnyConnection, delivery: &Delivery) -> Result<(), HandleError> {
        let order: OrderCreated = delivery.json()?;
        if !inbox::record(tx, names::EMAIL_CONSUMER, &order.event_id.to_string()).await? {
            return Ok(());
        }
        let Some(to) = order.email.as_deref() else { return Ok(()) };
        let inserted = sqlx::query(
            "INSERT INTO emails (order_id, recipient, message_id, transport, sent_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order.order_id.to_string())
        .bind(to)
        .bind(mailer::message_id(&order))
        .bind(self.mailer.kind())
        .bind(time::now_rfc3339())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            let event = contracts::OrderLifecycle::event(
                order_event::CONFIRMATION_SENT,
                order.order_id,
                format!("confirmation sent to {to}"),
                delivery.header(TRACEPARENT),
            );
            outbox::enqueue(tx, &event).await?;
        }
        Ok(())
    }
}

/// The `email` consumer: each batch's confirmations are sent concurrently, then recorded by
/// group commit.
impl Apply for Emailer {
    fn prepare<'a>(&'a self, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(self.send(delivery))
    }

    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(self.record(tx, delivery))
    }

    fn committed(&self) {
        self.waker.wake();
    }
}

/// The `email` consumer: order created events.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec::new(names::ORDERS_STREAM, names::EMAIL_CONSUMER, vec!["events.orders.created.*".into()])
}

/// A running email service.
pub struct App {
    client: async_nats::Client,
    emailer: Emailer,
    consumer: Consumer,
    relay: Relay,
    service: ServiceHandle,
}

impl App {
    /// Connects, migrates, declares the streams and binds the consumer.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let platform = Platform::connect(
            &config.common,
            names::EMAIL_SERVICE,
            &crate::MIGRATIONS,
            contracts::streams::ALL,
        )
        .await?;
        let (instance, db, client, js) =
            (platform.instance.clone(), platform.db.clone(), platform.client.clone(), platform.js.clone());
        // An empty SMTP_URL (as compose passes when it is unset) means files, like no flag.
        let mailer = match config.smtp_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => Mailer::smtp(url)?,
            None => Mailer::files(config.common.data_dir.join("emails"))?,
        };
        let relay = platform.relay();
        let emailer = Emailer { db, mailer, from: config.mail_from.clone(), waker: relay.waker() };
        let consumer = Consumer::batched(
            js,
            config.consumer.apply(consumer_spec()),
            emailer.db.clone(),
            emailer.clone(),
        );
        consumer.bind().await?;
        // No request endpoints, but discoverable like every service (`nats micro ls`, health checks).
        let service = ServiceSpec::new(names::EMAIL_SERVICE, env!("CARGO_PKG_VERSION"))
            .description("Order confirmation emails (consumer `email`)")
            .start(client.clone())
            .await?;
        tracing::info!(instance = %instance, mailer = ?emailer.mailer, "email-service ready");
        Ok(App { client, emailer, consumer, relay, service })
    }

    /// The handler's state, for tests and tools.
    pub fn emailer(&self) -> &Emailer {
        &self.emailer
    }

    /// Consumes until `shutdown`; then finishes and acks in-flight events, publishes what it
    /// committed, drains NATS and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        let App { client, emailer, consumer, relay, service } = self;
        let relay_stop = Shutdown::new();
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
        match consumer.run(shutdown).await {
            Ok(()) => {}
            Err(err) => tracing::error!(error = %err, "email consumer failed"),
        }
        relay_stop.trigger();
        if let Err(err) = relay_task.await {
            tracing::error!(error = %err, "outbox relay task failed");
        }
        service.stop().await;
        switchyard::nats::drain(&client, Duration::from_secs(5)).await;
        emailer.db.close().await;
        tracing::info!("email-service stopped");
    }
}
