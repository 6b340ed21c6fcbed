//! Start-up and shutdown of the email service.

use clap::Parser;
use contracts::names;
use lettre::message::Mailbox;
use switchyard::config::{CommonArgs, ConsumerArgs};
use switchyard::consumer::{Consumer, ConsumerError};
use switchyard::micro::{ServiceHandle, ServiceSpec};
use switchyard::outbox::Relay;
use switchyard::platform::{Platform, PlatformError};
use switchyard::shutdown::Shutdown;

use crate::events::{Emailer, consumer_spec};
use crate::mailer::{Mailer, MailerError};

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

/// A running email service.
pub struct App {
    platform: Platform,
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
            contracts::streams::EVENTS,
        )
        .await?;
        // An empty SMTP_URL (as compose passes when it is unset) means files, like no flag.
        let mailer = match config.smtp_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => Mailer::smtp(url)?,
            None => Mailer::files(config.common.data_dir.join("emails"))?,
        };
        let relay = platform.relay();
        let emailer = Emailer::new(platform.db.clone(), mailer, config.mail_from.clone(), relay.waker());
        let consumer = platform.consumer(config.consumer.apply(consumer_spec()), emailer.clone());
        consumer.bind().await?;
        // No request endpoints, but discoverable like every service (`nats micro ls`, health checks).
        let service = ServiceSpec::new(names::EMAIL_SERVICE, env!("CARGO_PKG_VERSION"))
            .description("Order confirmation emails (consumer `email`)")
            .start(platform.client.clone())
            .await?;
        tracing::info!(instance = %platform.instance, mailer = ?emailer.mailer(), "email-service ready");
        Ok(App { platform, emailer, consumer, relay, service })
    }

    /// The handler's state, for tests and tools.
    pub fn emailer(&self) -> &Emailer {
        &self.emailer
    }

    /// Consumes until `shutdown`; then finishes and acks in-flight events, publishes what it
    /// committed, drains NATS and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        let App { platform, consumer, relay, service, .. } = self;
        let relay = platform.spawn_relay(relay);
        if let Err(err) = consumer.run(shutdown).await {
            tracing::error!(error = %err, "email consumer failed");
        }
        platform.stop(Some(relay), Some(service)).await;
    }
}
