//! `switchyard health`: exit 0 when a service answers, 1 when it does not. For container health
//! checks (compose.yaml) and scripts.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::connect::StackArgs;

/// Flags of `switchyard health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// A micro service that must answer `$SRV.PING.<name>` (inventory, orders, email, audit).
    #[arg(long)]
    pub service: Option<String>,

    /// An HTTP base URL whose `/health/ready` must answer 200.
    #[arg(long)]
    pub http_url: Option<String>,

    /// How long to wait for an answer.
    #[arg(long, value_parser = switchyard::config::parse_duration, default_value = "2s")]
    pub timeout: Duration,
}

/// Runs `health`.
pub async fn run(args: &HealthArgs) -> anyhow::Result<()> {
    if args.service.is_none() && args.http_url.is_none() {
        bail!("say what to check: --service <name> and/or --http-url <url>");
    }
    if let Some(service) = &args.service {
        let client = args.stack.connect("health").await?;
        let ping = client.request(contracts::names::srv_subject("PING", Some(service), None), "".into());
        let answered = matches!(tokio::time::timeout(args.timeout, ping).await, Ok(Ok(_)));
        switchyard::nats::drain(&client, Duration::from_secs(1)).await;
        if !answered {
            bail!("{service} does not answer $SRV.PING.{service}");
        }
        println!("{service}: up");
    }
    if let Some(url) = &args.http_url {
        let http = reqwest::Client::builder().timeout(args.timeout).build()?;
        let url = format!("{}/health/ready", url.trim_end_matches('/'));
        match http.get(&url).send().await {
            Ok(response) if response.status().is_success() => println!("{url}: ready"),
            Ok(response) => bail!("{url} answered {}", response.status()),
            Err(err) => bail!("{url} does not answer: {err}"),
        }
    }
    Ok(())
}
