//! The `switchyard` command: launch (`up`), drive (`demo`) and watch (`status`, `dlq`) a
//! Switchyard stack.

pub mod connect;
pub mod dashboard;
pub mod demo;
pub mod dlq;
pub mod health;
pub mod provision;
pub mod signals;
pub mod status;
pub mod up;

use clap::{Parser, Subcommand};
use switchyard::config::LogFormat;

/// switchyard: launch, drive and watch a Switchyard stack (NATS micro services, JetStream
/// streams and the order API).
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log format: `text` or `json`. Filter with RUST_LOG (default warn).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start nats-server (nats.conf) and the four services on SQLite under --data-dir; Ctrl-C stops all.
    Up(up::UpArgs),
    /// Restock a demo catalogue and place orders against a running stack, then print a summary.
    Demo(demo::DemoArgs),
    /// Services (from $SRV.PING/INFO/STATS), streams, consumers and the breaker, on one screen.
    Status(status::StatusArgs),
    /// The running platform on a web page (and its JSON API), live; DLQ actions with --allow-actions.
    Dashboard(dashboard::DashboardArgs),
    /// List, show, replay or purge dead letters.
    Dlq(dlq::DlqArgs),
    /// Exit 0 when a service answers $SRV.PING (or an HTTP API is ready), else 1.
    Health(health::HealthArgs),
    /// Create or update the streams (ORDERS, TIMERS, DLQ, REPLAY) and the BREAKERS bucket as the ops user; services only verify them.
    Provision(provision::ProvisionArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(&args).await,
        Command::Demo(args) => {
            let summary = demo::run(&args).await?;
            println!("{}", summary.table());
            Ok(())
        }
        Command::Status(args) => status::run(&args).await,
        Command::Dashboard(args) => dashboard::run(&args).await,
        Command::Dlq(args) => dlq::run(&args).await,
        Command::Health(args) => health::run(&args).await,
        Command::Provision(args) => provision::run(&args).await,
    }
}
