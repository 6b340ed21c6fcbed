//! `switchyard provision`: the operator's step that creates (or updates) the streams the
//! platform runs on. Services only verify them: their NATS users may not create, update, delete
//! or purge a stream. `switchyard up` runs it; on a cluster or with compose, run it once before
//! the services (and again after changing --stream-replicas or --duplicate-window).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use switchyard::streams::{self, StreamSettings};

use crate::connect::StackArgs;

/// Flags of `switchyard provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Replicas of the ORDERS, DLQ and REPLAY streams: 1 on one machine, 3 on a cluster.
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,

    /// Window in which the ORDERS stream drops a repeated event id; covers the outbox relay's retries.
    #[arg(long, env = "DUPLICATE_WINDOW", value_parser = switchyard::config::parse_duration, default_value = "15m")]
    pub duplicate_window: Duration,
}

impl ProvisionArgs {
    fn settings(&self) -> StreamSettings {
        StreamSettings {
            replicas: usize::from(self.stream_replicas),
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }
}

/// Declares every stream with `js`; returns one line per stream.
pub async fn provision(
    js: &async_nats::jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for config in streams::stream_configs(settings) {
        let name = config.name.clone();
        let subjects = config.subjects.join(",");
        let declared = streams::ensure(js, config)
            .await
            .with_context(|| format!("failed to provision stream {name}"))?;
        lines.push(format!("stream {name:<7} ({subjects}, {} replicas): {declared}", settings.replicas));
    }
    Ok(lines)
}

/// Runs `provision`.
pub async fn run(args: &ProvisionArgs) -> anyhow::Result<()> {
    let client = args.stack.connect("provision").await?;
    let js = async_nats::jetstream::new(client.clone());
    let result = provision(&js, &args.settings()).await;
    switchyard::nats::drain(&client, Duration::from_secs(2)).await;
    for line in result? {
        println!("{line}");
    }
    Ok(())
}
