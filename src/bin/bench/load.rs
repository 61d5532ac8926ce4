//! The load generator: N keep-alive HTTP/1.1 connections on loopback, each
//! sending one request at a time, bounded by a request count and a time.
//! Only responses that complete inside the measured window (after the
//! warm-up) count towards throughput and latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Builds the `i`-th request; `None` once the requests are used up.
pub type MakeRequest = Arc<dyn Fn(u64) -> Option<Request<Full<Bytes>>> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Responses completed inside the measured window.
    pub completed: u64,
    /// Of those, by status class.
    pub ok_2xx: u64,
    pub redirect_3xx: u64,
    pub client_4xx: u64,
    pub server_5xx: u64,
    /// Connection or protocol errors (whole run).
    pub errors: u64,
    /// Every 2xx/3xx over the whole run, warm-up included.
    pub accepted_total: u64,
    /// Length of the measured window actually used (shorter when the
    /// requests ran out).
    pub window: Duration,
    /// Latencies of the measured responses, microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank.min(self.latencies_us.len() - 1)] as f64 / 1000.0
    }
}

#[derive(Default)]
struct ConnStats {
    completed: u64,
    by_class: [u64; 6],
    errors: u64,
    accepted_total: u64,
    last_in_window: Option<Instant>,
    latencies_us: Vec<u32>,
}

/// Runs `plan` against `addr` and waits for every connection to finish.
pub async fn run(addr: SocketAddr, plan: Plan, make: MakeRequest) -> LoadResult {
    let next = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let deadline = window_start + plan.measure;
    let mut tasks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let next = next.clone();
        let exhausted = exhausted.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            connection(addr, next, exhausted, make, window_start, deadline).await
        }));
    }
    let mut result = LoadResult::default();
    let mut last_done = window_start;
    for t in tasks {
        let Ok(stats) = t.await else {
            result.errors += 1;
            continue;
        };
        result.completed += stats.completed;
        result.ok_2xx += stats.by_class[2];
        result.redirect_3xx += stats.by_class[3];
        result.client_4xx += stats.by_class[4];
        result.server_5xx += stats.by_class[5];
        result.errors += stats.errors;
        result.accepted_total += stats.accepted_total;
        if let Some(t) = stats.last_in_window {
            last_done = last_done.max(t);
        }
        result.latencies_us.extend(stats.latencies_us);
    }
    // When the requests ran out early, the window ends with the last response.
    let window_end = if exhausted.load(Ordering::Relaxed) && last_done < deadline {
        last_done
    } else {
        deadline
    };
    result.window = window_end.saturating_duration_since(window_start);
    result.latencies_us.sort_unstable();
    result
}

async fn connection(
    addr: SocketAddr,
    next: Arc<AtomicU64>,
    exhausted: Arc<AtomicBool>,
    make: MakeRequest,
    window_start: Instant,
    deadline: Instant,
) -> ConnStats {
    let mut stats = ConnStats::default();
    'reconnect: while Instant::now() < deadline {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            stats.errors += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = http1::handshake(TokioIo::new(stream)).await else {
            stats.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        loop {
            if Instant::now() >= deadline {
                break 'reconnect;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(mut req) = make(i) else {
                exhausted.store(true, Ordering::Relaxed);
                break 'reconnect;
            };
            if !req.headers().contains_key(hyper::header::HOST) {
                if let Ok(host) = addr.to_string().parse() {
                    req.headers_mut().insert(hyper::header::HOST, host);
                }
            }
            if sender.ready().await.is_err() {
                stats.errors += 1;
                continue 'reconnect;
            }
            let sent = Instant::now();
            let response = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    stats.errors += 1;
                    continue 'reconnect;
                }
            };
            let status = response.status().as_u16();
            if response.into_body().collect().await.is_err() {
                stats.errors += 1;
                continue 'reconnect;
            }
            let done = Instant::now();
            let class = (status / 100) as usize;
            if class == 2 || class == 3 {
                stats.accepted_total += 1;
            }
            if sent >= window_start && done <= deadline {
                stats.completed += 1;
                stats.by_class[class.min(5)] += 1;
                stats.last_in_window = Some(done);
                let us = done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32;
                stats.latencies_us.push(us);
            }
        }
    }
    stats
}
