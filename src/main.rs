//! The `salestrack` binary: parse the command line, start logging, dispatch.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    salestrack::telemetry::init();
    let cli = salestrack::cli::Cli::parse();
    match salestrack::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
