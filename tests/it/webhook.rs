//! Webhook ingest over HTTP (SPEC 2.3 ingest, 2.4 verify, 2.5 layer 1).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use salestrack::domain::client::ClientIn;
use salestrack::domain::model::*;
use salestrack::domain::report::*;
use salestrack::storage::{DynStore, Store, StoreError, StoreResult, UnitEnd};
use salestrack::stripe::signature::header_for;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const SECRET_A: &str = "whsec_test_client_a_secret_0001";
const SECRET_B: &str = "whsec_test_client_b_secret_0002";
const SECRET_B2: &str = "whsec_test_client_b_rotated_0003";
const WRONG: &str = "whsec_test_not_the_right_one_9999";

const PI_A: &str = "pi_3uTIcnFq4ZkT2mWbKZS1evdw";

/// A `payment_intent.succeeded` event (a one-time sale, no invoice).
fn pi_event(event_id: &str, pi: &str, amount: Value, currency: &str) -> Vec<u8> {
    event(
        event_id,
        "payment_intent.succeeded",
        "2026-07-29.dahlia",
        1_786_350_094,
        json!({
            "id": pi,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "customer": "cus_webhooktest01",
            "latest_charge": null,
            "metadata": {},
            "status": "succeeded",
        }),
    )
}

/// The same with a receipt email (for layer 1's email-domain method).
fn pi_event_with_email(event_id: &str, pi: &str, email: &str) -> Vec<u8> {
    event(
        event_id,
        "payment_intent.succeeded",
        "2026-07-29.dahlia",
        1_786_350_094,
        json!({
            "id": pi,
            "object": "payment_intent",
            "amount": 2500,
            "amount_received": 2500,
            "currency": "usd",
            "customer": "cus_webhooktest02",
            "receipt_email": email,
            "metadata": {},
            "status": "succeeded",
        }),
    )
}

/// Sets (or adds) top-level fields of a JSON event body.
fn with_top_level(body: &[u8], fields: Value) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).expect("event json");
    for (k, val) in fields.as_object().expect("fields").iter() {
        v[k] = val.clone();
    }
    serde_json::to_vec_pretty(&v).expect("json")
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "_raw": text }));
    (status, value)
}

async fn assert_healthy(app: &TestApp) {
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz request");
    assert_eq!(
        resp.status().as_u16(),
        200,
        "the server still answers /healthz"
    );
}

fn only_event(events: &[StoredEvent]) -> &StoredEvent {
    assert_eq!(events.len(), 1, "exactly one stored event: {events:#?}");
    &events[0]
}

// ---- verified deliveries ----------------------------------------------------

#[tokio::test]
async fn a_verified_delivery_on_the_client_url_is_accepted_and_stored_as_verified() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");

    let (status, json) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;

    assert_eq!(status, 200, "{json}");
    assert_eq!(json["received"], json!(true));
    assert_eq!(json["duplicate"], json!(false));
    let events = app.events().await;
    let stored = only_event(&events);
    assert_eq!(json["event_id"], json!(stored.id));
    assert_eq!(stored.body, body, "the raw bytes are stored as sent");
    assert_eq!(stored.verification, Verification::Verified);
    assert_eq!(stored.verification_reason, None);
    assert_eq!(stored.client_id.as_deref(), Some(client.id.as_str()));
    assert_eq!(stored.client_method, Some(ClientMethod::WebhookSecret));
    assert_eq!(stored.processing, Processing::Processed);
    assert_eq!(stored.endpoint, format!("/webhooks/stripe/{}", client.id));
    assert!(
        stored
            .headers
            .to_ascii_lowercase()
            .contains("stripe-signature"),
        "the signature header is kept with the event: {}",
        stored.headers
    );

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    let c = &conversions[0];
    assert_eq!(c.client_id, client.id);
    assert!(c.verified);
    assert_eq!(c.client_method, ClientMethod::WebhookSecret);
    assert_eq!(c.amount, 4900);
    assert_eq!(c.purchase_key, PI_A);
}

#[tokio::test]
async fn the_shared_url_finds_the_client_whose_secret_verifies_including_a_rotated_secret() {
    let app = spawn_app!();
    let _nosecret = app.add_client("no-secret", None).await;
    let a = app.add_client("alpha", Some(SECRET_A)).await;
    let b = app.add_client("bravo", Some(SECRET_B)).await;
    app.tracker
        .add_secret(&b.id, SECRET_B2)
        .await
        .expect("rotate");

    // Signed with bravo's new secret.
    let body1 = pi_event("evt_shared_1", "pi_shared_1", json!(1000), "usd");
    let sig1 = sign(&body1, SECRET_B2);
    let (s1, j1) = json_of(
        app.post_webhook("/webhooks/stripe", body1, Some(sig1))
            .await,
    )
    .await;
    assert_eq!(s1, 200, "{j1}");
    // Signed with bravo's old secret, still active.
    let body2 = pi_event("evt_shared_2", "pi_shared_2", json!(2000), "usd");
    let sig2 = sign(&body2, SECRET_B);
    let (s2, j2) = json_of(
        app.post_webhook("/webhooks/stripe", body2, Some(sig2))
            .await,
    )
    .await;
    assert_eq!(s2, 200, "{j2}");
    // Signed with alpha's secret.
    let body3 = pi_event("evt_shared_3", "pi_shared_3", json!(3000), "usd");
    let sig3 = sign(&body3, SECRET_A);
    let (s3, j3) = json_of(
        app.post_webhook("/webhooks/stripe", body3, Some(sig3))
            .await,
    )
    .await;
    assert_eq!(s3, 200, "{j3}");

    let events = app.events().await;
    assert_eq!(events.len(), 3);
    let by_stripe_id = |id: &str| {
        events
            .iter()
            .find(|e| e.stripe_event_id.as_deref() == Some(id))
            .unwrap()
    };
    for (id, client) in [
        ("evt_shared_1", &b),
        ("evt_shared_2", &b),
        ("evt_shared_3", &a),
    ] {
        let e = by_stripe_id(id);
        assert_eq!(e.verification, Verification::Verified, "{id}");
        assert_eq!(e.client_id.as_deref(), Some(client.id.as_str()), "{id}");
        assert_eq!(e.client_method, Some(ClientMethod::WebhookSecret), "{id}");
        assert_eq!(e.endpoint, "/webhooks/stripe");
    }
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 3);
    for c in &conversions {
        let expected = match c.purchase_key.as_str() {
            "pi_shared_1" | "pi_shared_2" => &b.id,
            "pi_shared_3" => &a.id,
            other => panic!("unexpected purchase {other}"),
        };
        assert_eq!(&c.client_id, expected, "{}", c.purchase_key);
        assert!(c.verified);
        assert_eq!(c.client_method, ClientMethod::WebhookSecret);
    }
}

#[tokio::test]
async fn the_client_url_tries_only_that_client_so_another_clients_secret_does_not_verify() {
    let app = spawn_app!();
    let a = app.add_client("alpha", Some(SECRET_A)).await;
    let _b = app.add_client("bravo", Some(SECRET_B)).await;
    let body = pi_event("evt_wrong_url", "pi_wrong_url", json!(1000), "usd");

    let (status, json) = json_of(app.deliver(&a, SECRET_B, body).await).await;

    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["reason"], json!("mismatch"));
    let events = app.events().await;
    assert_eq!(only_event(&events).verification, Verification::Unverified);
}

#[tokio::test]
async fn an_event_already_stored_as_verified_is_acknowledged_on_any_endpoint_and_not_processed_again(
) {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");

    let (s1, j1) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;
    assert_eq!(s1, 200, "{j1}");
    let first = app.conversions().await;
    let sig = sign(&body, SECRET_A);
    let (s2, j2) = json_of(
        app.post_webhook("/webhooks/stripe", body.clone(), Some(sig))
            .await,
    )
    .await;
    assert_eq!(s2, 200, "{j2}");
    assert_eq!(j2["duplicate"], json!(true));
    assert_eq!(j2["event_id"], j1["event_id"]);
    // Even an unsigned replay of a verified event is just acknowledged.
    let (s3, j3) = json_of(app.post_webhook("/webhooks/stripe", body, None).await).await;
    assert_eq!(s3, 200, "{j3}");

    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.verification, Verification::Verified);
    assert_eq!(e.deliveries, 3);
    let after = app.conversions().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after, first, "a replay changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_of_one_event_store_one_row_and_count_one_sale() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_A);
    let url = format!("{}/webhooks/stripe/{}", app.base, client.id);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = reqwest::Client::new();
        let (url, body, sig, barrier) = (url.clone(), body.clone(), sig.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .header("stripe-signature", sig)
                .body(body)
                .send()
                .await
                .expect("request");
            json_of(resp).await
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        let (status, json) = task.await.expect("task");
        assert!((200..300).contains(&status), "{status} {json}");
        if json["duplicate"] == json!(false) {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery is the first");

    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.deliveries, 20);
    assert_eq!(e.verification, Verification::Verified);
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{conversions:#?}");
    assert_eq!(conversions[0].amount, 4900);
    assert!(conversions[0].verified);
}

// ---- unverified deliveries --------------------------------------------------

/// Delivers `body` to `client`'s URL with `signature` and checks the 400 and
/// the reason; returns the stored event.
async fn expect_unverified(
    app: &TestApp,
    client: &Client,
    body: Vec<u8>,
    signature: Option<String>,
    reason: &str,
) -> StoredEvent {
    let path = format!("/webhooks/stripe/{}", client.id);
    let (status, json) = json_of(app.post_webhook(&path, body.clone(), signature).await).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["reason"], json!(reason), "{json}");
    assert_eq!(
        json["error"]["code"],
        json!("signature_unverified"),
        "{json}"
    );
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let events = app.events().await;
    let e = only_event(&events).clone();
    assert_eq!(e.body, body, "the unverified body is stored");
    assert_eq!(e.verification, Verification::Unverified);
    assert_eq!(e.verification_reason.map(|r| r.as_str()), Some(reason));
    e
}

/// The held-out conversion of an unverified sale, then a valid delivery
/// upgrades it in place.
async fn then_a_valid_delivery_upgrades_it(
    app: &TestApp,
    client: &Client,
    secret: &str,
    body: Vec<u8>,
) {
    let before = app.conversions().await;
    assert_eq!(
        before.len(),
        1,
        "the unverified sale is recorded: {before:#?}"
    );
    assert!(!before[0].verified, "held out until verified");
    assert_eq!(before[0].client_id, client.id);

    let (status, json) = json_of(app.deliver(client, secret, body).await).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["received"], json!(true));

    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.verification, Verification::Verified);
    assert_eq!(e.client_method, Some(ClientMethod::WebhookSecret));
    let after = app.conversions().await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0].id, before[0].id, "the same conversion is upgraded");
    assert!(after[0].verified);
    assert_eq!(after[0].client_method, ClientMethod::WebhookSecret);
}

#[tokio::test]
async fn a_wrong_secret_is_a_400_mismatch_recorded_unverified_and_a_later_valid_delivery_verifies_it(
) {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, WRONG);

    let e = expect_unverified(&app, &client, body.clone(), Some(sig), "mismatch").await;
    assert_eq!(
        e.client_id.as_deref(),
        Some(client.id.as_str()),
        "the suspected client is named"
    );
    assert_ne!(e.client_method, Some(ClientMethod::WebhookSecret));
    then_a_valid_delivery_upgrades_it(&app, &client, SECRET_A, body).await;
}

#[tokio::test]
async fn a_missing_signature_header_is_a_400_no_header_and_a_later_valid_delivery_verifies_it() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");

    expect_unverified(&app, &client, body.clone(), None, "no_header").await;
    then_a_valid_delivery_upgrades_it(&app, &client, SECRET_A, body).await;
}

#[tokio::test]
async fn a_garbage_signature_header_is_a_400_malformed_and_a_later_valid_delivery_verifies_it() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");

    expect_unverified(
        &app,
        &client,
        body.clone(),
        Some("this is not a signature".into()),
        "malformed",
    )
    .await;
    then_a_valid_delivery_upgrades_it(&app, &client, SECRET_A, body).await;
}

#[tokio::test]
async fn a_client_without_secrets_gets_a_400_no_secret_and_verifies_once_a_secret_is_added() {
    let app = spawn_app!();
    let client = app.add_client("acme", None).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_A);

    expect_unverified(&app, &client, body.clone(), Some(sig), "no_secret").await;
    app.tracker
        .add_secret(&client.id, SECRET_A)
        .await
        .expect("add secret");
    then_a_valid_delivery_upgrades_it(&app, &client, SECRET_A, body).await;
}

#[tokio::test]
async fn a_signature_older_than_five_minutes_is_a_400_stale_and_a_fresh_delivery_verifies_it() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = header_for(&body, SECRET_A, now_s() - 301);

    expect_unverified(&app, &client, body.clone(), Some(sig), "stale").await;
    then_a_valid_delivery_upgrades_it(&app, &client, SECRET_A, body).await;
}

#[tokio::test]
async fn a_signature_with_a_timestamp_in_the_future_is_accepted() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = header_for(&body, SECRET_A, now_s() + 3_600);
    let path = format!("/webhooks/stripe/{}", client.id);

    let (status, json) = json_of(app.post_webhook(&path, body, Some(sig)).await).await;

    assert_eq!(status, 200, "{json}");
    assert_eq!(
        only_event(&app.events().await).verification,
        Verification::Verified
    );
}

#[tokio::test]
async fn a_forged_unverified_delivery_does_not_override_the_verified_sale() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let real = pi_event("evt_real", "pi_forged_target", json!(1500), "usd");
    let (s, j) = json_of(app.deliver(&client, SECRET_A, real).await).await;
    assert_eq!(s, 200, "{j}");
    // A forger sends a different event about the same payment intent.
    let forged = pi_event("evt_forged", "pi_forged_target", json!(999_999), "usd");
    let sig = sign(&forged, WRONG);
    let path = format!("/webhooks/stripe/{}", client.id);
    let (s, j) = json_of(app.post_webhook(&path, forged, Some(sig)).await).await;
    assert_eq!(s, 400, "{j}");

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].amount, 1500);
    assert!(conversions[0].verified);
}

#[tokio::test]
async fn re_verification_after_adding_the_right_secret_verifies_the_stored_event_and_its_conversion(
) {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_B)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_A);

    let stored = expect_unverified(&app, &client, body, Some(sig), "mismatch").await;
    let before = app.conversions().await;
    assert_eq!(before.len(), 1);
    assert!(!before[0].verified);
    // Re-verifying with the same secrets changes nothing.
    assert!(!app.tracker.reverify_event(&stored).await.expect("reverify"));
    assert!(!app.conversions().await[0].verified);

    app.tracker
        .add_secret(&client.id, SECRET_A)
        .await
        .expect("add secret");
    let verified = app.tracker.reverify_event(&stored).await.expect("reverify");

    assert!(verified);
    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.verification, Verification::Verified);
    assert_eq!(e.client_id.as_deref(), Some(client.id.as_str()));
    assert_eq!(e.client_method, Some(ClientMethod::WebhookSecret));
    let after = app.conversions().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id);
    assert!(after[0].verified);
    assert_eq!(after[0].client_method, ClientMethod::WebhookSecret);
}

#[tokio::test]
async fn a_forged_delivery_that_arrived_first_is_outweighed_once_the_real_sale_is_verified() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let forged = pi_event("evt_forged_first", "pi_forged_first", json!(999_999), "usd");
    let sig = sign(&forged, WRONG);
    let path = format!("/webhooks/stripe/{}", client.id);
    let (s, j) = json_of(app.post_webhook(&path, forged, Some(sig)).await).await;
    assert_eq!(s, 400, "{j}");
    assert_eq!(app.conversions().await[0].amount, 999_999);
    assert!(!app.conversions().await[0].verified);

    let real = pi_event("evt_real_later", "pi_forged_first", json!(1500), "usd");
    let (s, j) = json_of(app.deliver(&client, SECRET_A, real).await).await;
    assert_eq!(s, 200, "{j}");

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{conversions:#?}");
    assert_eq!(conversions[0].amount, 1500);
    assert!(conversions[0].verified);
}

#[tokio::test]
async fn on_a_client_url_a_client_without_secrets_is_no_secret_even_if_another_client_has_one() {
    let app = spawn_app!();
    let _a = app.add_client("alpha", Some(SECRET_A)).await;
    let b = app.add_client("bravo", None).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_A);

    expect_unverified(&app, &b, body, Some(sig), "no_secret").await;
}

#[tokio::test]
async fn an_unverified_delivery_on_a_client_url_is_suspected_as_that_clients_and_upgraded_in_place()
{
    let app = spawn_app!();
    // The oldest client with a secret is the one layer 1 would otherwise suspect.
    let a = app.add_client("alpha", Some(SECRET_A)).await;
    let b = app.add_client("bravo", Some(SECRET_B)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, WRONG);
    let path = format!("/webhooks/stripe/{}", b.id);
    let (s, j) = json_of(app.post_webhook(&path, body.clone(), Some(sig)).await).await;
    assert_eq!(s, 400, "{j}");
    // Bravo's status must show bravo's failing deliveries.
    let events = app.events().await;
    assert_eq!(
        only_event(&events).client_id.as_deref(),
        Some(b.id.as_str())
    );
    let before = app.conversions().await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].client_id, b.id);
    assert!(!before[0].verified);

    let (s, j) = json_of(app.deliver(&b, SECRET_B, body).await).await;
    assert_eq!(s, 200, "{j}");

    let conversions = app.conversions().await;
    assert_eq!(
        conversions.len(),
        1,
        "one payment, one conversion: {conversions:#?}"
    );
    assert_eq!(conversions[0].id, before[0].id);
    assert_eq!(conversions[0].client_id, b.id);
    assert!(conversions[0].verified);
    assert!(conversions.iter().all(|c| c.client_id != a.id));
}

#[tokio::test]
async fn a_shared_url_delivery_suspected_as_another_clients_leaves_nothing_behind_once_verified() {
    let app = spawn_app!();
    let a = app.add_client("alpha", Some(SECRET_A)).await;
    let b = app.add_client("bravo", Some(SECRET_B)).await;
    let body = fixture("payment_intent_succeeded.json");
    // Bravo's secret in salestrack is wrong at first: layer 1 suspects alpha.
    let sig = sign(&body, WRONG);
    let (s, j) = json_of(
        app.post_webhook("/webhooks/stripe", body.clone(), Some(sig))
            .await,
    )
    .await;
    assert_eq!(s, 400, "{j}");
    let suspected = app.conversions().await;
    assert_eq!(suspected.len(), 1);
    assert_eq!(suspected[0].client_id, a.id);
    assert!(!suspected[0].verified);

    let sig = sign(&body, SECRET_B);
    let (s, j) = json_of(app.post_webhook("/webhooks/stripe", body, Some(sig)).await).await;
    assert_eq!(s, 200, "{j}");

    let conversions = app.conversions().await;
    assert_eq!(
        conversions.len(),
        1,
        "one payment, one conversion: {conversions:#?}"
    );
    assert_eq!(conversions[0].client_id, b.id);
    assert!(conversions[0].verified);
}

#[tokio::test]
async fn re_verification_for_another_client_than_the_suspected_one_leaves_nothing_behind() {
    let app = spawn_app!();
    let a = app.add_client("alpha", Some(SECRET_A)).await;
    let b = app.add_client("bravo", None).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_B);
    let (s, j) = json_of(app.post_webhook("/webhooks/stripe", body, Some(sig)).await).await;
    assert_eq!(s, 400, "{j}");
    assert_eq!(app.conversions().await[0].client_id, a.id);
    let stored = only_event(&app.events().await).clone();

    app.tracker
        .add_secret(&b.id, SECRET_B)
        .await
        .expect("add secret");
    assert!(app.tracker.reverify_event(&stored).await.expect("reverify"));

    let conversions = app.conversions().await;
    assert_eq!(
        conversions.len(),
        1,
        "one payment, one conversion: {conversions:#?}"
    );
    assert_eq!(conversions[0].client_id, b.id);
    assert!(conversions[0].verified);
}

#[tokio::test]
async fn re_verification_judges_the_timestamp_against_the_stored_receipt_time() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_B)).await;
    // Delivered an hour ago, signed at that time with a secret the client
    // did not have yet.
    let received_s = now_s() - 3_600;
    let body = pi_event("evt_old_delivery", "pi_old_delivery", json!(4200), "usd");
    let sig = header_for(&body, SECRET_A, received_s - 2);
    let (env, _) = salestrack::stripe::event::parse_envelope(&body).expect("envelope");
    let inserted = app
        .tracker
        .store()
        .insert_event(&NewEvent {
            dedup_key: Some(format!("{}/:{}", client.id, env.id)),
            stripe_event_id: Some(env.id.clone()),
            event_type: Some(env.event_type.clone()),
            account: None,
            livemode: Some(false),
            api_version: env.api_version.clone(),
            endpoint: format!("/webhooks/stripe/{}", client.id),
            endpoint_client_id: Some(client.id.clone()),
            source: EventSource::Push,
            received_at: received_s * 1000,
            headers: json!({"stripe-signature": sig, "content-type": "application/json"})
                .to_string(),
            body,
            verification: Verification::Unverified,
            verification_reason: Some(UnverifiedReason::Mismatch),
            client_id: None,
            client_method: None,
            processing: Processing::Pending,
        })
        .await
        .expect("insert");
    let InsertEvent::Inserted(id) = inserted else {
        panic!("expected a fresh insert")
    };
    let stored = app.tracker.store().get_event(id).await.unwrap().unwrap();

    app.tracker
        .add_secret(&client.id, SECRET_A)
        .await
        .expect("add secret");
    let verified = app.tracker.reverify_event(&stored).await.expect("reverify");

    assert!(
        verified,
        "signed 2 s before its receipt: not stale, however late the re-check"
    );
    let e = app.tracker.store().get_event(id).await.unwrap().unwrap();
    assert_eq!(e.verification, Verification::Verified);
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert!(conversions[0].verified);
    assert_eq!(conversions[0].amount, 4200);
}

// ---- layer 1 for unverified events -------------------------------------------

async fn deliver_unsigned_shared(app: &TestApp, body: Vec<u8>) {
    let (status, json) = json_of(app.post_webhook("/webhooks/stripe", body, None).await).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["reason"], json!("no_header"));
}

fn conversion_for<'a>(
    conversions: &'a [salestrack::domain::view::ConversionOut],
    key: &str,
) -> &'a salestrack::domain::view::ConversionOut {
    conversions
        .iter()
        .find(|c| c.purchase_key == key)
        .unwrap_or_else(|| panic!("no conversion for {key}: {conversions:#?}"))
}

#[tokio::test]
async fn layer_one_names_the_suspected_client_by_account_then_email_domain_then_first_with_a_secret(
) {
    let app = spawn_app!();
    let shop = app
        .add_client_with(ClientIn {
            name: "shop".into(),
            domain: Some("https://www.Shop-Example.com/".into()),
            ..Default::default()
        })
        .await;
    let with_secret = app.add_client("with-secret", Some(SECRET_A)).await;
    let connected = app
        .add_client_with(ClientIn {
            name: "connected".into(),
            stripe_account: Some("acct_1ConnectedTest01".into()),
            domain: Some("connected.example".into()),
            ..Default::default()
        })
        .await;

    // The account wins even over a matching email domain.
    let by_account = with_top_level(
        &pi_event_with_email("evt_l1_acct", "pi_l1_acct", "buyer@shop-example.com"),
        json!({"account": "acct_1ConnectedTest01"}),
    );
    deliver_unsigned_shared(&app, by_account).await;
    let by_email = pi_event_with_email("evt_l1_email", "pi_l1_email", "Buyer@SHOP-example.com");
    deliver_unsigned_shared(&app, by_email).await;
    // An unknown account and a foreign email fall through.
    let neither = with_top_level(
        &pi_event_with_email("evt_l1_none", "pi_l1_none", "someone@elsewhere.example"),
        json!({"account": "acct_1Unknown00000000"}),
    );
    deliver_unsigned_shared(&app, neither).await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 3, "{conversions:#?}");
    for (key, client, method) in [
        ("pi_l1_acct", &connected, ClientMethod::StripeAccount),
        ("pi_l1_email", &shop, ClientMethod::EmailDomain),
        (
            "pi_l1_none",
            &with_secret,
            ClientMethod::FirstClientWithSecret,
        ),
    ] {
        let c = conversion_for(&conversions, key);
        assert_eq!(c.client_id, client.id, "{key}");
        assert_eq!(c.client_method, method, "{key}");
        assert!(!c.verified, "{key}: only a secret makes an event verified");
    }
    let events = app.events().await;
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e.verification, Verification::Unverified);
        assert_ne!(e.client_method, Some(ClientMethod::WebhookSecret));
        assert!(
            e.client_id.is_some(),
            "the suspected client is recorded on the event"
        );
    }
}

#[tokio::test]
async fn layer_one_falls_back_to_the_first_client_when_no_client_has_a_secret() {
    let app = spawn_app!();
    let first = app.add_client("first", None).await;
    let _second = app.add_client("second", None).await;

    deliver_unsigned_shared(
        &app,
        pi_event_with_email("evt_l1_first", "pi_l1_first", "x@nowhere.example"),
    )
    .await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].client_id, first.id);
    assert_eq!(conversions[0].client_method, ClientMethod::FirstClient);
    assert!(!conversions[0].verified);
}

#[tokio::test]
async fn an_event_that_arrives_before_any_client_exists_is_stored_and_waits_for_one() {
    let app = spawn_app!();
    deliver_unsigned_shared(
        &app,
        pi_event("evt_no_client", "pi_no_client", json!(700), "usd"),
    )
    .await;

    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.processing, Processing::NoClient);
    assert!(app.conversions().await.is_empty());

    let client = app.add_client("late", None).await;
    app.tracker.reprocess_event(e).await.expect("reprocess");
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].client_id, client.id);
}

// ---- Connect ------------------------------------------------------------------

#[tokio::test]
async fn connect_events_with_one_id_but_different_accounts_are_two_stored_events() {
    let app = spawn_app!();
    let client = app.add_client("platform", Some(SECRET_A)).await;
    let one = with_top_level(
        &pi_event("evt_connect_same", "pi_connect_1", json!(1000), "usd"),
        json!({"account": "acct_1ConnectOne00000"}),
    );
    let two = with_top_level(
        &pi_event("evt_connect_same", "pi_connect_2", json!(2000), "usd"),
        json!({"account": "acct_1ConnectTwo00000"}),
    );

    let (s1, j1) = json_of(app.deliver(&client, SECRET_A, one.clone()).await).await;
    let (s2, j2) = json_of(app.deliver(&client, SECRET_A, two).await).await;
    // The first again: a duplicate of its own account only.
    let (s3, j3) = json_of(app.deliver(&client, SECRET_A, one).await).await;

    assert_eq!((s1, s2, s3), (200, 200, 200), "{j1} {j2} {j3}");
    assert_eq!(j1["duplicate"], json!(false));
    assert_eq!(j2["duplicate"], json!(false));
    assert_eq!(j3["duplicate"], json!(true));
    assert_ne!(j1["event_id"], j2["event_id"]);
    let events = app.events().await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let mut accounts: Vec<_> = events
        .iter()
        .map(|e| e.account.clone().unwrap_or_default())
        .collect();
    accounts.sort();
    assert_eq!(
        accounts,
        vec!["acct_1ConnectOne00000", "acct_1ConnectTwo00000"]
    );
    assert!(events
        .iter()
        .all(|e| e.stripe_event_id.as_deref() == Some("evt_connect_same")));
    assert_eq!(app.conversions().await.len(), 2);
}

// ---- bad input -------------------------------------------------------------

async fn expect_invalid_payload(app: &TestApp, body: Vec<u8>, signature: Option<String>) {
    let (status, json) = json_of(
        app.post_webhook("/webhooks/stripe", body.clone(), signature)
            .await,
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["code"], json!("invalid_payload"), "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    let events = app.events().await;
    let stored = events
        .iter()
        .find(|e| e.body == body)
        .unwrap_or_else(|| panic!("the raw body is stored: {events:#?}"));
    assert_eq!(stored.processing, Processing::Invalid);
    assert_eq!(stored.stripe_event_id, None);
    assert_healthy(app).await;
}

#[tokio::test]
async fn malformed_json_is_stored_and_answered_400_invalid_payload_signed_or_not() {
    let app = spawn_app!();
    let _client = app.add_client("acme", Some(SECRET_A)).await;

    let truncated =
        b"{\"id\": \"evt_truncated\", \"type\": \"payment_intent.succeeded\", \"data\": {".to_vec();
    expect_invalid_payload(&app, truncated.clone(), None).await;
    let signed = b"{\"id\": \"evt_x\", \"type\": ".to_vec();
    let sig = sign(&signed, SECRET_A);
    expect_invalid_payload(&app, signed, Some(sig)).await;
    assert_eq!(app.events().await.len(), 2);
    assert!(app.conversions().await.is_empty());
}

#[tokio::test]
async fn signed_json_that_is_not_an_event_is_stored_and_answered_400_invalid_payload() {
    let app = spawn_app!();
    let _client = app.add_client("acme", Some(SECRET_A)).await;

    for body in [
        b"[]".to_vec(),
        b"{\"foo\":1}".to_vec(),
        b"{\"id\":\"evt_no_type\"}".to_vec(),
        b"{\"id\":\"\",\"type\":\"charge.succeeded\"}".to_vec(),
        b"{\"id\":42,\"type\":\"charge.succeeded\"}".to_vec(),
        b"\"evt_1\"".to_vec(),
        b"null".to_vec(),
        Vec::new(),
    ] {
        let sig = sign(&body, SECRET_A);
        expect_invalid_payload(&app, body, Some(sig)).await;
    }
    assert!(app.conversions().await.is_empty());
}

#[tokio::test]
async fn non_utf8_bytes_are_stored_and_answered_400() {
    let app = spawn_app!();
    let _client = app.add_client("acme", Some(SECRET_A)).await;
    let body = b"{\"id\":\"evt_\xff\xfe\",\"type\":\"charge.succeeded\"}".to_vec();
    let sig = sign(&body, SECRET_A);

    expect_invalid_payload(&app, body, Some(sig)).await;
}

/// A signed, verified event that processing cannot use: 200, failed with an
/// error, no conversion.
async fn expect_failed_processing(body: Vec<u8>) {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;

    let (status, json) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;

    assert_eq!(
        status, 200,
        "a verified event is answered 200 once stored: {json}"
    );
    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.body, body);
    assert_eq!(e.verification, Verification::Verified);
    assert_eq!(e.processing, Processing::Failed);
    assert!(
        e.processing_error.as_deref().is_some_and(|m| !m.is_empty()),
        "the failure says why: {e:#?}"
    );
    assert!(app.conversions().await.is_empty());
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_signed_event_without_data_object_is_accepted_and_marked_failed() {
    let body = serde_json::to_vec(&json!({
        "id": "evt_no_object",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1_786_350_094,
        "livemode": false,
        "data": {},
    }))
    .unwrap();
    expect_failed_processing(body).await;
}

#[tokio::test]
async fn a_signed_event_with_a_negative_amount_is_accepted_and_marked_failed() {
    expect_failed_processing(pi_event("evt_negative", "pi_negative", json!(-4900), "usd")).await;
}

#[tokio::test]
async fn a_signed_event_with_an_amount_as_a_string_is_accepted_and_marked_failed() {
    expect_failed_processing(pi_event(
        "evt_string_amount",
        "pi_string_amount",
        json!("4900"),
        "usd",
    ))
    .await;
}

#[tokio::test]
async fn a_signed_event_with_an_invalid_currency_is_accepted_and_marked_failed() {
    expect_failed_processing(pi_event(
        "evt_bad_currency",
        "pi_bad_currency",
        json!(4900),
        "us$",
    ))
    .await;
}

#[tokio::test]
async fn a_signed_event_of_an_unhandled_type_is_accepted_and_ignored() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = event(
        "evt_customer_created",
        "customer.created",
        "2026-07-29.dahlia",
        1_786_350_000,
        json!({"id": "cus_new1", "object": "customer", "email": "x@example.com"}),
    );

    let (status, json) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;

    assert_eq!(status, 200, "{json}");
    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.body, body);
    assert_eq!(e.event_type.as_deref(), Some("customer.created"));
    assert_eq!(e.processing, Processing::Ignored);
    assert!(app.conversions().await.is_empty());
}

#[tokio::test]
async fn a_body_over_one_mib_is_refused_with_413_and_not_stored() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = vec![b' '; 1024 * 1024 + 1];

    let (status, json) = json_of(app.deliver(&client, SECRET_A, body).await).await;

    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"]["code"], json!("payload_too_large"));
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(app.events().await.is_empty());
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_body_of_exactly_one_mib_is_accepted() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let mut body = pi_event("evt_one_mib", "pi_one_mib", json!(1234), "usd");
    // JSON allows trailing whitespace: pad the event to exactly 1 MiB.
    body.resize(1024 * 1024, b' ');

    let (status, json) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;

    assert_eq!(status, 200, "{json}");
    let events = app.events().await;
    assert_eq!(only_event(&events).body.len(), 1024 * 1024);
    assert_eq!(app.conversions().await.len(), 1);
}

#[tokio::test]
async fn a_chunked_body_over_one_mib_without_content_length_is_refused_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /webhooks/stripe/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        client.id, app.addr
    );
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..17 {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(())
    };
    // The server may answer (and close) before the whole body is sent: read
    // while writing, so that the answer is taken as soon as it comes.
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(write, read)
    })
    .await;
    let text = String::from_utf8_lossy(&response);

    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert!(app.events().await.is_empty());
    assert_healthy(&app).await;
}

#[tokio::test]
async fn an_oversized_header_is_refused_with_a_4xx_and_the_server_stays_healthy() {
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_A);

    let result = app
        .http
        .post(format!("{}/webhooks/stripe/{}", app.base, client.id))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .header("x-junk", "j".repeat(200 * 1024))
        .body(body)
        .send()
        .await;

    let status = result
        .expect("the server answers instead of dropping the connection")
        .status()
        .as_u16();
    assert!(status == 431 || status == 400, "got {status}");
    assert!(app.events().await.is_empty(), "nothing was accepted");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_client_url_naming_no_client_is_a_404_unknown_client_and_the_event_is_stored() {
    let app = spawn_app!();
    let _client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    let sig = sign(&body, SECRET_A);

    let (status, json) = json_of(
        app.post_webhook(
            "/webhooks/stripe/cli_does_not_exist",
            body.clone(),
            Some(sig),
        )
        .await,
    )
    .await;

    assert_eq!(status, 404, "{json}");
    assert_eq!(json["error"]["code"], json!("unknown_client"));
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let events = app.events().await;
    let e = only_event(&events);
    assert_eq!(e.body, body);
    assert_eq!(e.endpoint_client_id.as_deref(), Some("cli_does_not_exist"));
    assert_ne!(e.verification, Verification::Verified);
    assert_ne!(e.processing, Processing::Processed);
    assert!(app.conversions().await.is_empty());
    assert_healthy(&app).await;
}

// ---- store down -------------------------------------------------------------

/// The real store, except that `insert_event` fails while `down` is set.
struct FaultyStore {
    inner: DynStore,
    down: Arc<AtomicBool>,
    /// Saving the conversion of this purchase key fails (a conflict).
    refuse_key: Option<String>,
    /// Storing the event with this Stripe id fails while `down` is set
    /// (instead of every event).
    refuse_event: Option<String>,
    /// Storing an event takes this long first (a slow disk).
    slow_insert: Duration,
}

impl FaultyStore {
    /// `inner` with no fault: each test switches on the one it needs.
    fn over(inner: DynStore) -> Self {
        Self {
            inner,
            down: Arc::new(AtomicBool::new(false)),
            refuse_key: None,
            refuse_event: None,
            slow_insert: Duration::ZERO,
        }
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn unit<'a>(
        &'a self,
        work: futures_util::future::BoxFuture<'a, UnitEnd>,
    ) -> StoreResult<()> {
        self.inner.unit(work).await
    }
    async fn sync(&self) -> StoreResult<()> {
        self.inner.sync().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn ping_write(&self) -> StoreResult<()> {
        self.inner.ping_write().await
    }
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        self.inner.get_setting(key).await
    }
    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String> {
        self.inner.init_setting(key, value).await
    }
    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.inner.set_setting(key, value).await
    }
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        self.inner.insert_client(client).await
    }
    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.inner.list_clients().await
    }
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.inner.get_client(id).await
    }
    async fn find_client_by_name(&self, name: &str) -> StoreResult<Option<Client>> {
        self.inner.find_client_by_name(name).await
    }
    async fn update_client_settings(
        &self,
        id: &str,
        settings: &AttributionSettings,
    ) -> StoreResult<()> {
        self.inner.update_client_settings(id, settings).await
    }
    async fn add_webhook_secret(&self, client_id: &str, secret: &WebhookSecret) -> StoreResult<()> {
        self.inner.add_webhook_secret(client_id, secret).await
    }
    async fn list_client_secrets(&self) -> StoreResult<Arc<[ClientSecrets]>> {
        self.inner.list_client_secrets().await
    }
    async fn insert_link(&self, link: &Link) -> StoreResult<()> {
        self.inner.insert_link(link).await
    }
    async fn list_links(&self, client_id: Option<&str>) -> StoreResult<Vec<Link>> {
        self.inner.list_links(client_id).await
    }
    async fn get_link(&self, id: &str) -> StoreResult<Option<Link>> {
        self.inner.get_link(id).await
    }
    async fn find_links_by_slug(&self, slug: &str) -> StoreResult<Vec<Link>> {
        self.inner.find_links_by_slug(slug).await
    }
    async fn find_link(&self, client_id: &str, slug: &str) -> StoreResult<Option<Link>> {
        self.inner.find_link(client_id, slug).await
    }
    async fn find_link_by_promo_code(
        &self,
        client_id: &str,
        code: &str,
    ) -> StoreResult<Option<Link>> {
        self.inner.find_link_by_promo_code(client_id, code).await
    }
    async fn insert_click(&self, click: &Click) -> StoreResult<()> {
        self.inner.insert_click(click).await
    }
    async fn get_click(&self, client_id: &str, click_id: &str) -> StoreResult<Option<Click>> {
        self.inner.get_click(client_id, click_id).await
    }
    async fn latest_click(
        &self,
        client_id: &str,
        from: Option<Millis>,
        to: Millis,
    ) -> StoreResult<Option<Click>> {
        self.inner.latest_click(client_id, from, to).await
    }
    async fn recent_clicks_for_link(&self, link_id: &str, limit: i64) -> StoreResult<Vec<Click>> {
        self.inner.recent_clicks_for_link(link_id, limit).await
    }
    async fn count_clicks(&self, client_id: Option<&str>) -> StoreResult<i64> {
        self.inner.count_clicks(client_id).await
    }
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<InsertEvent> {
        let refused = match &self.refuse_event {
            None => true,
            Some(id) => event.stripe_event_id.as_ref() == Some(id),
        };
        if refused && self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: disk unavailable".into()));
        }
        tokio::time::sleep(self.slow_insert).await;
        self.inner.insert_event(event).await
    }
    async fn get_event(&self, id: i64) -> StoreResult<Option<StoredEvent>> {
        self.inner.get_event(id).await
    }
    async fn find_event_by_dedup_key(&self, key: &str) -> StoreResult<Option<StoredEvent>> {
        self.inner.find_event_by_dedup_key(key).await
    }
    async fn record_delivery(&self, id: i64) -> StoreResult<()> {
        self.inner.record_delivery(id).await
    }
    async fn mark_event_verified(
        &self,
        id: i64,
        client_id: &str,
        client_method: ClientMethod,
        headers: Option<&str>,
        body: Option<&[u8]>,
    ) -> StoreResult<bool> {
        self.inner
            .mark_event_verified(id, client_id, client_method, headers, body)
            .await
    }
    async fn set_event_unverified_reason(
        &self,
        id: i64,
        reason: UnverifiedReason,
    ) -> StoreResult<()> {
        self.inner.set_event_unverified_reason(id, reason).await
    }
    async fn set_event_processing(
        &self,
        id: i64,
        client: Option<(&str, ClientMethod)>,
        processing: Processing,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.inner
            .set_event_processing(id, client, processing, error)
            .await
    }
    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>> {
        self.inner.list_events(filter).await
    }
    async fn events_to_retry(
        &self,
        max_attempts: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.inner.events_to_retry(max_attempts, limit).await
    }
    async fn upsert_fact(&self, fact: &SaleFact) -> StoreResult<()> {
        self.inner.upsert_fact(fact).await
    }
    async fn facts_for_purchase(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Vec<SaleFact>> {
        self.inner.facts_for_purchase(client_id, purchase_key).await
    }
    async fn resolve_alias(&self, client_id: &str, alias: &str) -> StoreResult<Option<String>> {
        self.inner.resolve_alias(client_id, alias).await
    }
    async fn set_alias(&self, client_id: &str, alias: &str, purchase_key: &str) -> StoreResult<()> {
        self.inner.set_alias(client_id, alias, purchase_key).await
    }
    async fn get_conversion(&self, id: &str) -> StoreResult<Option<Conversion>> {
        self.inner.get_conversion(id).await
    }
    async fn get_conversion_by_key(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Option<Conversion>> {
        self.inner
            .get_conversion_by_key(client_id, purchase_key)
            .await
    }
    async fn save_conversion(&self, conversion: &Conversion) -> StoreResult<()> {
        if self.refuse_key.as_deref() == Some(conversion.purchase_key.as_str()) {
            return Err(StoreError::Conflict("refused by the test".into()));
        }
        self.inner.save_conversion(conversion).await
    }
    async fn merge_conversion(&self, from_id: &str, into_id: &str) -> StoreResult<()> {
        self.inner.merge_conversion(from_id, into_id).await
    }
    async fn rekey_conversion(&self, id: &str, purchase_key: &str) -> StoreResult<()> {
        self.inner.rekey_conversion(id, purchase_key).await
    }
    async fn list_conversions(&self, filter: &ConversionFilter) -> StoreResult<Vec<Conversion>> {
        self.inner.list_conversions(filter).await
    }
    async fn customer_history(
        &self,
        client_id: &str,
        customer: Option<&str>,
        email: Option<&str>,
        before: Millis,
        exclude_id: &str,
    ) -> StoreResult<Option<Conversion>> {
        self.inner
            .customer_history(client_id, customer, email, before, exclude_id)
            .await
    }
    async fn orphan_ids(&self, client_id: Option<&str>, limit: i64) -> StoreResult<Vec<String>> {
        self.inner.orphan_ids(client_id, limit).await
    }
    async fn add_history(&self, entry: &NewHistoryEntry) -> StoreResult<()> {
        self.inner.add_history(entry).await
    }
    async fn list_history(&self, conversion_id: &str) -> StoreResult<Vec<HistoryEntry>> {
        self.inner.list_history(conversion_id).await
    }
    async fn get_history_entry(&self, id: i64) -> StoreResult<Option<HistoryEntry>> {
        self.inner.get_history_entry(id).await
    }
    async fn client_activity(&self, now: Millis) -> StoreResult<Vec<ClientActivity>> {
        self.inner.client_activity(now).await
    }
    async fn currency_totals(
        &self,
        client_id: Option<&str>,
        livemode: bool,
    ) -> StoreResult<Vec<CurrencyTotal>> {
        self.inner.currency_totals(client_id, livemode).await
    }
    async fn daily_counts(
        &self,
        client_id: Option<&str>,
        from: Millis,
    ) -> StoreResult<Vec<DailyCount>> {
        self.inner.daily_counts(client_id, from).await
    }
    async fn link_stats(&self, client_id: &str, livemode: bool) -> StoreResult<Vec<LinkStats>> {
        self.inner.link_stats(client_id, livemode).await
    }
    async fn insert_session(&self, session: &AdminSession) -> StoreResult<()> {
        self.inner.insert_session(session).await
    }
    async fn get_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<AdminSession>> {
        self.inner.get_session(id_hash, now).await
    }
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        self.inner.delete_session(id_hash).await
    }
}

#[tokio::test]
async fn when_the_store_cannot_commit_the_webhook_answers_503_and_the_retry_is_accepted() {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let app = spawn_app_with!(move |inner| Arc::new(FaultyStore {
        down: flag,
        ..FaultyStore::over(inner)
    }) as DynStore);
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = fixture("payment_intent_succeeded.json");
    down.store(true, Ordering::SeqCst);

    let (status, json) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;

    assert_eq!(status, 503, "never 2xx without a durable copy: {json}");
    assert_eq!(json["error"]["code"], json!("store_unavailable"));
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(app.events().await.is_empty());
    assert!(app.conversions().await.is_empty());
    // Unsigned and invalid deliveries are not acknowledged either.
    let (s2, _) = json_of(
        app.post_webhook("/webhooks/stripe", b"not json".to_vec(), None)
            .await,
    )
    .await;
    assert_eq!(s2, 503);
    assert!(app.events().await.is_empty());
    assert_healthy(&app).await;

    down.store(false, Ordering::SeqCst);
    let (status, json) = json_of(app.deliver(&client, SECRET_A, body.clone()).await).await;

    assert_eq!(status, 200, "{json}");
    assert_eq!(json["duplicate"], json!(false));
    let events = app.events().await;
    assert_eq!(only_event(&events).body, body);
    assert_eq!(app.conversions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_cannot_be_stored_is_never_acknowledged_and_its_batch_loses_nothing() {
    // Deliveries are stored in batches. One that cannot be stored gets a
    // 503, and so may the others of its batch; every 2xx has its event
    // stored and processed; resending what got no 2xx stores each sale once.
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let app = spawn_app_with!(move |inner| Arc::new(FaultyStore {
        down: flag,
        refuse_event: Some("evt_batch_3".into()),
        ..FaultyStore::over(inner)
    }) as DynStore);
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let answers = deliver_payments(&app, &client, 8).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert_eq!(statuses[3], 503, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let stored: Vec<String> = app
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.stripe_event_id)
        .collect();
    for (n, status) in statuses.iter().enumerate() {
        let id = format!("evt_batch_{n}");
        if *status == 200 {
            assert!(stored.contains(&id), "{id} acknowledged but not stored");
        }
    }
    assert!(!stored.contains(&"evt_batch_3".to_string()));

    down.store(false, Ordering::SeqCst);
    for (n, status) in statuses.iter().enumerate() {
        if *status != 200 {
            let again = app.deliver(&client, SECRET_A, payment(n as u32)).await;
            assert_eq!(again.status(), 200);
        }
    }
    let events = app.events().await;
    assert_eq!(events.len(), 8, "each event stored once");
    assert!(events.iter().all(|e| e.processing == Processing::Processed));
    let mut keys: Vec<String> = app
        .conversions()
        .await
        .into_iter()
        .map(|c| c.purchase_key)
        .collect();
    keys.sort_unstable();
    let expected: Vec<String> = (0..8).map(|n| format!("pi_batch_{n}")).collect();
    assert_eq!(keys, expected, "each sale once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_caller_hangs_up_is_still_stored_and_processed() {
    // The caller sends a whole delivery and closes the connection before
    // the answer (a timeout on the sender's side). The server may drop the
    // request's future; the delivery, and any batch it leads, goes on.
    let app = spawn_app_with!(move |inner| Arc::new(FaultyStore {
        slow_insert: Duration::from_millis(400),
        ..FaultyStore::over(inner)
    }) as DynStore);
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let body = payment(41);
    let head = format!(
        "POST /webhooks/stripe/{} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         stripe-signature: {}\r\ncontent-length: {}\r\n\r\n",
        client.id,
        app.addr,
        sign(&body, SECRET_A),
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = app.events().await;
        if let Some(e) = events.first() {
            if e.processing == Processing::Processed {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery was not stored and processed: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.conversions().await.len(), 1);
}

/// `payment(0..count)` delivered at once.
async fn deliver_payments(app: &TestApp, client: &Client, count: u32) -> Vec<reqwest::Response> {
    futures_util::future::join_all((0..count).map(|n| app.deliver(client, SECRET_A, payment(n))))
        .await
}

/// Two payments of one customer, told apart by their ids.
fn payment(n: u32) -> Vec<u8> {
    let mut v = fixture_json("payment_intent_succeeded.json");
    v["id"] = json!(format!("evt_batch_{n}"));
    v["data"]["object"]["id"] = json!(format!("pi_batch_{n}"));
    v["data"]["object"]["latest_charge"] = json!(format!("ch_batch_{n}"));
    serde_json::to_vec_pretty(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_processing_fails_undoes_only_its_own_writes() {
    // Deliveries are processed in batches, one savepoint each: the failing
    // one leaves no fact or alias behind and is marked failed; the others
    // (in its batch or not) are processed and kept.
    let app = spawn_app_with!(move |inner| Arc::new(FaultyStore {
        refuse_key: Some("pi_batch_3".into()),
        ..FaultyStore::over(inner)
    }) as DynStore);
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let answers = deliver_payments(&app, &client, 8).await;
    for a in answers {
        assert_eq!(a.status(), 200, "every stored delivery is acknowledged");
    }
    let conversions = app.conversions().await;
    let mut keys: Vec<&str> = conversions
        .iter()
        .map(|c| c.purchase_key.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "pi_batch_0",
            "pi_batch_1",
            "pi_batch_2",
            "pi_batch_4",
            "pi_batch_5",
            "pi_batch_6",
            "pi_batch_7"
        ]
    );
    let events = app.events().await;
    assert_eq!(events.len(), 8);
    let failed: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.processing == Processing::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].stripe_event_id.as_deref(), Some("evt_batch_3"));
    assert!(failed[0]
        .processing_error
        .as_deref()
        .is_some_and(|e| e.contains("refused by the test")));
    let store = app.tracker.store();
    if !app.db_url.starts_with("sqlite") {
        // PostgreSQL has no units of work (each call commits): what the
        // failed event wrote stays until its retry derives it again.
        return;
    }
    assert!(store
        .facts_for_purchase(&client.id, "pi_batch_3")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.resolve_alias(&client.id, "ch_batch_3").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .facts_for_purchase(&client.id, "pi_batch_4")
            .await
            .unwrap()
            .len(),
        1
    );
}

/// The fixture's payment as a new event: its own event id and payment intent.
fn another_payment(n: u32) -> Vec<u8> {
    let mut event = fixture_json("payment_intent_succeeded.json");
    event["id"] = json!(format!("evt_other_process_{n}"));
    event["data"]["object"]["id"] = json!(format!("pi_other_process_{n}"));
    serde_json::to_vec_pretty(&event).expect("event json")
}

#[tokio::test]
async fn a_client_and_a_secret_added_by_another_process_are_used_at_once() {
    // SPEC 4: a running server uses what the CLI adds at once. The server
    // keeps clients and secrets in memory and checks for changes now and
    // then; a delivery its copy cannot place or verify makes it ask again.
    let app = spawn_app!();
    let client = app.add_client("acme", Some(SECRET_A)).await;
    let (status, json) = json_of(app.deliver(&client, SECRET_A, another_payment(1)).await).await;
    assert_eq!(status, 200, "{json}");

    // Another process on the same database (the CLI while `serve` runs).
    let store = salestrack::storage::connect(&app.db_url)
        .await
        .expect("a second store");
    let cli = salestrack::domain::Tracker::new(store, salestrack::domain::DomainConfig::default())
        .await
        .expect("a second tracker");
    cli.add_secret(&client.id, SECRET_B2)
        .await
        .expect("add secret");
    let (status, json) = json_of(app.deliver(&client, SECRET_B2, another_payment(2)).await).await;
    assert_eq!(status, 200, "a secret added a moment ago verifies: {json}");

    let other = cli
        .add_client(ClientIn {
            name: "other".into(),
            webhook_secret: Some(SECRET_B.into()),
            ..Default::default()
        })
        .await
        .expect("add client");
    let (status, json) = json_of(app.deliver(&other, SECRET_B, another_payment(3)).await).await;
    assert_eq!(
        status, 200,
        "a client added a moment ago has its URL: {json}"
    );
    assert_eq!(app.conversions().await.len(), 3);
}
