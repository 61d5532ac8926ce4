//! Servers under test, each in a process of its own so that its memory is
//! its own and it is killed cleanly: salestrack (this binary re-executed as
//! `serve-child`, which runs the same `app::serve` as `salestrack serve`) and
//! the Node.js baseline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use salestrack::config::{Config, Overrides};
use salestrack::domain::{DomainConfig, Tracker};
use tokio_util::sync::CancellationToken;

/// A server process; killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process (VmRSS), MiB.
    pub fn rss_mib(&self) -> f64 {
        rss_mib(self.pid()).unwrap_or(f64::NAN)
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time (user + system, every thread) a process has used so far,
/// seconds; `None` when `/proc` cannot tell.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let file = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(file).ok()?;
    Some(cpu_ticks(&stat)? as f64 / clock_ticks_per_second())
}

/// utime + stime of a `/proc/PID/stat` line, in clock ticks. The command
/// name may hold spaces and parentheses: fields are counted after its
/// closing one (`state` first; utime and stime are 12th and 13th from
/// there).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK`, the unit of `/proc/PID/stat`'s times (100 on every
/// Linux this runs on; asked once in case it is not).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Starts salestrack on `db_url`; `click_writes = false` is the baseline of
/// the redirect figure (same server, `insert_click` skipped).
pub async fn start_salestrack(
    db_url: &str,
    click_writes: bool,
    log: &Path,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("serve-child")
        .arg(db_url)
        .arg(addr.to_string())
        .arg(if click_writes {
            "writes"
        } else {
            "no-click-writes"
        });
    spawn_and_wait(cmd, addr, log).await
}

/// Starts the Node.js baseline (`bench/node-baseline/server.js`).
pub async fn start_node(
    dir: &Path,
    db_path: &Path,
    secret: &str,
    log: &Path,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("server.js"))
        .env("PORT", port.to_string())
        .env("DB_PATH", db_path)
        .env("WEBHOOK_SECRET", secret);
    spawn_and_wait(cmd, addr, log).await
}

async fn spawn_and_wait(mut cmd: Command, addr: SocketAddr, log: &Path) -> anyhow::Result<Server> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting the server process")?;
    let mut server = Server { addr, child };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("the server exited ({status}); see {}", log.display());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    bail!(
        "the server did not listen within 60 s; see {}",
        log.display()
    )
}

/// `bench serve-child DB_URL ADDR writes|no-click-writes`: what
/// `salestrack serve` runs (migrate, build the tracker, serve; sweeps off so
/// that they do not run in the middle of a measurement).
pub async fn serve_child(args: &[String]) -> anyhow::Result<()> {
    let [db_url, listen, mode] = args else {
        bail!("usage: bench serve-child DB_URL ADDR writes|no-click-writes");
    };
    salestrack::telemetry::init();
    let config = Config::load(
        None,
        &Overrides {
            database_url: Some(db_url.clone()),
            listen: Some(listen.clone()),
            sweep_interval: Some("0".into()),
            ..Default::default()
        },
    )?;
    let store = salestrack::storage::connect(&config.database_url).await?;
    let mut tracker = Tracker::new(
        store,
        DomainConfig {
            public_url: config.public_url.clone(),
            signature_tolerance_s: config.signature_tolerance_s,
            max_attempts: config.max_attempts,
            trusted_proxies: config.trusted_proxies()?,
            unverified_budget: config.unverified_budget(),
        },
    )
    .await?;
    if mode == "no-click-writes" {
        tracker.skip_click_writes_for_benchmark();
    }
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    let cancel = CancellationToken::new();
    salestrack::app::cancel_on_signal(cancel.clone());
    salestrack::app::serve(Arc::new(tracker), listener, None, cancel).await
}

/// Where the Node.js baseline lives, if its dependencies are installed.
pub fn node_baseline_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/node-baseline");
    let ok = dir.join("node_modules/stripe").is_dir()
        && dir.join("node_modules/better-sqlite3").is_dir()
        && Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    ok.then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name_whatever_it_holds() {
        let stat =
            "4242 (serve (a) b) S 1 4242 4242 0 -1 4194560 900 0 0 0 731 169 0 0 20 0 6 0 88 0 0";
        assert_eq!(cpu_ticks(stat), Some(731 + 169));
        assert_eq!(cpu_ticks("4242 serve S 1"), None);
        assert_eq!(cpu_ticks("4242 (serve) S 1 2"), None);
    }

    #[test]
    fn this_process_is_seen_using_cpu() {
        let before = cpu_seconds(None).expect("/proc/self/stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut now = before;
        // Spin until 50 ms of CPU show, or give up after 10 s of wall time.
        while now - before < 0.05 && start.elapsed() < std::time::Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            now = cpu_seconds(None).expect("/proc/self/stat");
        }
        assert!(now - before >= 0.05, "{before} -> {now}");
    }
}
