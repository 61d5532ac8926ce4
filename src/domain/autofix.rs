//! Layers 4–5: fix orphans (automatically and by hand) and retry failed
//! events. Each run reports what it did.

use serde::Serialize;

use super::model::*;
use super::{DomainError, DomainResult, Tracker};
use crate::storage::{StoreLock, UnitEnd};

/// What one Auto-Fix run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AutofixReport {
    pub fixed: usize,
    pub remaining: usize,
    /// For each orphan still without a link: why.
    pub still_orphan: Vec<OrphanReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OrphanReason {
    pub conversion_id: String,
    pub why: String,
}

/// What one retry of stored events did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RetryReport {
    pub retried: usize,
    pub processed: usize,
    pub still_failing: usize,
}

/// What a look at one orphan found: `None` when it is gone or no longer an
/// orphan, else its id and, when it would stay an orphan, the trace that
/// says why.
type Look = Option<(String, Option<Vec<TraceStep>>)>;

/// Orphans looked at before the fixable ones among them are recomputed.
const PREVIEW_SLICE: usize = 1024;

impl Tracker {
    /// Runs attribution again (with the broader search) over every orphan,
    /// or those of one client.
    pub async fn autofix(&self, client: Option<&str>) -> DomainResult<AutofixReport> {
        let client_id = match client {
            Some(c) => Some(self.find_client(c).await?.id),
            None => None,
        };
        let ids = self
            .store
            .orphan_ids(client_id.as_deref(), i64::MAX)
            .await?;
        let clients = self.store.list_clients().await?;
        let mut report = AutofixReport::default();
        // A read-only look first, without the lock: most orphans stay
        // orphans, and only those that could be linked now are recomputed
        // under the lock (which decides again), a slice at a time in one
        // unit of work. Looks run one after another: on two cores, parallel
        // looks were slower (measured: 35 µs an orphan alone, 48 with two
        // tasks on two reader connections), the store's reads being in-process
        // calls of a few microseconds that contend rather than wait.
        let mut looked = Vec::with_capacity(PREVIEW_SLICE);
        for slice in ids.chunks(PREVIEW_SLICE) {
            looked.clear();
            for id in slice {
                looked.push(self.preview_orphan(id.clone(), &clients).await?);
            }
            self.fix_looked(&mut looked, &clients, &mut report).await?;
        }
        tracing::info!(
            fixed = report.fixed,
            remaining = report.remaining,
            "auto-fix run"
        );
        Ok(report)
    }

    /// Recomputes, under the lock and in one unit of work, the orphans a
    /// look found fixable, and reports the others with their reason.
    async fn fix_looked(
        &self,
        looked: &mut Vec<Look>,
        clients: &[Client],
        report: &mut AutofixReport,
    ) -> DomainResult<()> {
        let mut fixable = Vec::new();
        for preview in looked.drain(..) {
            match preview {
                None => {}
                Some((id, Some(trace))) => {
                    report.remaining += 1;
                    report.still_orphan.push(OrphanReason {
                        conversion_id: id,
                        why: why_from_trace(&trace),
                    });
                }
                Some((id, None)) => fixable.push(id),
            }
        }
        if fixable.is_empty() {
            return Ok(());
        }
        let _guard = self.purchase_lock.lock().await;
        let mut failed = None;
        self.store
            .unit(Box::pin(async {
                for id in &fixable {
                    if let Err(e) = self.fix_one(id, clients, report).await {
                        failed = Some(e);
                        return UnitEnd::Rollback;
                    }
                }
                UnitEnd::Commit
            }))
            .await?;
        failed.map_or(Ok(()), Err)
    }

    /// Recomputes one orphan a look found fixable (the caller holds the
    /// lock): the recompute decides again.
    async fn fix_one(
        &self,
        id: &str,
        clients: &[Client],
        report: &mut AutofixReport,
    ) -> DomainResult<()> {
        let _held = self.lock_for_conversion(id).await?;
        let Some(orphan) = self.store.get_conversion(id).await? else {
            return Ok(());
        };
        if orphan.link_id.is_some() {
            // Fixed meanwhile (another instance, or a new event): not ours to count.
            return Ok(());
        }
        let Some(client) = clients.iter().find(|c| c.id == orphan.client_id) else {
            return Ok(());
        };
        let updated = self
            .recompute(client, &orphan.purchase_key, "autofix")
            .await?;
        match updated {
            Some(c) if c.link_id.is_some() => report.fixed += 1,
            Some(c) => {
                report.remaining += 1;
                report.still_orphan.push(OrphanReason {
                    conversion_id: c.id.clone(),
                    why: why_orphan(&c),
                });
            }
            None => {}
        }
        Ok(())
    }

    /// Sets a conversion's link by hand. A manual choice is never replaced
    /// automatically; the change goes into the history.
    pub async fn set_link_manually(
        &self,
        conversion_id: &str,
        link_id: &str,
        actor: &str,
    ) -> DomainResult<Conversion> {
        let _guard = self.purchase_lock.lock().await;
        let _held = self.lock_for_conversion(conversion_id).await?;
        let mut conversion = self
            .store
            .get_conversion(conversion_id)
            .await?
            .ok_or_else(|| DomainError::NotFound {
                what: "conversion",
                id: conversion_id.to_string(),
            })?;
        let link = self
            .store
            .get_link(link_id)
            .await?
            .ok_or_else(|| DomainError::NotFound {
                what: "link",
                id: link_id.to_string(),
            })?;
        if link.client_id != conversion.client_id {
            return Err(DomainError::invalid("the link belongs to another client"));
        }
        let entry = NewHistoryEntry {
            conversion_id: conversion.id.clone(),
            actor: actor.to_string(),
            from_link_id: conversion.link_id.clone(),
            to_link_id: Some(link.id.clone()),
            from_method: conversion.method,
            to_method: Some(Method::Manual),
            reason: "set by hand".into(),
        };
        conversion.link_id = Some(link.id.clone());
        conversion.click_id = None;
        conversion.method = Some(Method::Manual);
        conversion.updated_at = now_millis();
        self.store.save_conversion(&conversion).await?;
        self.store.add_history(&entry).await?;
        Ok(conversion)
    }

    /// Takes the cross-instance lock of the purchases of a conversion's
    /// client (nothing to lock when it does not exist). Read the conversion
    /// again once it is held: another instance may have changed it.
    /// Auto-Fix's look at one orphan: `Some((id, Some(trace)))` when it
    /// would stay an orphan (the trace says why), `Some((id, None))` when a
    /// recompute may link it, `None` when it is gone or no longer an orphan.
    async fn preview_orphan(&self, id: String, clients: &[Client]) -> DomainResult<Look> {
        let Some(orphan) = self.store.get_conversion(&id).await? else {
            return Ok(None);
        };
        if orphan.link_id.is_some() {
            return Ok(None);
        }
        let Some(client) = clients.iter().find(|c| c.id == orphan.client_id) else {
            return Ok(None);
        };
        match self
            .preview_attribution(client, &orphan.purchase_key, &orphan.id)
            .await?
        {
            Some(found) if found.link_id.is_none() => Ok(Some((id, Some(found.trace)))),
            _ => Ok(Some((id, None))),
        }
    }

    async fn lock_for_conversion(&self, conversion_id: &str) -> DomainResult<StoreLock> {
        Ok(match self.store.get_conversion(conversion_id).await? {
            Some(c) => self.store.lock_purchases(&[&c.client_id]).await?,
            None => StoreLock::noop(),
        })
    }

    /// Processes failed events (and events that waited for a client) again.
    pub async fn retry_events(&self) -> DomainResult<RetryReport> {
        let events = self
            .store
            .events_to_retry(self.config.max_attempts, 1000)
            .await?;
        let mut report = RetryReport::default();
        for event in events {
            report.retried += 1;
            match self.reprocess_event(&event).await? {
                Processing::Processed | Processing::Ignored => report.processed += 1,
                _ => report.still_failing += 1,
            }
        }
        Ok(report)
    }
}

// ---- undo (layer 5) -------------------------------------------------------

impl Tracker {
    /// Undoes one change of the history: the conversion's link goes back to
    /// the entry's `from_link_id` (an orphan again when it had none). The undo
    /// is a manual choice, so no automatic run replaces it, and it is itself
    /// written to the history (and can be undone in turn).
    pub async fn undo_history(&self, entry_id: i64, actor: &str) -> DomainResult<Conversion> {
        let _guard = self.purchase_lock.lock().await;
        let entry = self
            .store
            .get_history_entry(entry_id)
            .await?
            .ok_or_else(|| DomainError::NotFound {
                what: "history entry",
                id: entry_id.to_string(),
            })?;
        let _held = self.lock_for_conversion(&entry.conversion_id).await?;
        let mut conversion = self
            .store
            .get_conversion(&entry.conversion_id)
            .await?
            .ok_or_else(|| DomainError::NotFound {
                what: "conversion",
                id: entry.conversion_id.clone(),
            })?;
        if conversion.link_id == entry.from_link_id {
            return Err(DomainError::Conflict(
                "the conversion already has the link this change started from".into(),
            ));
        }
        if let Some(link_id) = &entry.from_link_id {
            match self.store.get_link(link_id).await? {
                Some(link) if link.client_id == conversion.client_id => {}
                _ => {
                    return Err(DomainError::invalid(
                        "the earlier link no longer belongs to this client",
                    ))
                }
            }
        }
        let record = NewHistoryEntry {
            conversion_id: conversion.id.clone(),
            actor: actor.to_string(),
            from_link_id: conversion.link_id.clone(),
            to_link_id: entry.from_link_id.clone(),
            from_method: conversion.method,
            to_method: Some(Method::Manual),
            reason: format!("undo of change #{}", entry.id),
        };
        conversion.link_id = entry.from_link_id.clone();
        conversion.click_id = None;
        conversion.method = Some(Method::Manual);
        conversion.updated_at = now_millis();
        self.store.save_conversion(&conversion).await?;
        self.store.add_history(&record).await?;
        tracing::info!(conversion_id = %conversion.id, entry_id, "attribution change undone");
        Ok(conversion)
    }
}

/// In words: why the trace found no link.
pub fn why_orphan(c: &Conversion) -> String {
    why_from_trace(&c.trace)
}

fn why_from_trace(trace: &[TraceStep]) -> String {
    let reasons: Vec<String> = trace
        .iter()
        .filter(|s| s.outcome == StepOutcome::NoMatch)
        .map(|s| format!("{}: {}", s.step, s.detail))
        .collect();
    if reasons.is_empty() {
        "no fallback found a link".into()
    } else {
        reasons.join("; ")
    }
}
