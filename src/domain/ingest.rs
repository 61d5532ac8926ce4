//! The ingest pipeline (SPEC 2.3): commit the raw delivery, then verify,
//! resolve the client, and turn its facts into a conversion.
//!
//! Invariant: nothing here answers "accepted" unless `insert_event` returned,
//! i.e. the raw body is durably committed.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::storage::{StoreError, StoreResult, UnitEnd};
use crate::stripe::event::{self, Envelope, EventFacts, PaymentFacts, PaymentSource};

use super::client::{suspect_client, verify_delivery, Verdict};
use super::model::*;
use super::{DomainError, DomainResult, Tracker};

/// Where a delivery arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /webhooks/stripe`
    Shared,
    /// `POST /webhooks/stripe/{client_id}`
    Client(String),
}

impl Endpoint {
    fn path(&self) -> String {
        match self {
            Self::Shared => "/webhooks/stripe".into(),
            Self::Client(id) => format!("/webhooks/stripe/{id}"),
        }
    }
}

/// One delivery as the HTTP edge received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint: Endpoint,
    pub signature: Option<String>,
    /// Header names and values worth keeping (never cookies or auth).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: Millis,
}

/// What the edge answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored and verified (200). `duplicate`: it was stored before.
    Accepted {
        event_id: i64,
        duplicate: bool,
        /// The event's `type`, as the body says.
        event_type: Option<String>,
    },
    /// Stored, not verified (400 with the reason, so that Stripe retries).
    Unverified {
        event_id: i64,
        reason: UnverifiedReason,
        /// The `type` the body claims (not signed: a label, never a fact).
        event_type: Option<String>,
    },
    /// Stored, but the body is not a Stripe event (400 `invalid_payload`).
    InvalidPayload { event_id: i64, message: String },
    /// Stored, but the per-client URL names no client (404).
    UnknownEndpoint {
        event_id: i64,
        event_type: Option<String>,
    },
}

impl IngestOutcome {
    /// The event's `type` as its body gives it, when it is a Stripe event.
    pub fn event_type(&self) -> Option<&str> {
        match self {
            Self::Accepted { event_type, .. }
            | Self::Unverified { event_type, .. }
            | Self::UnknownEndpoint { event_type, .. } => event_type.as_deref(),
            Self::InvalidPayload { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store could not commit: answer 503 so that Stripe retries.
    #[error("the event could not be stored: {0}")]
    NotStored(StoreError),
}

fn headers_json(headers: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// `scope/account:event id`. Stripe keys an event by its account (Connect)
/// and id, and delivers it to the endpoints of whoever it belongs to; the
/// scope is the client that received it (the per-client URL, else the client
/// whose secret verified it), so that one client's delivery can never stand
/// in for another client's genuine event with the same id. An unverified
/// delivery to the shared URL belongs to nobody yet: its scope is empty, and
/// a verified delivery of the same event claims it (`stored_twin`).
pub(crate) fn dedup_key(scope: Option<&str>, env: &Envelope) -> String {
    format!(
        "{}/{}:{}",
        scope.unwrap_or(""),
        env.account.as_deref().unwrap_or(""),
        env.id
    )
}

impl Tracker {
    /// Stores a delivery durably, then processes it. See SPEC 2.3.
    pub async fn ingest(&self, delivery: Delivery) -> Result<IngestOutcome, IngestError> {
        let parsed = event::parse_envelope(&delivery.body);
        let endpoint_client = match &delivery.endpoint {
            Endpoint::Shared => None,
            Endpoint::Client(id) => Some(id.clone()),
        };
        let account = parsed
            .as_ref()
            .ok()
            .and_then(|(env, _)| env.account.as_deref());
        let list = || async {
            self.store
                .list_client_secrets()
                .await
                .map_err(IngestError::NotStored)
        };
        let mut clients = list().await?;
        let (mut known_endpoint, mut verdict) = self
            .check_signature(&delivery, endpoint_client.as_deref(), account, &clients)
            .await;
        let secrets_may_lag = !known_endpoint
            || matches!(
                verdict,
                Verdict::Unverified(UnverifiedReason::NoSecret | UnverifiedReason::Mismatch)
            );
        if secrets_may_lag {
            // The store may answer from a cache a moment behind the CLI
            // (SPEC 4: a running server uses an added client or secret at
            // once): ask the database before calling the delivery unknown
            // or unverified.
            self.store.forget_cached_clients();
            clients = list().await?;
            (known_endpoint, verdict) = self
                .check_signature(&delivery, endpoint_client.as_deref(), account, &clients)
                .await;
        }
        let (verification, reason, verified_by) = match &verdict {
            Verdict::Verified { client_id } => {
                (Verification::Verified, None, Some(client_id.clone()))
            }
            Verdict::Unverified(r) => (Verification::Unverified, Some(*r), None),
        };
        let envelope = parsed.as_ref().ok().map(|(env, _)| env);
        let processing = match (&parsed, known_endpoint) {
            (Err(_), _) => Processing::Invalid,
            (Ok(_), false) => Processing::Failed,
            (Ok(_), true) => Processing::Pending,
        };
        let scope = endpoint_client.as_deref().or(verified_by.as_deref());
        let mut headers = delivery.headers;
        let mut body = delivery.body;
        if verified_by.is_none() {
            let budget_scope = endpoint_client
                .as_deref()
                .filter(|_| known_endpoint)
                .unwrap_or("");
            if !self
                .unverified_budget
                .admit(budget_scope, body.len(), std::time::Instant::now())
            {
                let (kept, note) = self.unverified_budget.truncate(&body);
                tracing::warn!(endpoint = %delivery.endpoint.path(), %note, "unverified body over its URL's budget: kept truncated");
                metrics::counter!("salestrack_unverified_bodies_truncated_total").increment(1);
                headers.push((TRUNCATED_HEADER.to_string(), note));
                body = kept;
            }
        }
        let new_event = NewEvent {
            dedup_key: envelope.map(|e| dedup_key(scope, e)),
            stripe_event_id: envelope.map(|e| e.id.clone()),
            event_type: envelope.map(|e| e.event_type.clone()),
            account: envelope.and_then(|e| e.account.clone()),
            livemode: envelope.map(|e| e.livemode),
            api_version: envelope.and_then(|e| e.api_version.clone()),
            endpoint: delivery.endpoint.path(),
            endpoint_client_id: endpoint_client.clone(),
            source: EventSource::Push,
            received_at: delivery.received_at,
            headers: headers_json(&headers),
            body,
            verification,
            verification_reason: reason,
            client_id: verified_by.clone(),
            client_method: verified_by.as_ref().map(|_| ClientMethod::WebhookSecret),
            processing,
        };
        if let (Endpoint::Shared, Some(envelope)) = (&delivery.endpoint, envelope) {
            if let Some(existing) = self.stored_twin(envelope, &verdict, &clients).await? {
                return self.ingest_duplicate(existing, &verdict, &new_event).await;
            }
        }
        let event_type = new_event.event_type.clone();
        let (stripe_event, api_version) = (
            new_event.stripe_event_id.clone(),
            new_event.api_version.clone(),
        );
        // What processing the event needs is read now, beside other
        // deliveries; the batch only writes.
        let (after, invalid) = match parsed {
            Err(e) => (AfterInsert::Nothing, Some(e.to_string())),
            Ok(_) if !known_endpoint => {
                (AfterInsert::Fail("the webhook URL names no client"), None)
            }
            Ok((envelope, value)) => {
                let after = match event::extract(&envelope, &value) {
                    Err(e) => AfterInsert::Record(Err(DomainError::invalid(e.to_string()))),
                    Ok(EventFacts::Ignored) => AfterInsert::Record(Ok(Processed {
                        client: None,
                        processing: Processing::Ignored,
                    })),
                    Ok(facts) => AfterInsert::Process(Box::new(Pending {
                        envelope,
                        facts,
                        clients,
                        verified_by: verified_by.clone(),
                    })),
                };
                (after, None)
            }
        };
        let event_id = match self.ingest_batched(new_event, after).await {
            Err(e) => return Err(IngestError::NotStored(e)),
            Ok(Landed::Duplicate(existing, new_event)) => {
                return self.ingest_duplicate(*existing, &verdict, &new_event).await
            }
            Ok(Landed::New(id)) => id,
        };
        // From here on the delivery is durable (and processed, or marked
        // failed for the sweep): nothing below can lose it.
        tracing::info!(
            event_id,
            stripe_event = stripe_event.as_deref().unwrap_or("-"),
            event_type = event_type.as_deref().unwrap_or("-"),
            api_version = api_version.as_deref().unwrap_or("-"),
            verified = verified_by.is_some(),
            "webhook event stored"
        );
        Ok(match (invalid, known_endpoint, reason) {
            (Some(message), _, _) => IngestOutcome::InvalidPayload { event_id, message },
            (None, false, _) => IngestOutcome::UnknownEndpoint {
                event_id,
                event_type,
            },
            (None, true, None) => IngestOutcome::Accepted {
                event_id,
                duplicate: false,
                event_type,
            },
            (None, true, Some(reason)) => IngestOutcome::Unverified {
                event_id,
                reason,
                event_type,
            },
        })
    }

    /// Whether the per-client URL names a client, and the delivery's
    /// signature checked against its candidates (SPEC 2.4, 2.5 method 1):
    /// that client alone on its URL; on the shared URL every client, those
    /// the event's `account` names first, so that a genuine delivery
    /// verifies at the first try. The HMAC of a large body against many
    /// secrets is CPU a stranger can ask for: past `OFF_WORKER_HMAC_BYTES`
    /// it runs on the blocking pool, never on an async worker.
    async fn check_signature(
        &self,
        delivery: &Delivery,
        endpoint_client: Option<&str>,
        account: Option<&str>,
        clients: &Arc<[ClientSecrets]>,
    ) -> (bool, Verdict) {
        let known_endpoint =
            endpoint_client.is_none_or(|id| clients.iter().any(|c| c.client.id == id));
        let candidates: Vec<ClientSecrets> = match endpoint_client {
            Some(id) => clients
                .iter()
                .filter(|c| c.client.id == id)
                .cloned()
                .collect(),
            None => {
                let named = |c: &&ClientSecrets| {
                    account.is_some_and(|a| c.client.stripe_account.as_deref() == Some(a))
                };
                let (first, rest): (Vec<&ClientSecrets>, Vec<&ClientSecrets>) =
                    clients.iter().partition(named);
                first.into_iter().chain(rest).cloned().collect()
            }
        };
        let secrets: usize = candidates.iter().map(|c| c.secrets.len()).sum();
        let now_s = delivery.received_at.div_euclid(1000);
        let tolerance = self.config.signature_tolerance_s;
        let verdict = if delivery.body.len().saturating_mul(secrets) > OFF_WORKER_HMAC_BYTES {
            let body = delivery.body.clone();
            let header = delivery.signature.clone();
            tokio::task::spawn_blocking(move || {
                verify_delivery(&body, header.as_deref(), &candidates, now_s, tolerance)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "signature check stopped; the delivery is kept unverified");
                Verdict::Unverified(UnverifiedReason::Mismatch)
            })
        } else {
            verify_delivery(
                &delivery.body,
                delivery.signature.as_deref(),
                &candidates,
                now_s,
                tolerance,
            )
        };
        (known_endpoint, verdict)
    }

    /// The same event stored under the other key a shared-URL delivery can
    /// have: a verified delivery claims the unverified one kept without a
    /// scope (and upgrades it); an unverified one is only a replay of the
    /// event its suspected client (layer 1) has stored verified.
    async fn stored_twin(
        &self,
        envelope: &Envelope,
        verdict: &Verdict,
        clients: &[ClientSecrets],
    ) -> Result<Option<StoredEvent>, IngestError> {
        let (key, wanted) = match verdict {
            Verdict::Verified { .. } => (dedup_key(None, envelope), Verification::Unverified),
            Verdict::Unverified(_) => {
                let Some((suspect, _)) = suspect_client(clients, envelope.account.as_deref(), None)
                else {
                    return Ok(None);
                };
                (dedup_key(Some(&suspect), envelope), Verification::Verified)
            }
        };
        let found = self
            .store
            .find_event_by_dedup_key(&key)
            .await
            .map_err(IngestError::NotStored)?;
        Ok(found.filter(|e| e.verification == wanted))
    }

    async fn ingest_duplicate(
        &self,
        existing: StoredEvent,
        verdict: &Verdict,
        delivery: &NewEvent,
    ) -> Result<IngestOutcome, IngestError> {
        let event_id = existing.id;
        if existing.verification == Verification::Verified {
            let _ = self.store.record_delivery(event_id).await;
            return Ok(IngestOutcome::Accepted {
                event_id,
                duplicate: true,
                event_type: delivery.event_type.clone(),
            });
        }
        match verdict {
            Verdict::Verified { client_id } => {
                // A later delivery verifies (the secret was fixed): upgrade.
                let won = self
                    .store
                    .mark_event_verified(
                        event_id,
                        client_id,
                        ClientMethod::WebhookSecret,
                        Some(&delivery.headers),
                        Some(&delivery.body),
                    )
                    .await
                    .map_err(IngestError::NotStored)?;
                let _ = self.store.record_delivery(event_id).await;
                if won {
                    tracing::info!(event_id, "stored event upgraded to verified");
                    if let Ok((envelope, value)) = event::parse_envelope(&delivery.body) {
                        self.process_logged(
                            event_id,
                            &envelope,
                            &value,
                            Some(client_id),
                            EventSource::Push,
                        )
                        .await;
                        let suspect = existing.client_id.as_deref();
                        if let Err(e) = self
                            .release_suspect(suspect, client_id, &envelope, &value)
                            .await
                        {
                            tracing::warn!(event_id, error = %e, "could not fold the suspected client's conversion");
                        }
                    }
                }
                Ok(IngestOutcome::Accepted {
                    event_id,
                    duplicate: !won,
                    event_type: delivery.event_type.clone(),
                })
            }
            Verdict::Unverified(reason) => {
                let _ = self.store.record_delivery(event_id).await;
                let _ = self
                    .store
                    .set_event_unverified_reason(event_id, *reason)
                    .await;
                Ok(IngestOutcome::Unverified {
                    event_id,
                    reason: *reason,
                    event_type: delivery.event_type.clone(),
                })
            }
        }
    }

    /// Processes and records the result; a failure marks the event failed
    /// (the sweep retries it) and never propagates to the acknowledgement.
    pub(crate) async fn process_logged(
        &self,
        event_id: i64,
        envelope: &Envelope,
        value: &serde_json::Value,
        verified_by: Option<&str>,
        source: EventSource,
    ) {
        let result = self
            .process(event_id, envelope, value, verified_by, source, false)
            .await;
        self.record_processing(event_id, result).await;
    }

    async fn record_processing(&self, event_id: i64, result: DomainResult<Processed>) {
        let (client, processing, error) = match &result {
            Ok(Processed { client, processing }) => (client.clone(), *processing, None),
            Err(e) => {
                tracing::warn!(event_id, error = %e, "processing failed; the sweep will retry");
                metrics::counter!("salestrack_event_processing_failures_total").increment(1);
                (None, Processing::Failed, Some(e.to_string()))
            }
        };
        let client_ref = client.as_ref().map(|(id, m)| (id.as_str(), *m));
        if let Err(e) = self
            .store
            .set_event_processing(event_id, client_ref, processing, error.as_deref())
            .await
        {
            tracing::error!(event_id, error = %e, "could not record the processing result");
        }
    }

    /// Stores a delivery together with the others waiting (group ingest)
    /// and processes it: the first caller to find no batch running takes
    /// every delivery queued and, under the purchase lock, in one unit of
    /// work, inserts their raw events, then processes each new one in a
    /// savepoint of its own (so that one event's failure undoes only its
    /// own writes and is recorded on it), commits, lets go of its locks,
    /// syncs the disk, and only then answers each caller. One commit and
    /// one fsync serve the whole batch, and the next batch runs while this
    /// one syncs.
    async fn ingest_batched(&self, event: NewEvent, after: AfterInsert) -> StoreResult<Landed> {
        let (done, mut finished) = oneshot::channel();
        self.batch.push(Queued { event, after, done });
        loop {
            tokio::select! {
                biased;
                landed = &mut finished => return Self::landed(landed),
                leader = self.batch.leader.lock() => {
                    #[cfg(test)]
                    self.batch.turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let jobs = self.batch.take();
                    if jobs.is_empty() {
                        // This delivery was queued before the lock was
                        // ours, so another caller's batch holds it: wait for
                        // that answer alone. Taking the lock again and again
                        // meanwhile would spin through every waiter while
                        // the batch syncs.
                        drop(leader);
                        return Self::landed(finished.await);
                    }
                    self.run_batch(jobs, leader).await;
                }
            }
        }
    }

    fn landed(
        answer: Result<StoreResult<Landed>, oneshot::error::RecvError>,
    ) -> StoreResult<Landed> {
        answer.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the batch that held this delivery stopped before it was stored".into(),
            ))
        })
    }

    async fn run_batch(&self, jobs: Vec<Queued>, leader: tokio::sync::MutexGuard<'_, ()>) {
        let count = jobs.len();
        let mut events = Vec::with_capacity(count);
        let mut afters = Vec::with_capacity(count);
        let mut dones = Vec::with_capacity(count);
        for q in jobs {
            events.push(q.event);
            afters.push(q.after);
            dones.push(q.done);
        }
        let purchases = self.purchase_lock.lock().await;
        let mut inserted = Vec::new();
        let unit = self
            .store
            .unit(Box::pin(async {
                inserted = self.store.insert_events(&events).await;
                for (row, after) in inserted.iter().zip(afters) {
                    if let Ok(InsertEvent::Inserted(event_id)) = row {
                        if let Err(e) = self.after_insert(*event_id, after).await {
                            // The store cannot serve: the rest stay pending
                            // for the sweep (they are stored).
                            tracing::warn!(error = %e, "store unavailable; the rest of the batch stays pending");
                            break;
                        }
                    }
                }
                UnitEnd::CommitUnsynced
            }))
            .await;
        drop(purchases);
        drop(leader);
        let committed = match unit {
            Ok(()) => self.store.sync().await,
            Err(e) => Err(e),
        };
        if let Err(e) = &committed {
            tracing::error!(events = count, error = %e, "a batch of deliveries could not be stored; answering 503");
        }
        let mut rows = inserted.into_iter();
        for (event, done) in events.into_iter().zip(dones) {
            let row = rows
                .next()
                .unwrap_or_else(|| Err(StoreError::Unavailable("the batch did not run".into())));
            let landed = match (&committed, row) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok(InsertEvent::Inserted(id))) => Ok(Landed::New(id)),
                (Ok(()), Ok(InsertEvent::Duplicate(existing))) => {
                    Ok(Landed::Duplicate(existing, Box::new(event)))
                }
            };
            let _ = done.send(landed);
        }
    }

    /// What a newly inserted delivery needs, inside the batch's unit. An
    /// error says the store could not serve.
    async fn after_insert(&self, event_id: i64, after: AfterInsert) -> Result<(), StoreError> {
        match after {
            AfterInsert::Nothing => Ok(()),
            AfterInsert::Fail(reason) => {
                let marked = self
                    .store
                    .set_event_processing(event_id, None, Processing::Failed, Some(reason))
                    .await;
                match marked {
                    Err(e @ StoreError::Unavailable(_)) => Err(e),
                    Err(e) => {
                        tracing::error!(event_id, error = %e, "could not mark the event failed");
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                }
            }
            AfterInsert::Record(result) => {
                self.record_processing(event_id, result).await;
                Ok(())
            }
            AfterInsert::Process(pending) => self.process_in_unit(event_id, *pending).await,
        }
    }

    /// Processes one event of a batch in a unit of its own (a savepoint),
    /// then records the result. The caller holds `purchase_lock`. An error
    /// says the store could not serve.
    async fn process_in_unit(&self, event_id: i64, p: Pending) -> Result<(), StoreError> {
        let Pending {
            envelope,
            facts,
            clients,
            verified_by,
        } = p;
        let mut result = None;
        let unit = self
            .store
            .unit(Box::pin(async {
                let input = FactsIn {
                    event_id,
                    envelope: &envelope,
                    facts,
                    clients,
                    verified_by: verified_by.as_deref(),
                    source: EventSource::Push,
                };
                let r = self.process_facts(input, true).await;
                let end = match r {
                    Ok(_) => UnitEnd::Commit,
                    Err(_) => UnitEnd::Rollback,
                };
                result = Some(r);
                end
            }))
            .await;
        let result = match (unit, result) {
            (Ok(()), Some(r)) => r,
            (Err(e), _) => Err(e.into()),
            (Ok(()), None) => Err(DomainError::invalid("processing did not run")),
        };
        let unavailable = match &result {
            Err(DomainError::Store(StoreError::Unavailable(e))) => {
                Some(StoreError::Unavailable(e.clone()))
            }
            _ => None,
        };
        self.record_processing(event_id, result).await;
        unavailable.map_or(Ok(()), Err)
    }

    /// `held`: the caller holds `purchase_lock` already.
    async fn process(
        &self,
        event_id: i64,
        envelope: &Envelope,
        value: &serde_json::Value,
        verified_by: Option<&str>,
        source: EventSource,
        held: bool,
    ) -> DomainResult<Processed> {
        let facts =
            event::extract(envelope, value).map_err(|e| DomainError::invalid(e.to_string()))?;
        if facts == EventFacts::Ignored {
            return Ok(Processed {
                client: None,
                processing: Processing::Ignored,
            });
        }
        let clients = self.store.list_client_secrets().await?;
        let input = FactsIn {
            event_id,
            envelope,
            facts,
            clients,
            verified_by,
            source,
        };
        self.process_facts(input, held).await
    }

    /// Resolves the client of an event's facts and applies them.
    /// `held`: the caller holds `purchase_lock` already.
    async fn process_facts(&self, input: FactsIn<'_>, held: bool) -> DomainResult<Processed> {
        let FactsIn {
            event_id,
            envelope,
            facts,
            clients,
            verified_by,
            source,
        } = input;
        let email = match &facts {
            EventFacts::Payment(p) => p.email.clone(),
            _ => None,
        };
        let resolved = match (verified_by, source) {
            (Some(id), EventSource::Fetch) => Some((id.to_string(), ClientMethod::Api)),
            (Some(id), EventSource::Push) => Some((id.to_string(), ClientMethod::WebhookSecret)),
            (None, _) => {
                // On a per-client URL only that client can ever verify the
                // event (SPEC 2.5): suspect no other, or a later verified
                // delivery would leave a conversion behind for the wrong one.
                let endpoint_client = match self.store.get_event(event_id).await? {
                    Some(e) => e.endpoint_client_id,
                    None => None,
                };
                let candidates: Vec<ClientSecrets> = clients
                    .iter()
                    .filter(|c| endpoint_client.as_ref().is_none_or(|id| &c.client.id == id))
                    .cloned()
                    .collect();
                let candidates = if candidates.is_empty() {
                    &clients[..]
                } else {
                    &candidates[..]
                };
                suspect_client(candidates, envelope.account.as_deref(), email.as_deref())
            }
        };
        let Some((client_id, method)) = resolved else {
            return Ok(Processed {
                client: None,
                processing: Processing::NoClient,
            });
        };
        let client = clients
            .iter()
            .find(|c| c.client.id == client_id)
            .map(|c| c.client.clone())
            .ok_or_else(|| DomainError::NotFound {
                what: "client",
                id: client_id.clone(),
            })?;
        let ctx = FactContext {
            event_id,
            verified: verified_by.is_some(),
            livemode: envelope.livemode,
            client_method: method,
        };
        let _guard = match held {
            true => None,
            false => Some(self.purchase_lock.lock().await),
        };
        // Other instances on the same database take turns too.
        let _held = self.store.lock_purchases(&[&client.id]).await?;
        self.apply_facts(&client, &ctx, facts).await?;
        Ok(Processed {
            client: Some((client_id, method)),
            processing: Processing::Processed,
        })
    }

    async fn apply_facts(
        &self,
        client: &Client,
        ctx: &FactContext,
        facts: EventFacts,
    ) -> DomainResult<()> {
        if !ctx.verified {
            return self.quarantine_facts(client, ctx, facts).await;
        }
        let actor = "ingest";
        let Some(reference) = purchase_ref(&facts) else {
            return Ok(());
        };
        let key = self.resolve(client, &reference).await?;
        match facts {
            EventFacts::Ignored => Ok(()),
            EventFacts::InvoicePaymentLink { payment_intent, .. } => {
                self.link_alias(client, &payment_intent, &key).await?;
                self.recompute(client, &key, actor).await?;
                Ok(())
            }
            EventFacts::Payment(p) => {
                self.save_fact(client, ctx, &key, FactBody::Payment(p.clone()))
                    .await?;
                let object_id = Some(p.object_id.clone());
                let mut linked: Vec<&String> = Vec::with_capacity(4);
                for alias in [
                    &p.payment_intent,
                    &p.charge,
                    &p.checkout_session,
                    &object_id,
                ]
                .into_iter()
                .flatten()
                {
                    // A checkout session names itself twice (object and session).
                    if !linked.contains(&alias) {
                        linked.push(alias);
                        self.link_alias(client, alias, &key).await?;
                    }
                }
                let conversion = self.recompute(client, &key, actor).await?;
                if let Some(c) = conversion.filter(|c| c.verified && c.link_id.is_some()) {
                    self.fix_customer_orphans(client, &c).await?;
                }
                Ok(())
            }
            EventFacts::Refund(r) => {
                let charge = r.charge.clone();
                self.save_fact(client, ctx, &key, FactBody::Refund(r))
                    .await?;
                self.link_alias(client, &charge, &key).await?;
                self.recompute(client, &key, actor).await?;
                Ok(())
            }
            EventFacts::Dispute(d) => {
                let charge = d.charge.clone();
                self.save_fact(client, ctx, &key, FactBody::Dispute(d))
                    .await?;
                self.link_alias(client, &charge, &key).await?;
                self.recompute(client, &key, actor).await?;
                Ok(())
            }
        }
    }

    /// The facts of an unverified event (SPEC 2.3 step 5), which anybody
    /// could have forged, in quarantine: kept under the purchase key their
    /// ids resolve to today, and recorded as an unverified conversion when
    /// that purchase has no verified one. They never link or move an alias
    /// (an invented invoice could otherwise re-key a verified sale), never
    /// fold or merge conversions, never touch a verified conversion and
    /// never fix another sale. Once the event verifies, it is processed
    /// again in full, exactly as if it had arrived signed.
    async fn quarantine_facts(
        &self,
        client: &Client,
        ctx: &FactContext,
        facts: EventFacts,
    ) -> DomainResult<()> {
        let Some(reference) = purchase_ref(&facts) else {
            return Ok(());
        };
        let body = match facts {
            EventFacts::Payment(p) => FactBody::Payment(p),
            EventFacts::Refund(r) => FactBody::Refund(r),
            EventFacts::Dispute(d) => FactBody::Dispute(d),
            // A link between ids is all an `invoice_payment.paid` says: it
            // waits, untouched, for its verification.
            EventFacts::InvoicePaymentLink { .. } | EventFacts::Ignored => return Ok(()),
        };
        let key = self.resolve(client, &reference).await?;
        self.save_fact(client, ctx, &key, body).await?;
        let existing = self.store.get_conversion_by_key(&client.id, &key).await?;
        if existing.is_some_and(|c| c.verified) {
            // Derivation ignores unverified facts of a verified sale; not
            // even its attribution is run again.
            return Ok(());
        }
        self.recompute(client, &key, "ingest").await?;
        Ok(())
    }

    async fn save_fact(
        &self,
        client: &Client,
        ctx: &FactContext,
        key: &str,
        body: FactBody,
    ) -> DomainResult<()> {
        self.store
            .upsert_fact(&SaleFact {
                event_id: ctx.event_id,
                client_id: client.id.clone(),
                purchase_key: key.to_string(),
                verified: ctx.verified,
                livemode: ctx.livemode,
                client_method: ctx.client_method,
                body,
            })
            .await?;
        Ok(())
    }

    /// The purchase key an object id currently belongs to.
    async fn resolve(&self, client: &Client, id: &str) -> DomainResult<String> {
        Ok(self
            .store
            .resolve_alias(&client.id, id)
            .await?
            .unwrap_or_else(|| id.to_string()))
    }

    /// Records that `alias` belongs to purchase `key`; what was kept under
    /// `alias` moves to `key`, and a conversion made under `alias` (a payment
    /// intent that turned out to pay an invoice) is folded into `key`'s.
    /// `key` is resolved already (`resolve`): aliases are kept one level
    /// deep (`set_alias` re-points those that named `alias`), and linking
    /// another id to `key` never makes `key` itself an alias.
    async fn link_alias(&self, client: &Client, alias: &str, key: &str) -> DomainResult<()> {
        if alias == key
            || self
                .store
                .resolve_alias(&client.id, alias)
                .await?
                .as_deref()
                == Some(key)
        {
            return Ok(());
        }
        self.store.set_alias(&client.id, alias, key).await?;
        let Some(moved) = self.store.get_conversion_by_key(&client.id, alias).await? else {
            return Ok(());
        };
        match self.store.get_conversion_by_key(&client.id, key).await? {
            // Only an unverified conversion was kept under `key` (its event
            // has just verified, or is still in quarantine): the verified
            // one is the sale, and it stays, re-keyed, as if the events had
            // all arrived signed.
            Some(target) if moved.verified && !target.verified => {
                self.store.merge_conversion(&target.id, &moved.id).await?;
                self.store.rekey_conversion(&moved.id, key).await?;
            }
            Some(target) => {
                self.store.merge_conversion(&moved.id, &target.id).await?;
                // Keep a stronger attribution the folded one had, when
                // that one was verified (a forged hint never decides).
                if let (Some(link), Some(m), true) = (&moved.link_id, moved.method, moved.verified)
                {
                    let weaker = target.method.is_none_or(|t| m.rank() < t.rank());
                    if weaker {
                        let mut updated = target.clone();
                        updated.link_id = Some(link.clone());
                        updated.click_id = moved.click_id.clone();
                        updated.method = Some(m);
                        updated.trace = moved.trace.clone();
                        self.store.save_conversion(&updated).await?;
                    }
                }
            }
            None => self.store.rekey_conversion(&moved.id, key).await?,
        }
        Ok(())
    }

    /// A sale with a link fixes other orphans of the same customer (for
    /// example a renewal that arrived before the first invoice).
    async fn fix_customer_orphans(
        &self,
        client: &Client,
        attributed: &Conversion,
    ) -> DomainResult<()> {
        let Some(customer) = attributed.customer.clone() else {
            return Ok(());
        };
        // Those bought at or after it: the index of orphans by customer and
        // time (migration 0005) reads only them.
        let orphans = self
            .store
            .list_conversions(&ConversionFilter {
                client_id: Some(client.id.clone()),
                customer: Some(customer),
                orphans_only: true,
                from: Some(attributed.purchased_at),
                ..Default::default()
            })
            .await?;
        for orphan in orphans {
            self.recompute(client, &orphan.purchase_key, "ingest")
                .await?;
        }
        Ok(())
    }

    /// Processes a stored event again (sweep, `events reprocess`).
    pub async fn reprocess_event(&self, event: &StoredEvent) -> DomainResult<Processing> {
        let Ok((envelope, value)) = event::parse_envelope(&event.body) else {
            return Ok(Processing::Invalid);
        };
        let verified_by = match event.verification {
            Verification::Verified => event.client_id.clone(),
            Verification::Unverified => None,
        };
        // A pushed event that reconciliation verified keeps client method `api`.
        let source = match event.client_method {
            Some(ClientMethod::Api) => EventSource::Fetch,
            _ => event.source,
        };
        self.process_logged(event.id, &envelope, &value, verified_by.as_deref(), source)
            .await;
        Ok(self
            .store
            .get_event(event.id)
            .await?
            .map_or(Processing::Failed, |e| e.processing))
    }

    /// A verified delivery named another client than the one layer 1 had
    /// suspected: the suspect's conversion, now left without any fact, is
    /// folded into the verified one, so that one payment stays one conversion.
    async fn release_suspect(
        &self,
        suspect: Option<&str>,
        verified: &str,
        envelope: &Envelope,
        value: &serde_json::Value,
    ) -> DomainResult<()> {
        let Some(suspect) = suspect.filter(|s| *s != verified) else {
            return Ok(());
        };
        let id = match event::extract(envelope, value) {
            Ok(
                facts @ (EventFacts::Payment(_) | EventFacts::Refund(_) | EventFacts::Dispute(_)),
            ) => match purchase_ref(&facts) {
                Some(id) => id,
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let _guard = self.purchase_lock.lock().await;
        let _held = self.store.lock_purchases(&[suspect, verified]).await?;
        let old_key = self
            .store
            .resolve_alias(suspect, &id)
            .await?
            .unwrap_or_else(|| id.clone());
        let Some(left) = self.store.get_conversion_by_key(suspect, &old_key).await? else {
            return Ok(());
        };
        if !self
            .store
            .facts_for_purchase(suspect, &old_key)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let new_key = self.store.resolve_alias(verified, &id).await?.unwrap_or(id);
        if let Some(target) = self.store.get_conversion_by_key(verified, &new_key).await? {
            self.store.merge_conversion(&left.id, &target.id).await?;
        }
        Ok(())
    }

    /// Verifies a stored unverified event again with the current secrets,
    /// judging its timestamp against the stored receipt time. Returns whether
    /// it is verified now.
    pub async fn reverify_event(&self, event: &StoredEvent) -> DomainResult<bool> {
        if event.verification == Verification::Verified {
            return Ok(true);
        }
        let clients = self.store.list_client_secrets().await?;
        let candidates: Arc<[ClientSecrets]> = match &event.endpoint_client_id {
            Some(id) => clients
                .iter()
                .filter(|c| &c.client.id == id)
                .cloned()
                .collect(),
            None => clients,
        };
        let signature = stored_signature(&event.headers);
        let verdict = verify_delivery(
            &event.body,
            signature.as_deref(),
            &candidates,
            event.received_at.div_euclid(1000),
            self.config.signature_tolerance_s,
        );
        match verdict {
            Verdict::Verified { client_id } => {
                let suspect = match self.store.get_event(event.id).await? {
                    Some(current) => current.client_id,
                    None => event.client_id.clone(),
                };
                let won = self
                    .store
                    .mark_event_verified(
                        event.id,
                        &client_id,
                        ClientMethod::WebhookSecret,
                        None,
                        None,
                    )
                    .await?;
                if won {
                    if let Some(updated) = self.store.get_event(event.id).await? {
                        self.reprocess_event(&updated).await?;
                        if let Ok((envelope, value)) = event::parse_envelope(&updated.body) {
                            self.release_suspect(suspect.as_deref(), &client_id, &envelope, &value)
                                .await?;
                        }
                    }
                }
                Ok(true)
            }
            Verdict::Unverified(reason) => {
                self.store
                    .set_event_unverified_reason(event.id, reason)
                    .await?;
                Ok(false)
            }
        }
    }
}

/// The endpoint recorded for events fetched from Stripe's API.
pub const FETCH_ENDPOINT: &str = "GET /v1/events";

/// What became of one event fetched from Stripe's API (SPEC 2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Not stored before: now stored (`source = fetch`) and processed.
    New { event_id: i64 },
    /// Already stored and verified, by a webhook or an earlier run.
    AlreadyStored { event_id: i64 },
    /// Stored before from a delivery whose signature failed: Stripe's API
    /// vouches for it now, so it is verified (with the API's copy of the
    /// body, in case the delivery was forged) and processed.
    VerifiedNow { event_id: i64 },
}

impl Tracker {
    /// Stores an event fetched from Stripe's API with `client`'s own key,
    /// then processes it through the same pipeline as a webhook. It is keyed
    /// like a webhook (`account:event id`), so an event that also arrived by
    /// webhook is kept once, and it counts as verified with client method
    /// `api`. Like `ingest`, nothing is reported unless the event is stored.
    pub async fn ingest_fetched(
        &self,
        client: &Client,
        body: Vec<u8>,
    ) -> Result<FetchOutcome, IngestError> {
        let parsed = event::parse_envelope(&body);
        let envelope = parsed.as_ref().ok().map(|(env, _)| env);
        let new_event = NewEvent {
            dedup_key: envelope.map(|e| dedup_key(Some(&client.id), e)),
            stripe_event_id: envelope.map(|e| e.id.clone()),
            event_type: envelope.map(|e| e.event_type.clone()),
            account: envelope.and_then(|e| e.account.clone()),
            livemode: envelope.map(|e| e.livemode),
            api_version: envelope.and_then(|e| e.api_version.clone()),
            endpoint: FETCH_ENDPOINT.to_string(),
            endpoint_client_id: Some(client.id.clone()),
            source: EventSource::Fetch,
            received_at: now_millis(),
            headers: "{}".to_string(),
            body: body.clone(),
            verification: Verification::Verified,
            verification_reason: None,
            client_id: Some(client.id.clone()),
            client_method: Some(ClientMethod::Api),
            processing: if parsed.is_ok() {
                Processing::Pending
            } else {
                Processing::Invalid
            },
        };
        // A delivery of it to the shared URL that did not verify is kept
        // without a scope: Stripe's API vouches for it now.
        let twin = match envelope {
            Some(env) => self
                .store
                .find_event_by_dedup_key(&dedup_key(None, env))
                .await
                .map_err(IngestError::NotStored)?
                .filter(|e| e.verification == Verification::Unverified),
            None => None,
        };
        let inserted = match twin {
            Some(existing) => InsertEvent::Duplicate(Box::new(existing)),
            None => self
                .store
                .insert_event(&new_event)
                .await
                .map_err(IngestError::NotStored)?,
        };
        // The client layer 1 suspected for a stored unverified delivery.
        let mut suspect = None;
        let outcome = match inserted {
            InsertEvent::Inserted(event_id) => FetchOutcome::New { event_id },
            InsertEvent::Duplicate(existing) if existing.verification == Verification::Verified => {
                return Ok(FetchOutcome::AlreadyStored {
                    event_id: existing.id,
                })
            }
            InsertEvent::Duplicate(existing) => {
                let won = self
                    .store
                    .mark_event_verified(
                        existing.id,
                        &client.id,
                        ClientMethod::Api,
                        None,
                        Some(&body),
                    )
                    .await
                    .map_err(IngestError::NotStored)?;
                if !won {
                    return Ok(FetchOutcome::AlreadyStored {
                        event_id: existing.id,
                    });
                }
                suspect = existing.client_id.clone();
                FetchOutcome::VerifiedNow {
                    event_id: existing.id,
                }
            }
        };
        let (FetchOutcome::New { event_id }
        | FetchOutcome::VerifiedNow { event_id }
        | FetchOutcome::AlreadyStored { event_id }) = outcome;
        tracing::info!(
            event_id,
            stripe_event = envelope.map(|e| e.id.as_str()).unwrap_or("-"),
            event_type = envelope.map(|e| e.event_type.as_str()).unwrap_or("-"),
            client = %client.id,
            ?outcome,
            "fetched event stored"
        );
        if let Ok((envelope, value)) = &parsed {
            self.process_logged(
                event_id,
                envelope,
                value,
                Some(&client.id),
                EventSource::Fetch,
            )
            .await;
            if let Err(e) = self
                .release_suspect(suspect.as_deref(), &client.id, envelope, value)
                .await
            {
                tracing::warn!(event_id, error = %e, "could not fold the suspected client's conversion");
            }
        }
        Ok(outcome)
    }
}

/// The `Stripe-Signature` header kept with a stored event.
pub fn stored_signature(headers_json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(headers_json).ok()?;
    value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("stripe-signature"))
        .and_then(|(_, v)| v.as_str().map(str::to_string))
}

struct Processed {
    client: Option<(String, ClientMethod)>,
    processing: Processing,
}

/// A delivery's facts, read, waiting to be processed once it is stored.
pub(crate) struct Pending {
    envelope: Envelope,
    facts: EventFacts,
    /// The clients and secrets its verification used.
    clients: Arc<[ClientSecrets]>,
    verified_by: Option<String>,
}

/// What a delivery needs once its raw event is inserted.
enum AfterInsert {
    /// Nothing (a body that is not a Stripe event: stored `invalid`).
    Nothing,
    /// Mark it failed, with this reason.
    Fail(&'static str),
    /// Record this result (an ignored type, facts that could not be read).
    Record(DomainResult<Processed>),
    /// Process its facts.
    Process(Box<Pending>),
}

/// Where a delivery landed in the event log.
enum Landed {
    New(i64),
    /// Its dedup key was stored before; the delivery comes back to its
    /// caller.
    Duplicate(Box<StoredEvent>, Box<NewEvent>),
}

/// What `process_facts` works on.
struct FactsIn<'a> {
    event_id: i64,
    envelope: &'a Envelope,
    facts: EventFacts,
    clients: Arc<[ClientSecrets]>,
    verified_by: Option<&'a str>,
    source: EventSource,
}

struct Queued {
    event: NewEvent,
    after: AfterInsert,
    done: oneshot::Sender<StoreResult<Landed>>,
}

/// Kept with an unverified body stored truncated: its length and SHA-256.
pub const TRUNCATED_HEADER: &str = "x-salestrack-truncated";

/// Bytes of HMAC input (body size × secrets tried) past which a delivery's
/// signature is checked on the blocking pool: a Stripe event is a few KiB
/// and one client's secrets verify it inline in microseconds.
const OFF_WORKER_HMAC_BYTES: usize = 256 * 1024;

/// Most deliveries one batch stores and processes.
const MAX_BATCH: usize = 256;

/// Deliveries waiting for group ingest (`Tracker::ingest_batched`).
#[derive(Default)]
pub(crate) struct Batch {
    queue: std::sync::Mutex<Vec<Queued>>,
    /// Held by the caller that processes the current batch.
    leader: tokio::sync::Mutex<()>,
    /// Times a caller took `leader`, for the tests.
    #[cfg(test)]
    turns: std::sync::atomic::AtomicU64,
}

impl Batch {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        // The queue is only pushed to and drained: a panic elsewhere cannot
        // leave it half-changed.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, job: Queued) {
        self.queue().push(job);
    }

    /// Takes up to `MAX_BATCH` jobs, oldest first.
    fn take(&self) -> Vec<Queued> {
        let mut queue = self.queue();
        let n = queue.len().min(MAX_BATCH);
        queue.drain(..n).collect()
    }
}

struct FactContext {
    event_id: i64,
    verified: bool,
    livemode: bool,
    client_method: ClientMethod,
}

/// The id through which an event's facts reach their purchase, before
/// aliases are applied: a payment's `initial_key`, a refund's invoice, else
/// its payment intent, else its charge; a dispute's payment intent, else its
/// charge; the invoice an `invoice_payment.paid` links.
fn purchase_ref(facts: &EventFacts) -> Option<String> {
    match facts {
        EventFacts::Payment(p) => Some(initial_key(p)),
        EventFacts::Refund(r) => Some(
            r.invoice
                .clone()
                .or_else(|| r.payment_intent.clone())
                .unwrap_or_else(|| r.charge.clone()),
        ),
        EventFacts::Dispute(d) => {
            Some(d.payment_intent.clone().unwrap_or_else(|| d.charge.clone()))
        }
        EventFacts::InvoicePaymentLink { invoice, .. } => Some(invoice.clone()),
        EventFacts::Ignored => None,
    }
}

/// The purchase key a payment event names before aliases are applied: the
/// invoice for invoice payments, else the payment intent (SPEC 2.6).
fn initial_key(p: &PaymentFacts) -> String {
    if p.source == PaymentSource::Invoice {
        return p.object_id.clone();
    }
    p.invoice
        .clone()
        .or_else(|| p.payment_intent.clone())
        .or_else(|| p.charge.clone())
        .or_else(|| p.checkout_session.clone())
        .unwrap_or_else(|| p.object_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::Ordering;

    use crate::domain::DomainConfig;

    fn delivery(n: usize) -> Delivery {
        let body = format!(
            r#"{{"id":"evt_batch_{n}","object":"event","type":"customer.created","livemode":false,"created":1700000000,"data":{{"object":{{"id":"cus_{n}","object":"customer"}}}}}}"#
        );
        Delivery {
            endpoint: Endpoint::Shared,
            signature: None,
            headers: Vec::new(),
            body: body.into_bytes(),
            received_at: 1_700_000_000_000,
        }
    }

    /// A large body on the shared URL, signed by the newest of many
    /// clients, is checked off the async workers (past
    /// `OFF_WORKER_HMAC_BYTES`) and still verified as that client's; the
    /// client its `account` names is tried first.
    #[tokio::test]
    async fn a_large_shared_url_delivery_is_verified_off_the_workers_account_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("cpu.db").display());
        let store = crate::storage::connect(&url).await.expect("store");
        let tracker = Tracker::new(store, DomainConfig::default())
            .await
            .expect("tracker");
        let mut last = None;
        for n in 0..40 {
            let client = tracker
                .add_client(crate::domain::client::ClientIn {
                    name: format!("client {n}"),
                    stripe_account: Some(format!("acct_cpu{n:02}")),
                    webhook_secret: Some(format!("whsec_cpu_test_secret_{n:04}")),
                    ..Default::default()
                })
                .await
                .expect("client");
            last = Some(client);
        }
        let last = last.expect("clients");
        let padding = "x".repeat(600 * 1024);
        let body = format!(
            r#"{{"id":"evt_cpu_1","object":"event","type":"customer.created","account":"acct_cpu39","livemode":false,"created":1700000000,"data":{{"object":{{"id":"cus_1","object":"customer","description":"{padding}"}}}}}}"#
        )
        .into_bytes();
        assert!(body.len() * 40 > OFF_WORKER_HMAC_BYTES);
        let now = crate::domain::model::now_millis();
        let header =
            crate::stripe::signature::header_for(&body, "whsec_cpu_test_secret_0039", now / 1000);
        let outcome = tracker
            .ingest(Delivery {
                endpoint: Endpoint::Shared,
                signature: Some(header),
                headers: Vec::new(),
                body,
                received_at: now,
            })
            .await
            .expect("stored");
        assert!(
            matches!(outcome, IngestOutcome::Accepted { .. }),
            "{outcome:?}"
        );
        let events = tracker
            .store()
            .list_events(&EventFilter::default())
            .await
            .expect("events");
        assert_eq!(events[0].client_id.as_deref(), Some(last.id.as_str()));
    }

    /// A caller whose delivery sits in a batch that another caller runs
    /// waits for that batch's answer; it does not keep taking the leader's
    /// lock (which spun through every waiter while a batch synced).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_in_a_running_batch_wait_without_taking_turns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("batch.db").display());
        let store = crate::storage::connect(&url).await.expect("store");
        let tracker = Arc::new(
            Tracker::new(store, DomainConfig::default())
                .await
                .expect("tracker"),
        );
        let deliveries = 64;
        let tasks: Vec<_> = (0..deliveries)
            .map(|n| {
                let tracker = tracker.clone();
                tokio::spawn(async move { tracker.ingest(delivery(n)).await })
            })
            .collect();
        let mut stored = 0;
        for t in tasks {
            let outcome = t.await.expect("task").expect("stored");
            assert!(
                matches!(outcome, IngestOutcome::Unverified { .. }),
                "{outcome:?}"
            );
            stored += 1;
        }
        assert_eq!(stored, deliveries);
        let turns = tracker.batch.turns.load(Ordering::Relaxed);
        assert!(
            turns <= deliveries as u64,
            "{turns} turns at the leader's lock for {deliveries} deliveries"
        );
    }
}
