//! Throw-away databases for tests: a fresh database with a random name
//! (`salestrack_test_…`) on the server `SALESTRACK_TEST_PG_URL` names
//! (default `postgres://postgres@127.0.0.1:5432/test`), dropped when the
//! handle is dropped, even when the test panicked.
//!
//! When that server cannot be reached, tests skip with a message on stderr,
//! unless `SALESTRACK_REQUIRE_PG=1` (set by `.ci/run`): then they fail.

use std::io::Write as _;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// The server the tests use when `SALESTRACK_TEST_PG_URL` is not set.
pub const DEFAULT_TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server the tests create their databases on.
pub fn test_server_url() -> String {
    std::env::var("SALESTRACK_TEST_PG_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_SERVER.to_string())
}

/// True when a missing server must fail the tests instead of skipping them.
pub fn pg_required() -> bool {
    std::env::var("SALESTRACK_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true")
}

/// Set once the server turned out unreachable, so later tests skip at once.
static UNREACHABLE: OnceLock<String> = OnceLock::new();

/// A database that exists until this handle is dropped.
#[derive(Debug)]
pub struct ScratchDb {
    /// `postgres://…/salestrack_test_…`
    pub url: String,
    pub name: String,
    server_url: String,
}

async fn admin_connection(server_url: &str) -> Result<PgConnection, String> {
    let options = PgConnectOptions::from_str(server_url)
        .map_err(|e| format!("bad URL {}: {e}", crate::storage::redact_url(server_url)))?
        .application_name("salestrack-tests");
    match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

impl ScratchDb {
    /// A fresh, empty database on the test server; `None` when the server
    /// cannot be reached and PostgreSQL is not required (the reason is
    /// printed once per test binary, past the test harness's capture).
    /// Panics when it is required, or when the server answers but refuses.
    pub async fn create() -> Option<Self> {
        let server = test_server_url();
        let shown = crate::storage::redact_url(&server);
        if let Some(reason) = UNREACHABLE.get() {
            return skip_or_fail(&shown, reason);
        }
        let mut conn = match admin_connection(&server).await {
            Ok(conn) => conn,
            Err(reason) => {
                let _ = UNREACHABLE.set(reason.clone());
                return skip_or_fail(&shown, &reason);
            }
        };
        let name = random_name();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name} on {shown}: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(&server).expect("test server URL");
        url.set_path(&format!("/{name}"));
        Some(Self {
            url: url.to_string(),
            name,
            server_url: server,
        })
    }
}

fn skip_or_fail<T>(shown: &str, reason: &str) -> Option<T> {
    if pg_required() {
        panic!(
            "PostgreSQL not reachable at {shown} ({reason}), and SALESTRACK_REQUIRE_PG=1 \
             forbids skipping: start it or point SALESTRACK_TEST_PG_URL at one"
        );
    }
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|n| n.to_string_lossy().into_owned()))
            .map(|n| match n.rsplit_once('-') {
                // cargo's `name-<16 hex digits>`
                Some((name, hash)) if hash.len() == 16 => name.to_string(),
                _ => n,
            })
            .unwrap_or_default();
        // Straight to stderr: the harness captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\nskipped: PostgreSQL not reachable at {shown} ({reason}); the PostgreSQL tests \
             of test binary `{exe}` pass without running. Set SALESTRACK_TEST_PG_URL to use another server, \
             or SALESTRACK_REQUIRE_PG=1 to fail instead.\n"
        );
    });
    None
}

fn random_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("salestrack_test_{suffix}")
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime (which must not block on itself) or
        // during a panic: do it on a thread of its own, with its own runtime.
        let server = self.server_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = admin_connection(&server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
