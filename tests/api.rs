//! The admin JSON API (`/api/v1`), its OpenAPI description and `/metrics`,
//! over HTTP against the real app.

#[path = "it/helpers.rs"]
mod helpers;

use std::collections::BTreeSet;

use reqwest::Method;
use salestrack::domain::ids::new_id;
use salestrack::domain::model::*;
use serde_json::{json, Value};

use helpers::*;

/// The OpenAPI document and `/metrics`.
#[path = "api/observe.rs"]
mod observe;

const TOKEN: &str = "test-admin-token-123456";
const SECRET: &str = "whsec_api_tests_secret_0001";
const WRONG_SECRET: &str = "whsec_api_tests_wrong_0002";
const API_VERSION: &str = "2025-03-31.basil";
const DAY: i64 = 24 * 3600;

/// Every admin route of SPEC 4.2 (and the event detail), as the OpenAPI
/// document names them.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/clients"),
    ("post", "/api/v1/clients"),
    ("get", "/api/v1/links"),
    ("post", "/api/v1/links"),
    ("get", "/api/v1/conversions"),
    ("get", "/api/v1/conversions/{id}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/events/{id}"),
    ("post", "/api/v1/autofix"),
    ("get", "/api/v1/diagnose"),
];

async fn app_with_token() -> TestApp {
    let app = spawn_app().await;
    app.tracker
        .ensure_admin_token(Some(TOKEN))
        .await
        .expect("admin token");
    app
}

/// One call: status and JSON body (every answer of the API is JSON).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text:?}"));
    (status, value)
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    call(app, Method::GET, path, Some(TOKEN), None).await
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    call(app, Method::POST, path, Some(TOKEN), Some(body)).await
}

/// Posts raw bytes with a content type.
async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let resp = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")),
    )
}

#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{:#}", answer.1);
    assert_eq!(answer.1["error"]["code"], json!(code), "{:#}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error says why: {:#}",
        answer.1
    );
}

fn payment_intent(id: &str, metadata: Value) -> Value {
    json!({
        "id": id, "object": "payment_intent", "amount": 4900, "amount_received": 4900,
        "currency": "usd", "customer": format!("cus_{id}"), "metadata": metadata,
        "status": "succeeded", "livemode": false,
    })
}

/// A `payment_intent.succeeded` created at `created` (Unix seconds).
fn sale(pi: &str, created: i64, metadata: Value) -> Vec<u8> {
    event(
        &new_id("evt"),
        "payment_intent.succeeded",
        API_VERSION,
        created,
        payment_intent(pi, metadata),
    )
}

struct Shop {
    app: TestApp,
    client: Client,
    link: Link,
}

/// A client with a secret and the link `spring`, and three sales from a day
/// ago: one credited to `spring` by its metadata, one orphan, and one whose
/// signature does not verify.
async fn shop() -> Shop {
    let app = app_with_token().await;
    let client = app.add_client("Acme", Some(SECRET)).await;
    let link = app.add_link(&client, "spring").await;
    let created = now_s() - DAY;
    let ok = app
        .deliver(
            &client,
            SECRET,
            sale("pi_attributed", created, json!({"link_slug": "spring"})),
        )
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    let ok = app
        .deliver(&client, SECRET, sale("pi_orphan", created, json!({})))
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    let bad = app
        .deliver(
            &client,
            WRONG_SECRET,
            sale("pi_unverified", created, json!({"link_slug": "spring"})),
        )
        .await;
    assert_eq!(bad.status().as_u16(), 400);
    Shop { app, client, link }
}

fn keys(data: &Value) -> Vec<String> {
    data["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|c| c["purchase_key"].as_str().unwrap_or_default().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

// ---- auth -----------------------------------------------------------------------

#[tokio::test]
async fn every_admin_route_refuses_a_missing_or_wrong_token() {
    let app = app_with_token().await;
    for (method, path) in ROUTES {
        let path = path.replace("{id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = (method == Method::POST).then(|| json!({}));
        for token in [None, Some("wrong-token-wrong-token"), Some("")] {
            let answer = call(&app, method.clone(), &path, token, body.clone()).await;
            assert_error(&answer, 401, "unauthorized");
        }
        // Another scheme with the right token is refused too.
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .header("authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
        assert!(resp.headers().contains_key("www-authenticate"));
        // The right token clears the address's wrong ones, which would
        // otherwise add up to the limit over all the routes.
        assert_eq!(get(&app, "/api/v1/clients").await.0, 200);
    }
}

#[tokio::test]
async fn wrong_tokens_from_one_address_are_limited_with_the_logins() {
    let app = app_with_token().await;
    let wrong = Some("wrong-token-wrong-token");
    // A right token in between clears the count.
    for _ in 0..9 {
        assert_error(
            &call(&app, Method::GET, "/api/v1/clients", wrong, None).await,
            401,
            "unauthorized",
        );
    }
    assert_eq!(get(&app, "/api/v1/clients").await.0, 200);
    for _ in 0..10 {
        assert_error(
            &call(&app, Method::GET, "/api/v1/clients", wrong, None).await,
            401,
            "unauthorized",
        );
    }
    // The eleventh wrong token is refused with when to retry.
    let resp = app
        .http
        .get(format!("{}/api/v1/clients", app.base))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("300")
    );
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], json!("rate_limited"));
    // The login page guesses the same secret: a wrong one is refused too.
    let page = app
        .http
        .get(format!("{}/admin/login", app.base))
        .send()
        .await
        .expect("login page");
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("st_login="))
        .and_then(|v| v.split(';').next())
        .expect("login cookie")
        .to_string();
    let html = page.text().await.expect("login html");
    let at =
        html.find("name=\"csrf\" value=\"").expect("csrf field") + "name=\"csrf\" value=\"".len();
    let csrf = html[at..].split('"').next().expect("csrf").to_string();
    let login = app
        .http
        .post(format!("{}/admin/login", app.base))
        .header("cookie", &cookie)
        .form(&[("secret", "wrong-token-wrong-token"), ("csrf", &csrf)])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 429);
    // The right token is never refused: it clears the address.
    assert_eq!(get(&app, "/api/v1/clients").await.0, 200);
    assert_error(
        &call(&app, Method::GET, "/api/v1/clients", wrong, None).await,
        401,
        "unauthorized",
    );
    // Public routes are not affected.
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn the_public_click_beacon_needs_no_token() {
    let app = app_with_token().await;
    let client = app.add_client("Beacon", None).await;
    app.add_link(&client, "beacon").await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/track/click",
        None,
        Some(json!({"ref": "beacon"})),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert!(body["click_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("clk")));
}

#[tokio::test]
async fn unknown_api_routes_and_methods_answer_json() {
    let app = app_with_token().await;
    let answer = get(&app, "/api/v1/nothing-here").await;
    assert_error(&answer, 404, "not_found");
    let answer = call(&app, Method::DELETE, "/api/v1/clients", Some(TOKEN), None).await;
    assert_error(&answer, 405, "method_not_allowed");
}

// ---- clients and links ---------------------------------------------------------

#[tokio::test]
async fn clients_are_added_and_listed_with_masked_secrets() {
    let app = app_with_token().await;
    let (status, created) = post(
        &app,
        "/api/v1/clients",
        json!({"name": "Acme", "domain": "https://www.Acme.com/", "webhook_secret": SECRET,
               "stripe_api_key": "rk_test_secretkey_abcd"}),
    )
    .await;
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["name"], json!("Acme"));
    assert_eq!(created["domain"], json!("acme.com"));
    assert_eq!(
        created["webhook_url"],
        json!(format!("{}/webhooks/stripe/{id}", app.base))
    );
    assert_eq!(created["secrets"], json!(["…0001"]));
    assert_eq!(created["has_stripe_api_key"], json!(true));

    let (status, list) = get(&app, "/api/v1/clients").await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(!text.contains(SECRET), "the secret is never shown: {text}");
    assert!(
        !text.contains("rk_test_secretkey"),
        "the API key is never shown"
    );
    let row = &list["data"][0];
    assert_eq!(row["id"], json!(id));
    assert_eq!(row["secrets"], json!(["…0001"]));
    // No event yet: the status says so.
    assert_eq!(row["status"]["level"], json!("not_working"), "{row:#}");
    assert!(row["status"]["reasons"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));

    let dup = post(&app, "/api/v1/clients", json!({"name": "Acme"})).await;
    assert_error(&dup, 409, "conflict");
}

#[tokio::test]
async fn bad_client_input_is_a_json_400() {
    let app = app_with_token().await;
    for body in [
        json!({}),
        json!({"name": 5}),
        json!({"name": "X", "surprise": true}),
        json!({"name": "X", "webhook_secret": "not-a-secret"}),
        json!({"name": "X", "stripe_account": "nope"}),
        json!({"name": "   "}),
        json!([1, 2]),
    ] {
        let answer = post(&app, "/api/v1/clients", body.clone()).await;
        assert_error(&answer, 400, "invalid_request");
    }
    let syntax = post_raw(&app, "/api/v1/clients", "application/json", "{\"name\": ").await;
    assert_error(&syntax, 400, "invalid_request");
    let not_json = post_raw(&app, "/api/v1/clients", "text/plain", "name=X").await;
    assert_error(&not_json, 415, "unsupported_media_type");
    let (_, list) = get(&app, "/api/v1/clients").await;
    assert_eq!(list["data"], json!([]), "nothing was added");
}

#[tokio::test]
async fn links_are_added_and_listed() {
    let app = app_with_token().await;
    let a = app.add_client("Acme", Some(SECRET)).await;
    let b = app.add_client("Other", None).await;
    let (status, link) = post(
        &app,
        "/api/v1/links",
        json!({"client": "Acme", "slug": "spring", "destination": "https://acme.com/p",
               "label": "Spring", "promo_codes": ["SPRING10"]}),
    )
    .await;
    assert_eq!(status, 201, "{link:#}");
    assert!(link["id"].as_str().is_some_and(|i| i.starts_with("lnk")));
    assert_eq!(link["slug"], json!("spring"));
    assert_eq!(link["client_id"], json!(a.id));
    assert_eq!(link["promo_codes"], json!(["SPRING10"]));
    assert_eq!(link["url"], json!(format!("{}/r/spring", app.base)));

    let (status, _) = post(
        &app,
        "/api/v1/links",
        json!({"client": b.id, "slug": "spring", "destination": "https://other.com/"}),
    )
    .await;
    assert_eq!(status, 201, "another client may use the same slug");

    let dup = post(
        &app,
        "/api/v1/links",
        json!({"client": a.id, "slug": "spring", "destination": "https://acme.com/"}),
    )
    .await;
    assert_error(&dup, 409, "conflict");
    let unknown = post(
        &app,
        "/api/v1/links",
        json!({"client": "nobody", "slug": "x", "destination": "https://acme.com/"}),
    )
    .await;
    assert_error(&unknown, 404, "not_found");
    for body in [
        json!({"client": a.id, "slug": "x", "destination": "javascript:alert(1)"}),
        json!({"client": a.id, "slug": "bad slug!", "destination": "https://acme.com/"}),
        json!({"client": a.id, "slug": "x"}),
        json!({"client": a.id, "slug": "x", "destination": "https://acme.com/", "promo_codes": "X"}),
    ] {
        let answer = post(&app, "/api/v1/links", body.clone()).await;
        assert_error(&answer, 400, "invalid_request");
    }

    let (status, all) = get(&app, "/api/v1/links").await;
    assert_eq!(status, 200);
    assert_eq!(all["data"].as_array().map(Vec::len), Some(2));
    let (_, only_a) = get(&app, "/api/v1/links?client=Acme").await;
    assert_eq!(only_a["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(only_a["data"][0]["client_id"], json!(a.id));
    assert_error(
        &get(&app, "/api/v1/links?client=nobody").await,
        404,
        "not_found",
    );
    assert_error(
        &get(&app, "/api/v1/links?clinet=Acme").await,
        400,
        "invalid_request",
    );
}

// ---- conversions -----------------------------------------------------------------

#[tokio::test]
async fn conversions_have_the_fields_of_the_cli_and_its_filters() {
    let Shop { app, client, link } = shop().await;

    let (status, all) = get(&app, "/api/v1/conversions").await;
    assert_eq!(status, 200, "{all:#}");
    assert_eq!(keys(&all), ["pi_attributed", "pi_orphan", "pi_unverified"]);

    // Every field of `conversions list --json`, with the same values.
    let cli = serde_json::to_value(app.conversions().await).expect("cli json");
    let cli_rows = cli.as_array().expect("array");
    for row in all["data"].as_array().expect("data") {
        let twin = cli_rows
            .iter()
            .find(|c| c["id"] == row["id"])
            .expect("same conversion in the CLI view");
        for (field, value) in twin.as_object().expect("object") {
            assert_eq!(&row[field], value, "field {field}");
        }
    }
    let attributed = all["data"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|c| c["purchase_key"] == json!("pi_attributed"))
        })
        .expect("attributed");
    assert_eq!(attributed["link_slug"], json!("spring"));
    assert_eq!(attributed["method"], json!("link_slug"));
    assert_eq!(attributed["client_method"], json!("webhook_secret"));
    assert_eq!(attributed["amount"], json!(4900));
    assert_eq!(attributed["currency"], json!("usd"));
    assert_eq!(attributed["verified"], json!(true));
    assert_eq!(attributed["livemode"], json!(false));

    let cases: &[(String, &[&str])] = &[
        ("orphan=true".into(), &["pi_orphan"]),
        ("orphans=true".into(), &["pi_orphan"]),
        ("unverified=true".into(), &["pi_unverified"]),
        ("link=spring".into(), &["pi_attributed", "pi_unverified"]),
        (
            format!("link={}", link.id),
            &["pi_attributed", "pi_unverified"],
        ),
        (
            format!("client={}", client.id),
            &["pi_attributed", "pi_orphan", "pi_unverified"],
        ),
        (
            "client=Acme&orphan=false".into(),
            &["pi_attributed", "pi_orphan", "pi_unverified"],
        ),
        (
            "status=paid".into(),
            &["pi_attributed", "pi_orphan", "pi_unverified"],
        ),
        ("status=refunded".into(), &[]),
        ("mode=live".into(), &[]),
        (
            "mode=test".into(),
            &["pi_attributed", "pi_orphan", "pi_unverified"],
        ),
        (
            "from=2000-01-01&to=2999-01-01".into(),
            &["pi_attributed", "pi_orphan", "pi_unverified"],
        ),
        ("to=2000-01-01".into(), &[]),
        ("from=2999-01-01T00:00:00Z".into(), &[]),
    ];
    for (query, expected) in cases {
        let (status, body) = get(&app, &format!("/api/v1/conversions?{query}")).await;
        assert_eq!(status, 200, "{query}: {body:#}");
        assert_eq!(keys(&body), *expected, "{query}");
    }
    let (_, one) = get(&app, "/api/v1/conversions?limit=1").await;
    assert_eq!(one["data"].as_array().map(Vec::len), Some(1));

    // Paging by the last id: the three sales share a purchase time, and
    // none is skipped or repeated.
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect()
    };
    let (_, all) = get(&app, "/api/v1/conversions").await;
    let times: Vec<&Value> = all["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| &c["purchased_at"])
        .collect();
    assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
    let all = ids(&all);
    assert_eq!(all.len(), 3);
    let (_, next) = get(
        &app,
        &format!("/api/v1/conversions?starting_after={}", all[0]),
    )
    .await;
    assert_eq!(ids(&next), all[1..]);
    let (_, last) = get(
        &app,
        &format!("/api/v1/conversions?starting_after={}&limit=1", all[1]),
    )
    .await;
    assert_eq!(ids(&last), all[2..]);
    assert_error(
        &get(&app, "/api/v1/conversions?starting_after=conv_nope").await,
        404,
        "not_found",
    );

    for query in [
        "status=lost",
        "mode=prod",
        "from=yesterday",
        "to=2026-13-01",
        "limit=0",
        "limit=many",
        "orphan=maybe",
        "colour=red",
    ] {
        let answer = get(&app, &format!("/api/v1/conversions?{query}")).await;
        assert_error(&answer, 400, "invalid_request");
    }
    assert_error(
        &get(&app, "/api/v1/conversions?client=nobody").await,
        404,
        "not_found",
    );
    assert_error(
        &get(&app, "/api/v1/conversions?link=nolink").await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn one_conversion_comes_with_its_trace_and_history() {
    let Shop { app, .. } = shop().await;
    let conversions = app.conversions().await;
    let attributed = conversions
        .iter()
        .find(|c| c.purchase_key == "pi_attributed")
        .expect("attributed");
    let (status, detail) = get(&app, &format!("/api/v1/conversions/{}", attributed.id)).await;
    assert_eq!(status, 200, "{detail:#}");
    assert_eq!(detail["conversion"]["id"], json!(attributed.id));
    assert_eq!(detail["conversion"]["link_slug"], json!("spring"));
    assert_eq!(detail["link"]["slug"], json!("spring"));
    let trace = detail["trace"].as_array().expect("trace");
    assert!(
        trace
            .iter()
            .any(|s| s["step"] == json!("link_slug") && s["outcome"] == json!("matched")),
        "{trace:#?}"
    );
    let history = detail["history"].as_array().expect("history");
    assert!(
        history.iter().any(|h| h["to_method"] == json!("link_slug")),
        "{history:#?}"
    );
    assert!(detail["events"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(detail["next_steps"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));

    assert_error(
        &get(&app, "/api/v1/conversions/conv_nope").await,
        404,
        "not_found",
    );
}

// ---- events, autofix, diagnose --------------------------------------------------------

#[tokio::test]
async fn events_are_listed_as_summaries_and_shown_one_by_one() {
    let Shop { app, client, .. } = shop().await;
    let (status, all) = get(&app, "/api/v1/events").await;
    assert_eq!(status, 200, "{all:#}");
    let rows = all["data"].as_array().expect("data");
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["event_type"], json!("payment_intent.succeeded"));
        assert!(
            row.get("body").is_none() && row.get("payload").is_none(),
            "summaries only"
        );
    }
    let (_, unverified) = get(&app, "/api/v1/events?verification=unverified").await;
    let unverified = unverified["data"].as_array().expect("data").clone();
    assert_eq!(unverified.len(), 1);
    assert_eq!(unverified[0]["verification_reason"], json!("mismatch"));
    let (_, processed) = get(
        &app,
        &format!(
            "/api/v1/events?processing=processed&client={}&limit=2",
            client.id
        ),
    )
    .await;
    assert_eq!(processed["data"].as_array().map(Vec::len), Some(2));
    // Paging: the last id of a page gives the next one, newest first.
    let ids_of =
        |rows: &[Value]| -> Vec<i64> { rows.iter().filter_map(|r| r["id"].as_i64()).collect() };
    let ids = ids_of(rows);
    let (_, page) = get(&app, "/api/v1/events?limit=2").await;
    assert_eq!(ids_of(page["data"].as_array().expect("data")), ids[..2]);
    let (_, next) = get(&app, &format!("/api/v1/events?limit=2&before={}", ids[1])).await;
    assert_eq!(ids_of(next["data"].as_array().expect("data")), ids[2..]);
    assert_error(
        &get(&app, "/api/v1/events?before=soon").await,
        400,
        "invalid_request",
    );

    assert_error(
        &get(&app, "/api/v1/events?verification=maybe").await,
        400,
        "invalid_request",
    );
    assert_error(
        &get(&app, "/api/v1/events?processing=done").await,
        400,
        "invalid_request",
    );
    assert_error(
        &get(&app, "/api/v1/events?client=nobody").await,
        404,
        "not_found",
    );

    let id = rows[0]["id"].as_i64().expect("id");
    let (status, detail) = get(&app, &format!("/api/v1/events/{id}")).await;
    assert_eq!(status, 200, "{detail:#}");
    assert_eq!(detail["event"]["id"], json!(id));
    assert_eq!(detail["payload"]["type"], json!("payment_intent.succeeded"));
    assert!(detail["headers"]["stripe-signature"].is_string());
    assert_error(&get(&app, "/api/v1/events/999999").await, 404, "not_found");
    assert_error(&get(&app, "/api/v1/events/abc").await, 404, "not_found");
}

#[tokio::test]
async fn autofix_reports_what_it_fixed() {
    let Shop { app, link, .. } = shop().await;
    let (status, first) = call(&app, Method::POST, "/api/v1/autofix", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{first:#}");
    assert_eq!(first["fixed"], json!(0));
    assert!(
        first["remaining"].as_u64().is_some_and(|r| r >= 1),
        "{first:#}"
    );
    let why = &first["still_orphan"][0];
    assert!(
        why["conversion_id"].is_string() && why["why"].is_string(),
        "{first:#}"
    );

    // A click before the sale turns up: Auto-Fix finds it.
    app.add_click_at(&link, now_s() - 2 * DAY, false).await;
    let (status, second) = post(&app, "/api/v1/autofix", json!({"client": "Acme"})).await;
    assert_eq!(status, 200, "{second:#}");
    assert!(
        second["fixed"].as_u64().is_some_and(|f| f >= 1),
        "{second:#}"
    );
    let (_, orphans) = get(&app, "/api/v1/conversions?orphan=true").await;
    assert_eq!(orphans["data"], json!([]));

    assert_error(
        &post(&app, "/api/v1/autofix", json!({"client": "nobody"})).await,
        404,
        "not_found",
    );
    assert_error(
        &post(&app, "/api/v1/autofix", json!({"clients": 1})).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn diagnose_explains_a_link_or_a_sale() {
    let Shop { app, client, .. } = shop().await;
    let (status, d) = get(&app, "/api/v1/diagnose?link_slug=spring").await;
    assert_eq!(status, 200, "{d:#}");
    let one = &d["links"][0];
    assert_eq!(one["link"]["slug"], json!("spring"));
    assert_eq!(one["client"]["id"], json!(client.id));
    assert_eq!(
        one["webhook_url"],
        json!(app.tracker.webhook_url(&client.id))
    );
    let orphans = one["orphans_nearby"].as_array().expect("orphans");
    assert!(
        orphans
            .iter()
            .any(|o| o["conversion"]["purchase_key"] == json!("pi_orphan")
                && o["why_not_matched"].as_str().is_some_and(|w| !w.is_empty())),
        "{orphans:#?}"
    );
    assert!(one["next_steps"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(d["sale"].is_null());

    let (_, camel) = get(&app, "/api/v1/diagnose?linkSlug=spring").await;
    assert_eq!(camel["links"][0]["link"]["slug"], json!("spring"));

    let orphan = app
        .conversions()
        .await
        .into_iter()
        .find(|c| c.purchase_key == "pi_orphan")
        .expect("orphan");
    let (status, sale) = get(&app, &format!("/api/v1/diagnose?conversion={}", orphan.id)).await;
    assert_eq!(status, 200, "{sale:#}");
    assert_eq!(sale["sale"]["conversion"]["id"], json!(orphan.id));
    assert!(sale["sale"]["trace"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));

    assert_error(&get(&app, "/api/v1/diagnose").await, 400, "invalid_request");
    assert_error(
        &get(&app, "/api/v1/diagnose?link_slug=nope").await,
        404,
        "not_found",
    );
    assert_error(
        &get(&app, "/api/v1/diagnose?conversion=conv_nope").await,
        404,
        "not_found",
    );
}
