//! PostgreSQL going away under load (SPEC 2.3, 6): the test owns a cluster
//! (`initdb` into a temp folder, `pg_ctl` on its own port), runs the real
//! `salestrack serve` on it, sends signed webhooks from several senders,
//! stops the cluster mid-load and starts it again.
//!
//! Promises checked: while the database is down, webhooks answer 503 (never
//! a 2xx without a commit) and `/readyz` 503; once it is back the service
//! recovers by itself; every event that got a 2xx is in the store.
//!
//! Needs Debian's PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`);
//! without them it skips with the reason, unless `SALESTRACK_REQUIRE_PG=1`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use salestrack::domain::model::EventFilter;
use salestrack::storage::postgres::scratch::pg_required;
use salestrack::storage::{self, DbOptions};
use support::*;

/// The newest `…/bin` of Debian's PostgreSQL packages that has `initdb`.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster in a temp folder, on its own port; stopped (and
/// removed) when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a server binary, as `postgres` when we are root (initdb and the
    /// server refuse to run as root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        run_pg(&self.bin, self.as_root, program, args)
    }

    fn init(bin: PathBuf) -> Result<Self, String> {
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("salestrack-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        if as_root {
            let chowned = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !chowned.success() {
                return Err("chown to the postgres user failed".into());
            }
        }
        let port = free_port();
        let cluster = Self {
            bin,
            dir,
            port,
            as_root,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        Ok(cluster)
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Stops like a crash: no checkpoint, connections cut at once.
    fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn run_pg(bin: &Path, as_root: bool, program: &str, args: &[&str]) -> Result<(), String> {
    let exe = bin.join(program);
    let mut cmd = if as_root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        std::process::Command::new(&exe)
    };
    let out = cmd
        .args(args)
        .env("LC_ALL", "C")
        .current_dir("/tmp")
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What the senders saw: event id and when its request was sent.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<(String, Instant)>,
    unavailable: Vec<(String, Instant)>,
    other: Vec<(String, u16)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_answer_503_while_postgres_is_down_and_recover_by_themselves() {
    let Some(bin) = pg_bin_dir() else {
        let reason = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin \
                      (Debian package `postgresql`)";
        if pg_required() {
            panic!("{reason}, and SALESTRACK_REQUIRE_PG=1 forbids skipping");
        }
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "\nskipped: {reason}\n");
        return;
    };
    let cluster = Cluster::init(bin).expect("initdb");
    cluster.start().expect("start the cluster");
    let result = tokio::time::timeout(Duration::from_secs(300), scenario(&cluster)).await;
    if !matches!(result, Ok(())) {
        eprintln!("server log:\n{}", cluster.log());
    }
    result.expect("the scenario finishes in time");
}

async fn scenario(cluster: &Cluster) {
    let admin = cluster.url("postgres");
    let mut conn = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&admin).await.expect("connect")
    };
    sqlx::query("CREATE DATABASE salestrack")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let db_url = cluster.url("salestrack");

    cli_json(&db_url, &["migrate"]).await;
    let client = cli_json(
        &db_url,
        &[
            "client",
            "add",
            "--name",
            "Acme",
            "--webhook-secret",
            SECRET,
        ],
    )
    .await;
    let client_id = client["id"].as_str().unwrap().to_string();
    let app = Instance::start_with(
        &db_url,
        &[
            ("SALESTRACK_DB_CONNECT_TIMEOUT", "1s"),
            ("SALESTRACK_DB_STATEMENT_TIMEOUT", "5s"),
            ("SALESTRACK_DB_POOL_SIZE", "4"),
        ],
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Senders: distinct signed events, as fast as the service answers.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (http, base, client_id) = (http.clone(), app.base.clone(), client_id.clone());
        let (seen, stop, counter) = (seen.clone(), stop.clone(), counter.clone());
        senders.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let evt = format!("evt_load_{n}");
                let body = payment_intent_event(
                    &evt,
                    &format!("pi_load_{n}"),
                    &format!("cus_load_{n}"),
                    now_s(),
                    None,
                );
                let sent = Instant::now();
                let status = deliver(&http, &base, &client_id, body).await;
                {
                    let mut seen = seen.lock().unwrap();
                    match status {
                        200 => seen.acknowledged.push((evt, sent)),
                        503 => seen.unavailable.push((evt, sent)),
                        other => seen.other.push((evt, other)),
                    }
                }
                if status == 503 {
                    // Stripe retries later too; do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    let acked = |seen: &Arc<Mutex<Seen>>| seen.lock().unwrap().acknowledged.len();
    let readyz = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };

    // Up: acknowledged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked(&seen);
    assert!(
        before > 10,
        "the service takes load before the outage: {before}"
    );
    assert_eq!(readyz(http.clone(), app.base.clone()).await, 200);

    // Down mid-load.
    cluster.stop().expect("stop the cluster");
    let stopped_at = Instant::now();
    // Deliveries committed just before the stop are still acknowledged
    // (once their processing gave up); nothing sent from now on may be.
    tokio::time::sleep(Duration::from_secs(5)).await;
    {
        let s = seen.lock().unwrap();
        let acked_while_down: Vec<_> = s
            .acknowledged
            .iter()
            .filter(|(_, sent)| *sent > stopped_at)
            .collect();
        assert!(
            acked_while_down.is_empty(),
            "no 2xx without a commit: {acked_while_down:?}"
        );
        let refused = s
            .unavailable
            .iter()
            .filter(|(_, sent)| *sent > stopped_at)
            .count();
        assert!(
            refused > 0,
            "webhooks answer 503 while the database is down"
        );
        assert!(s.other.is_empty(), "only 200 or 503: {:?}", s.other);
    }
    assert_eq!(readyz(http.clone(), app.base.clone()).await, 503);
    let direct = http
        .post(format!("{}/webhooks/stripe/{client_id}", app.base))
        .header(
            "stripe-signature",
            salestrack::stripe::signature::header_for(b"{}", SECRET, now_s()),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 503);
    let body: serde_json::Value = direct.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");

    // Back: the service recovers by itself (no restart of salestrack).
    cluster.start().expect("restart the cluster");
    let restarted = Instant::now();
    let recovered = loop {
        let acked_since = seen
            .lock()
            .unwrap()
            .acknowledged
            .iter()
            .filter(|(_, sent)| *sent > restarted)
            .count();
        if acked_since > 10 {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "no recovery within 60 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(readyz(http.clone(), app.base.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }

    // Every acknowledged event is stored.
    let store = storage::connect_with(&db_url, &DbOptions::default())
        .await
        .unwrap();
    let events = store
        .list_events(&EventFilter {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let stored: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.stripe_event_id.clone())
        .collect();
    // What the outage interrupted after the commit is finished by a sweep:
    // every stored event is a conversion in the end.
    cli_json(&db_url, &["events", "reprocess", "--failed"]).await;
    let conversions = store.list_conversions(&Default::default()).await.unwrap();
    assert_eq!(
        conversions.len(),
        events.len(),
        "one conversion per stored sale"
    );
    let s = seen.lock().unwrap();
    let missing: Vec<_> = s
        .acknowledged
        .iter()
        .filter(|(e, _)| !stored.contains(e))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert!(s.other.is_empty(), "only 200 or 503: {:?}", s.other);
    eprintln!(
        "pg_faults: {} acknowledged, {} answered 503, outage {:.1?}, recovered {:.1?} after the restart",
        s.acknowledged.len(),
        s.unavailable.len(),
        restarted - stopped_at,
        recovered
    );
}
