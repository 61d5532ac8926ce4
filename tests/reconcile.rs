//! SPEC 2.10 — `salestrack reconcile` (the real binary, and the periodic
//! job) against a local HTTP server that answers `GET /v1/events` the way
//! Stripe does: newest first, `created[gte]`, `types[]`, `limit`,
//! `starting_after`, `has_more`, bearer keys. Its events are the complete
//! Stripe events of `tests/fixtures/stripe`.

#[path = "it/helpers.rs"]
mod helpers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use salestrack::domain::client::ClientIn;
use salestrack::domain::model::*;
use salestrack::jobs::reconcile::ReconcileJob;
use salestrack::stripe::api::StripeApi;
use serde_json::{json, Value};

use helpers::{fixture_json, now_s, sign, spawn_app, TestApp};

const KEY_A: &str = "rk_test_51AcmeReconcileKeyQ8w2Zx7";
const KEY_B: &str = "rk_test_51BadShopRevokedKeyM3n4Pq9";
const SECRET_A: &str = "whsec_acme_reconcile_secret_0a1b2c";

// ---- a Stripe-shaped /v1/events server --------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    key: String,
    query: Vec<(String, String)>,
}

impl Seen {
    fn get(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct FakeStripe {
    /// Events each key may read.
    events: HashMap<String, Vec<Value>>,
    /// Keys answered 401.
    refused: HashSet<String>,
    /// The server's own page size (at most the `limit` asked for).
    page_size: usize,
    /// Pages (by `starting_after`; "" for the first) that fail once with 500.
    fail_once: Mutex<HashSet<String>>,
    /// Pages after the first fail with 500 while set.
    down_after_first: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

impl FakeStripe {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn stripe_error(status: StatusCode, message: String, kind: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind}})),
    )
        .into_response()
}

async fn list_events(
    State(fake): State<Arc<FakeStripe>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let seen = Seen {
        key: key.clone(),
        query,
    };
    fake.seen.lock().unwrap().push(seen.clone());
    let Some(events) = fake
        .events
        .get(&key)
        .filter(|_| !fake.refused.contains(&key))
    else {
        // Echoes the whole key, to prove salestrack never repeats it.
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            format!("Invalid API Key provided: {key}"),
            "invalid_request_error",
        );
    };
    let after = seen.get("starting_after").unwrap_or_default().to_string();
    if fake.fail_once.lock().unwrap().remove(&after)
        || (!after.is_empty() && fake.down_after_first.load(Ordering::SeqCst))
    {
        return stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unknown error occurred".into(),
            "api_error",
        );
    }
    let gte: i64 = seen
        .get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let types = seen.all("types[]");
    let limit: usize = seen
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .min(fake.page_size);
    let mut listed: Vec<&Value> = events
        .iter()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= gte)
        .filter(|e| types.is_empty() || types.contains(&e["type"].as_str().unwrap_or("")))
        .collect();
    listed.sort_by(|a, b| {
        (b["created"].as_i64(), b["id"].as_str()).cmp(&(a["created"].as_i64(), a["id"].as_str()))
    });
    let start = if after.is_empty() {
        0
    } else {
        match listed.iter().position(|e| e["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    format!("No such event: '{after}'"),
                    "invalid_request_error",
                )
            }
        }
    };
    let page: Vec<&Value> = listed[start..].iter().take(limit).copied().collect();
    let has_more = listed.len() > start + page.len();
    Json(json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/events"}))
        .into_response()
}

async fn spawn_stripe(fake: FakeStripe) -> (String, Arc<FakeStripe>) {
    let fake = Arc::new(fake);
    let app = Router::new()
        .route("/v1/events", get(list_events))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fake)
}

// ---- events -----------------------------------------------------------------

/// A fixture event, created `ago_s` seconds ago.
fn fixture_at(name: &str, ago_s: i64) -> Value {
    let mut event = fixture_json(name);
    event["created"] = json!(now_s() - ago_s);
    event
}

/// Story A, one hour ago: the sale, then the refunds (`refund.created` too,
/// which reconciliation does not ask for).
fn story_a() -> Vec<Value> {
    [
        ("payment_intent_succeeded.json", 3600),
        ("charge_succeeded.json", 3600),
        ("checkout_session_completed_payment.json", 3590),
        ("charge_refunded_partial.json", 1800),
        ("refund_created.json", 1800),
        ("charge_refunded_full.json", 600),
    ]
    .into_iter()
    .map(|(name, ago)| fixture_at(name, ago))
    .collect()
}

/// A one-time sale of `amount` usd, as a `payment_intent.succeeded`.
fn sale(event_id: &str, pi: &str, amount: i64, ago_s: i64) -> Value {
    let mut event = fixture_at("payment_intent_succeeded.json", ago_s);
    event["id"] = json!(event_id);
    let object = &mut event["data"]["object"];
    object["id"] = json!(pi);
    object["amount"] = json!(amount);
    object["amount_received"] = json!(amount);
    object["latest_charge"] = json!(format!("ch_{pi}"));
    object["metadata"] = json!({});
    event
}

fn bytes(event: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(event).unwrap()
}

// ---- running the binary -------------------------------------------------------

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn salestrack(app: &TestApp, stripe_base: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salestrack"))
        .arg("--database")
        .arg(&app.db_url)
        .args(args)
        .env("SALESTRACK_STRIPE_API_BASE", stripe_base)
        .env("RUST_LOG", "debug")
        .env_remove("SALESTRACK_CONFIG")
        .env_remove("SALESTRACK_DATABASE_URL")
        .output()
        .await
        .expect("run salestrack");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn add_keyed_client(app: &TestApp, name: &str, key: &str, secret: Option<&str>) -> Client {
    app.add_client_with(ClientIn {
        name: name.into(),
        stripe_api_key: Some(key.into()),
        webhook_secret: secret.map(Into::into),
        ..Default::default()
    })
    .await
}

fn report_of<'a>(reports: &'a Value, client: &Client) -> &'a Value {
    reports
        .as_array()
        .expect("an array of reports")
        .iter()
        .find(|r| r["client_id"] == client.id.as_str())
        .unwrap_or_else(|| panic!("no report for {}: {reports}", client.name))
}

/// Neither the key nor anything but its last four characters is shown.
fn assert_no_key(run: &Run, key: &str) {
    assert!(
        !run.all().contains(&key[..key.len() - 4]),
        "the API key leaked: {run:?}"
    );
}

// ---- tests --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_pages_through_the_window_and_counts_nothing_twice() {
    let app = spawn_app().await;
    let acme = add_keyed_client(&app, "Acme", KEY_A, Some(SECRET_A)).await;
    app.add_link(&acme, "spring-sale").await;

    let mut events = story_a();
    // An older sale, outside the 24 h window asked for below.
    events.push(sale(
        "evt_old_sale_5_days",
        "pi_old_5_days",
        2500,
        5 * 86_400,
    ));
    // The checkout event also arrived by webhook, signed.
    let checkout = events
        .iter()
        .find(|e| e["type"] == "checkout.session.completed")
        .unwrap()
        .clone();
    let answer = app.deliver(&acme, SECRET_A, bytes(&checkout)).await;
    assert_eq!(answer.status(), 200);

    // Five handled events in the window, two per page; the second page
    // fails once with a 500.
    let second_page_after = {
        let mut in_window: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] != "refund.created" && e["id"] != "evt_old_sale_5_days")
            .collect();
        in_window.sort_by(|a, b| {
            (b["created"].as_i64(), b["id"].as_str())
                .cmp(&(a["created"].as_i64(), a["id"].as_str()))
        });
        in_window[1]["id"].as_str().unwrap().to_string()
    };
    let (base, fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(KEY_A.to_string(), events)]),
        page_size: 2,
        fail_once: Mutex::new(HashSet::from([second_page_after.clone()])),
        ..Default::default()
    })
    .await;

    let started = now_s();
    let run = salestrack(&app, &base, &["--json", "reconcile", "--since", "24h"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let reports = run.json();
    let report = report_of(&reports, &acme);
    assert_eq!(report["fetched"], 5, "{report}");
    assert_eq!(report["new"], 4, "{report}");
    assert_eq!(report["already_stored"], 1, "{report}");
    assert_eq!(report["error"], Value::Null, "{report}");
    assert_no_key(&run, KEY_A);

    // The server saw the whole window, every handled type, and the pages.
    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.key == KEY_A));
    for s in &seen {
        let gte: i64 = s.get("created[gte]").unwrap().parse().unwrap();
        assert!(
            (started - 86_400 - 5..=now_s() - 86_400 + 5).contains(&gte),
            "created[gte]={gte} is not 24 h ago"
        );
        assert_eq!(s.get("limit"), Some("100"));
        let types = s.all("types[]");
        for t in [
            "invoice.paid",
            "invoice_payment.paid",
            "checkout.session.completed",
            "checkout.session.async_payment_succeeded",
            "payment_intent.succeeded",
            "charge.succeeded",
            "charge.refunded",
            "charge.dispute.created",
            "charge.dispute.closed",
        ] {
            assert!(types.contains(&t), "types[] lacks {t}: {types:?}");
        }
    }
    let afters: Vec<Option<&str>> = seen.iter().map(|s| s.get("starting_after")).collect();
    assert_eq!(
        afters.len(),
        4,
        "3 pages, the second asked twice: {afters:?}"
    );
    assert_eq!(afters[0], None);
    assert_eq!(afters[1], Some(second_page_after.as_str()));
    assert_eq!(afters[2], Some(second_page_after.as_str()));

    // One sale, refunded in full; the older sale was outside the window.
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{conversions:#?}");
    let c = &conversions[0];
    assert_eq!(c.purchase_key, "pi_3uTIcnFq4ZkT2mWbKZS1evdw");
    assert_eq!((c.amount, c.net_amount), (4900, 0));
    assert_eq!(c.status, ConversionStatus::Refunded);
    assert_eq!(c.link_slug.as_deref(), Some("spring-sale"));
    assert!(c.verified);

    let stored = app.events().await;
    assert_eq!(stored.len(), 5, "{stored:#?}");
    let fetched: Vec<&StoredEvent> = stored
        .iter()
        .filter(|e| e.source == EventSource::Fetch)
        .collect();
    assert_eq!(fetched.len(), 4);
    for e in &fetched {
        assert_eq!(e.verification, Verification::Verified);
        assert_eq!(e.client_id.as_deref(), Some(acme.id.as_str()));
        assert_eq!(e.client_method, Some(ClientMethod::Api));
        assert_eq!(e.processing, Processing::Processed, "{e:#?}");
        assert!(!e.headers.contains(KEY_A));
    }
    let pushed = stored
        .iter()
        .find(|e| e.source == EventSource::Push)
        .unwrap();
    assert_eq!(
        pushed.event_type.as_deref(),
        Some("checkout.session.completed")
    );
    assert_eq!(pushed.deliveries, 1, "a fetch is not a delivery");

    // Running again adds nothing.
    let again = salestrack(&app, &base, &["--json", "reconcile", "--since", "24h"]).await;
    assert_eq!(again.code, Some(0), "{again:?}");
    let report = report_of(&again.json(), &acme).clone();
    assert_eq!(
        (
            &report["fetched"],
            &report["new"],
            &report["already_stored"]
        ),
        (&json!(5), &json!(0), &json!(5)),
        "{report}"
    );
    assert_eq!(app.events().await.len(), 5);
    assert_eq!(app.conversions().await.len(), 1);

    // A wider window reaches the older sale.
    let wider = salestrack(&app, &base, &["--json", "reconcile", "--since", "7d"]).await;
    assert_eq!(wider.code, Some(0), "{wider:?}");
    assert_eq!(report_of(&wider.json(), &acme)["new"], 1);
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 2);
    let old = conversions
        .iter()
        .find(|c| c.purchase_key == "pi_old_5_days")
        .unwrap();
    assert_eq!(old.client_method, ClientMethod::Api);
    assert!(old.verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_naming_its_client_after_the_others_are_reconciled() {
    let app = spawn_app().await;
    // The refused client comes first: the one after it is still reconciled.
    let bad = add_keyed_client(&app, "Bad Shop", KEY_B, None).await;
    let good = add_keyed_client(&app, "Good Shop", KEY_A, None).await;
    let (base, _fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([
            (
                KEY_A.to_string(),
                vec![sale("evt_good_1", "pi_good_1", 1900, 60)],
            ),
            (
                KEY_B.to_string(),
                vec![sale("evt_bad_1", "pi_bad_1", 990, 60)],
            ),
        ]),
        refused: HashSet::from([KEY_B.to_string()]),
        page_size: 100,
        ..Default::default()
    })
    .await;

    let run = salestrack(&app, &base, &["reconcile"]).await;
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .contains("Stripe refused the API key of client Bad Shop"),
        "{run:?}"
    );
    assert!(run.stdout.contains("Good Shop"), "{run:?}");
    assert_no_key(&run, KEY_B);
    assert_no_key(&run, KEY_A);

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{conversions:#?}");
    assert_eq!(conversions[0].client_id, good.id);
    assert_eq!(conversions[0].amount, 1900);

    let json_run = salestrack(&app, &base, &["--json", "reconcile"]).await;
    assert_ne!(json_run.code, Some(0), "{json_run:?}");
    let reports = json_run.json();
    let bad_report = report_of(&reports, &bad);
    assert!(bad_report["error"]
        .as_str()
        .is_some_and(|e| e.contains("Bad Shop") && e.contains("401")));
    assert_eq!(bad_report["key_refused"], true);
    assert_eq!(report_of(&reports, &good)["error"], Value::Null);
    assert_eq!(report_of(&reports, &good)["already_stored"], 1);
    assert_no_key(&json_run, KEY_B);

    // --client limits the run to one client.
    let one = salestrack(
        &app,
        &base,
        &["--json", "reconcile", "--client", "Good Shop"],
    )
    .await;
    assert_eq!(one.code, Some(0), "{one:?}");
    assert_eq!(one.json().as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_key_is_named_and_skipped() {
    let app = spawn_app().await;
    app.add_client("No Key Shop", Some(SECRET_A)).await;
    let (base, fake) = spawn_stripe(FakeStripe {
        page_size: 10,
        ..Default::default()
    })
    .await;
    let all = salestrack(&app, &base, &["reconcile"]).await;
    assert_eq!(all.code, Some(0), "{all:?}");
    assert!(
        all.stdout.contains("no client has a Stripe API key"),
        "{all:?}"
    );
    let one = salestrack(&app, &base, &["reconcile", "--client", "No Key Shop"]).await;
    assert_ne!(one.code, Some(0), "{one:?}");
    assert!(one.stderr.contains("No Key Shop"), "{one:?}");
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_keep_failing_are_fetched_on_the_next_run() {
    let app = spawn_app().await;
    let acme = add_keyed_client(&app, "Acme", KEY_A, None).await;
    let events: Vec<Value> = (0..5)
        .map(|i| {
            sale(
                &format!("evt_sale_{i}"),
                &format!("pi_sale_{i}"),
                1000 + i,
                600 - i * 60,
            )
        })
        .collect();
    let (base, fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(KEY_A.to_string(), events)]),
        page_size: 2,
        down_after_first: AtomicBool::new(true),
        ..Default::default()
    })
    .await;

    let run = salestrack(&app, &base, &["--json", "reconcile"]).await;
    assert_ne!(run.code, Some(0), "{run:?}");
    let report = report_of(&run.json(), &acme).clone();
    assert_eq!(report["fetched"], 2, "{report}");
    assert_eq!(report["new"], 2, "the first page is kept: {report}");
    assert!(
        report["error"].as_str().unwrap().contains("Acme"),
        "{report}"
    );
    assert!(
        fake.seen().len() > 2,
        "the failing page was retried: {:?}",
        fake.seen()
    );
    assert_eq!(app.conversions().await.len(), 2);

    fake.down_after_first.store(false, Ordering::SeqCst);
    let next = salestrack(&app, &base, &["--json", "reconcile"]).await;
    assert_eq!(next.code, Some(0), "{next:?}");
    let report = report_of(&next.json(), &acme).clone();
    assert_eq!(
        (
            &report["fetched"],
            &report["new"],
            &report["already_stored"]
        ),
        (&json!(5), &json!(3), &json!(2)),
        "{report}"
    );
    assert_eq!(app.conversions().await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_event_verifies_a_delivery_whose_signature_failed() {
    let app = spawn_app().await;
    let acme = add_keyed_client(&app, "Acme", KEY_A, Some(SECRET_A)).await;
    let event = sale("evt_resigned_1", "pi_resigned_1", 4200, 120);
    let answer = app
        .deliver(&acme, "whsec_not_the_right_secret_at_all", bytes(&event))
        .await;
    assert_eq!(answer.status(), 400);
    let before = app.conversions().await;
    assert_eq!(before.len(), 1);
    assert!(!before[0].verified);

    let (base, _fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(KEY_A.to_string(), vec![event])]),
        page_size: 10,
        ..Default::default()
    })
    .await;
    let run = salestrack(&app, &base, &["--json", "reconcile"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = report_of(&run.json(), &acme).clone();
    assert_eq!(report["verified_now"], 1, "{report}");
    assert_eq!(report["new"], 0, "{report}");

    let after = app.conversions().await;
    assert_eq!(after.len(), 1);
    assert!(after[0].verified);
    assert_eq!(after[0].client_method, ClientMethod::Api);
    let events = app.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].verification, Verification::Verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_suspected_for_another_client_moves_to_the_key_owner() {
    let app = spawn_app().await;
    // Layer 1 suspects the first client with a secret for an unsigned
    // delivery on the shared URL; the sale is really Acme's.
    let other = app
        .add_client("Other Shop", Some("whsec_other_shop_secret_99"))
        .await;
    let acme = add_keyed_client(&app, "Acme", KEY_A, None).await;
    let event = sale("evt_suspected_1", "pi_suspected_1", 2600, 120);
    let answer = app
        .post_webhook("/webhooks/stripe", bytes(&event), None)
        .await;
    assert_eq!(answer.status(), 400);
    let before = app.conversions().await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].client_id, other.id);
    assert!(!before[0].verified);

    let (base, _fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(KEY_A.to_string(), vec![event])]),
        page_size: 10,
        ..Default::default()
    })
    .await;
    let run = salestrack(&app, &base, &["--json", "reconcile"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(report_of(&run.json(), &acme)["verified_now"], 1);
    let after = app.conversions().await;
    assert_eq!(after.len(), 1, "one payment, one conversion: {after:#?}");
    assert_eq!(after[0].client_id, acme.id);
    assert!(after[0].verified);
    assert_eq!(after[0].amount, 2600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_events_are_keyed_by_account_as_webhooks_are() {
    let app = spawn_app().await;
    let acme = app
        .add_client_with(ClientIn {
            name: "Acme Connect".into(),
            stripe_account: Some("acct_1AcmeConnected".into()),
            stripe_api_key: Some(KEY_A.into()),
            webhook_secret: Some(SECRET_A.into()),
            ..Default::default()
        })
        .await;
    let mut event = sale("evt_connect_1", "pi_connect_1", 3100, 300);
    event["account"] = json!("acct_1AcmeConnected");
    let body = bytes(&event);
    let sig = sign(&body, SECRET_A);
    let answer = app.post_webhook("/webhooks/stripe", body, Some(sig)).await;
    assert_eq!(answer.status(), 200);

    let (base, _fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(KEY_A.to_string(), vec![event])]),
        page_size: 10,
        ..Default::default()
    })
    .await;
    let run = salestrack(&app, &base, &["--json", "reconcile"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(report_of(&run.json(), &acme)["already_stored"], 1);
    assert_eq!(app.events().await.len(), 1);
    assert_eq!(app.conversions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_job_runs_the_same_reconciliation() {
    let app = spawn_app().await;
    let acme = add_keyed_client(&app, "Acme", KEY_A, None).await;
    app.add_client("Keyless", None).await;
    let (base, fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(
            KEY_A.to_string(),
            vec![sale("evt_job_1", "pi_job_1", 700, 60)],
        )]),
        page_size: 10,
        ..Default::default()
    })
    .await;
    let job = ReconcileJob::new(
        app.tracker.clone(),
        StripeApi::new(&base).unwrap(),
        Duration::from_secs(3600),
    );
    let reports = job.run_once().await.unwrap();
    assert_eq!(reports.len(), 1, "only clients with a key: {reports:?}");
    assert_eq!(
        (reports[0].client_id.as_str(), reports[0].new),
        (acme.id.as_str(), 1)
    );
    let gte: i64 = fake.seen()[0].get("created[gte]").unwrap().parse().unwrap();
    assert!((now_s() - 3600 - 5..=now_s() - 3600 + 5).contains(&gte));
    let again = job.run_once().await.unwrap();
    assert_eq!((again[0].new, again[0].already_stored), (0, 1));
    assert_eq!(app.conversions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reconciles_periodically_when_asked() {
    let app = spawn_app().await;
    add_keyed_client(&app, "Acme", KEY_A, None).await;
    let (base, fake) = spawn_stripe(FakeStripe {
        events: HashMap::from([(
            KEY_A.to_string(),
            vec![sale("evt_serve_1", "pi_serve_1", 1200, 60)],
        )]),
        page_size: 10,
        ..Default::default()
    })
    .await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salestrack"))
        .arg("--database")
        .arg(&app.db_url)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sweep-interval",
            "0",
            "--reconcile-interval",
            "200ms",
        ])
        .env("SALESTRACK_STRIPE_API_BASE", &base)
        .env(
            "SALESTRACK_ADMIN_TOKEN",
            "a-long-enough-admin-token-for-tests",
        )
        .env_remove("SALESTRACK_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut found = false;
    for _ in 0..100 {
        if !app.conversions().await.is_empty() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.expect("stop serve");
    assert!(
        found,
        "serve did not reconcile; Stripe saw {:?}",
        fake.seen()
    );
    assert_eq!(app.conversions().await[0].client_method, ClientMethod::Api);
}
