//! `cargo run --release --bin bench -- [--quick] [--only LIST] [--markdown FILE]`
//!
//! Measures salestrack on this machine against baselines measured in the same
//! run (SPEC 5) and prints every figure with its ratio. See BENCHMARKS.md.
//! Timing lives here, never in the test suite.

mod events;
mod http_figures;
mod load;
mod report;
mod server;
mod setup;
mod store_figures;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use report::Report;

/// mimalloc instead of glibc's malloc: under webhook load the ingest batch
/// waited on glibc's arena locks each time it freed memory a request thread
/// had allocated (perf sched: most of the batch's off-CPU time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub quick: bool,
    pub warmup: Duration,
    pub measure: Duration,
    /// Most signed events made for one webhook load (they are made up front).
    pub max_events: usize,
    pub small_history: u64,
    pub large_history: u64,
    pub orphans: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
                max_events: 30_000,
                small_history: 10_000,
                large_history: 200_000,
                orphans: 2_000,
            }
        } else {
            Self {
                quick,
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(8),
                max_events: 120_000,
                small_history: 10_000,
                large_history: 10_000_000,
                orphans: 100_000,
            }
        }
    }
}

const SECTIONS: [&str; 4] = ["redirect", "webhook", "attribution", "autofix"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-child") {
        // The server under test: the runtime `salestrack serve` uses.
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(server::serve_child(&args[1..]));
    }
    let mut quick = false;
    let mut only: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
    let mut markdown: Option<PathBuf> = None;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let list = it.next().context("--only needs a list")?;
                only = list.split(',').map(str::to_string).collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    anyhow::bail!("unknown section {bad:?} (known: {})", SECTIONS.join(", "));
                }
            }
            "--markdown" => markdown = Some(it.next().context("--markdown needs a file")?.into()),
            "--dir" => dir = it.next().context("--dir needs a folder")?.into(),
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--only {}] [--markdown FILE] [--dir DIR]",
                    SECTIONS.join(",")
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sizes = Sizes::new(quick);
    // The load generator and the in-process figures share this runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = Report::new(&sizes, &args);
    rt.block_on(async {
        for section in &only {
            eprintln!("== {section}");
            let result = match section.as_str() {
                "redirect" => http_figures::redirect(&sizes, &dir, &mut report).await,
                "webhook" => http_figures::webhook(&sizes, &dir, &mut report).await,
                "attribution" => store_figures::attribution(&sizes, &dir, &mut report).await,
                "autofix" => store_figures::autofix(&sizes, &dir, &mut report).await,
                _ => unreachable!(),
            };
            if let Err(e) = result {
                eprintln!("   {section} failed: {e:#}");
                report.failure(section, &format!("{e:#}"));
            }
        }
    });
    report.finish();
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = markdown {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}
