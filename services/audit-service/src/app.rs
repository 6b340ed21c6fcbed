//! Start-up and shutdown of the audit service, and its `replay` command.

use clap::{Parser, Subcommand};
use contracts::HistoryRequest;
use contracts::names;
use switchyard::config::{CommonArgs, ConsumerArgs};
use switchyard::consumer::{Consumer, ConsumerError};

use crate::events::consumer_spec;
use switchyard::micro::{MicroError, ServiceError, ServiceHandle, ServiceSpec};
use switchyard::platform::{Platform, PlatformError};
use switchyard::shutdown::Shutdown;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::trail::{ReplayError, ReplayFrom, Trail};

/// audit-service: an append-only audit trail of every order event, `audit.history` over NATS,
/// and `replay` to rebuild the trail from the stream.
#[derive(Debug, Clone, Parser)]
#[command(name = "audit-service", version, about)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Rebuild the audit trail from the ORDERS stream, from a sequence or a time, then exit.
    Replay {
        /// Replay from this stream sequence on (rows from it on are deleted and rebuilt).
        #[arg(long, conflicts_with = "since", required_unless_present = "since")]
        from_seq: Option<u64>,
        /// Replay events published at or after this time (RFC 3339, e.g. 2026-11-27T18:00:00Z).
        #[arg(long, value_parser = parse_time)]
        since: Option<OffsetDateTime>,
    },
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("failed to start the micro service")]
    Micro(#[from] MicroError),
    #[error("replay failed")]
    Replay(#[from] ReplayError),
}

/// A running audit service.
pub struct App {
    platform: Platform,
    trail: Trail,
    consumer: Consumer,
    service: ServiceHandle,
}

impl App {
    /// Connects, migrates, declares the streams, binds the consumer and starts `audit.history`.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let platform = Platform::connect(
            &config.common,
            names::AUDIT_SERVICE,
            &crate::MIGRATIONS,
            contracts::streams::EVENTS,
        )
        .await?;
        let trail = Trail::new(platform.db.clone());
        let consumer = platform.consumer(config.consumer.apply(consumer_spec()), trail.clone());
        consumer.bind().await?;
        let service = spec(&trail).start(platform.client.clone()).await?;
        tracing::info!(instance = %platform.instance, "audit-service ready");
        Ok(App { platform, trail, consumer, service })
    }

    /// The trail, for tests and tools.
    pub fn trail(&self) -> &Trail {
        &self.trail
    }

    /// Rebuilds the trail from `from`, then closes. Returns how many events were recorded.
    pub async fn replay(self, from: ReplayFrom) -> Result<u64, AppError> {
        let App { platform, trail, service, .. } = self;
        service.stop().await;
        let recorded = trail.replay(&platform.js, from).await;
        platform.stop(None, None).await;
        Ok(recorded?)
    }

    /// Consumes and serves until `shutdown`; then finishes in-flight work, drains NATS and closes
    /// the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        let App { platform, consumer, service, .. } = self;
        let consumed = tokio::spawn(consumer.run(shutdown.clone()));
        shutdown.wait().await;
        // In-flight history requests and events finish side by side.
        let (consumed, _) = tokio::join!(consumed, service.stop());
        match consumed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "audit consumer failed"),
            Err(err) => tracing::error!(error = %err, "audit consumer task failed"),
        }
        platform.stop(None, None).await;
    }
}

/// The `audit` micro service.
pub fn spec(trail: &Trail) -> ServiceSpec {
    let trail = trail.clone();
    ServiceSpec::new(names::AUDIT_SERVICE, env!("CARGO_PKG_VERSION"))
        .description("Order audit trail")
        .endpoint("history", names::AUDIT_HISTORY, move |request: HistoryRequest| {
            let trail = trail.clone();
            async move { trail.history(request.order_id).await.map_err(ServiceError::internal) }
        })
}
