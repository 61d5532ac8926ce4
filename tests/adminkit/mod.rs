//! A small harness for the admin tests (`tests/admin.rs`, `tests/browser.rs`):
//! the real app on 127.0.0.1:0 over a fresh SQLite file with a known admin
//! token, signed Stripe deliveries, and a signed-in HTTP session.

#![allow(dead_code)]

use std::sync::Arc;

use reqwest::StatusCode;
use salestrack::domain::client::{ClientIn, LinkIn};
use salestrack::domain::ids::new_id;
use salestrack::domain::model::*;
use salestrack::domain::{DomainConfig, Tracker};
use salestrack::stripe::signature::header_for;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "sta_admin_test_token_0123456789";
pub const API: &str = "2025-03-31.basil";

pub struct App {
    pub base: String,
    pub tracker: Arc<Tracker>,
    pub http: reqwest::Client,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn spawn() -> App {
    spawn_with(|_| {}).await
}

/// `spawn` with the domain's configuration changed by `configure` (e.g.
/// `trusted_proxies`).
pub async fn spawn_with(configure: impl FnOnce(&mut DomainConfig)) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("admin.db").display());
    let store = salestrack::storage::connect(&db_url).await.expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = DomainConfig {
        public_url: base.clone(),
        ..Default::default()
    };
    configure(&mut config);
    let tracker = Arc::new(Tracker::new(store, config).await.expect("tracker"));
    tracker
        .ensure_admin_token(Some(TOKEN))
        .await
        .expect("admin token");
    let cancel = CancellationToken::new();
    tokio::spawn(salestrack::app::serve(
        tracker.clone(),
        listener,
        None,
        cancel.clone(),
    ));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    App {
        base,
        tracker,
        http,
        cancel,
        _dir: dir,
    }
}

/// The value of the first `name="csrf" value="…"` in a page.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// `name=value` of a `Set-Cookie` for `name` in a response.
pub fn cookie_from(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

/// A signed-in admin over HTTP.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The login page's form token and its cookie.
    pub async fn login_form(&self) -> (String, String) {
        let resp = self
            .http
            .get(self.url("/admin/login"))
            .send()
            .await
            .expect("login page");
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = cookie_from(&resp, "st_login").expect("login cookie");
        let html = resp.text().await.expect("login html");
        (csrf_in(&html).expect("login csrf"), cookie)
    }

    /// POSTs the login form with `secret`.
    pub async fn try_login(&self, secret: &str) -> reqwest::Response {
        self.try_login_with(secret, "/admin", &[]).await
    }

    /// POSTs the login form with `secret`, `next` and extra request headers.
    pub async fn try_login_with(
        &self,
        secret: &str,
        next: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let (csrf, cookie) = self.login_form().await;
        let mut req = self
            .http
            .post(self.url("/admin/login"))
            .header("cookie", cookie)
            .form(&[("csrf", csrf.as_str()), ("secret", secret), ("next", next)]);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("login")
    }

    /// `GET path` on the JSON API with `token` as bearer and extra headers;
    /// the status.
    pub async fn api_status(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> StatusCode {
        let mut req = self.http.get(self.url(path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("API call").status()
    }

    pub async fn login(&self) -> Session {
        let resp = self.try_login(TOKEN).await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "login should redirect"
        );
        let cookie = cookie_from(&resp, "st_session").expect("session cookie");
        let page = self
            .get(
                Some(&Session {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                }),
                "/admin",
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
        let csrf = csrf_in(&page.body).expect("csrf on the overview");
        Session { cookie, csrf }
    }

    async fn page(resp: reqwest::Response) -> Page {
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, session: Option<&Session>, path: &str) -> Page {
        let mut req = self.http.get(self.url(path));
        if let Some(s) = session {
            req = req.header("cookie", &s.cookie);
        }
        Self::page(req.send().await.expect("GET")).await
    }

    /// POSTs a form; `csrf` is added from the session unless `with_csrf` is false.
    pub async fn post(
        &self,
        session: Option<&Session>,
        path: &str,
        fields: &[(&str, &str)],
        with_csrf: bool,
    ) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut req = self.http.post(self.url(path));
        if let Some(s) = session {
            req = req.header("cookie", &s.cookie);
            if with_csrf {
                form.push(("csrf".into(), s.csrf.clone()));
            }
        }
        Self::page(req.form(&form).send().await.expect("POST")).await
    }

    pub async fn add_client(&self, name: &str, secret: Option<&str>) -> Client {
        self.tracker
            .add_client(ClientIn {
                name: name.into(),
                webhook_secret: secret.map(Into::into),
                ..Default::default()
            })
            .await
            .expect("add client")
    }

    pub async fn add_link(&self, client: &Client, slug: &str, label: Option<&str>) -> Link {
        self.tracker
            .add_link(LinkIn {
                client: client.id.clone(),
                slug: slug.into(),
                destination: format!("https://shop.example.com/{slug}"),
                label: label.map(Into::into),
                promo_codes: vec![],
            })
            .await
            .expect("add link")
    }

    /// Signs `object` as a `event_type` event with `secret` and delivers it
    /// to the client's webhook URL; expects 200.
    pub async fn deliver(&self, client: &Client, secret: &str, event_type: &str, object: Value) {
        self.deliver_expecting(client, secret, event_type, object, StatusCode::OK)
            .await
    }

    pub async fn deliver_expecting(
        &self,
        client: &Client,
        secret: &str,
        event_type: &str,
        object: Value,
        expected: StatusCode,
    ) {
        let now = chrono::Utc::now().timestamp();
        self.deliver_created(client, secret, event_type, object, now, expected)
            .await
    }

    /// A delivery of an event Stripe `created` at that time (seconds),
    /// signed now.
    pub async fn deliver_created(
        &self,
        client: &Client,
        secret: &str,
        event_type: &str,
        object: Value,
        created: i64,
        expected: StatusCode,
    ) {
        let now = chrono::Utc::now().timestamp();
        let body = serde_json::to_vec_pretty(&json!({
            "id": new_id("evt"), "object": "event", "api_version": API, "created": created,
            "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": event_type,
        }))
        .expect("event json");
        let resp = self
            .http
            .post(self.url(&format!("/webhooks/stripe/{}", client.id)))
            .header("content-type", "application/json")
            .header("stripe-signature", header_for(&body, secret, now))
            .body(body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(resp.status(), expected, "{event_type} delivery");
    }

    /// A paid `payment_intent.succeeded` of `amount` cents with `metadata`.
    pub async fn sell(
        &self,
        client: &Client,
        secret: &str,
        customer: &str,
        email: &str,
        amount: i64,
        metadata: Value,
    ) -> String {
        let pi = new_id("pi");
        self.deliver(
            client,
            secret,
            "payment_intent.succeeded",
            json!({
                "id": pi, "object": "payment_intent", "amount": amount, "amount_received": amount,
                "currency": "usd", "customer": customer, "receipt_email": email,
                "metadata": metadata, "status": "succeeded", "livemode": false,
                "created": chrono::Utc::now().timestamp(),
            }),
        )
        .await;
        pi
    }

    /// A human click on the client's link `slug`, `days_ago` days back.
    pub async fn add_click(&self, client: &Client, slug: &str, days_ago: i64) {
        let link = self
            .tracker
            .store()
            .find_link(&client.id, slug)
            .await
            .expect("link")
            .expect("link exists");
        let at = chrono::Utc::now().timestamp_millis() - days_ago * 24 * 3600 * 1000 - 60_000;
        self.tracker
            .store()
            .insert_click(&Click {
                id: new_id("clk"),
                link_id: link.id,
                client_id: client.id.clone(),
                at,
                visitor_id: Some(new_id("vis")),
                referrer: Some("https://www.youtube.com/".into()),
                landing_url: None,
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0".into()),
                ip_hash: None,
                bot: false,
            })
            .await
            .expect("click");
    }

    pub async fn conversion_by_key(&self, key: &str) -> Conversion {
        self.tracker
            .store()
            .list_conversions(&ConversionFilter {
                purchase_key: Some(key.into()),
                ..Default::default()
            })
            .await
            .expect("conversions")
            .into_iter()
            .next()
            .expect("conversion")
    }
}
