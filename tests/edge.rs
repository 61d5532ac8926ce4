//! Issue 14: no stranger may wear the service down. The real `serve` binary
//! (on a fresh SQLite file, small limits set through `SALESTRACK_*`) over
//! raw TCP: slowloris heads, slow bodies, many silent connections, SIGTERM
//! with connections open, and `/metrics`'s token.

mod support;

use std::time::{Duration, Instant};

use salestrack::stripe::signature::header_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// A fresh database (kept with its directory) and `serve` on it.
async fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, String, Instance) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("edge.db").display());
    let instance = Instance::start_with(&db_url, env).await;
    (dir, db_url, instance)
}

async fn connect(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    TcpStream::connect(addr).await.expect("connect")
}

/// How long until the server closes `stream` (reading and discarding what it
/// sends meanwhile); `None` if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Whatever the server sends until it closes the connection (or `wait`).
async fn read_answer(stream: &mut TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The start of a request whose head never ends.
const SLOW_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: salestrack\r\nX-Slow: ";

#[tokio::test]
async fn slowloris_and_silent_connections_are_closed_at_the_header_timeout() {
    let (_dir, _db, app) = start(&[("SALESTRACK_HEADER_TIMEOUT", "1s")]).await;
    let mut slow = connect(&app.base).await;
    slow.write_all(SLOW_HEAD).await.expect("write");
    let mut silent = connect(&app.base).await;

    let slow_closed = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(
        slow_closed.is_some_and(|t| t < Duration::from_secs(3)),
        "a half-sent head holds its connection: {slow_closed:?}"
    );
    let silent_closed = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(
        silent_closed.is_some(),
        "a connection that never sends a byte stays open"
    );

    // A prompt client is not affected.
    let mut prompt = connect(&app.base).await;
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: salestrack\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_answer(&mut prompt, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_slow_webhook_body_gets_408_and_its_connection_is_dropped() {
    let (_dir, _db, app) = start(&[("SALESTRACK_BODY_TIMEOUT", "1s")]).await;
    let mut stream = connect(&app.base).await;
    stream
        .write_all(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: salestrack\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"id\":",
        )
        .await
        .expect("write head");
    let (mut reader, mut writer) = stream.into_split();
    // A byte every 200 ms: never silent long enough for a timeout between
    // chunks, far too slow for the whole body.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), reader.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body is answered 408, got {answer:?} after {:?}",
        started.elapsed()
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(read.is_ok(), "the connection is closed after the 408");
    assert!(started.elapsed() < Duration::from_secs(4));
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_webhooks_stay_fast_while_200_slow_connections_are_open() {
    let (_dir, _db, app) = start(&[
        ("SALESTRACK_MAX_CONNECTIONS", "50"),
        ("SALESTRACK_HEADER_TIMEOUT", "60s"),
    ])
    .await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(&app.base).await;
        stream.write_all(SLOW_HEAD).await.expect("write");
        slow.push(stream);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for _ in 0..5 {
        let started = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{}/healthz", app.base)).send(),
        )
        .await
        .expect("/healthz answers while slow connections are open")
        .expect("/healthz");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/healthz took {:?}",
            started.elapsed()
        );
    }
    let webhook = tokio::time::timeout(
        Duration::from_secs(5),
        http.post(format!("{}/webhooks/stripe", app.base))
            .header("content-type", "application/json")
            .body(r#"{"id":"evt_unsigned","type":"invoice.paid"}"#)
            .send(),
    )
    .await
    .expect("a webhook is answered while slow connections are open")
    .expect("webhook");
    assert_eq!(
        webhook.status().as_u16(),
        400,
        "unsigned: refused, not stuck"
    );

    // The cap holds: beyond 50, the oldest silent connections were closed.
    let mut open = 0;
    for stream in &mut slow {
        if closed_within(stream, Duration::from_millis(20))
            .await
            .is_none()
        {
            open += 1;
        }
    }
    assert!(open <= 50, "{open} slow connections still open (cap 50)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_webhook_in_flight_and_exits_within_the_grace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("edge.db").display());
    let client = cli_json(
        &db_url,
        &[
            "client",
            "add",
            "--name",
            "Acme",
            "--webhook-secret",
            SECRET,
        ],
    )
    .await;
    let client_id = client["id"].as_str().expect("client id").to_string();
    let mut app = Instance::start_with(
        &db_url,
        &[
            ("SALESTRACK_SHUTDOWN_GRACE", "2s"),
            ("SALESTRACK_HEADER_TIMEOUT", "60s"),
        ],
    )
    .await;

    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app.base).await;
        stream.write_all(SLOW_HEAD).await.expect("write");
        slow.push(stream);
    }
    // A signed delivery whose body is half sent when SIGTERM arrives.
    let body = payment_intent_event("evt_in_flight", "pi_in_flight", "cus_1", now_s(), None);
    let signature = header_for(&body, SECRET, now_s());
    let head = format!(
        "POST /webhooks/stripe/{client_id} HTTP/1.1\r\nHost: salestrack\r\n\
         Content-Type: application/json\r\nStripe-Signature: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut webhook = connect(&app.base).await;
    webhook.write_all(head.as_bytes()).await.expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    webhook.write_all(first).await.expect("first half");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = app.child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    webhook.write_all(rest).await.expect("second half");
    let answer = read_answer(&mut webhook, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the delivery in flight at SIGTERM is answered: {answer:?}"
    );

    let exited = tokio::time::timeout(Duration::from_secs(6), app.child.wait()).await;
    let status = exited
        .expect("serve exits within the shutdown grace despite slow connections")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5));

    let conversions = cli_json(&db_url, &["conversions", "list"]).await;
    assert!(
        conversions.to_string().contains("pi_in_flight"),
        "the answered delivery is stored: {conversions}"
    );
}

#[tokio::test]
async fn metrics_want_the_token_when_one_is_set() {
    let (_dir, _db, app) = start(&[("SALESTRACK_METRICS_TOKEN", METRICS_TOKEN)]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", app.base);
    let status = |resp: reqwest::Response| resp.status().as_u16();
    let bare = http.get(&url).send().await.expect("metrics");
    assert_eq!(status(bare), 401, "no token");
    let wrong = http
        .get(&url)
        .bearer_auth("metrics-token-0123456788")
        .send()
        .await
        .expect("metrics");
    assert_eq!(status(wrong), 401, "wrong token");
    let right = http
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("metrics");
    assert_eq!(right.status().as_u16(), 200);
    let text = right.text().await.expect("body");
    assert!(text.contains("salestrack_"), "{text}");
}

#[tokio::test]
async fn metrics_are_open_without_a_token() {
    let (_dir, _db, app) = start(&[]).await;
    let resp = reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("metrics");
    assert_eq!(resp.status().as_u16(), 200);
}
