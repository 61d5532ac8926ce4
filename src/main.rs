//! The `salestrack` binary: parse the command line, start logging, dispatch.

use clap::Parser;

/// mimalloc instead of glibc's malloc: under webhook load the ingest batch
/// waited on glibc's arena locks each time it freed memory a request thread
/// had allocated (perf sched: most of the batch's off-CPU time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
