use clap::Parser;
use switchyard_cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    switchyard::telemetry::init_with_default(cli.log_format, "warn,async_nats=off");
    switchyard::telemetry::exit_code(switchyard_cli::run(cli).await)
}
