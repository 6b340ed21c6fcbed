//! `switchyard-bench`: Switchyard measured against same-run baselines on this machine.
//!
//! It starts its own nats-server and, for R rounds of D seconds each, measures:
//! - `inventory.check` through Switchyard (typed client + breaker + micro service + the real stock
//!   lookup) against a raw async-nats responder and an axum HTTP endpoint (reqwest, keep-alive)
//!   doing the same lookup, at 1 and 64 requests in flight: req/s, p50/p99/p99.9 and CPU
//!   microseconds per request (this process plus nats-server);
//! - the circuit breaker's overhead per call;
//! - POST /orders through the services (over NATS, a database each) against a monolith of the
//!   same logic, on SQLite and Postgres;
//! - the outbox relay's publish rate and each consumer's applied events per second on a backlog;
//! - the four services as processes at fixed order rates: order accepted -> all three consumers
//!   done (p50/p99), and each service's peak RSS and CPU per order.
//!
//! It prints a table and writes a JSON report. `--quick` runs one short round (for CI).

mod events;
mod load;
mod pipeline;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// switchyard-bench: Switchyard against raw NATS and HTTP, measured in one run.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard-bench", version, about)]
pub struct Config {
    /// Rounds of every measurement; the report keeps the median round.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3)]
    pub rounds: usize,

    /// Length of one round of a request-reply measurement.
    #[arg(long, env = "BENCH_DURATION", value_parser = switchyard::config::parse_duration, default_value = "5s")]
    pub duration: Duration,

    /// Events for the outbox and consumer measurements.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 20_000)]
    pub events: usize,

    /// Order rates (orders/s) the pipeline offers, each for --pipeline-duration.
    #[arg(long, env = "BENCH_PIPELINE_RATES", value_delimiter = ',', default_value = "250,500,1000")]
    pub pipeline_rates: Vec<u32>,

    /// How long the pipeline offers each rate (default: --duration).
    #[arg(long, env = "BENCH_PIPELINE_DURATION", value_parser = switchyard::config::parse_duration)]
    pub pipeline_duration: Option<Duration>,

    /// Only these sections (comma-separated); all when not given.
    #[arg(long, env = "BENCH_ONLY", value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,

    /// One short round of everything (a smoke test of the benchmark itself).
    #[arg(long)]
    pub quick: bool,

    /// Export every span with OTLP/HTTP to a sink this process starts (it discards them), from
    /// this process and the pipeline's services: the cost of tracing on. Without it tracing is
    /// off, as in a service without --otlp-endpoint.
    #[arg(long)]
    pub otlp_sink: bool,

    /// Where to write the JSON report.
    #[arg(long, env = "BENCH_REPORT", default_value = "bench-report.json")]
    pub report: PathBuf,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// `inventory.check`: Switchyard, raw NATS, HTTP.
    Sync,
    /// POST /orders: services against the monolith, SQLite and Postgres.
    Orders,
    /// The breaker's overhead per call (timing loop).
    Breaker,
    /// The outbox relay and the three consumers on a backlog.
    Events,
    /// The four services as processes at fixed order rates.
    Pipeline,
}

impl Config {
    /// Whether `section` is measured in this run.
    pub fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

/// An OTLP/HTTP endpoint that accepts and discards spans; its base URL.
async fn otlp_sink() -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_body: axum::body::Bytes| async { axum::http::StatusCode::OK }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the OTLP sink")?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    if config.quick {
        config.rounds = 1;
        config.duration = Duration::from_millis(500);
        config.events = 500;
        config.pipeline_rates = vec![100];
        config.pipeline_duration = None;
    }
    if config.pipeline_rates.contains(&0) {
        anyhow::bail!("--pipeline-rates must be positive");
    }
    let mut telemetry = switchyard::telemetry::TelemetryConfig::new(
        switchyard::config::LogFormat::Text,
        "switchyard-bench",
        env!("CARGO_PKG_VERSION"),
    );
    telemetry.default_filter = "warn".into();
    let sink = if config.otlp_sink { Some(otlp_sink().await?) } else { None };
    telemetry.otlp_endpoint = sink.clone();
    let _telemetry = switchyard::telemetry::install(&telemetry)?;
    let report = scenarios::run(&config, sink.as_deref()).await?;
    println!("{}", report.table());
    std::fs::write(&config.report, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("failed to write {}", config.report.display()))?;
    println!("report written to {}", config.report.display());
    Ok(())
}
