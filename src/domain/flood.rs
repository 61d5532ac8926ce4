//! Click floods (issue 14 §3): clicks per visitor address (its salted hash),
//! in memory. Over the limit a click is still answered and stored, but
//! flagged like a bot's (`bot = true`), so that attribution — which skips
//! bot clicks in every step — never credits a sale to it. Memory is bounded
//! whatever the number of addresses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Clicks one address may make at once…
pub const CLICK_BURST: f32 = 20.0;
/// …and then per minute. Generous: people behind one NAT share an address,
/// and a visit through `/r/…` to a page with the snippet counts twice.
pub const CLICKS_PER_MINUTE: f32 = 60.0;
/// Addresses tracked at most (each about 50 bytes with the map's share):
/// beyond it idle ones are dropped, then any, so memory stays bounded.
pub const MAX_TRACKED: usize = 64 * 1024;
const SHARDS: usize = 16;

/// The salted hash of a visitor's address (the first bytes of what
/// `clicks.ip_hash` keeps in hex).
pub type AddrKey = [u8; 16];

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f32,
    at: Instant,
    /// Over the limit since the last click that was let through.
    flooding: bool,
}

/// Per-address token buckets in a few locked shards (one short lock per
/// click, rarely the same one on two threads).
#[derive(Debug)]
pub struct ClickFlood {
    shards: Vec<Mutex<HashMap<AddrKey, Bucket>>>,
}

impl Default for ClickFlood {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// What `ClickFlood::admit` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the limit.
    Yes,
    /// Over it: this click is the first of a flood (worth a log line).
    FloodStarts,
    /// Over it, again.
    No,
}

impl ClickFlood {
    /// Counts a click from `key` at `now`.
    pub fn admit(&self, key: AddrKey, now: Instant) -> Admit {
        let shard = &self.shards[usize::from(key[0]) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED / SHARDS {
            make_room(&mut map, now);
        }
        let bucket = map.entry(key).or_insert(Bucket {
            tokens: CLICK_BURST,
            at: now,
            flooding: false,
        });
        bucket.tokens = refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.flooding = false;
            Admit::Yes
        } else if bucket.flooding {
            Admit::No
        } else {
            bucket.flooding = true;
            Admit::FloodStarts
        }
    }

    /// Addresses tracked now (for tests).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

fn refilled(bucket: &Bucket, now: Instant) -> f32 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f32();
    (bucket.tokens + elapsed * CLICKS_PER_MINUTE / 60.0).min(CLICK_BURST)
}

/// Drops the addresses whose bucket has filled up again (forgetting them
/// changes nothing); if that is not enough, any, down to half the shard's
/// room, so that this runs at most once per many new addresses.
fn make_room(map: &mut HashMap<AddrKey, Bucket>, now: Instant) {
    let room = MAX_TRACKED / SHARDS;
    map.retain(|_, b| refilled(b, now) < CLICK_BURST);
    if map.len() > room * 3 / 4 {
        let excess: Vec<AddrKey> = map.keys().take(map.len() - room / 2).copied().collect();
        for key in excess {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_passes_then_clicks_are_refused_until_the_bucket_refills() {
        let flood = ClickFlood::default();
        let t0 = Instant::now();
        let a = [1; 16];
        for _ in 0..CLICK_BURST as usize {
            assert_eq!(flood.admit(a, t0), Admit::Yes);
        }
        assert_eq!(flood.admit(a, t0), Admit::FloodStarts);
        assert_eq!(flood.admit(a, t0), Admit::No);
        assert_eq!(flood.admit([2; 16], t0), Admit::Yes, "others are apart");
        let one_s = t0 + Duration::from_secs(1);
        assert_eq!(flood.admit(a, one_s), Admit::Yes);
        assert_eq!(flood.admit(a, one_s), Admit::FloodStarts);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_addresses() {
        let flood = ClickFlood::default();
        let t0 = Instant::now();
        for n in 0..(3 * MAX_TRACKED) as u32 {
            let mut key = [0; 16];
            key[..4].copy_from_slice(&n.to_le_bytes());
            flood.admit(key, t0);
        }
        assert!(flood.tracked() <= MAX_TRACKED, "{}", flood.tracked());
        // A flooding address seen after the room was made is still counted.
        let a = [9; 16];
        let over = (0..100)
            .filter(|_| flood.admit(a, t0) != Admit::Yes)
            .count();
        assert_eq!(over, 100 - CLICK_BURST as usize);
    }
}
