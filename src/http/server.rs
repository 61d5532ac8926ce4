//! The HTTP/1 server that `serve` runs: the accept loop and each
//! connection's limits, so that no stranger can hold the service's
//! connections, memory or shutdown.
//!
//! - A request head must arrive whole within `header_timeout` of the moment
//!   the server waits for it (the connection's opening or the previous
//!   answer): a slowloris client, or a kept-alive connection left silent,
//!   is closed then (hyper's own timer).
//! - A request body must arrive whole within `body_timeout`
//!   ([`super::deadline`]: 408, connection closed).
//! - A connection on which no byte moves either way for `idle_timeout`
//!   while no request of it is being handled is closed (a reader that never
//!   reads its answer, a body nobody reads).
//! - At most `max_connections` at once. A new one beyond the cap takes the
//!   slot of the oldest connection that has no request in flight, so a
//!   health check always gets in while strangers hold the slots with
//!   silence; when every slot has a request in flight, new connections wait
//!   in the listen queue.
//! - On shutdown, no new connections; idle ones close, requests in flight
//!   are answered; whatever is still open after `shutdown_grace` is closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::metrics::MetricsToken;

/// The edge's limits (`config.default.toml` has the same defaults).
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// `/metrics` wants `Authorization: Bearer` this when set.
    pub metrics_token: Option<MetricsToken>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
            metrics_token: None,
        }
    }
}

/// Serves `app` on `listener` until `cancel` fires, then drains within
/// `shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    app: Router,
    options: &EdgeOptions,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    // The semaphore's own ceiling is far above any sensible cap.
    let max = options.max_connections.clamp(1, 1 << 20);
    let slots = Arc::new(Semaphore::new(max));
    let open = Arc::new(Registry::default());
    let deadline_passed = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up before
                    // we took it: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            permit = take_slot(&slots, &open) => permit,
        };
        let conn = open.insert();
        tokio::spawn(serve_connection(Connection {
            stream,
            peer,
            app: app.clone(),
            options: options.clone(),
            activity: conn.1,
            evicted: conn.2,
            shutdown: cancel.clone(),
            deadline_passed: deadline_passed.clone(),
            _slot: Slot {
                _permit: permit,
                id: conn.0,
                open: open.clone(),
            },
        }));
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(options.shutdown_grace, slots.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!(
            open = open.len(),
            grace = ?options.shutdown_grace,
            "closing the connections still open at the shutdown deadline"
        );
        deadline_passed.cancel();
        let _ = slots.acquire_many(all).await;
    }
    Ok(())
}

/// A free slot, or the slot of the oldest connection without a request in
/// flight (it is told to close, and its slot comes back when it has).
async fn take_slot(slots: &Arc<Semaphore>, open: &Registry) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return permit;
        }
        if open.evict_oldest_idle() {
            tracing::debug!("connection cap reached: closed the oldest idle connection");
        }
        // A slot comes back when a connection ends; look again now and then
        // in case one went idle meanwhile.
        tokio::select! {
            permit = slots.clone().acquire_owned() => {
                if let Ok(permit) = permit {
                    return permit;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// The open connections, oldest first: what eviction and the shutdown log
/// look at.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, (Arc<Activity>, CancellationToken)>>,
}

impl Registry {
    fn insert(&self) -> (u64, Arc<Activity>, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        let evicted = CancellationToken::new();
        self.lock().insert(id, (activity.clone(), evicted.clone()));
        (id, activity, evicted)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Tells the oldest connection with no request in flight (and not told
    /// already) to close; `false` when there is none.
    fn evict_oldest_idle(&self) -> bool {
        let live = self.lock();
        let victim = live
            .values()
            .find(|(activity, evicted)| !evicted.is_cancelled() && activity.in_flight() == 0);
        match victim {
            Some((_, evicted)) => {
                evicted.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Arc<Activity>, CancellationToken)>> {
        // The map stays consistent even if a holder panicked.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's slot: given back (and the registry entry removed) when the
/// connection's task ends, however it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    id: u64,
    open: Arc<Registry>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.remove(self.id);
    }
}

/// When bytes last moved on a connection, and how many of its requests are
/// being handled.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request being handled; counted until its handler has answered.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    options: EdgeOptions,
    activity: Arc<Activity>,
    evicted: CancellationToken,
    shutdown: CancellationToken,
    deadline_passed: CancellationToken,
    _slot: Slot,
}

async fn serve_connection(c: Connection) {
    let peer = c.peer;
    let activity = c.activity.clone();
    let app = c.app.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = activity.begin();
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response: Result<_, Infallible> = app.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let io = TokioIo::new(Watched {
        inner: c.stream,
        activity: c.activity.clone(),
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(c.options.header_timeout)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let idle = c.options.idle_timeout;
    let mut draining = false;
    loop {
        let check_at = c.activity.last() + idle;
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection closed");
                }
                return;
            }
            _ = c.shutdown.cancelled(), if !draining => {
                // Closes at once when idle, after the answer otherwise.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = c.evicted.cancelled(), if !draining => {
                if c.activity.in_flight() == 0 {
                    // Waiting for a request head (hyper would keep waiting
                    // through a graceful shutdown): the slot is wanted now.
                    tracing::debug!(%peer, "evicted at the connection cap");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = c.deadline_passed.cancelled() => return,
            _ = tokio::time::sleep_until(check_at) => {
                if c.activity.in_flight() == 0 && c.activity.last() + idle <= Instant::now() {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
                if c.activity.last() + idle <= Instant::now() {
                    // A request in flight: its handler may take its time.
                    c.activity.touch();
                }
            }
        }
    }
}

/// The socket, noting every byte that moves.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
