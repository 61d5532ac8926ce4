//! SPEC 2.1 — clicks: `/r/{slug}`, `/r/{client}/{slug}`, the click beacon
//! `POST /api/v1/track/click`, the `/t.js` snippet, bots, and health.

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE, USER_AGENT,
};
use reqwest::StatusCode;
use salestrack::domain::client::{ClientIn, LinkIn};
use salestrack::domain::model::*;
use serde_json::{json, Value};

use crate::helpers::*;

const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 \
                       (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

async fn link_to(app: &TestApp, client: &Client, slug: &str, destination: &str) -> Link {
    app.tracker
        .add_link(LinkIn {
            client: client.id.clone(),
            slug: slug.into(),
            destination: destination.into(),
            label: None,
            promo_codes: vec![],
        })
        .await
        .expect("add link")
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.base))
        .header(USER_AGENT, BROWSER)
        .send()
        .await
        .expect("request")
}

fn location(resp: &reqwest::Response) -> url::Url {
    let loc = resp
        .headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .expect("ascii location");
    url::Url::parse(loc).unwrap_or_else(|e| panic!("Location {loc:?} is not a URL: {e}"))
}

fn query(url: &url::Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(url: &url::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn set_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("st_vid="))
        .unwrap_or_else(|| panic!("no st_vid cookie in {:?}", resp.headers()))
        .to_string()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("cookie value")
}

async fn clicks_of(app: &TestApp, link: &Link) -> Vec<Click> {
    app.tracker
        .store()
        .recent_clicks_for_link(&link.id, 100)
        .await
        .expect("clicks")
}

async fn all_clicks(app: &TestApp) -> i64 {
    app.tracker.store().count_clicks(None).await.expect("count")
}

async fn shop_with_domain(app: &TestApp, name: &str, domain: &str) -> Client {
    app.add_client_with(ClientIn {
        name: name.into(),
        domain: Some(domain.into()),
        webhook_secret: Some("whsec_clicks_test_secret".into()),
        ..Default::default()
    })
    .await
}

async fn beacon(app: &TestApp, origin: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/api/v1/track/click", app.base))
        .header(USER_AGENT, BROWSER)
        .json(&body);
    if let Some(o) = origin {
        req = req.header(ORIGIN, o);
    }
    req.send().await.expect("beacon")
}

// ---- GET /r/{slug} ---------------------------------------------------------

#[tokio::test]
async fn a_redirect_answers_302_to_the_destination_with_ref_and_the_click_id() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = link_to(
        &app,
        &shop,
        "flexus1",
        "https://shop.com/program?utm_source=ig&ref=old",
    )
    .await;

    let resp = get(&app, "/r/flexus1").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let loc = location(&resp);
    assert_eq!(loc.host_str(), Some("shop.com"));
    assert_eq!(loc.path(), "/program");
    let q = query(&loc);
    assert!(
        q.contains(&("utm_source".into(), "ig".into())),
        "existing query kept: {loc}"
    );
    let refs: Vec<_> = q.iter().filter(|(k, _)| k == "ref").collect();
    assert_eq!(refs.len(), 1, "exactly one ref, the link's: {loc}");
    assert_eq!(refs[0].1, "flexus1");
    let sclid = param(&loc, "sclid").expect("sclid in the Location");
    assert!(
        param(&loc, "client_reference_id").is_none(),
        "not a payment link: {loc}"
    );

    let clicks = clicks_of(&app, &link).await;
    assert_eq!(clicks.len(), 1, "the click is stored");
    let click = &clicks[0];
    assert_eq!(click.id, sclid, "sclid is the stored click's id");
    assert_eq!(click.client_id, shop.id);
    assert_eq!(click.link_id, link.id);
    assert!(!click.bot, "a browser is not a bot");
    assert_eq!(click.user_agent.as_deref(), Some(BROWSER));
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (now - click.at).abs() < 60_000,
        "click time is now: {}",
        click.at
    );
}

#[tokio::test]
async fn a_redirect_sets_an_http_only_visitor_cookie_and_stores_its_id_with_the_click() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = app.add_link(&shop, "s1").await;

    let resp = get(&app, "/r/s1").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cookie = set_cookie(&resp);
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    let visitor = cookie_value(&cookie);
    assert!(!visitor.is_empty());
    let clicks = clicks_of(&app, &link).await;
    assert_eq!(clicks[0].visitor_id.as_deref(), Some(visitor.as_str()));
}

#[tokio::test]
async fn a_returning_visitor_keeps_the_same_visitor_id() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = app.add_link(&shop, "s1").await;

    let first = get(&app, "/r/s1").await;
    let visitor = cookie_value(&set_cookie(&first));

    let second = app
        .http
        .get(format!("{}/r/s1", app.base))
        .header(USER_AGENT, BROWSER)
        .header(COOKIE, format!("other=1; st_vid={visitor}; theme=dark"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::FOUND);
    assert_eq!(
        cookie_value(&set_cookie(&second)),
        visitor,
        "the cookie is renewed, not replaced"
    );

    let clicks = clicks_of(&app, &link).await;
    assert_eq!(clicks.len(), 2, "each visit is a click");
    assert!(clicks
        .iter()
        .all(|c| c.visitor_id.as_deref() == Some(visitor.as_str())));
    assert_ne!(clicks[0].id, clicks[1].id, "each click has its own id");
}

#[tokio::test]
async fn a_forged_visitor_cookie_is_replaced_by_a_fresh_id() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = app.add_link(&shop, "s1").await;

    let resp = app
        .http
        .get(format!("{}/r/s1", app.base))
        .header(USER_AGENT, BROWSER)
        .header(COOKIE, "st_vid=<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let visitor = cookie_value(&set_cookie(&resp));
    assert!(!visitor.contains('<'), "{visitor}");
    let clicks = clicks_of(&app, &link).await;
    assert_eq!(clicks[0].visitor_id.as_deref(), Some(visitor.as_str()));
}

#[tokio::test]
async fn the_raw_ip_is_never_stored_only_a_hash() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = app.add_link(&shop, "s1").await;
    get(&app, "/r/s1").await;
    let click = clicks_of(&app, &link).await.remove(0);
    let hash = click.ip_hash.expect("an ip hash");
    assert!(!hash.contains("127.0.0.1"), "{hash}");
    let text = serde_json::to_string(&clicks_of(&app, &link).await).unwrap();
    assert!(!text.contains("127.0.0.1"), "raw IP stored: {text}");
}

#[tokio::test]
async fn a_client_qualified_redirect_picks_that_clients_link_when_two_clients_share_a_slug() {
    let app = spawn_app!();
    let alpha = app.add_client("Alpha", None).await;
    let beta = app.add_client("Beta", None).await;
    let a = link_to(&app, &alpha, "promo", "https://alpha.example/a").await;
    let b = link_to(&app, &beta, "promo", "https://beta.example/b").await;

    let by_name = get(&app, "/r/Beta/promo").await;
    assert_eq!(by_name.status(), StatusCode::FOUND);
    assert_eq!(location(&by_name).host_str(), Some("beta.example"));

    let by_id = get(&app, &format!("/r/{}/promo", alpha.id)).await;
    assert_eq!(by_id.status(), StatusCode::FOUND);
    assert_eq!(location(&by_id).host_str(), Some("alpha.example"));

    assert_eq!(clicks_of(&app, &b).await.len(), 1);
    assert_eq!(clicks_of(&app, &b).await[0].client_id, beta.id);
    assert_eq!(clicks_of(&app, &a).await.len(), 1);
    assert_eq!(clicks_of(&app, &a).await[0].client_id, alpha.id);

    // The unqualified slug keeps going where it went first (the oldest link).
    let plain = get(&app, "/r/promo").await;
    assert_eq!(location(&plain).host_str(), Some("alpha.example"));

    // A client name with spaces, percent-encoded.
    let spaced = app.add_client("Low Back Ability", None).await;
    let c = link_to(&app, &spaced, "promo", "https://lowback.example/").await;
    let resp = get(&app, "/r/Low%20Back%20Ability/promo").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp).host_str(), Some("lowback.example"));
    assert_eq!(clicks_of(&app, &c).await.len(), 1);

    // A client that does not have the slug, or does not exist: 404.
    let gamma = app.add_client("Gamma", None).await;
    assert_eq!(
        get(&app, &format!("/r/{}/promo", gamma.id)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/r/Nobody/promo").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(all_clicks(&app).await, 4);
}

#[tokio::test]
async fn a_stripe_payment_link_destination_gets_the_click_id_as_client_reference_id() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = link_to(
        &app,
        &shop,
        "anna",
        "https://buy.stripe.com/test_abc123?prefilled_email=a%40b.c",
    )
    .await;

    let resp = get(&app, "/r/anna").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let loc = location(&resp);
    assert_eq!(loc.host_str(), Some("buy.stripe.com"));
    assert_eq!(loc.path(), "/test_abc123");
    let click = clicks_of(&app, &link).await.remove(0);
    assert_eq!(
        param(&loc, "client_reference_id").as_deref(),
        Some(click.id.as_str()),
        "{loc}"
    );
    assert_eq!(param(&loc, "sclid").as_deref(), Some(click.id.as_str()));
    assert_eq!(param(&loc, "prefilled_email").as_deref(), Some("a@b.c"));
}

#[tokio::test]
async fn an_unknown_slug_is_a_404_page_and_records_nothing() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    app.add_link(&shop, "real").await;

    let resp = get(&app, "/r/nope").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().get(LOCATION).is_none());
    assert!(
        resp.headers().get(SET_COOKIE).is_none(),
        "no cookie for a 404"
    );
    let body = resp.text().await.unwrap();
    assert!(body.to_lowercase().contains("not found"), "{body}");
    assert_eq!(all_clicks(&app).await, 0);
}

#[tokio::test]
async fn injection_shaped_slugs_are_404_record_nothing_and_do_not_crash_the_server() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    app.add_link(&shop, "real").await;

    let long = "a".repeat(5000);
    for slug in [
        "'%20OR%201=1--",
        "real'%20OR%20'1'='1",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "..%2F..%2Fetc%2Fpasswd",
        "real%00",
        "%F0%9F%92%A5",
        long.as_str(),
    ] {
        let resp = get(&app, &format!("/r/{slug}")).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "slug {:?}",
            slug.chars().take(40).collect::<String>()
        );
        let body = resp.text().await.unwrap();
        assert!(!body.contains("<script>"), "input echoed unescaped: {body}");
    }
    assert_eq!(all_clicks(&app).await, 0, "nothing recorded");
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the server is still up");
    assert_eq!(
        get(&app, "/r/real").await.status(),
        StatusCode::FOUND,
        "and still redirects"
    );
}

// ---- bots ------------------------------------------------------------------

#[tokio::test]
async fn bot_and_link_preview_clicks_are_stored_with_the_bot_flag() {
    let app = spawn_app!();
    let shop = app.add_client("Shop", None).await;
    let link = app.add_link(&shop, "s1").await;

    let bots = [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "",
    ];
    for ua in bots {
        let resp = app
            .http
            .get(format!("{}/r/s1", app.base))
            .header(USER_AGENT, ua)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "bots are redirected too ({ua:?})"
        );
    }
    // No user agent at all.
    let resp = app
        .http
        .get(format!("{}/r/s1", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    get(&app, "/r/s1").await; // one human

    let clicks = clicks_of(&app, &link).await;
    assert_eq!(clicks.len(), bots.len() + 2, "every click is stored");
    assert_eq!(
        clicks.iter().filter(|c| c.bot).count(),
        bots.len() + 1,
        "{clicks:#?}"
    );
    assert_eq!(clicks.iter().filter(|c| !c.bot).count(), 1);
    for c in clicks.iter().filter(|c| c.bot) {
        assert_ne!(c.user_agent.as_deref(), Some(BROWSER));
    }
}

#[tokio::test]
async fn a_bot_click_is_stored_but_never_attributed() {
    let app = spawn_app!();
    let secret = "whsec_bot_click_test";
    let shop = app.add_client("Shop", Some(secret)).await;
    let link = app.add_link(&shop, "s1").await;

    let resp = app
        .http
        .get(format!("{}/r/s1", app.base))
        .header(USER_AGENT, "facebookexternalhit/1.1")
        .send()
        .await
        .unwrap();
    let sclid = param(&location(&resp), "sclid").unwrap();
    assert!(clicks_of(&app, &link).await[0].bot);

    // The sale names the bot click, and the bot click is also the only click.
    let body = event(
        "evt_botclick_1",
        "payment_intent.succeeded",
        "2025-03-31.basil",
        now_s() + 5,
        json!({
            "id": "pi_botclick_1", "object": "payment_intent", "amount": 4900, "amount_received": 4900,
            "currency": "usd", "customer": "cus_bot", "receipt_email": "x@example.com",
            "status": "succeeded", "metadata": {"salestrack_click_id": sclid},
        }),
    );
    assert_eq!(
        app.deliver(&shop, secret, body).await.status(),
        StatusCode::OK
    );
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(
        conversions[0].link_slug, None,
        "a bot click never attributes"
    );
    assert_eq!(conversions[0].method, None);
}

#[tokio::test]
async fn a_click_flood_from_one_address_is_answered_and_stored_but_flagged_and_never_attributed() {
    use salestrack::domain::flood::CLICK_BURST;
    let app = spawn_app!();
    let secret = "whsec_click_flood_test";
    let shop = app.add_client("Shop", Some(secret)).await;
    let link = app.add_link(&shop, "s1").await;

    // A bot's clicks use up the address's burst (they count like any)…
    let started = std::time::Instant::now();
    for _ in 0..CLICK_BURST as usize {
        let resp = app
            .http
            .get(format!("{}/r/s1", app.base))
            .header(USER_AGENT, "curl/8.5.0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
    }
    // …then "human" clicks from the same address keep coming.
    let human = 15;
    let mut last_sclid = String::new();
    for _ in 0..human {
        let resp = get(&app, "/r/s1").await;
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "a flood is still answered"
        );
        last_sclid = param(&location(&resp), "sclid").unwrap();
    }
    let elapsed_s = started.elapsed().as_secs() as usize;

    let clicks = clicks_of(&app, &link).await;
    assert_eq!(
        clicks.len(),
        CLICK_BURST as usize + human,
        "every click is stored"
    );
    let humans: Vec<&Click> = clicks
        .iter()
        .filter(|c| c.user_agent.as_deref() == Some(BROWSER))
        .collect();
    // One click a second refills; everything else over the burst is flagged.
    let flagged = humans.iter().filter(|c| c.bot).count();
    assert!(
        flagged + elapsed_s + 1 >= human,
        "{flagged} of {human} flood clicks flagged in {elapsed_s} s"
    );
    let last = clicks
        .iter()
        .find(|c| c.id == last_sclid)
        .expect("last click");
    assert!(last.bot, "the flood's last click is flagged");

    // A sale naming a flood click is not attributed through it.
    let body = event(
        "evt_flood_1",
        "payment_intent.succeeded",
        "2025-03-31.basil",
        now_s() + 5,
        json!({
            "id": "pi_flood_1", "object": "payment_intent", "amount": 4900, "amount_received": 4900,
            "currency": "usd", "customer": "cus_flood", "receipt_email": "x@example.com",
            "status": "succeeded", "metadata": {"salestrack_click_id": last_sclid},
        }),
    );
    assert_eq!(
        app.deliver(&shop, secret, body).await.status(),
        StatusCode::OK
    );
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_ne!(
        conversions[0].click_id.as_deref(),
        Some(last_sclid.as_str())
    );
    assert_ne!(conversions[0].method, Some(Method::ClickId));
    if flagged == human {
        assert_eq!(
            conversions[0].link_slug, None,
            "no click of the flood counts"
        );
    }
}

// ---- POST /api/v1/track/click ------------------------------------------------

#[tokio::test]
async fn the_click_beacon_records_a_click_and_answers_its_id() {
    let app = spawn_app!();
    let shop = shop_with_domain(&app, "Shop", "shop.com").await;
    let link = app.add_link(&shop, "flexus1").await;

    let resp = beacon(
        &app,
        None,
        json!({
            "ref": "flexus1",
            "landing_url": "https://shop.com/program?ref=flexus1",
            "referrer": "https://www.instagram.com/",
            "visitor_id": "vis_fromthesite123",
        }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let click_id = body["click_id"].as_str().expect("click_id").to_string();

    let clicks = clicks_of(&app, &link).await;
    assert_eq!(clicks.len(), 1);
    let c = &clicks[0];
    assert_eq!(c.id, click_id);
    assert_eq!(c.client_id, shop.id);
    assert_eq!(
        c.landing_url.as_deref(),
        Some("https://shop.com/program?ref=flexus1")
    );
    assert_eq!(c.referrer.as_deref(), Some("https://www.instagram.com/"));
    assert_eq!(c.visitor_id.as_deref(), Some("vis_fromthesite123"));
    assert!(!c.bot);
}

#[tokio::test]
async fn the_beacon_allows_cors_from_the_clients_own_domain() {
    let app = spawn_app!();
    let shop = shop_with_domain(&app, "Shop", "shop.com").await;
    app.add_link(&shop, "flexus1").await;

    let resp = beacon(&app, Some("https://shop.com"), json!({"ref": "flexus1"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap()),
        Some("https://shop.com")
    );
    let body: Value = resp.json().await.unwrap();
    assert!(body["click_id"].as_str().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn the_beacon_gives_no_cors_grant_to_another_origin() {
    let app = spawn_app!();
    let shop = shop_with_domain(&app, "Shop", "shop.com").await;
    app.add_link(&shop, "flexus1").await;

    for origin in [
        "https://evil.com",
        "https://evilshop.com",
        "https://shop.com.evil.com",
    ] {
        let resp = beacon(&app, Some(origin), json!({"ref": "flexus1"})).await;
        assert!(
            resp.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{origin} was granted: {:?}",
            resp.headers()
        );
    }
}

#[tokio::test]
async fn the_beacon_preflight_from_the_clients_domain_is_204_with_cors() {
    let app = spawn_app!();
    let shop = shop_with_domain(&app, "Shop", "shop.com").await;
    app.add_link(&shop, "flexus1").await;

    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/track/click", app.base),
            )
            .header(ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("https://shop.com").await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ok.headers()
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap()),
        Some("https://shop.com")
    );
    let methods = ok
        .headers()
        .get("access-control-allow-methods")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");

    let sub = preflight("https://eu.shop.com").await.unwrap();
    assert_eq!(
        sub.headers()
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap()),
        Some("https://eu.shop.com"),
        "a subdomain of the client's domain is the client's"
    );

    let other = preflight("https://evil.com").await.unwrap();
    assert!(other.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert_eq!(all_clicks(&app).await, 0, "a preflight records nothing");
}

#[tokio::test]
async fn malformed_beacon_json_is_a_400_json_error_and_records_nothing() {
    let app = spawn_app!();
    let shop = shop_with_domain(&app, "Shop", "shop.com").await;
    app.add_link(&shop, "flexus1").await;

    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        br#"{"landing_url": "x"}"#,
        br#"{"ref": 5}"#,
    ] {
        let resp = app
            .http
            .post(format!("{}/api/v1/track/click", app.base))
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, BROWSER)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        let err: Value = resp.json().await.expect("a JSON error body");
        assert!(err["error"]["code"].is_string(), "{err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }
    assert_eq!(all_clicks(&app).await, 0);
}

#[tokio::test]
async fn a_beacon_for_an_unknown_ref_is_404_and_records_nothing() {
    let app = spawn_app!();
    let shop = shop_with_domain(&app, "Shop", "shop.com").await;
    app.add_link(&shop, "flexus1").await;

    for r in ["nope", "' OR 1=1--", "<script>"] {
        let resp = beacon(&app, Some("https://shop.com"), json!({"ref": r})).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{r}");
        let err: Value = resp.json().await.expect("JSON error");
        assert_eq!(err["error"]["code"], "not_found", "{err}");
    }
    assert_eq!(all_clicks(&app).await, 0);
}

#[tokio::test]
async fn the_beacon_picks_the_link_of_the_client_whose_domain_sent_it() {
    let app = spawn_app!();
    let alpha = shop_with_domain(&app, "Alpha", "alpha.com").await;
    let beta = shop_with_domain(&app, "Beta", "beta.com").await;
    let a = app.add_link(&alpha, "promo").await;
    let b = app.add_link(&beta, "promo").await;

    let resp = beacon(&app, Some("https://www.beta.com"), json!({"ref": "promo"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(clicks_of(&app, &b).await.len(), 1);
    assert!(clicks_of(&app, &a).await.is_empty());
}

// ---- snippet and health ------------------------------------------------------

#[tokio::test]
async fn the_snippet_is_javascript_that_posts_to_the_beacon() {
    let app = spawn_app!();
    let resp = app
        .http
        .get(format!("{}/t.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp
        .headers()
        .get(CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.contains("javascript"), "{ct}");
    let js = resp.text().await.unwrap();
    assert!(
        js.contains("/api/v1/track/click"),
        "the snippet posts the click"
    );
    assert!(
        js.contains("salestrack"),
        "the snippet exposes window.salestrack"
    );
    assert!(js.contains("clickId"), "and the click id");
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let app = spawn_app!();
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
