//! The admin pages over HTTP (SPEC 3): refusal without a session, 200 with
//! one, what each page shows, CSRF on every POST, the login's rate limit,
//! and every value escaped.

mod adminkit;

use adminkit::*;
use reqwest::StatusCode;
use salestrack::domain::model::*;
use serde_json::json;

const SECRET: &str = "whsec_admin_tests_secret_A1b2";
const XSS: &str = "<script>alert(1)</script>";
/// askama writes `<` and `>` as numeric entities.
const XSS_ESCAPED: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";

/// A shop with two links, a sale through each, and two orphans whose
/// metadata names a slug that does not exist yet.
struct Story {
    app: App,
    shop: Client,
    attributed: Conversion,
    orphans: Vec<Conversion>,
    event_id: i64,
}

async fn story() -> Story {
    let app = spawn().await;
    let shop = app.add_client("Shop", Some(SECRET)).await;
    app.add_link(&shop, "flexus1", Some("Flexus creator")).await;
    let key = app
        .sell(
            &shop,
            SECRET,
            "cus_a",
            "a@example.com",
            4900,
            json!({"link_slug": "flexus1"}),
        )
        .await;
    let attributed = app.conversion_by_key(&key).await;
    let mut orphans = Vec::new();
    for (customer, email) in [("cus_b", "b@example.com"), ("cus_c", "c@example.com")] {
        let key = app
            .sell(
                &shop,
                SECRET,
                customer,
                email,
                2500,
                json!({"link_slug": "later"}),
            )
            .await;
        orphans.push(app.conversion_by_key(&key).await);
    }
    let event_id = app
        .tracker
        .store()
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;
    Story {
        app,
        shop,
        attributed,
        orphans,
        event_id,
    }
}

fn pages(s: &Story) -> Vec<String> {
    vec![
        "/admin".into(),
        "/admin?mode=test".into(),
        "/admin/clients".into(),
        format!("/admin/clients/{}", s.shop.id),
        "/admin/conversions".into(),
        "/admin/conversions?orphan=1".into(),
        format!("/admin/conversions/{}", s.attributed.id),
        "/admin/events".into(),
        format!("/admin/events/{}", s.event_id),
        "/admin/diagnose-sale".into(),
        "/admin/diagnose-sale?linkSlug=flexus1".into(),
        format!("/admin/diagnose-sale?conversion={}", s.orphans[0].id),
        "/admin/diagnose-sale?email=b@example.com".into(),
        format!("/admin/diagnose-sale?invoice={}", s.attributed.purchase_key),
    ]
}

fn posts(s: &Story) -> Vec<(String, Vec<(&'static str, String)>)> {
    vec![
        ("/admin/autofix".into(), vec![]),
        ("/admin/logout".into(), vec![]),
        ("/admin/clients".into(), vec![("name", "Another".into())]),
        (
            format!("/admin/clients/{}/settings", s.shop.id),
            vec![
                ("window_primary_days", "30".into()),
                ("window_fallback_days", "45".into()),
            ],
        ),
        (
            format!("/admin/clients/{}/links", s.shop.id),
            vec![
                ("slug", "newlink".into()),
                ("destination", "https://shop.example.com/new".into()),
            ],
        ),
        (
            format!("/admin/clients/{}/secrets", s.shop.id),
            vec![("secret", "whsec_another_secret_9999".into())],
        ),
        (
            format!("/admin/conversions/{}/link", s.orphans[0].id),
            vec![("link_id", s.attributed.link_id.clone().unwrap())],
        ),
        (
            format!("/admin/conversions/{}/undo", s.attributed.id),
            vec![("entry_id", "1".into())],
        ),
        (format!("/admin/events/{}/reprocess", s.event_id), vec![]),
    ]
}

#[tokio::test]
async fn every_page_sends_a_visitor_without_a_session_to_the_login() {
    let s = story().await;
    let stale = Session {
        cookie: "st_session=0123456789abcdef".into(),
        csrf: String::new(),
    };
    for path in pages(&s) {
        for session in [None, Some(&stale)] {
            let page = s.app.get(session, &path).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            let location = page.location.unwrap_or_default();
            assert!(
                location.starts_with("/admin/login?next=%2Fadmin"),
                "{path} → {location}"
            );
        }
    }
    for (path, fields) in posts(&s) {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = s.app.post(None, &path, &fields, false).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location.as_deref(), Some("/admin/login"), "{path}");
    }
}

#[tokio::test]
async fn every_page_renders_for_a_signed_in_admin() {
    let s = story().await;
    let session = s.app.login().await;
    for path in pages(&s) {
        let page = s.app.get(Some(&session), &path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.starts_with("<!doctype html>"), "{path}");
        assert!(page.body.contains("Log out"), "{path}");
        assert!(!page.body.contains("<script"), "{path} has a script");
    }
    let css = s
        .app
        .http
        .get(s.app.url("/admin/admin.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test]
async fn every_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let s = story().await;
    let session = s.app.login().await;
    let wrong = Session {
        cookie: session.cookie.clone(),
        csrf: "0".repeat(48),
    };
    for (path, fields) in posts(&s) {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let missing = s.app.post(Some(&session), &path, &fields, false).await;
        assert_eq!(
            missing.status,
            StatusCode::FORBIDDEN,
            "{path} without a token"
        );
        let bad = s.app.post(Some(&wrong), &path, &fields, true).await;
        assert_eq!(
            bad.status,
            StatusCode::FORBIDDEN,
            "{path} with a wrong token"
        );
    }
    // Nothing happened: no client, link or secret added, orphans untouched,
    // and the session still works (logout was refused too).
    assert_eq!(s.app.tracker.store().list_clients().await.unwrap().len(), 1);
    assert_eq!(
        s.app.tracker.store().list_links(None).await.unwrap().len(),
        1
    );
    let orphan = s
        .app
        .tracker
        .store()
        .get_conversion(&s.orphans[0].id)
        .await
        .unwrap()
        .unwrap();
    assert!(orphan.link_id.is_none());
    assert_eq!(
        s.app.get(Some(&session), "/admin").await.status,
        StatusCode::OK
    );
    // The login form has its own token.
    let resp = s
        .app
        .http
        .post(s.app.url("/admin/login"))
        .form(&[("secret", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(adminkit::cookie_from(&resp, "st_session").is_none());
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_strict_and_logout_ends_it() {
    let app = spawn().await;
    let resp = app.try_login(TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/admin");
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("st_session="))
        .expect("session cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    let session = app.login().await;
    let out = app.post(Some(&session), "/admin/logout", &[], true).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location.as_deref(), Some("/admin/login"));
    assert_eq!(
        app.get(Some(&session), "/admin").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_password_set_for_the_admin_opens_a_session_too() {
    let app = spawn().await;
    app.tracker
        .set_admin_password("correct horse battery")
        .await
        .unwrap();
    let resp = app.try_login("correct horse battery").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(adminkit::cookie_from(&resp, "st_session").is_some());
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_ten_failures_limit_the_address_but_not_the_right_token() {
    let app = spawn().await;
    let resp = app.try_login("not-the-token").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(adminkit::cookie_from(&resp, "st_session").is_none());
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("That is not the admin token or password."),
        "{body}"
    );
    for _ in 1..10 {
        assert_eq!(
            app.try_login("still-wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The eleventh wrong attempt is refused without an answer…
    let locked = app.try_login("still-wrong").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(adminkit::cookie_from(&locked, "st_session").is_none());
    assert!(locked
        .text()
        .await
        .unwrap()
        .contains("Too many failed attempts"));
    // …and so is a wrong bearer token at the API, from the same address…
    assert_eq!(
        app.api_status("/api/v1/clients", "still-wrong-token", &[])
            .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // …but the right token still opens a session, and the API.
    let resp = app.try_login(TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(adminkit::cookie_from(&resp, "st_session").is_some());
    assert_eq!(
        app.api_status("/api/v1/clients", TOKEN, &[]).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn while_an_address_is_limited_its_password_is_not_checked_but_the_token_is() {
    let app = spawn().await;
    let password = "correct horse battery";
    app.tracker.set_admin_password(password).await.unwrap();
    for _ in 0..10 {
        assert_eq!(
            app.try_login("wrong horse battery").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // No yes/no for a password while limited (README: Security), even the
    // right one: the page says to use the token.
    let resp = app.try_login(password).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Sign in with the admin token"));
    let resp = app.try_login(TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // The token's success clears the address, but the ten wrong passwords
    // spent the process-wide burst of Argon2 checks: not checked either.
    let resp = app.try_login(password).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Too many password attempts on this server"));
}

fn behind_proxy(config: &mut salestrack::domain::DomainConfig) {
    config.trusted_proxies =
        vec![salestrack::config::parse_trusted_proxy("127.0.0.1/32").expect("CIDR")];
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_clients_wrong_tokens_do_not_lock_out_another() {
    let app = spawn_with(behind_proxy).await;
    let stranger = [("x-forwarded-for", "203.0.113.9")];
    let admin = [("x-forwarded-for", "198.51.100.7")];
    for _ in 0..5 {
        assert_eq!(
            app.try_login_with("wrong", "/admin", &stranger)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.api_status("/api/v1/clients", "wrong-token", &stranger)
                .await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The stranger's address is limited…
    assert_eq!(
        app.api_status("/api/v1/clients", "wrong-token", &stranger)
            .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // …the proxy's other clients are not: a typo gets a plain 401…
    assert_eq!(
        app.api_status("/api/v1/clients", "typo-token", &admin)
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.try_login_with("typo", "/admin", &admin).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // …and the right token gets in; RFC 7239 `Forwarded` is read too.
    let resp = app.try_login_with(TOKEN, "/admin", &admin).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.api_status(
            "/api/v1/clients",
            "typo-token",
            &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_trusted_proxies_a_forwarded_for_header_is_ignored() {
    for configure in [
        (|_: &mut salestrack::domain::DomainConfig| {}) as fn(&mut _),
        // A proxy list that does not hold the peer (127.0.0.1) is no trust.
        |c: &mut salestrack::domain::DomainConfig| {
            c.trusted_proxies =
                vec![salestrack::config::parse_trusted_proxy("10.0.0.0/8").expect("CIDR")]
        },
    ] {
        let app = spawn_with(configure).await;
        for n in 0..10 {
            let spoofed = format!("203.0.113.{n}");
            assert_eq!(
                app.api_status(
                    "/api/v1/clients",
                    "wrong-token",
                    &[("x-forwarded-for", &spoofed)]
                )
                .await,
                StatusCode::UNAUTHORIZED
            );
        }
        // Another claimed address does not escape the peer's limit.
        assert_eq!(
            app.api_status(
                "/api/v1/clients",
                "wrong-token",
                &[("x-forwarded-for", "198.51.100.7")]
            )
            .await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            app.api_status("/api/v1/clients", TOKEN, &[]).await,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn login_next_values_leaving_the_admin_pages_fall_back_to_admin() {
    let app = spawn().await;
    let ok = app.try_login_with(TOKEN, "/admin/clients?x=1", &[]).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ok.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/admin/clients?x=1")
    );
    for bad in [
        "/admin/\r\nSet-Cookie: st_session=attacker",
        "/admin\nLocation: https://evil.example/",
        "/admin/\\evil.example",
        "/\\evil.example",
        "//evil.example/admin",
        "/admin//evil.example",
        "https://evil.example/admin",
        "http://127.0.0.1:1/admin",
        "javascript:alert(1)",
        "/admin/../r/somewhere",
        "/admin/%2e%2e/r/somewhere",
        "/admin/\t/x",
    ] {
        let resp = app.try_login_with(TOKEN, bad, &[]).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{bad:?}");
        assert_eq!(
            resp.headers().get("location").and_then(|v| v.to_str().ok()),
            Some("/admin"),
            "{bad:?}"
        );
        // The login page given it keeps only a safe value in its form.
        let page = app
            .http
            .get(app.url("/admin/login"))
            .query(&[("next", bad)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("name=\"next\" value=\"/admin\""),
            "{bad:?}: {page}"
        );
    }
}

#[tokio::test]
async fn statuses_show_their_icon_and_reason_in_words() {
    let s = story().await;
    s.app.add_client("Silent", None).await;
    let session = s.app.login().await;
    for path in ["/admin", "/admin/clients"] {
        let page = s.app.get(Some(&session), path).await;
        assert!(page.body.contains("⚠️ Issues"), "{path}");
        assert!(page.body.contains("2 orphans"), "{path}");
        assert!(page.body.contains("❌ Not Working"), "{path}");
        assert!(page.body.contains("no webhook secret configured"), "{path}");
        assert!(
            page.body.contains("no webhook events received yet"),
            "{path}"
        );
    }
    let overview = s.app.get(Some(&session), "/admin").await.body;
    assert!(overview.contains("id=\"orphan-count\">2<"), "orphan count");
    assert!(overview.contains("Auto-Fix Now"));
    assert!(
        overview.contains("$49.00"),
        "revenue in the currency's own format"
    );
    // Test-mode sales show under the test switch, never under live.
    let live = overview;
    assert!(live.contains("No verified live sales yet") || !live.contains("USD"));
    let test = s.app.get(Some(&session), "/admin?mode=test").await.body;
    assert!(test.contains("$99.00"), "4900 + 2 × 2500 in test mode");
    // A working client.
    let app = spawn().await;
    let fine = app.add_client("Fine", Some(SECRET)).await;
    app.add_link(&fine, "ok", None).await;
    app.sell(
        &fine,
        SECRET,
        "cus_1",
        "x@example.com",
        100,
        json!({"link_slug": "ok"}),
    )
    .await;
    let session = app.login().await;
    let page = app.get(Some(&session), "/admin/clients").await.body;
    assert!(page.contains("✅ Working"), "{page}");
}

/// Issue 14 §2: anybody may POST to a webhook URL. A stranger's delivery to
/// a client whose verified events keep arriving is a warning, not ❌, and the
/// checklist keeps its secret ✔; a client whose deliveries all fail is ❌
/// and its secret step is not done.
#[tokio::test]
async fn a_strangers_delivery_cannot_turn_a_working_client_to_not_working() {
    let app = spawn().await;
    let fine = app.add_client("Fine", Some(SECRET)).await;
    app.add_link(&fine, "ok", None).await;
    app.sell(
        &fine,
        SECRET,
        "cus_1",
        "x@example.com",
        100,
        json!({"link_slug": "ok"}),
    )
    .await;
    let session = app.login().await;
    let before = app.get(Some(&session), "/admin/clients").await.body;
    assert!(before.contains("✅ Working"), "{before}");
    let done_before = before.matches("class=\"done\"").count();

    let junk = app
        .http
        .post(app.url(&format!("/webhooks/stripe/{}", fine.id)))
        .header("content-type", "application/json")
        .body(r#"{"id":"evt_stranger","object":"event","type":"charge.refunded","created":1,"livemode":false,"data":{"object":{}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(junk.status(), 400);
    let after = app.get(Some(&session), "/admin/clients").await.body;
    assert!(!after.contains("❌ Not Working"), "{after}");
    assert!(after.contains("⚠️ Issues"), "{after}");
    assert!(
        after.contains("1 rejected delivery (forged, or signed with an old secret)"),
        "{after}"
    );
    assert_eq!(
        after.matches("class=\"done\"").count(),
        done_before,
        "the secret step stays done"
    );

    // A client whose every delivery fails verification (a wrong secret).
    let broken = app
        .add_client("Broken", Some("whsec_the_one_salestrack_has_0001"))
        .await;
    app.deliver_expecting(
        &broken,
        "whsec_the_one_stripe_signs_with_02",
        "charge.refunded",
        json!({}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let page = app
        .get(Some(&session), &format!("/admin/clients/{}", broken.id))
        .await
        .body;
    assert!(page.contains("❌ Not Working"), "{page}");
    assert!(page.contains("none verified since"), "{page}");
}

#[tokio::test]
async fn the_clients_page_shows_activity_the_webhook_url_and_the_checklist() {
    let s = story().await;
    let session = s.app.login().await;
    let page = s.app.get(Some(&session), "/admin/clients").await.body;
    assert!(page.contains(&format!("{}/webhooks/stripe/{}", s.app.base, s.shop.id)));
    assert!(
        page.contains("3 in 24 h · 3 in 7 days"),
        "events and conversions 24h/7d"
    );
    for item in [
        "Configure the webhook in Stripe",
        "Add its signing secret",
        "Select invoice.paid",
        "Pass link_slug in checkout metadata",
    ] {
        assert!(page.contains(item), "{item}");
    }
    // Three of four done: the webhook, the secret and link_slug (no invoice.paid yet).
    assert_eq!(page.matches("class=\"done\"").count(), 3, "{page}");
    assert_eq!(page.matches("class=\"todo\"").count(), 1);
}

#[tokio::test]
async fn a_client_page_shows_link_figures_and_only_the_last_four_of_a_secret() {
    let s = story().await;
    let session = s.app.login().await;
    let page = s
        .app
        .get(Some(&session), &format!("/admin/clients/{}", s.shop.id))
        .await
        .body;
    assert!(page.contains("flexus1"));
    assert!(page.contains("Flexus creator"));
    assert!(page.contains("…A1b2"), "masked secret");
    assert!(!page.contains(SECRET), "the full secret must never appear");
    assert!(!page.contains("whsec_admin"), "no prefix of it either");
    assert!(page.contains("Primary window"));
    // The live switch shows no test sale; the test switch shows the link's.
    let test = s
        .app
        .get(
            Some(&session),
            &format!("/admin/clients/{}?mode=test", s.shop.id),
        )
        .await
        .body;
    assert!(test.contains("$49.00"));
    // No page anywhere shows the secret.
    for path in pages(&s) {
        let body = s.app.get(Some(&session), &path).await.body;
        assert!(!body.contains(SECRET), "{path} shows the secret");
    }
}

#[tokio::test]
async fn forms_add_clients_links_and_secrets_and_save_settings() {
    let s = story().await;
    let session = s.app.login().await;
    let added = s
        .app
        .post(
            Some(&session),
            "/admin/clients",
            &[("name", "Acme"), ("domain", "https://www.acme.example/")],
            true,
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    let location = added.location.unwrap();
    assert!(location.starts_with("/admin/clients/cli_") && location.ends_with("?done=client"));
    let acme_page = s.app.get(Some(&session), &location).await.body;
    assert!(acme_page.contains("Client added."));
    assert!(acme_page.contains("acme.example"));
    let dup = s
        .app
        .post(Some(&session), "/admin/clients", &[("name", "Acme")], true)
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    let shop = format!("/admin/clients/{}", s.shop.id);
    let link = s
        .app
        .post(
            Some(&session),
            &format!("{shop}/links"),
            &[
                ("slug", "spring"),
                ("destination", "https://shop.example.com/spring"),
                ("label", "Spring campaign"),
                ("promo_codes", "SPRING10, promo_123"),
            ],
            true,
        )
        .await;
    assert_eq!(link.status, StatusCode::SEE_OTHER);
    let stored = s
        .app
        .tracker
        .store()
        .find_link(&s.shop.id, "spring")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.promo_codes,
        vec!["SPRING10".to_string(), "promo_123".to_string()]
    );
    let bad = s
        .app
        .post(
            Some(&session),
            &format!("{shop}/links"),
            &[("slug", "a b"), ("destination", "https://x.example")],
            true,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("invalid slug"));

    let secret = s
        .app
        .post(
            Some(&session),
            &format!("{shop}/secrets"),
            &[("secret", "whsec_rotated_secret_Zz99")],
            true,
        )
        .await;
    assert_eq!(secret.status, StatusCode::SEE_OTHER);
    let page = s.app.get(Some(&session), &shop).await.body;
    assert!(page.contains("…Zz99") && page.contains("…A1b2"));
    assert!(!page.contains("whsec_rotated"));

    let saved = s
        .app
        .post(
            Some(&session),
            &format!("{shop}/settings"),
            &[
                ("window_primary_days", "30"),
                ("window_fallback_days", "45"),
            ],
            true,
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let client = s
        .app
        .tracker
        .store()
        .get_client(&s.shop.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client.settings,
        AttributionSettings {
            window_primary_days: 30,
            window_fallback_days: 45,
            any_time_fallback: false,
        }
    );
    let invalid = s
        .app
        .post(
            Some(&session),
            &format!("{shop}/settings"),
            &[
                ("window_primary_days", "50"),
                ("window_fallback_days", "10"),
                ("any_time_fallback", "on"),
            ],
            true,
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn auto_fix_now_reports_fixed_and_still_orphan() {
    let s = story().await;
    let session = s.app.login().await;
    s.app.add_link(&s.shop, "later", None).await;
    let run = s
        .app
        .post(Some(&session), "/admin/autofix", &[], true)
        .await;
    assert_eq!(run.status, StatusCode::SEE_OTHER);
    assert_eq!(
        run.location.as_deref(),
        Some("/admin?done=autofix&fixed=2&remaining=0")
    );
    let page = s
        .app
        .get(Some(&session), run.location.as_deref().unwrap())
        .await
        .body;
    assert!(page.contains("Auto-Fix done: fixed 2, still orphan 0."));
    assert!(page.contains("id=\"orphan-count\">0<"));
    assert!(page.contains("✅ Working"));
    // A crafted flash cannot put words on the page.
    let crafted = s
        .app
        .get(Some(&session), "/admin?done=%3Cb%3Ehi")
        .await
        .body;
    assert!(!crafted.contains("class=\"flash\""));
}

#[tokio::test]
async fn a_conversion_page_shows_the_trace_the_history_and_sets_and_undoes_a_link() {
    let s = story().await;
    let session = s.app.login().await;
    let path = format!("/admin/conversions/{}", s.attributed.id);
    let page = s.app.get(Some(&session), &path).await.body;
    for step in [
        "click id",
        "link slug",
        "promotion code",
        "customer history",
    ] {
        assert!(page.contains(step), "trace step {step}");
    }
    assert!(page.contains("no click id on the purchase"));
    assert!(page.contains("matched") && page.contains("skipped"));
    assert!(page.contains("attributed by link_slug"), "history");

    let orphan = &s.orphans[0];
    let link_id = s.attributed.link_id.clone().unwrap();
    let path = format!("/admin/conversions/{}", orphan.id);
    let orphan_page = s.app.get(Some(&session), &path).await.body;
    assert!(
        orphan_page.contains("&#34;later&#34; is not a link of this client"),
        "trace names the slug"
    );
    let set = s
        .app
        .post(
            Some(&session),
            &format!("{path}/link"),
            &[("link_id", &link_id)],
            true,
        )
        .await;
    assert_eq!(set.status, StatusCode::SEE_OTHER);
    let c = s
        .app
        .tracker
        .store()
        .get_conversion(&orphan.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.link_id.as_deref(), Some(link_id.as_str()));
    assert_eq!(c.method, Some(Method::Manual));
    let history = s
        .app
        .tracker
        .store()
        .list_history(&orphan.id)
        .await
        .unwrap();
    let entry = history.last().unwrap();
    let page = s
        .app
        .get(Some(&session), &format!("{path}?done=set_link"))
        .await
        .body;
    assert!(
        page.contains("Link set by hand.") && page.contains("set by hand") && page.contains("Undo")
    );

    let undo = s
        .app
        .post(
            Some(&session),
            &format!("{path}/undo"),
            &[("entry_id", &entry.id.to_string())],
            true,
        )
        .await;
    assert_eq!(undo.status, StatusCode::SEE_OTHER);
    let c = s
        .app
        .tracker
        .store()
        .get_conversion(&orphan.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.link_id, None, "back to the link before the change");
    assert_eq!(c.method, Some(Method::Manual), "an undo is a manual choice");
    let page = s.app.get(Some(&session), &path).await.body;
    assert!(page.contains(&format!("undo of change #{}", entry.id)));
    // Undoing the same change again is refused: the link is already back.
    let again = s
        .app
        .post(
            Some(&session),
            &format!("{path}/undo"),
            &[("entry_id", &entry.id.to_string())],
            true,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // An entry of another conversion is not undone through this one.
    let other = s
        .app
        .post(
            Some(&session),
            &format!("/admin/conversions/{}/undo", s.attributed.id),
            &[("entry_id", &entry.id.to_string())],
            true,
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn conversions_filter_by_orphan_unverified_status_client_and_link() {
    let s = story().await;
    let session = s.app.login().await;
    let rows = |body: &str| body.matches("href=\"/admin/conversions/conv_").count();
    let all = s.app.get(Some(&session), "/admin/conversions").await.body;
    assert_eq!(rows(&all), 3);
    let orphans = s
        .app
        .get(Some(&session), "/admin/conversions?orphan=1")
        .await
        .body;
    assert_eq!(rows(&orphans), 2);
    let link = s.attributed.link_id.clone().unwrap();
    let by_link = s
        .app
        .get(Some(&session), &format!("/admin/conversions?link={link}"))
        .await
        .body;
    assert_eq!(rows(&by_link), 1);
    let by_client = s
        .app
        .get(
            Some(&session),
            &format!("/admin/conversions?client={}", s.shop.id),
        )
        .await
        .body;
    assert_eq!(rows(&by_client), 3);
    let refunded = s
        .app
        .get(Some(&session), "/admin/conversions?status=refunded")
        .await
        .body;
    assert_eq!(rows(&refunded), 0);
    let unverified = s
        .app
        .get(Some(&session), "/admin/conversions?unverified=1")
        .await
        .body;
    assert_eq!(rows(&unverified), 0);
    let live = s
        .app
        .get(Some(&session), "/admin/conversions?mode=live")
        .await
        .body;
    assert_eq!(rows(&live), 0);
}

#[tokio::test]
async fn an_event_page_shows_the_payload_and_reprocess_verifies_it_again() {
    let app = spawn().await;
    let shop = app.add_client("Shop", Some("whsec_old_secret_0000")).await;
    // Signed with a secret the client does not have yet: stored unverified.
    app.deliver_expecting(
        &shop,
        SECRET,
        "payment_intent.succeeded",
        json!({"id": "pi_unverified_1", "object": "payment_intent", "amount": 1500,
               "amount_received": 1500, "currency": "usd", "customer": "cus_x",
               "metadata": {}, "status": "succeeded", "livemode": false}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let event = app
        .tracker
        .store()
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(event.verification, Verification::Unverified);
    let session = app.login().await;
    let path = format!("/admin/events/{}", event.id);
    let page = app.get(Some(&session), &path).await.body;
    assert!(page.contains("payment_intent.succeeded"));
    assert!(page.contains("unverified"));
    assert!(
        page.contains("matches none of the active secrets"),
        "reason in words"
    );
    assert!(
        page.contains("\n  &#34;type&#34;: &#34;payment_intent.succeeded&#34;"),
        "pretty-printed payload"
    );
    assert!(page.contains("Verify again and reprocess"));
    let list = app
        .get(Some(&session), "/admin/events?verification=unverified")
        .await
        .body;
    assert!(list.contains(&format!("href=\"/admin/events/{}\"", event.id)));

    app.tracker.add_secret(&shop.id, SECRET).await.unwrap();
    let run = app
        .post(Some(&session), &format!("{path}/reprocess"), &[], true)
        .await;
    assert_eq!(run.status, StatusCode::SEE_OTHER);
    let event = app
        .tracker
        .store()
        .get_event(event.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.verification, Verification::Verified);
    assert_eq!(event.processing, Processing::Processed);
    let page = app
        .get(Some(&session), &format!("{path}?done=reprocessed"))
        .await
        .body;
    assert!(
        page.contains("Event reprocessed.")
            && page.contains("its signature verified with this client")
    );
}

#[tokio::test]
async fn diagnose_sale_shows_clicks_traces_orphans_with_reasons_and_next_steps() {
    let s = story().await;
    let session = s.app.login().await;
    let page = s
        .app
        .get(Some(&session), "/admin/diagnose-sale?linkSlug=flexus1")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let body = page.body;
    assert!(body.contains("Next steps for"));
    assert!(body.contains("Flexus creator"));
    assert!(body.contains("decided by <strong>link_slug</strong>"));
    assert!(body.contains("Orphans of Shop that could belong to it"));
    assert!(body.contains("no recorded non-bot click on flexus1 near this sale"));
    assert!(body.contains("&#34;later&#34; is not a link of this client"));
    assert!(body.contains("2 orphan(s) for Shop"));
    let unknown = s
        .app
        .get(Some(&session), "/admin/diagnose-sale?linkSlug=nope")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown
        .body
        .contains("Nothing found: link not found: nope."));
    let by_email = s
        .app
        .get(Some(&session), "/admin/diagnose-sale?email=B@example.com")
        .await
        .body;
    assert!(by_email.contains(&s.orphans[0].id) && by_email.contains("Attribution trace"));
    let by_invoice = s
        .app
        .get(Some(&session), "/admin/diagnose-sale?invoice=in_missing")
        .await
        .body;
    assert!(by_invoice.contains("No stored event mentions"));
    let by_conversion = s
        .app
        .get(
            Some(&session),
            &format!("/admin/diagnose-sale?conversion={}", s.orphans[1].id),
        )
        .await
        .body;
    assert!(by_conversion.contains("Orphan ("));
}

#[tokio::test]
async fn script_pushed_through_every_input_renders_inert() {
    let app = spawn().await;
    let shop = app.add_client("Shop", Some(SECRET)).await;
    app.add_link(&shop, "xss", Some(XSS)).await;
    // A click with a hostile referrer and user agent.
    let click = app
        .http
        .get(app.url("/r/xss"))
        .header("referer", format!("https://evil.example/{XSS}"))
        .header("user-agent", XSS)
        .send()
        .await
        .unwrap();
    assert_eq!(click.status(), StatusCode::FOUND);
    // A sale with a hostile email and a hostile metadata value.
    let key = app
        .sell(
            &shop,
            SECRET,
            "cus_x",
            &format!("{XSS}@example.com"),
            1000,
            json!({"link_slug": XSS, "note": XSS}),
        )
        .await;
    let sale = app.conversion_by_key(&key).await;
    let event = app
        .tracker
        .store()
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    let session = app.login().await;
    let checks = [
        (format!("/admin/clients/{}", shop.id), "the link label"),
        (
            "/admin/diagnose-sale?linkSlug=xss".to_string(),
            "label, referrer, user agent, orphan email, trace",
        ),
        (
            format!("/admin/conversions/{}", sale.id),
            "email and metadata in the trace",
        ),
        ("/admin/conversions".to_string(), "nothing raw"),
        (format!("/admin/events/{}", event.id), "the raw payload"),
        (
            format!(
                "/admin/diagnose-sale?email={}",
                urlencode(&format!("{XSS}@example.com"))
            ),
            "the email search",
        ),
    ];
    for (path, what) in checks {
        let page = app.get(Some(&session), &path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.body.contains("<script"), "{path}: raw tag in {what}");
        if path != "/admin/conversions" {
            assert!(
                page.body.contains(XSS_ESCAPED),
                "{path}: escaped text of {what} missing"
            );
        }
    }
    let diagnose = app
        .get(Some(&session), "/admin/diagnose-sale?linkSlug=xss")
        .await
        .body;
    assert!(
        diagnose.contains(&format!("https://evil.example/{}", XSS_ESCAPED)),
        "referrer shown escaped"
    );
    assert!(
        diagnose.matches(XSS_ESCAPED).count() >= 4,
        "label, referrer, user agent and trace"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- the CLI side of admin access ------------------------------------------

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_salestrack"))
}

/// Starts `serve` on a free port, reads its stdout up to the "listening"
/// line, stops it, and returns what it printed.
fn serve_once(db: &str, token: Option<&str>) -> String {
    use std::io::{BufRead, BufReader};
    let mut cmd = binary();
    cmd.args([
        "--database",
        db,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--sweep-interval",
        "0",
    ])
    .env_remove("SALESTRACK_ADMIN_TOKEN")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    if let Some(t) = token {
        cmd.args(["--admin-token", t]);
    }
    let mut child = cmd.spawn().expect("serve");
    let mut out = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.expect("stdout");
        out.push_str(&line);
        out.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[tokio::test]
async fn serve_prints_a_generated_token_once_and_keeps_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("serve.db").display());
    let first = serve_once(&db, None);
    let token = first
        .lines()
        .find_map(|l| l.strip_prefix("admin token (shown once; only its hash is kept): "))
        .unwrap_or_else(|| panic!("no token printed: {first}"))
        .to_string();
    assert!(token.starts_with("sta_") && token.len() > 20, "{token}");
    let second = serve_once(&db, None);
    assert!(!second.contains("admin token"), "printed again: {second}");
    let store = salestrack::storage::connect(&db).await.unwrap();
    let hash = store
        .get_setting("admin_token_hash")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(hash, token, "only the hash is stored");
    let tracker = salestrack::domain::Tracker::new(store, Default::default())
        .await
        .unwrap();
    assert!(tracker.check_admin_login(&token).await.unwrap());
    // A configured token replaces it and is never printed.
    let configured = serve_once(&db, Some("configured-token-0123456789"));
    assert!(!configured.contains("configured-token"), "{configured}");
    assert!(tracker
        .check_admin_login("configured-token-0123456789")
        .await
        .unwrap());
    assert!(!tracker.check_admin_login(&token).await.unwrap());
}

#[tokio::test]
async fn admin_set_password_reads_the_password_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("pw.db").display());
    let mut child = binary()
        .args(["--database", &db, "admin", "set-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long passphrase here\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin password set"));
    let store = salestrack::storage::connect(&db).await.unwrap();
    let tracker = salestrack::domain::Tracker::new(store, Default::default())
        .await
        .unwrap();
    assert!(tracker
        .check_admin_login("a long passphrase here")
        .await
        .unwrap());
    assert!(!tracker
        .check_admin_login("a long passphrase")
        .await
        .unwrap());
    // Too short: refused with a message, nothing stored.
    let mut child = binary()
        .args(["--database", &db, "admin", "set-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"));
}

/// The `href` of the page's "Older →" link, askama's `&#38;` undone.
fn older_link(html: &str) -> Option<String> {
    let end = html.find("\">Older →</a>")?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(html[start..end].replace("&#38;", "&"))
}

/// Follows a list's Older links from `path` to the last page: the ids each
/// page links, and the links followed.
async fn page_through(
    app: &App,
    session: &Session,
    path: &str,
    what: &str,
) -> (Vec<Vec<String>>, Vec<String>) {
    let (mut pages, mut links) = (Vec::new(), Vec::new());
    let mut next = Some(path.to_string());
    while let Some(path) = next {
        let html = app.get(Some(session), &path).await.body;
        pages.push(linked_ids(&html, what));
        next = older_link(&html);
        links.extend(next.clone());
    }
    (pages, links)
}

/// Ids in the order a page links them (`/admin/{what}/{id}"`).
fn linked_ids(html: &str, what: &str) -> Vec<String> {
    let prefix = format!("href=\"/admin/{what}/");
    let mut ids: Vec<String> = Vec::new();
    for part in html.split(&prefix).skip(1) {
        let id = &part[..part.find('"').unwrap_or(0)];
        if !id.is_empty() && !id.contains('/') && ids.last().map(String::as_str) != Some(id) {
            ids.push(id.to_string());
        }
    }
    ids
}

#[tokio::test]
async fn the_events_page_pages_through_older_events_keeping_its_filters() {
    let app = spawn().await;
    let shop = app.add_client("Shop", Some(SECRET)).await;
    let other = app.add_client("Other", Some(SECRET)).await;
    app.deliver(
        &other,
        SECRET,
        "customer.created",
        json!({"id": "cus_other", "object": "customer"}),
    )
    .await;
    for n in 0..201 {
        app.deliver(
            &shop,
            SECRET,
            "customer.created",
            json!({"id": format!("cus_{n}"), "object": "customer"}),
        )
        .await;
    }
    let stored: Vec<String> = app
        .tracker
        .store()
        .list_events(&EventFilter {
            client_id: Some(shop.id.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(stored.len(), 201);
    let session = app.login().await;
    let (pages, links) = page_through(
        &app,
        &session,
        &format!("/admin/events?verification=verified&client={}", shop.id),
        "events",
    )
    .await;
    // A full page has an Older link keeping the filters; the last has none.
    assert_eq!(pages, [&stored[..200], &stored[200..]]);
    assert_eq!(
        links,
        [format!(
            "/admin/events?verification=verified&client={}&before={}",
            shop.id, stored[199]
        )]
    );
}

#[tokio::test]
async fn the_conversions_page_pages_through_sales_that_share_a_purchase_time() {
    let app = spawn().await;
    let shop = app.add_client("Shop", Some(SECRET)).await;
    // Stripe's times are in seconds: these hundred and one sales share one.
    let created = chrono::Utc::now().timestamp() - 60;
    for n in 0..101 {
        app.deliver_created(
            &shop,
            SECRET,
            "payment_intent.succeeded",
            json!({
                "id": format!("pi_same_second_{n}"), "object": "payment_intent",
                "amount": 1900, "amount_received": 1900, "currency": "usd",
                "customer": format!("cus_{n}"), "metadata": {}, "status": "succeeded",
                "livemode": false, "created": created,
            }),
            created,
            StatusCode::OK,
        )
        .await;
    }
    let stored = app
        .tracker
        .store()
        .list_conversions(&ConversionFilter::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 101);
    let ids: Vec<String> = stored.iter().map(|c| c.id.clone()).collect();
    assert!(
        stored
            .iter()
            .all(|c| c.purchased_at == stored[0].purchased_at),
        "one purchase time for all"
    );
    let session = app.login().await;
    let (pages, links) = page_through(
        &app,
        &session,
        &format!("/admin/conversions?client={}", shop.id),
        "conversions",
    )
    .await;
    assert_eq!(pages, [&ids[..100], &ids[100..]]);
    assert_eq!(links.len(), 1, "one Older link, under the full page");
}
