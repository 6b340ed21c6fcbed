use anyhow::Context;
use clap::Parser;
use email_service::{App, Config};
use switchyard::Shutdown;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchyard::telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let mut config = Config::parse();
    let telemetry = config
        .common
        .install_telemetry("email-service", env!("CARGO_PKG_VERSION"))
        .context("failed to set up tracing")?;
    let shutdown = Shutdown::on_signals();
    let app = App::build(config).await.context("failed to start email-service")?;
    app.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    Ok(())
}
