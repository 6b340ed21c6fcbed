use clap::Parser;
use switchyard_cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchyard::telemetry::init_with_default(cli.log_format, "warn");
    switchyard_cli::run(cli).await
}
