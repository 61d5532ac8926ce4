//! Property tests: the `Stripe-Signature` parser and verifier, the event
//! parser, and the public click and webhook endpoints over real HTTP never
//! panic on arbitrary input and answer it with a clear client error (or a
//! success where the input is valid), never a 5xx.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use salestrack::domain::client::{ClientIn, LinkIn};
use salestrack::domain::{DomainConfig, Tracker};
use salestrack::stripe::event::{extract, parse_envelope};
use salestrack::stripe::signature::{header_for, verify, SignatureError, SignatureHeader};
use serde_json::{json, Value};

const SECRET: &str = "whsec_proptest_secret_0123456789";

/// Event types the parser acts on, and one it ignores.
const TYPES: &[&str] = &[
    "invoice.paid",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "payment_intent.succeeded",
    "charge.succeeded",
    "invoice_payment.paid",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "customer.created",
];

/// Field names Stripe objects use, so that arbitrary objects reach deep
/// into the extraction code instead of failing at the first lookup.
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "id", "object", "amount", "amount_paid", "amount_total", "amount_received",
    "amount_refunded", "currency", "customer", "customer_email", "customer_details",
    "email", "payment_intent", "charge", "invoice", "latest_charge", "subscription",
    "subscription_details", "parent", "metadata", "lines", "data", "mode",
    "payment_status", "status", "billing_reason", "client_reference_id", "created",
    "status_transitions", "paid_at", "discounts", "promotion_code", "link_slug", "ref",
    "salestrack_click_id", "refunds", "reason", "payment", "payments", "livemode",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(KEYS).prop_map(|k| json!(k)),
        "(in|pi|ch|cs|cus|sub|promo)_[a-z0-9]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn signature_header_parser_never_panics(header in any::<String>()) {
        if let Ok(parsed) = SignatureHeader::parse(&header) {
            prop_assert!(!parsed.v1.is_empty());
        }
    }

    #[test]
    fn signature_header_parser_never_panics_on_header_shaped_text(
        header in "(t|v1|v0|x)?=?[-+0-9a-f ]{0,24}(,(t|v1|v0)=[-+0-9a-f]{0,70}){0,4},?",
    ) {
        let _ = SignatureHeader::parse(&header);
    }

    #[test]
    fn verifier_never_panics(
        payload in prop::collection::vec(any::<u8>(), 0..512),
        header in prop::option::of(any::<String>()),
        secret in any::<String>(),
        now in any::<i64>(),
        tolerance in any::<i64>(),
    ) {
        let _ = verify(&payload, header.as_deref(), &secret, now, tolerance);
    }

    #[test]
    fn a_signed_payload_verifies_and_any_change_to_it_does_not(
        payload in prop::collection::vec(any::<u8>(), 1..512),
        t in 0i64..4_000_000_000,
        age in 0i64..300,
        flip in any::<prop::sample::Index>(),
    ) {
        let header = header_for(&payload, SECRET, t);
        prop_assert_eq!(verify(&payload, Some(&header), SECRET, t + age, 300), Ok(()));
        let mut changed = payload.clone();
        let i = flip.index(changed.len());
        changed[i] ^= 0x01;
        prop_assert_eq!(
            verify(&changed, Some(&header), SECRET, t + age, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn event_parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok((envelope, value)) = parse_envelope(&body) {
            let _ = extract(&envelope, &value);
        }
    }

    #[test]
    fn event_parser_never_panics_on_json(value in json_value()) {
        let body = serde_json::to_vec(&value).expect("serialize");
        if let Ok((envelope, value)) = parse_envelope(&body) {
            let _ = extract(&envelope, &value);
        }
    }

    #[test]
    fn extraction_never_panics_on_stripe_shaped_objects(
        event_type in prop::sample::select(TYPES),
        object in json_value(),
        account in prop::option::of("acct_[a-z0-9]{1,8}"),
        api_version in prop::option::of(prop::sample::select(&["2024-06-20", "2025-03-31.basil"][..])),
    ) {
        let event = json!({
            "id": "evt_prop", "object": "event", "type": event_type, "created": 1_700_000_000,
            "account": account, "api_version": api_version, "livemode": false,
            "data": {"object": object},
        });
        let body = serde_json::to_vec(&event).expect("serialize");
        let (envelope, value) = parse_envelope(&body).expect("an envelope");
        let _ = extract(&envelope, &value);
    }
}

// ---- over HTTP ------------------------------------------------------------

struct App {
    addr: SocketAddr,
    client_id: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// One real app for every case: a fresh SQLite file, a client with a
/// secret and a link `spring-sale`, served on 127.0.0.1.
fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (addr, client_id) = rt.block_on(async {
            let dir = Box::leak(Box::new(tempfile::tempdir().expect("temp dir")));
            let url = format!("sqlite://{}", dir.path().join("prop.db").display());
            let store = salestrack::storage::connect(&url).await.expect("store");
            let tracker = Tracker::new(store, DomainConfig::default())
                .await
                .expect("tracker");
            let client = tracker
                .add_client(ClientIn {
                    name: "Prop Shop".into(),
                    domain: Some("shop.example.com".into()),
                    webhook_secret: Some(SECRET.into()),
                    ..Default::default()
                })
                .await
                .expect("client");
            tracker
                .add_link(LinkIn {
                    client: client.id.clone(),
                    slug: "spring-sale".into(),
                    destination: "https://shop.example.com/p".into(),
                    label: None,
                    promo_codes: vec![],
                })
                .await
                .expect("link");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let cancel = tokio_util::sync::CancellationToken::new();
            tokio::spawn(salestrack::app::serve(
                Arc::new(tracker),
                listener,
                None,
                cancel,
            ));
            (addr, client.id)
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        App {
            addr,
            client_id,
            rt,
            http,
        }
    })
}

fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl App {
    fn get(&self, path: &str) -> u16 {
        let url = format!("http://{}{path}", self.addr);
        self.rt.block_on(async {
            self.http
                .get(url)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        })
    }

    fn post(&self, path: &str, body: Vec<u8>, headers: &[(&str, String)]) -> u16 {
        let url = format!("http://{}{path}", self.addr);
        self.rt.block_on(async {
            let mut req = self.http.post(url).body(body);
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            req.send().await.expect("request").status().as_u16()
        })
    }
}

fn header_safe() -> impl Strategy<Value = String> {
    "[ -~]{0,120}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn redirects_answer_any_slug_with_302_or_a_clear_4xx(slug in any::<String>(), client in any::<String>()) {
        let app = app();
        let status = app.get(&format!("/r/{}", encode_segment(&slug)));
        prop_assert!(status == 302 || (400..500).contains(&status), "/r/{slug:?} -> {status}");
        if slug == "spring-sale" {
            prop_assert_eq!(status, 302);
        }
        let status = app.get(&format!("/r/{}/{}", encode_segment(&client), encode_segment(&slug)));
        prop_assert!(status == 302 || (400..500).contains(&status), "/r/{client:?}/{slug:?} -> {status}");
    }

    #[test]
    fn the_click_beacon_answers_any_body_with_200_or_a_clear_4xx(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        slug in any::<String>(),
        origin in header_safe(),
    ) {
        let app = app();
        let status = app.post("/api/v1/track/click", body, &[("content-type", "application/json".into())]);
        prop_assert!((400..500).contains(&status), "beacon garbage -> {status}");
        let body = serde_json::to_vec(&json!({"ref": slug, "landing_url": origin, "visitor_id": slug})).unwrap();
        let status = app.post("/api/v1/track/click", body, &[("content-type", "application/json".into()), ("origin", origin)]);
        prop_assert!(status == 200 || (400..500).contains(&status), "beacon {slug:?} -> {status}");
    }

    #[test]
    fn webhooks_answer_any_body_and_signature_with_a_clear_4xx(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        signature in prop::option::of(header_safe()),
        per_client in any::<bool>(),
    ) {
        let app = app();
        let path = if per_client {
            format!("/webhooks/stripe/{}", app.client_id)
        } else {
            "/webhooks/stripe".to_string()
        };
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(sig) = signature {
            headers.push(("stripe-signature", sig));
        }
        let status = app.post(&path, body, &headers);
        prop_assert!((400..500).contains(&status), "webhook garbage -> {status}");
    }

    #[test]
    fn correctly_signed_webhooks_with_arbitrary_json_never_fail_on_the_server(
        event_type in prop::sample::select(TYPES),
        object in json_value(),
        id in "evt_[a-zA-Z0-9]{1,12}",
    ) {
        let app = app();
        let body = serde_json::to_vec(&json!({
            "id": id, "object": "event", "type": event_type, "created": 1_700_000_000,
            "livemode": false, "data": {"object": object},
        })).unwrap();
        let signature = header_for(&body, SECRET, chrono::Utc::now().timestamp());
        let status = app.post(
            &format!("/webhooks/stripe/{}", app.client_id),
            body,
            &[("content-type", "application/json".into()), ("stripe-signature", signature)],
        );
        // Stored and verified: 200 whatever processing made of it.
        prop_assert_eq!(status, 200);
    }

    #[test]
    fn signed_bodies_that_are_not_events_are_stored_and_refused_with_400(
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        prop_assume!(parse_envelope(&body).is_err());
        let app = app();
        let signature = header_for(&body, SECRET, chrono::Utc::now().timestamp());
        let status = app.post(
            &format!("/webhooks/stripe/{}", app.client_id),
            body,
            &[("content-type", "application/json".into()), ("stripe-signature", signature)],
        );
        prop_assert_eq!(status, 400);
    }
}
