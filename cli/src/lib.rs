//! The `switchyard` command: drive and watch a running Switchyard stack.

pub mod demo;

use clap::{Parser, Subcommand};
use switchyard::config::LogFormat;

/// switchyard: drive and watch a Switchyard stack (NATS micro services and the order API).
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log format: `text` or `json`. Filter with RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restock a demo catalogue and place orders against a running stack, then print a summary.
    Demo(demo::DemoArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => {
            let summary = demo::run(&args).await?;
            println!("{}", summary.table());
            Ok(())
        }
    }
}
