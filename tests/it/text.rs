//! Text with NUL and other control characters (issue 14 §5), the same on
//! both backends (PostgreSQL's `text` cannot hold NUL): what strangers send
//! is cleaned and kept, what an admin sends is refused with 400, and a
//! signed sale whose fields hold NUL still becomes its conversion.

use reqwest::header::{REFERER, USER_AGENT};
use reqwest::StatusCode;
use salestrack::domain::ids::new_id;
use salestrack::domain::model::*;
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "whsec_text_tests_secret_0001";
const TOKEN: &str = "text-tests-admin-token-0001";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0";

async fn clicks_of(app: &TestApp, link: &Link) -> Vec<Click> {
    app.tracker
        .store()
        .recent_clicks_for_link(&link.id, 100)
        .await
        .expect("clicks")
}

async fn api_post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("api request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_click_with_nul_in_its_referrer_is_recorded_without_it() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = app.add_link(&shop, "spring").await;

    // HTTP forbids NUL in a header, not C1 controls (sent as UTF-8 bytes).
    let resp = app
        .http
        .get(format!("{}/r/spring", app.base))
        .header(USER_AGENT, BROWSER)
        .header(REFERER, "https://ref.example/\u{85}a\u{9f}b".as_bytes())
        .send()
        .await
        .expect("redirect");
    assert_eq!(resp.status(), StatusCode::FOUND);

    // The beacon's JSON carries any `\u0000`.
    let resp = app
        .http
        .post(format!("{}/api/v1/track/click", app.base))
        .header(USER_AGENT, BROWSER)
        .json(&json!({
            "ref": "spring",
            "referrer": "https://ins\u{0}tagram.com/\u{0}",
            "landing_url": "https://shop.example.com/?ref=spring\u{0}\u{1}",
        }))
        .send()
        .await
        .expect("beacon");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut referrers: Vec<_> = clicks_of(&app, &link)
        .await
        .into_iter()
        .map(|c| (c.referrer, c.landing_url))
        .collect();
    referrers.sort();
    assert_eq!(
        referrers,
        vec![
            (
                Some("https://instagram.com/".into()),
                Some("https://shop.example.com/?ref=spring".into())
            ),
            (Some("https://ref.example/ab".into()), None),
        ]
    );
}

#[tokio::test]
async fn the_api_refuses_a_client_or_link_with_nul_or_too_long_text() {
    let app = spawn_app!();
    app.tracker
        .ensure_admin_token(Some(TOKEN))
        .await
        .expect("admin token");

    let (status, body) = api_post(&app, "/api/v1/clients", json!({"name": "Ac\u{0}me"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("control characters")),
        "{body}"
    );
    let (status, body) = api_post(&app, "/api/v1/clients", json!({"name": "x".repeat(201)})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api_post(
        &app,
        "/api/v1/clients",
        json!({"name": "Acme", "domain": "ac\u{0}me.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api_post(
        &app,
        "/api/v1/clients",
        json!({"name": "Acme", "stripe_api_key": "rk_test_\u{0}abcd"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        app.tracker.store().list_clients().await.unwrap().is_empty(),
        "nothing was added"
    );

    let (status, body) = api_post(&app, "/api/v1/clients", json!({"name": "Acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let link = |extra: Value| {
        let mut body =
            json!({"client": "Acme", "slug": "spring", "destination": "https://acme.com/"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    for bad in [
        json!({"label": "Creator\u{0}"}),
        json!({"label": "x".repeat(201)}),
        json!({"promo_codes": ["SAVE\u{0}10"]}),
        json!({"destination": format!("https://acme.com/{}", "p".repeat(2048))}),
        json!({"destination": "https://acme.com/\u{0}"}),
    ] {
        let (status, body) = api_post(&app, "/api/v1/links", link(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, body) = api_post(
        &app,
        "/api/v1/links",
        link(json!({"label": "x".repeat(200)})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A paid one-time checkout session.
fn checkout(id: &str, pi: &str, extra: Value) -> Value {
    let mut object = json!({
        "id": id, "object": "checkout.session", "mode": "payment", "payment_status": "paid",
        "status": "complete", "amount_subtotal": 4900, "amount_total": 4900, "currency": "usd",
        "payment_intent": pi, "metadata": {}, "livemode": false,
    });
    for (k, v) in extra.as_object().expect("extra is an object") {
        object[k] = v.clone();
    }
    object
}

#[tokio::test]
async fn a_signed_sale_with_nul_in_its_fields_becomes_a_conversion() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", Some(SECRET)).await;
    let spring = app.add_link(&shop, "spring").await;
    let summer = app.add_link(&shop, "summer").await;
    let now = now_s();
    let click = app.add_click_at(&summer, now - 3600, false).await;
    let (head, tail) = click.id.split_at(4);

    // The click id (client_reference_id) with a NUL inside.
    let by_click = checkout(
        "cs_\u{0}by_click",
        "pi_by_click",
        json!({
            "client_reference_id": format!("{head}\u{0}{tail}"),
            "customer": "cus_\u{0}1",
            "customer_details": {"email": "jo\u{0}@shop.example.com"},
        }),
    );
    // The slug (metadata `link_slug`) with a NUL, an expanded customer too.
    let by_slug = checkout(
        "cs_by_slug",
        "pi_by_\u{0}slug",
        json!({
            "customer": {"id": "cus_\u{0}2", "object": "customer"},
            "customer_details": {"email": "\u{0}ann@shop.example.com"},
            "metadata": {"link_slug": "spr\u{0}ing"},
        }),
    );
    for object in [by_click, by_slug] {
        let body = event(
            &format!("evt_\u{0}{}", new_id("t")),
            "checkout.session.completed",
            "2025-03-31.basil",
            now,
            object,
        );
        let resp = app.deliver(&shop, SECRET, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "{text}");
    }

    // A webhook URL whose client id holds a NUL names no client (404) and
    // the delivery is kept, on both backends.
    let body = event(
        &new_id("evt"),
        "checkout.session.completed",
        "2025-03-31.basil",
        now,
        checkout("cs_x", "pi_x", json!({})),
    );
    let sig = sign(&body, SECRET);
    let resp = app
        .post_webhook(&format!("/webhooks/stripe/%00{}", shop.id), body, Some(sig))
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let events: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.endpoint_client_id.as_deref() == Some(shop.id.as_str()))
        .collect();
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.processing, Processing::Processed, "{e:#?}");
    }
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 2, "{conversions:#?}");
    let find = |key: &str| {
        conversions
            .iter()
            .find(|c| c.purchase_key == key)
            .unwrap_or_else(|| panic!("a conversion for {key}: {conversions:#?}"))
    };
    let c = find("pi_by_click");
    assert_eq!(c.method, Some(Method::ClickId), "{c:#?}");
    assert_eq!(c.link_id.as_deref(), Some(summer.id.as_str()));
    assert_eq!(c.click_id.as_deref(), Some(click.id.as_str()));
    assert_eq!(c.customer.as_deref(), Some("cus_1"));
    let stored = app
        .tracker
        .store()
        .get_conversion(&c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.email.as_deref(), Some("jo@shop.example.com"));

    let c = find("pi_by_slug");
    assert_eq!(c.method, Some(Method::LinkSlug), "{c:#?}");
    assert_eq!(c.link_id.as_deref(), Some(spring.id.as_str()));
    assert_eq!(c.customer.as_deref(), Some("cus_2"));
    let stored = app
        .tracker
        .store()
        .get_conversion(&c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.email.as_deref(), Some("ann@shop.example.com"));
}
