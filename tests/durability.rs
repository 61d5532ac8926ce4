//! Durability under SIGKILL: the real `salestrack serve` on a SQLite file is
//! killed at random moments while signed deliveries arrive from several
//! tasks, and restarted on the same file. Every delivery that was answered
//! 2xx must be in the store; once the unanswered ones are sent again, every
//! sale is there exactly once.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use salestrack::domain::model::EventFilter;
use salestrack::stripe::signature::header_for;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_salestrack");
const SECRET: &str = "whsec_durability_test_secret";
const EVENTS: usize = 240;
const SENDERS: usize = 8;
const KILLS: usize = 4;

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn cli(db_url: &str, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["--database", db_url, "--json"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run salestrack");
    assert!(
        out.status.success(),
        "salestrack {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[test]
fn logs_written_to_a_file_are_plain_text() {
    // A log file or a journal gets no terminal colour codes.
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let out = Command::new(BIN)
        .args([
            "--database",
            &db_url,
            "client",
            "add",
            "--name",
            "Plain Logs",
        ])
        .env("RUST_LOG", "info")
        .output()
        .expect("run salestrack");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("client added"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
}

struct Server {
    child: Child,
}

impl Server {
    // The child is reaped by `kill` (or below when it never comes up).
    #[allow(clippy::zombie_processes)]
    async fn start(db_url: &str, port: u16, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log");
        let mut child = Command::new(BIN)
            .args([
                "--database",
                db_url,
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--sweep-interval",
                "1s",
            ])
            .env("SALESTRACK_ADMIN_TOKEN", "durability-test-admin-token")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start salestrack serve");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let up = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return Self { child };
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not come up");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

/// The `i`-th sale: a one-time checkout payment or a subscription invoice.
fn sale(i: usize) -> (String, String, Vec<u8>) {
    let t = now_s();
    let (key, event_type, object) = if i % 2 == 0 {
        let pi = format!("pi_durable_{i}");
        (
            pi.clone(),
            "checkout.session.completed",
            json!({
                "id": format!("cs_durable_{i}"), "object": "checkout.session", "mode": "payment",
                "payment_status": "paid", "status": "complete", "amount_total": 1000 + i,
                "currency": "usd", "customer": format!("cus_durable_{i}"), "created": t,
                "customer_details": {"email": format!("buyer{i}@example.com")},
                "payment_intent": pi, "metadata": {}, "livemode": false,
            }),
        )
    } else {
        let inv = format!("in_durable_{i}");
        (
            inv.clone(),
            "invoice.paid",
            json!({
                "id": inv, "object": "invoice", "amount_paid": 1000 + i, "currency": "usd",
                "customer": format!("cus_durable_{i}"), "customer_email": format!("buyer{i}@example.com"),
                "billing_reason": "subscription_create", "created": t,
                "status_transitions": {"paid_at": t},
                "parent": {"subscription_details": {"subscription": format!("sub_durable_{i}"), "metadata": {}}},
                "lines": {"data": []}, "livemode": false,
            }),
        )
    };
    let body = serde_json::to_vec(&json!({
        "id": format!("evt_durable_{i}"), "object": "event", "api_version": "2025-03-31.basil",
        "created": t, "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": event_type,
    }))
    .expect("event json");
    (format!("evt_durable_{i}"), key, body)
}

/// Sends the `i`-th sale, signed now; true when it was answered 2xx.
async fn deliver(http: &reqwest::Client, url: &str, i: usize) -> bool {
    let (_, _, body) = sale(i);
    let signature = header_for(&body, SECRET, now_s());
    http.post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_deliveries_survive_sigkill_and_every_sale_counts_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("durable.db").display());
    let log = dir.path().join("server.log");
    let client = cli(
        &db_url,
        &[
            "client",
            "add",
            "--name",
            "Durable Shop",
            "--webhook-secret",
            SECRET,
        ],
    );
    let client_id = client["id"].as_str().expect("client id").to_string();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/webhooks/stripe/{client_id}");

    let mut server = Server::start(&db_url, port, &log).await;
    let next = Arc::new(Mutex::new(0usize));
    let acked = Arc::new(Mutex::new(vec![false; EVENTS]));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (next, acked, url) = (next.clone(), acked.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    if *n == EVENTS {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                if deliver(&http, &url, i).await {
                    acked.lock().unwrap()[i] = true;
                } else {
                    // The server is down: pace the retries of others.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    let mut kills = 0;
    while kills < KILLS && senders.iter().any(|s| !s.is_finished()) {
        let wait = rand::thread_rng().gen_range(50..300);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill();
        kills += 1;
        server = Server::start(&db_url, port, &log).await;
    }
    for s in senders {
        s.await.expect("sender");
    }
    assert!(kills > 0, "the deliveries ended before any kill");

    // Every delivery answered 2xx is in the store, raw body included.
    let store = salestrack::storage::connect(&db_url).await.expect("store");
    let stored: HashMap<String, Vec<u8>> = store
        .list_events(&EventFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_iter()
        .filter_map(|e| e.stripe_event_id.map(|id| (id, e.body)))
        .collect();
    let acked_now = acked.lock().unwrap().clone();
    let acknowledged = acked_now.iter().filter(|a| **a).count();
    assert!(acknowledged > 0, "no delivery was acknowledged");
    eprintln!(
        "{kills} kills; {acknowledged} of {EVENTS} deliveries acknowledged before the resend, {} stored",
        stored.len()
    );
    for (i, was_acked) in acked_now.iter().enumerate() {
        if *was_acked {
            let (event_id, _, _) = sale(i);
            let body = stored
                .get(&event_id)
                .unwrap_or_else(|| panic!("{event_id} was acknowledged but is not stored"));
            let v: Value = serde_json::from_slice(body).expect("stored body is the JSON sent");
            assert_eq!(v["id"], event_id);
        }
    }

    // Stripe sends again what was not acknowledged.
    let http = reqwest::Client::new();
    for (i, was_acked) in acked_now.iter().enumerate() {
        if !*was_acked {
            let mut tries = 0;
            while !deliver(&http, &url, i).await {
                tries += 1;
                assert!(tries < 50, "delivery {i} is never acknowledged");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Events caught by a kill between commit and processing are retried by
    // the sweep; then every sale is there exactly once.
    let expected: HashSet<String> = (0..EVENTS).map(|i| sale(i).1).collect();
    let started = Instant::now();
    let conversions = loop {
        let list = cli(&db_url, &["conversions", "list"]);
        let rows = list.as_array().expect("conversions array").clone();
        if rows.len() >= EVENTS || started.elapsed() > Duration::from_secs(30) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    server.kill();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for c in &conversions {
        let key = c["purchase_key"]
            .as_str()
            .expect("purchase key")
            .to_string();
        *per_key.entry(key).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !per_key.contains_key(*k))
        .collect();
    assert!(missing.is_empty(), "sales missing: {missing:?}");
    let doubled: Vec<(&String, &usize)> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "sales counted twice: {doubled:?}");
    assert_eq!(conversions.len(), EVENTS, "one conversion per sale");
    let events = store
        .list_events(&EventFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .expect("events");
    assert_eq!(events.len(), EVENTS, "each event stored once");
}
