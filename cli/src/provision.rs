//! `switchyard provision`: the operator's step that creates (or updates) the streams the
//! platform runs on. Services only verify them: their NATS users may not create, update, delete
//! or purge a stream. `switchyard up` runs it; on a cluster or with compose, run it once before
//! the services (and again after changing --stream-replicas or --duplicate-window).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use switchyard::config::StreamShapeArgs;
use switchyard::streams::{self, StreamSettings};

use crate::connect::StackArgs;

/// Flags of `switchyard provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    #[command(flatten)]
    pub shape: StreamShapeArgs,
}

/// Connects to the stack (as `ops` unless told otherwise), declares every stream and returns one
/// line per stream.
pub async fn provision(stack: &StackArgs, settings: &StreamSettings) -> anyhow::Result<Vec<String>> {
    let client = stack.connect("provision").await?;
    let js = async_nats::jetstream::new(client.clone());
    let result = declare_all(&js, settings).await;
    switchyard::nats::drain(&client, Duration::from_secs(2)).await;
    result
}

async fn declare_all(
    js: &async_nats::jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for config in streams::stream_configs(contracts::streams::ALL, settings) {
        let name = config.name.clone();
        let subjects = config.subjects.join(",");
        let declared = streams::ensure(js, config)
            .await
            .with_context(|| format!("failed to provision stream {name}"))?;
        lines.push(format!("stream {name:<7} ({subjects}, {} replicas): {declared}", settings.replicas));
    }
    // The bucket where instances share their breakers' states (--breaker-shared).
    let bucket = switchyard::shared_breaker::bucket_config(settings.replicas);
    js.create_or_update_key_value(bucket)
        .await
        .with_context(|| format!("failed to provision KV bucket {}", switchyard::shared_breaker::BUCKET))?;
    lines.push(format!(
        "kv bucket {} (shared breaker states, {} replicas): ready",
        switchyard::shared_breaker::BUCKET,
        settings.replicas
    ));
    Ok(lines)
}

/// Runs `provision`.
pub async fn run(args: &ProvisionArgs) -> anyhow::Result<()> {
    for line in provision(&args.stack, &args.shape.settings()).await? {
        println!("{line}");
    }
    Ok(())
}
