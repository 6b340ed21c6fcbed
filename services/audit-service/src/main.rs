use anyhow::Context;
use audit_service::trail::ReplayFrom;
use audit_service::{App, Command, Config};
use clap::Parser;
use switchyard::Shutdown;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchyard::telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let mut config = Config::parse();
    let telemetry = config
        .common
        .install_telemetry("audit-service", env!("CARGO_PKG_VERSION"))
        .context("failed to set up tracing")?;
    let command = config.command.clone();
    let app = App::build(config).await.context("failed to start audit-service")?;
    match command {
        Some(Command::Replay { from_seq, since }) => {
            let from = match (from_seq, since) {
                (Some(seq), _) => ReplayFrom::Sequence(seq),
                (None, Some(since)) => ReplayFrom::Time(since),
                (None, None) => anyhow::bail!("replay needs --from-seq or --since"),
            };
            let recorded = app.replay(from).await.context("audit replay failed")?;
            println!("replayed {recorded} events into the audit trail");
        }
        None => app.run_until_stopped(Shutdown::on_signals()).await,
    }
    telemetry.shutdown();
    Ok(())
}
