//! Shared by the tests that run the real `salestrack` binary against
//! PostgreSQL (`multi_instance.rs`, `pg_faults.rs`): spawning `serve`,
//! running CLI commands, building and signing Stripe events.

#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use salestrack::stripe::signature::header_for;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SECRET: &str = "whsec_multi_instance_test_secret";

pub fn salestrack(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salestrack"));
    cmd.arg("--database")
        .arg(db_url)
        .env_remove("SALESTRACK_CONFIG")
        .env_remove("SALESTRACK_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    // The outage tests make the service log errors on purpose: keep them out
    // of the test output unless asked for.
    if std::env::var_os("SALESTRACK_TEST_SHOW_LOGS").is_none() {
        cmd.stderr(Stdio::null());
    }
    cmd
}

/// Runs a CLI command to completion and parses its `--json` output.
pub async fn cli_json(db_url: &str, args: &[&str]) -> Value {
    let out = salestrack(db_url)
        .args(args)
        .arg("--json")
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run salestrack");
    assert!(
        out.status.success(),
        "salestrack {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "salestrack {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// One `salestrack serve` process, killed when dropped.
pub struct Instance {
    pub base: String,
    pub child: Child,
}

impl Instance {
    pub async fn start(db_url: &str) -> Self {
        Self::start_with(db_url, &[]).await
    }

    /// With extra environment (`SALESTRACK_DB_CONNECT_TIMEOUT`, …).
    pub async fn start_with(db_url: &str, env: &[(&str, &str)]) -> Self {
        let mut child = salestrack(db_url)
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0", "--sweep-interval", "0"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(url) = line.strip_prefix("salestrack listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("serve exited before listening");
        })
        .await
        .expect("serve did not start within 60 s");
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { base, child }
    }
}

pub fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture json")
}

/// A `payment_intent.succeeded` of a one-time sale (`slug`: its link hint).
pub fn payment_intent_event(
    evt: &str,
    pi: &str,
    customer: &str,
    at: i64,
    slug: Option<&str>,
) -> Vec<u8> {
    let mut e = fixture("payment_intent_succeeded.json");
    e["id"] = json!(evt);
    e["created"] = json!(at);
    let o = &mut e["data"]["object"];
    o["id"] = json!(pi);
    o["latest_charge"] = json!(format!("ch_{pi}"));
    o["customer"] = json!(customer);
    o["created"] = json!(at);
    o["receipt_email"] = json!(format!("{customer}@example.com"));
    o["metadata"] = match slug {
        Some(s) => json!({ "link_slug": s }),
        None => json!({}),
    };
    serde_json::to_vec(&e).unwrap()
}

/// The `charge.succeeded` of the same sale: another event, the same purchase.
pub fn charge_event(evt: &str, pi: &str, customer: &str, at: i64) -> Vec<u8> {
    let mut e = fixture("charge_succeeded.json");
    e["id"] = json!(evt);
    e["created"] = json!(at);
    let o = &mut e["data"]["object"];
    o["id"] = json!(format!("ch_{pi}"));
    o["payment_intent"] = json!(pi);
    o["customer"] = json!(customer);
    o["created"] = json!(at);
    o["receipt_email"] = json!(format!("{customer}@example.com"));
    o["metadata"] = json!({});
    serde_json::to_vec(&e).unwrap()
}

pub async fn deliver(
    http: &reqwest::Client,
    instance: &str,
    client_id: &str,
    body: Vec<u8>,
) -> u16 {
    let sig = header_for(&body, SECRET, now_s());
    http.post(format!("{instance}/webhooks/stripe/{client_id}"))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(body)
        .send()
        .await
        .expect("webhook request")
        .status()
        .as_u16()
}
