use anyhow::Context;
use clap::Parser;
use inventory_service::{App, Config};
use switchyard::Shutdown;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchyard::telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let config = Config::parse();
    switchyard::telemetry::init(config.common.log_format);
    let shutdown = Shutdown::on_signals();
    let app = App::build(config).await.context("failed to start inventory-service")?;
    app.run_until_stopped(shutdown).await;
    Ok(())
}
