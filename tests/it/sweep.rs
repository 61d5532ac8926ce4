//! SPEC 2.8 layers 4–5: the sweep retries events that failed or waited for a
//! client, then runs Auto-Fix over every orphan; Auto-Fix reports what it did.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use salestrack::domain::ids::new_id;
use salestrack::domain::ingest::{Delivery, Endpoint};
use salestrack::domain::model::*;
use salestrack::domain::view::ConversionOut;
use salestrack::domain::{DomainConfig, Tracker};
use salestrack::jobs::sweep::Sweep;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const SECRET: &str = "whsec_sweep_tests_000001";
const API: &str = "2025-03-31.basil";

fn payment_intent(id: &str, customer: &str, metadata: Value) -> Value {
    json!({
        "id": id, "object": "payment_intent", "amount": 2500, "amount_received": 2500,
        "currency": "eur", "customer": customer, "receipt_email": format!("{customer}@example.com"),
        "metadata": metadata, "status": "succeeded", "livemode": false,
    })
}

async fn sell(
    app: &TestApp,
    client: &Client,
    pi: &str,
    customer: &str,
    created: i64,
    metadata: Value,
) -> ConversionOut {
    let body = event(
        &new_id("evt"),
        "payment_intent.succeeded",
        API,
        created,
        payment_intent(pi, customer, metadata),
    );
    let resp = app.deliver(client, SECRET, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    by_key(app, pi).await.expect("a conversion for the sale")
}

async fn by_key(app: &TestApp, key: &str) -> Option<ConversionOut> {
    app.conversions()
        .await
        .into_iter()
        .find(|c| c.purchase_key == key)
}

async fn sweep(app: &TestApp) -> salestrack::jobs::sweep::SweepOutcome {
    Sweep::new(app.tracker.clone())
        .run_once()
        .await
        .expect("sweep")
}

async fn event_of(app: &TestApp, stripe_id: &str) -> StoredEvent {
    app.events()
        .await
        .into_iter()
        .find(|e| e.stripe_event_id.as_deref() == Some(stripe_id))
        .unwrap_or_else(|| panic!("event {stripe_id} stored"))
}

#[tokio::test]
async fn the_sweep_fixes_orphans_whose_link_was_added_later_and_records_autofix_in_the_history() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", Some(SECRET)).await;
    let now = now_s();
    let by_slug = sell(
        &app,
        &shop,
        "pi_sw_1",
        "cus_1",
        now - 3600,
        json!({"link_slug": "late-link"}),
    )
    .await;
    let by_ref = sell(
        &app,
        &shop,
        "pi_sw_2",
        "cus_2",
        now - 1800,
        json!({"ref": "late-link"}),
    )
    .await;
    let hopeless = sell(&app, &shop, "pi_sw_3", "cus_3", now - 600, json!({})).await;
    for c in [&by_slug, &by_ref, &hopeless] {
        assert_eq!(
            c.link_slug, None,
            "an orphan before the link exists: {c:#?}"
        );
    }

    let link = app.add_link(&shop, "late-link").await;
    let outcome = sweep(&app).await;
    assert_eq!(
        outcome.events.retried, 0,
        "no event needed a retry: {outcome:#?}"
    );
    assert_eq!(outcome.orphans.fixed, 2, "{outcome:#?}");
    assert_eq!(outcome.orphans.remaining, 1, "{outcome:#?}");
    assert_eq!(outcome.orphans.still_orphan.len(), 1);
    assert_eq!(outcome.orphans.still_orphan[0].conversion_id, hopeless.id);
    assert!(!outcome.orphans.still_orphan[0].why.is_empty());

    for key in ["pi_sw_1", "pi_sw_2"] {
        let c = by_key(&app, key).await.unwrap();
        assert_eq!(c.link_slug.as_deref(), Some("late-link"), "{c:#?}");
        assert_eq!(c.method, Some(Method::LinkSlug));
        let history = app.tracker.store().list_history(&c.id).await.unwrap();
        let fix = history
            .iter()
            .find(|h| h.actor == "autofix")
            .unwrap_or_else(|| panic!("no autofix entry: {history:#?}"));
        assert_eq!(fix.from_link_id, None);
        assert_eq!(fix.to_link_id.as_deref(), Some(link.id.as_str()));
        assert_eq!(fix.from_method, None);
        assert_eq!(fix.to_method, Some(Method::LinkSlug));
    }
    assert_eq!(by_key(&app, "pi_sw_3").await.unwrap().link_slug, None);

    // A second pass has nothing left to fix and changes nothing.
    let again = sweep(&app).await;
    assert_eq!(
        (again.orphans.fixed, again.orphans.remaining),
        (0, 1),
        "{again:#?}"
    );
    let c = by_key(&app, "pi_sw_1").await.unwrap();
    assert_eq!(
        app.tracker.store().list_history(&c.id).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_click_beacon_that_arrives_after_the_webhook_lets_the_sweep_fix_the_orphan() {
    let app = spawn_app!();
    let shop = app
        .add_client_with(salestrack::domain::client::ClientIn {
            name: "Shop".into(),
            domain: Some("shop.com".into()),
            webhook_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .await;
    app.add_link(&shop, "flexus1").await;
    // The sale happened five minutes ago; its webhook came first.
    let orphan = sell(
        &app,
        &shop,
        "pi_late_beacon",
        "cus_1",
        now_s() - 300,
        json!({}),
    )
    .await;
    assert_eq!(orphan.link_slug, None);

    let resp = app
        .http
        .post(format!("{}/api/v1/track/click", app.base))
        .header("origin", "https://shop.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .json(&json!({"ref": "flexus1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let click_id = resp.json::<Value>().await.unwrap()["click_id"]
        .as_str()
        .unwrap()
        .to_string();

    let outcome = sweep(&app).await;
    assert_eq!(outcome.orphans.fixed, 1, "{outcome:#?}");
    let c = by_key(&app, "pi_late_beacon").await.unwrap();
    assert_eq!(c.method, Some(Method::Autofix), "{c:#?}");
    assert_eq!(c.link_slug.as_deref(), Some("flexus1"));
    assert_eq!(c.click_id.as_deref(), Some(click_id.as_str()));
    let stored = app
        .tracker
        .store()
        .get_conversion(&c.id)
        .await
        .unwrap()
        .unwrap();
    let last = stored.trace.last().expect("trace");
    assert_eq!(
        (last.step.as_str(), last.outcome),
        ("autofix", StepOutcome::Matched)
    );
}

#[tokio::test]
async fn autofix_reports_fixed_and_remaining_with_the_reason_for_each_orphan() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", Some(SECRET)).await;
    let other = app
        .add_client("Other", Some("whsec_sweep_other_00002"))
        .await;
    let now = now_s();
    let ghost = sell(
        &app,
        &shop,
        "pi_af_1",
        "cus_1",
        now - 60,
        json!({"link_slug": "ghost"}),
    )
    .await;
    let fixable = sell(
        &app,
        &shop,
        "pi_af_2",
        "cus_2",
        now - 60,
        json!({"link_slug": "soon"}),
    )
    .await;
    let body = event(
        &new_id("evt"),
        "payment_intent.succeeded",
        API,
        now,
        payment_intent("pi_af_3", "cus_3", json!({})),
    );
    assert_eq!(
        app.deliver(&other, "whsec_sweep_other_00002", body)
            .await
            .status(),
        StatusCode::OK
    );
    let theirs = by_key(&app, "pi_af_3").await.unwrap();
    assert_eq!(theirs.client_id, other.id);

    app.add_link(&shop, "soon").await;
    // One client only: the other client's orphan is not counted.
    let report = app.tracker.autofix(Some("Shop")).await.expect("autofix");
    assert_eq!((report.fixed, report.remaining), (1, 1), "{report:#?}");
    assert_eq!(report.still_orphan.len(), 1);
    let why = &report.still_orphan[0];
    assert_eq!(why.conversion_id, ghost.id);
    assert!(why.why.contains("link_slug"), "{why:?}");
    assert!(
        why.why.contains("ghost"),
        "the reason names the unknown slug: {why:?}"
    );
    assert_eq!(by_key(&app, "pi_af_2").await.unwrap().id, fixable.id);
    assert_eq!(
        by_key(&app, "pi_af_2").await.unwrap().link_slug.as_deref(),
        Some("soon")
    );

    // Every client: both remaining orphans, each with a reason.
    let all = app.tracker.autofix(None).await.expect("autofix");
    assert_eq!((all.fixed, all.remaining), (0, 2), "{all:#?}");
    let mut ids: Vec<_> = all
        .still_orphan
        .iter()
        .map(|o| o.conversion_id.clone())
        .collect();
    ids.sort();
    let mut want = vec![ghost.id.clone(), theirs.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(all.still_orphan.iter().all(|o| !o.why.is_empty()));

    assert!(
        app.tracker.autofix(Some("Nobody")).await.is_err(),
        "an unknown client is an error"
    );
}

#[tokio::test]
async fn an_event_that_arrived_before_any_client_existed_is_processed_by_the_sweep() {
    let app = spawn_app!();
    let stripe_id = new_id("evt");
    let body = event(
        &stripe_id,
        "payment_intent.succeeded",
        API,
        now_s(),
        payment_intent("pi_early", "cus_early", json!({"link_slug": "first-link"})),
    );
    let resp = app.post_webhook("/webhooks/stripe", body, None).await;
    assert!(
        resp.status().is_client_error(),
        "unsigned: {}",
        resp.status()
    );
    let stored = event_of(&app, &stripe_id).await;
    assert_eq!(stored.processing, Processing::NoClient, "{stored:#?}");
    assert!(app.conversions().await.is_empty());

    // Nothing to do while there is still no client.
    let idle = sweep(&app).await;
    assert_eq!(idle.events.processed, 0, "{idle:#?}");
    assert!(app.conversions().await.is_empty());

    let shop = app.add_client("Shop", None).await;
    app.add_link(&shop, "first-link").await;
    let outcome = sweep(&app).await;
    assert!(outcome.events.retried >= 1, "{outcome:#?}");
    assert_eq!(outcome.events.processed, 1, "{outcome:#?}");
    assert_eq!(outcome.events.still_failing, 0, "{outcome:#?}");

    let after = event_of(&app, &stripe_id).await;
    assert_eq!(after.processing, Processing::Processed, "{after:#?}");
    assert_eq!(after.client_id.as_deref(), Some(shop.id.as_str()));
    let c = by_key(&app, "pi_early")
        .await
        .expect("the sale is recorded");
    assert_eq!(c.client_id, shop.id);
    assert!(!c.verified, "never signed, so never verified");
    assert_eq!(c.client_method, ClientMethod::FirstClient);
    assert_eq!(c.link_slug.as_deref(), Some("first-link"));
    assert_eq!(c.amount, 2500);

    // Processed once: another sweep does not touch it again.
    let again = sweep(&app).await;
    assert_eq!(again.events.retried, 0, "{again:#?}");
    assert_eq!(app.conversions().await.len(), 1);
}

#[tokio::test]
async fn a_failing_event_stays_failed_and_is_retried_at_most_max_attempts_times() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", Some(SECRET)).await;
    let stripe_id = new_id("evt");
    let mut object = payment_intent("pi_broken", "cus_1", json!({}));
    object.as_object_mut().unwrap().remove("currency");
    let body = event(&stripe_id, "payment_intent.succeeded", API, now_s(), object);
    let resp = app.deliver(&shop, SECRET, body).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a verified event is acknowledged once stored"
    );

    let stored = event_of(&app, &stripe_id).await;
    assert_eq!(stored.processing, Processing::Failed, "{stored:#?}");
    let error = stored.processing_error.clone().unwrap_or_default();
    assert!(
        error.contains("currency"),
        "the error names the field: {error}"
    );
    assert_eq!(stored.verification, Verification::Verified);

    let first = sweep(&app).await;
    assert_eq!(
        (
            first.events.retried,
            first.events.processed,
            first.events.still_failing
        ),
        (1, 0, 1),
        "{first:#?}"
    );

    let max = app.tracker.config().max_attempts;
    let mut passes = 1;
    loop {
        let o = sweep(&app).await;
        if o.events.retried == 0 {
            break;
        }
        assert_eq!(o.events.still_failing, 1, "{o:#?}");
        passes += 1;
        assert!(
            passes <= max,
            "retried more than max_attempts ({max}) times"
        );
    }
    let last = event_of(&app, &stripe_id).await;
    assert_eq!(
        last.processing,
        Processing::Failed,
        "still failed, still stored"
    );
    assert_eq!(last.attempts, max, "{last:#?}");
    assert!(
        app.conversions().await.is_empty(),
        "no sale from a broken event"
    );
}

#[tokio::test]
async fn the_background_sweep_of_serve_fixes_orphans_without_being_asked() {
    let (_db, url) = fresh_database!();
    let store = salestrack::storage::connect(&url).await.unwrap();
    let tracker = Arc::new(Tracker::new(store, DomainConfig::default()).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(salestrack::app::serve(
        tracker.clone(),
        listener,
        Some(Duration::from_millis(100)),
        cancel.clone(),
    ));

    let shop = tracker
        .add_client(salestrack::domain::client::ClientIn {
            name: "Shop".into(),
            webhook_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let body = event(
        &new_id("evt"),
        "payment_intent.succeeded",
        API,
        now_s(),
        payment_intent("pi_bg", "cus_1", json!({"link_slug": "bg"})),
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    let signature = sign(&body, SECRET);
    tracker
        .ingest(Delivery {
            endpoint: Endpoint::Client(shop.id.clone()),
            signature: Some(signature.clone()),
            headers: vec![("stripe-signature".into(), signature)],
            body,
            received_at: now_ms,
        })
        .await
        .expect("ingest");
    let orphan = tracker
        .conversions_out(&ConversionFilter::default())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(orphan.link_slug, None);

    tracker
        .add_link(salestrack::domain::client::LinkIn {
            client: shop.id.clone(),
            slug: "bg".into(),
            destination: "https://shop.example.com/bg".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut fixed = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = tracker
            .store()
            .get_conversion(&orphan.id)
            .await
            .unwrap()
            .unwrap();
        if c.link_id.is_some() {
            fixed = Some(c);
            break;
        }
    }
    let fixed = fixed.expect("the background sweep fixed the orphan within 5 s");
    assert_eq!(fixed.method, Some(Method::LinkSlug));
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[tokio::test]
async fn two_sweeps_at_once_fix_each_orphan_once() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", Some(SECRET)).await;
    let now = now_s();
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = sell(
            &app,
            &shop,
            &format!("pi_twice_{i}"),
            &format!("cus_{i}"),
            now - 60,
            json!({"link_slug": "twice"}),
        )
        .await;
        ids.push(c.id);
    }
    app.add_link(&shop, "twice").await;
    let (a, b) = tokio::join!(sweep(&app), sweep(&app));
    assert_eq!(a.orphans.fixed + b.orphans.fixed, 5, "{a:#?} {b:#?}");
    assert_eq!(a.orphans.remaining + b.orphans.remaining, 0);
    assert_eq!(app.conversions().await.len(), 5, "no conversion doubled");
    for id in &ids {
        let history = app.tracker.store().list_history(id).await.unwrap();
        assert_eq!(history.len(), 1, "one change per orphan: {history:#?}");
    }
}
