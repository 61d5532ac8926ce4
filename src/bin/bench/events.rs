//! Signed Stripe deliveries for the benchmark: realistic bodies (the test
//! fixtures, with fresh ids and times), signed with a timestamp taken when
//! they are made, so that they are fresh for the run that sends them.

use bytes::Bytes;
use serde_json::{json, Value};

const CHECKOUT: &str =
    include_str!("../../../tests/fixtures/stripe/checkout_session_completed_payment.json");
const INVOICE: &str =
    include_str!("../../../tests/fixtures/stripe/invoice_paid_basil_subscription_create.json");

/// One delivery: the body and its `Stripe-Signature`.
#[derive(Clone)]
pub struct Signed {
    pub body: Bytes,
    pub signature: String,
}

/// How the purchases point at their link.
#[derive(Default)]
pub struct Mix {
    /// Slugs of the client's links (metadata `link_slug`).
    pub slugs: Vec<String>,
    /// Stored click ids (`client_reference_id`).
    pub click_ids: Vec<String>,
    /// Every purchase carries no hint at all (Auto-Fix material).
    pub no_hints: bool,
    /// Purchase time, Unix seconds; `None`: now.
    pub purchased_at: Option<PurchaseTime>,
}

/// Purchase time of the `i`-th event, Unix seconds.
pub type PurchaseTime = Box<dyn Fn(usize) -> i64 + Send + Sync>;

pub fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `count` distinct events, alternating `checkout.session.completed`
/// (one-time payment) and `invoice.paid` (subscription start). A third name
/// their link by slug, a third by a stored click id, a third nothing (the
/// click windows decide).
pub fn make(tag: &str, count: usize, mix: &Mix, secret: &str) -> Vec<Signed> {
    make_range(tag, 0, count, mix, secret)
}

/// Events `first .. first + count` of the series `make` starts.
pub fn make_range(tag: &str, first: usize, count: usize, mix: &Mix, secret: &str) -> Vec<Signed> {
    let checkout: Value = serde_json::from_str(CHECKOUT).expect("checkout fixture");
    let invoice: Value = serde_json::from_str(INVOICE).expect("invoice fixture");
    let now = now_s();
    (first..first + count)
        .map(|i| {
            let at = mix.purchased_at.as_ref().map_or(now, |f| f(i));
            let hint = if mix.no_hints {
                Hint::None
            } else {
                match i % 3 {
                    0 if !mix.slugs.is_empty() => Hint::Slug(&mix.slugs[i % mix.slugs.len()]),
                    1 if !mix.click_ids.is_empty() => {
                        Hint::Click(&mix.click_ids[(i / 3) % mix.click_ids.len()])
                    }
                    _ => Hint::None,
                }
            };
            let mut event = if i % 2 == 0 {
                checkout_event(&checkout, tag, i, at, &hint)
            } else {
                invoice_event(&invoice, tag, i, at, &hint)
            };
            event["id"] = json!(format!("evt_{tag}_{i}"));
            event["created"] = json!(at);
            let body = serde_json::to_vec_pretty(&event).expect("event json");
            let signature = salestrack::stripe::signature::header_for(&body, secret, now);
            Signed {
                body: Bytes::from(body),
                signature,
            }
        })
        .collect()
}

enum Hint<'a> {
    Slug(&'a str),
    Click(&'a str),
    None,
}

fn customer(tag: &str, i: usize) -> String {
    // One purchase in ten is by a returning customer.
    if i % 10 == 9 {
        format!("cus_{tag}_r{}", i % 97)
    } else {
        format!("cus_{tag}_{i}")
    }
}

fn checkout_event(template: &Value, tag: &str, i: usize, at: i64, hint: &Hint) -> Value {
    let mut e = template.clone();
    let o = &mut e["data"]["object"];
    o["id"] = json!(format!("cs_{tag}_{i}"));
    o["payment_intent"] = json!(format!("pi_{tag}_{i}"));
    o["customer"] = json!(customer(tag, i));
    o["customer_details"]["email"] = json!(format!("buyer{i}.{tag}@example.com"));
    o["created"] = json!(at);
    o["amount_total"] = json!(1000 + (i % 50) * 100);
    o["amount_subtotal"] = o["amount_total"].clone();
    match hint {
        Hint::Slug(s) => {
            o["client_reference_id"] = json!(s);
            o["metadata"] = json!({"campaign": "bench", "link_slug": s});
        }
        Hint::Click(c) => {
            o["client_reference_id"] = json!(c);
            o["metadata"] = json!({"campaign": "bench"});
        }
        Hint::None => {
            o["client_reference_id"] = Value::Null;
            o["metadata"] = json!({});
        }
    }
    e
}

fn invoice_event(template: &Value, tag: &str, i: usize, at: i64, hint: &Hint) -> Value {
    let mut e = template.clone();
    let o = &mut e["data"]["object"];
    let invoice = format!("in_{tag}_{i}");
    let subscription = format!("sub_{tag}_{i}");
    o["id"] = json!(invoice);
    o["customer"] = json!(customer(tag, i));
    o["customer_email"] = json!(format!("buyer{i}.{tag}@example.com"));
    o["created"] = json!(at);
    o["status_transitions"]["paid_at"] = json!(at);
    o["status_transitions"]["finalized_at"] = json!(at);
    o["parent"]["subscription_details"]["subscription"] = json!(subscription);
    let metadata = match hint {
        Hint::Slug(s) => json!({"link_slug": s}),
        Hint::Click(c) => json!({"salestrack_click_id": c}),
        Hint::None => json!({}),
    };
    o["parent"]["subscription_details"]["metadata"] = metadata.clone();
    if let Some(lines) = o["lines"]["data"].as_array_mut() {
        for line in lines {
            line["invoice"] = json!(invoice);
            line["subscription"] = json!(subscription);
            line["metadata"] = metadata.clone();
            line["parent"]["subscription_item_details"]["subscription"] = json!(subscription);
        }
    }
    e
}
