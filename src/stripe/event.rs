//! Stripe events: the envelope, and the sale facts each handled type carries,
//! read from every API version's shape (before and after `2025-03-31.basil`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The part of every Stripe event that does not depend on its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub event_type: String,
    /// Connect: the connected account the event belongs to.
    pub account: Option<String>,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not a Stripe event: {0}")]
    NotAnEvent(&'static str),
    #[error("event {event_type} lacks {field}")]
    MissingField {
        event_type: String,
        field: &'static str,
    },
    #[error("event {event_type} has an invalid {field}: {reason}")]
    InvalidField {
        event_type: String,
        field: &'static str,
        reason: String,
    },
}

/// Which Stripe object a payment fact was read from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PaymentSource {
    Invoice,
    CheckoutSession,
    PaymentIntent,
    Charge,
}

/// Attribution hints a purchase carries, merged from the object, its
/// metadata, its subscription details, its line items and its discounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hints {
    pub client_reference_id: Option<String>,
    /// metadata `salestrack_click_id`.
    pub click_id: Option<String>,
    /// metadata `link_slug`, else metadata `ref`.
    pub link_slug: Option<String>,
    /// Promotion code ids (`promo_…`) and, where present, their codes.
    pub promotion_codes: Vec<String>,
}

/// What a payment event says about a sale.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaymentFacts {
    pub source: PaymentSource,
    /// Id of the object (`in_…`, `cs_…`, `pi_…`, `ch_…`).
    pub object_id: String,
    /// Whether this event by itself counts a sale (SPEC 2.6). A payment
    /// intent or charge that later turns out to belong to an invoice stops
    /// counting; the domain decides that.
    pub counts: bool,
    pub invoice: Option<String>,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    pub checkout_session: Option<String>,
    pub subscription: Option<String>,
    pub customer: Option<String>,
    pub email: Option<String>,
    /// Minor units. Never negative.
    pub amount: i64,
    /// Lowercase three-letter code.
    pub currency: String,
    /// Unix seconds.
    pub purchased_at: i64,
    pub billing_reason: Option<String>,
    pub hints: Hints,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefundFacts {
    pub charge: String,
    pub payment_intent: Option<String>,
    pub invoice: Option<String>,
    /// Cumulative amount refunded on the charge, minor units.
    pub amount_refunded: i64,
    pub currency: String,
    /// Unix seconds (the event's `created`).
    pub at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    Open,
    Won,
    Lost,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisputeFacts {
    pub dispute: String,
    pub charge: String,
    pub payment_intent: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: DisputeStatus,
    /// Unix seconds (the event's `created`).
    pub at: i64,
}

/// What salestrack makes of one event.
// One value per event, short-lived: boxing the payment would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFacts {
    Payment(PaymentFacts),
    /// `invoice_payment.paid`: links an invoice to its payment intent.
    InvoicePaymentLink {
        invoice: String,
        payment_intent: String,
    },
    Refund(RefundFacts),
    Dispute(DisputeFacts),
    /// A type salestrack does not act on, or a payment event that carries no
    /// sale (for example a checkout session still unpaid).
    Ignored,
}

/// Amounts above this (10^15 minor units) are taken as corrupt input.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// Parses the raw body. `Err(NotJson)` for invalid JSON or non-UTF-8 bytes;
/// `Err(NotAnEvent(..))` unless it is a JSON object with a non-empty string
/// `id` and `type`. Whether `data.object` fits the type is `extract`'s job.
pub fn parse_envelope(body: &[u8]) -> Result<(Envelope, Value), EventError> {
    let text =
        std::str::from_utf8(body).map_err(|e| EventError::NotJson(format!("not UTF-8: {e}")))?;
    let event: Value =
        serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    let Value::Object(fields) = &event else {
        return Err(EventError::NotAnEvent("not a JSON object"));
    };
    let id = non_empty_str(fields.get("id")).ok_or(EventError::NotAnEvent("no string `id`"))?;
    let event_type =
        non_empty_str(fields.get("type")).ok_or(EventError::NotAnEvent("no string `type`"))?;
    let envelope = Envelope {
        id,
        event_type,
        account: non_empty_str(fields.get("account")),
        livemode: fields
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        api_version: non_empty_str(fields.get("api_version")),
        created: fields.get("created").and_then(Value::as_i64).unwrap_or(0),
    };
    Ok((envelope, event))
}

/// The sale facts of a handled event type; `EventFacts::Ignored` for others.
pub fn extract(env: &Envelope, event: &Value) -> Result<EventFacts, EventError> {
    let handled = matches!(
        env.event_type.as_str(),
        "invoice.paid"
            | "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "payment_intent.succeeded"
            | "charge.succeeded"
            | "invoice_payment.paid"
            | "charge.refunded"
            | "charge.dispute.created"
            | "charge.dispute.updated"
            | "charge.dispute.closed"
            | "charge.dispute.funds_withdrawn"
    );
    if !handled {
        return Ok(EventFacts::Ignored);
    }
    let obj = Obj {
        map: event
            .pointer("/data/object")
            .and_then(Value::as_object)
            .ok_or_else(|| missing(env, "data.object"))?,
        env,
    };
    match env.event_type.as_str() {
        "invoice.paid" => invoice_paid(env, obj),
        "checkout.session.completed" => checkout_session(env, event, obj, false),
        "checkout.session.async_payment_succeeded" => checkout_session(env, event, obj, true),
        "payment_intent.succeeded" => payment_intent(env, event, obj),
        "charge.succeeded" => charge(env, event, obj),
        "invoice_payment.paid" => invoice_payment(obj),
        "charge.refunded" => refund(env, event, obj),
        _ => dispute(env, event, obj),
    }
}

/// A Stripe object with the event it came in, for error messages.
#[derive(Clone, Copy)]
struct Obj<'a> {
    map: &'a Map<String, Value>,
    env: &'a Envelope,
}

impl<'a> Obj<'a> {
    fn child(&self, key: &str) -> Option<Obj<'a>> {
        self.map
            .get(key)
            .and_then(Value::as_object)
            .map(|map| Obj { map, env: self.env })
    }

    fn items(&self, key: &str) -> impl Iterator<Item = &'a Value> {
        self.map
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    /// A non-empty string field.
    fn text(&self, key: &str) -> Option<String> {
        non_empty_str(self.map.get(key))
    }

    /// The object's own `id`.
    fn own_id(&self) -> Result<String, EventError> {
        self.text("id").ok_or_else(|| missing(self.env, "id"))
    }

    /// A reference to another object: its id as a string, or the object
    /// expanded with its `id`. Absent or null is `None`.
    fn id_ref(&self, field: &'static str) -> Result<Option<String>, EventError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(id @ Value::String(_)) => Ok(non_empty_str(Some(id))),
            Some(Value::Object(expanded)) => match non_empty_str(expanded.get("id")) {
                Some(id) => Ok(Some(id)),
                None => Err(invalid(self.env, field, "expanded object without an id")),
            },
            Some(_) => Err(invalid(
                self.env,
                field,
                "neither an id nor an expanded object",
            )),
        }
    }

    /// An amount in minor units: an integer from 0 to 10^15. Absent or null
    /// is `None`.
    fn amount(&self, field: &'static str) -> Result<Option<i64>, EventError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(a) if (0..=MAX_AMOUNT).contains(&a) => Ok(Some(a)),
                Some(_) => Err(invalid(self.env, field, format!("{n} is out of range"))),
                None if n.is_u64() => Err(invalid(self.env, field, format!("{n} is out of range"))),
                None => Err(invalid(self.env, field, format!("{n} is not an integer"))),
            },
            Some(_) => Err(invalid(self.env, field, "not a number")),
        }
    }

    fn required_amount(&self, field: &'static str) -> Result<i64, EventError> {
        self.amount(field)?.ok_or_else(|| missing(self.env, field))
    }

    /// The lowercase three-letter currency code.
    fn currency(&self) -> Result<String, EventError> {
        match self.map.get("currency") {
            None | Some(Value::Null) => Err(missing(self.env, "currency")),
            Some(Value::String(c))
                if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                Ok(c.to_ascii_lowercase())
            }
            Some(other) => Err(invalid(
                self.env,
                "currency",
                format!("{other} is not a three-letter code"),
            )),
        }
    }

    /// Unix seconds, when the field is an integer.
    fn time(&self, key: &str) -> Option<i64> {
        self.map.get(key).and_then(Value::as_i64)
    }
}

/// A string field as salestrack keeps it: without control characters (a
/// NUL cannot be stored in PostgreSQL's `text`; both backends keep the same
/// value) and not empty.
fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(clean)
        .filter(|s| !s.is_empty())
}

/// `text` without control characters (C0 with NUL, DEL, C1). Stripe's own
/// values never hold one; metadata and customer details are typed by
/// buyers and merchants.
fn clean(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars().filter(|c| !c.is_control()).collect()
    } else {
        text.to_owned()
    }
}

fn missing(env: &Envelope, field: &'static str) -> EventError {
    EventError::MissingField {
        event_type: env.event_type.clone(),
        field,
    }
}

fn invalid(env: &Envelope, field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::InvalidField {
        event_type: env.event_type.clone(),
        field,
        reason: reason.into(),
    }
}

/// The event's own `created`: for payment intents, charges, sessions,
/// refunds and disputes it is when the thing happened, while the object's
/// `created` is when it started.
fn event_time(env: &Envelope, event: &Value) -> Result<i64, EventError> {
    event
        .get("created")
        .and_then(Value::as_i64)
        .map(|_| env.created)
        .ok_or_else(|| missing(env, "created"))
}

impl Hints {
    /// Takes `salestrack_click_id` and `link_slug` (else `ref`) from a
    /// metadata object where this merge has none yet.
    fn add_metadata(&mut self, metadata: Option<&Value>) {
        let Some(metadata) = metadata.and_then(Value::as_object) else {
            return;
        };
        let value = |key: &str| {
            metadata
                .get(key)
                .and_then(Value::as_str)
                .map(|v| clean(v).trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if self.click_id.is_none() {
            self.click_id = value("salestrack_click_id");
        }
        if self.link_slug.is_none() {
            self.link_slug = value("link_slug").or_else(|| value("ref"));
        }
    }

    /// Adds a promotion code given as its id (`promo_…`) or expanded (its id,
    /// then its customer-facing `code`).
    fn add_promotion_code(&mut self, promotion_code: Option<&Value>) {
        let (id, code) = match promotion_code {
            Some(Value::String(id)) => (Some(id.as_str()), None),
            Some(Value::Object(p)) => (
                p.get("id").and_then(Value::as_str),
                p.get("code").and_then(Value::as_str),
            ),
            _ => return,
        };
        for value in [id, code].into_iter().flatten() {
            let value = clean(value);
            let value = value.trim();
            if !value.is_empty() && !self.promotion_codes.iter().any(|c| c == value) {
                self.promotion_codes.push(value.to_owned());
            }
        }
    }

    /// Adds the promotion code of a discount, when the discount is expanded.
    fn add_discount(&mut self, discount: Option<&Value>) {
        if let Some(discount) = discount.and_then(Value::as_object) {
            self.add_promotion_code(discount.get("promotion_code"));
        }
    }
}

fn invoice_paid(env: &Envelope, obj: Obj<'_>) -> Result<EventFacts, EventError> {
    let id = obj.own_id()?;
    let amount = obj.required_amount("amount_paid")?;
    let currency = obj.currency()?;
    let purchased_at = obj
        .child("status_transitions")
        .and_then(|s| s.time("paid_at"))
        .or_else(|| obj.time("created"))
        .unwrap_or(env.created);
    // Basil moved the subscription under `parent.subscription_details`.
    let parent_sub = obj
        .child("parent")
        .and_then(|p| p.child("subscription_details"));
    let subscription = match obj.id_ref("subscription")? {
        Some(sub) => Some(sub),
        None => match parent_sub {
            Some(details) => details.id_ref("subscription")?,
            None => None,
        },
    };
    let payment_intent = match obj.id_ref("payment_intent")? {
        Some(pi) => Some(pi),
        None => basil_invoice_payment_intent(obj)?,
    };

    let mut hints = Hints::default();
    hints.add_metadata(obj.map.get("metadata"));
    if let Some(details) = obj.child("subscription_details") {
        hints.add_metadata(details.map.get("metadata"));
    }
    if let Some(details) = parent_sub {
        hints.add_metadata(details.map.get("metadata"));
    }
    if let Some(lines) = obj.child("lines") {
        for line in lines.items("data") {
            hints.add_metadata(line.get("metadata"));
        }
    }
    hints.add_discount(obj.map.get("discount"));
    for discount in obj.items("discounts") {
        hints.add_discount(Some(discount));
    }
    for amount in obj.items("total_discount_amounts") {
        hints.add_discount(amount.get("discount"));
    }

    Ok(EventFacts::Payment(PaymentFacts {
        source: PaymentSource::Invoice,
        object_id: id.clone(),
        // SPEC 2.9: a zero invoice (a trial's first) still makes a
        // conversion, of kind `trial_start`, kept out of revenue by the domain.
        counts: true,
        invoice: Some(id),
        payment_intent,
        charge: obj.id_ref("charge")?,
        checkout_session: None,
        subscription,
        customer: obj.id_ref("customer")?,
        email: obj.text("customer_email"),
        amount,
        currency,
        purchased_at,
        billing_reason: obj.text("billing_reason"),
        hints,
    }))
}

/// Basil invoices no longer name their payment intent; when the `payments`
/// list was expanded, its paid entry does.
fn basil_invoice_payment_intent(obj: Obj<'_>) -> Result<Option<String>, EventError> {
    let Some(payments) = obj.child("payments") else {
        return Ok(None);
    };
    for item in payments.items("data") {
        let Some(map) = item.as_object() else {
            continue;
        };
        let payment = Obj { map, env: obj.env };
        if payment.text("status").as_deref() != Some("paid") {
            continue;
        }
        if let Some(inner) = payment.child("payment") {
            if let Some(pi) = inner.id_ref("payment_intent")? {
                return Ok(Some(pi));
            }
        }
    }
    Ok(None)
}

fn checkout_session(
    env: &Envelope,
    event: &Value,
    obj: Obj<'_>,
    async_succeeded: bool,
) -> Result<EventFacts, EventError> {
    let counts = match obj.text("mode").as_deref() {
        Some("payment") => {
            if !async_succeeded && obj.text("payment_status").as_deref() != Some("paid") {
                // An asynchronous payment (bank debit…) still pending:
                // `async_payment_succeeded` will carry the sale.
                return Ok(EventFacts::Ignored);
            }
            true
        }
        // The session's invoice carries the sale; this only adds hints.
        Some("subscription") => false,
        // `setup` sessions take no payment.
        _ => return Ok(EventFacts::Ignored),
    };
    let id = obj.own_id()?;
    let amount = obj.required_amount("amount_total")?;
    let currency = obj.currency()?;
    let purchased_at = event_time(env, event)?;
    let email = obj
        .child("customer_details")
        .and_then(|d| d.text("email"))
        .or_else(|| obj.text("customer_email"));

    let mut hints = Hints {
        client_reference_id: obj
            .text("client_reference_id")
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty()),
        ..Hints::default()
    };
    hints.add_metadata(obj.map.get("metadata"));
    for discount in obj.items("discounts") {
        hints.add_promotion_code(discount.get("promotion_code"));
    }
    if let Some(breakdown) = obj
        .child("total_details")
        .and_then(|t| t.child("breakdown"))
    {
        for amount in breakdown.items("discounts") {
            hints.add_discount(amount.get("discount"));
        }
    }

    Ok(EventFacts::Payment(PaymentFacts {
        source: PaymentSource::CheckoutSession,
        object_id: id.clone(),
        counts,
        invoice: obj.id_ref("invoice")?,
        payment_intent: obj.id_ref("payment_intent")?,
        charge: None,
        checkout_session: Some(id),
        subscription: obj.id_ref("subscription")?,
        customer: obj.id_ref("customer")?,
        email,
        amount,
        currency,
        purchased_at,
        billing_reason: None,
        hints,
    }))
}

fn payment_intent(env: &Envelope, event: &Value, obj: Obj<'_>) -> Result<EventFacts, EventError> {
    let id = obj.own_id()?;
    let amount = match obj.amount("amount_received")? {
        Some(amount) => amount,
        None => obj.required_amount("amount")?,
    };
    let currency = obj.currency()?;
    let purchased_at = event_time(env, event)?;
    // Before basil a payment intent names its invoice; from 2022-11-15 its
    // charge is `latest_charge`, before that the first of `charges`.
    let invoice = obj.id_ref("invoice")?;
    let charge = match obj.id_ref("latest_charge")? {
        Some(charge) => Some(charge),
        None => obj
            .child("charges")
            .and_then(|c| c.items("data").next())
            .and_then(|c| non_empty_str(c.get("id"))),
    };
    let mut hints = Hints::default();
    hints.add_metadata(obj.map.get("metadata"));

    Ok(EventFacts::Payment(PaymentFacts {
        source: PaymentSource::PaymentIntent,
        object_id: id.clone(),
        counts: invoice.is_none(),
        invoice,
        payment_intent: Some(id),
        charge,
        checkout_session: None,
        subscription: None,
        customer: obj.id_ref("customer")?,
        email: obj.text("receipt_email"),
        amount,
        currency,
        purchased_at,
        billing_reason: None,
        hints,
    }))
}

fn charge(env: &Envelope, event: &Value, obj: Obj<'_>) -> Result<EventFacts, EventError> {
    let id = obj.own_id()?;
    let amount = match obj.amount("amount_captured")? {
        Some(captured) if captured > 0 => captured,
        _ => obj.required_amount("amount")?,
    };
    let currency = obj.currency()?;
    let purchased_at = event_time(env, event)?;
    let invoice = obj.id_ref("invoice")?;
    let email = obj
        .child("billing_details")
        .and_then(|b| b.text("email"))
        .or_else(|| obj.text("receipt_email"));
    let mut hints = Hints::default();
    hints.add_metadata(obj.map.get("metadata"));

    Ok(EventFacts::Payment(PaymentFacts {
        source: PaymentSource::Charge,
        object_id: id.clone(),
        counts: invoice.is_none(),
        invoice,
        payment_intent: obj.id_ref("payment_intent")?,
        charge: Some(id),
        checkout_session: None,
        subscription: None,
        customer: obj.id_ref("customer")?,
        email,
        amount,
        currency,
        purchased_at,
        billing_reason: None,
        hints,
    }))
}

fn invoice_payment(obj: Obj<'_>) -> Result<EventFacts, EventError> {
    let Some(payment) = obj.child("payment") else {
        return Err(missing(obj.env, "payment"));
    };
    if payment.text("type").as_deref() != Some("payment_intent") {
        // Paid out of band or by a charge without an intent: nothing to link.
        return Ok(EventFacts::Ignored);
    }
    let invoice = obj
        .id_ref("invoice")?
        .ok_or_else(|| missing(obj.env, "invoice"))?;
    let payment_intent = payment
        .id_ref("payment_intent")?
        .ok_or_else(|| missing(obj.env, "payment.payment_intent"))?;
    Ok(EventFacts::InvoicePaymentLink {
        invoice,
        payment_intent,
    })
}

fn refund(env: &Envelope, event: &Value, obj: Obj<'_>) -> Result<EventFacts, EventError> {
    Ok(EventFacts::Refund(RefundFacts {
        charge: obj.own_id()?,
        payment_intent: obj.id_ref("payment_intent")?,
        invoice: obj.id_ref("invoice")?,
        amount_refunded: obj.required_amount("amount_refunded")?,
        currency: obj.currency()?,
        at: event_time(env, event)?,
    }))
}

fn dispute(env: &Envelope, event: &Value, obj: Obj<'_>) -> Result<EventFacts, EventError> {
    let status = match obj.text("status").as_deref() {
        Some("won") => DisputeStatus::Won,
        Some("lost") => DisputeStatus::Lost,
        _ => DisputeStatus::Open,
    };
    Ok(EventFacts::Dispute(DisputeFacts {
        dispute: obj.own_id()?,
        charge: obj
            .id_ref("charge")?
            .ok_or_else(|| missing(env, "charge"))?,
        payment_intent: obj.id_ref("payment_intent")?,
        amount: obj.required_amount("amount")?,
        currency: obj.currency()?,
        status,
        at: event_time(env, event)?,
    }))
}

#[cfg(test)]
mod tests;
