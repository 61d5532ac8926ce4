//! How many bytes of unverified webhook bodies each client's URL may have
//! stored in full (issue 14 §3). Anybody may POST to a webhook URL: a
//! stranger's 1 MiB bodies, stored whole, would fill the disk at the speed
//! of the network. Every delivery is still recorded, but past the budget an
//! unverified body is kept as its first bytes, its length and its SHA-256
//! (`truncated`), so its headers and a digest remain to show and compare.
//! A later delivery of the same event that verifies stores the whole body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// The budget's settings (`DomainConfig::unverified_budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Bytes of unverified bodies one URL may store in full per minute…
    pub bytes_per_minute: u64,
    /// …and at once, after a quiet spell.
    pub burst_bytes: u64,
    /// What is kept of a body past the budget.
    pub kept_bytes: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            bytes_per_minute: 1024 * 1024,
            burst_bytes: 8 * 1024 * 1024,
            kept_bytes: 4 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    bytes: f64,
    at: Instant,
}

/// Byte buckets per scope: a known client's id or one shared key for the
/// shared URL and unknown ones, so there are never more than the clients
/// plus one.
#[derive(Debug, Default)]
pub struct UnverifiedBudget {
    config: BudgetConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl UnverifiedBudget {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
        }
    }

    /// Whether a body of `len` bytes to `scope` may be stored whole now;
    /// small bodies always may (they cost what the row does).
    pub fn admit(&self, scope: &str, len: usize, now: Instant) -> bool {
        if len <= self.config.kept_bytes {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let burst = self.config.burst_bytes as f64;
        let bucket = buckets.entry(scope.to_string()).or_insert(Bucket {
            bytes: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.bytes =
            (bucket.bytes + elapsed * self.config.bytes_per_minute as f64 / 60.0).min(burst);
        bucket.at = now;
        if bucket.bytes >= len as f64 {
            bucket.bytes -= len as f64;
            true
        } else {
            false
        }
    }

    /// The first `kept_bytes` of `body`, and the words that say what was
    /// cut: its length and SHA-256.
    pub fn truncate(&self, body: &[u8]) -> (Vec<u8>, String) {
        let digest = hex::encode(Sha256::digest(body));
        let kept = body[..body.len().min(self.config.kept_bytes)].to_vec();
        (kept, format!("{} bytes, sha256 {digest}", body.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget() -> UnverifiedBudget {
        UnverifiedBudget::new(BudgetConfig {
            bytes_per_minute: 60_000,
            burst_bytes: 100_000,
            kept_bytes: 1_000,
        })
    }

    #[test]
    fn small_bodies_are_always_kept_whole() {
        let b = budget();
        let now = Instant::now();
        for _ in 0..10_000 {
            assert!(b.admit("client", 1_000, now));
        }
    }

    #[test]
    fn large_bodies_past_the_burst_are_cut_until_the_budget_refills() {
        let b = budget();
        let now = Instant::now();
        assert!(b.admit("client", 60_000, now));
        assert!(!b.admit("client", 60_000, now), "burst spent");
        assert!(b.admit("other", 60_000, now), "each URL has its own budget");
        // 1,000 bytes a second: 20 s later 40,000 + 20,000 are back.
        assert!(b.admit("client", 60_000, now + Duration::from_secs(20)));
    }

    #[test]
    fn a_cut_body_keeps_its_head_length_and_digest() {
        let b = budget();
        let body = vec![b'a'; 5_000];
        let (kept, note) = b.truncate(&body);
        assert_eq!(kept.len(), 1_000);
        assert!(note.starts_with("5000 bytes, sha256 "), "{note}");
        assert_eq!(note.len(), "5000 bytes, sha256 ".len() + 64);
    }
}
