//! The OpenAPI document (every admin route, its token and its errors) and
//! `/metrics` after real traffic.

use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = app_with_token().await;
    let resp = app
        .http
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json")));
    let doc: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("valid JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is described");
        assert_eq!(
            op["security"][0]["admin_token"],
            json!([]),
            "{method} {path} needs the token"
        );
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} documents 401"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        json!("bearer")
    );
    for schema in [
        "ClientOut",
        "LinkOut",
        "ConversionOut",
        "ConversionDetailOut",
        "ErrorOut",
        "AutofixOut",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    let conversion_fields = doc["components"]["schemas"]["ConversionOut"]["properties"]
        .as_object()
        .expect("properties");
    for field in [
        "id",
        "client_id",
        "link_slug",
        "amount",
        "net_amount",
        "currency",
        "status",
        "kind",
        "method",
        "client_method",
        "verified",
        "livemode",
        "purchase_key",
    ] {
        assert!(
            conversion_fields.contains_key(field),
            "ConversionOut.{field}"
        );
    }
}

/// The value of the first sample whose line starts with `name{` and has
/// every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_webhooks_clicks_and_latency() {
    let Shop { app, .. } = shop().await;
    let click = app
        .http
        .get(format!("{}/r/spring", app.base))
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
        .send()
        .await
        .expect("click");
    assert_eq!(click.status().as_u16(), 302);
    let _ = get(&app, "/api/v1/clients").await;

    let resp = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status().as_u16(), 200, "/metrics is public");
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let text = resp.text().await.expect("body");
    let positive = |name: &str, labels: &[&str]| {
        let v = sample(&text, name, labels);
        assert!(v.is_some_and(|v| v > 0.0), "{name} {labels:?} in:\n{text}");
    };
    positive(
        "salestrack_webhook_events_total",
        &[
            r#"type="payment_intent.succeeded""#,
            r#"verification="verified""#,
        ],
    );
    positive(
        "salestrack_webhook_events_total",
        &[
            r#"type="payment_intent.succeeded""#,
            r#"verification="unverified""#,
        ],
    );
    positive(
        "salestrack_clicks_total",
        &[r#"source="redirect""#, r#"bot="false""#],
    );
    positive("salestrack_conversions_total", &[r#"method="link_slug""#]);
    positive("salestrack_conversions_total", &[r#"method="none""#]);
    positive(
        "salestrack_http_request_duration_seconds_count",
        &[r#"route="/r/{slug}""#, r#"status="302""#],
    );
    positive(
        "salestrack_http_request_duration_seconds_bucket",
        &[
            r#"route="/api/v1/clients""#,
            r#"method="GET""#,
            r#"le="+Inf""#,
        ],
    );
    positive(
        "salestrack_http_request_duration_seconds_count",
        &[r#"route="/webhooks/stripe/{client_id}""#],
    );
    // The gauge is computed at scrape time; other tests share the process, so
    // only its presence is checked here.
    assert!(sample(&text, "salestrack_orphans", &[]).is_some(), "{text}");
    assert!(text.contains("# TYPE salestrack_http_request_duration_seconds histogram"));
    assert!(
        !text.contains("/r/spring"),
        "routes are labelled by pattern, not path"
    );
}

#[tokio::test]
async fn processing_failures_are_counted() {
    let app = app_with_token().await;
    let client = app.add_client("Broken", Some(SECRET)).await;
    // A handled type whose object lacks what processing needs fails
    // processing (it is stored and retried by the sweep).
    let body = event(
        &new_id("evt"),
        "charge.refunded",
        API_VERSION,
        now_s(),
        json!({"object": "charge"}),
    );
    let resp = app.deliver(&client, SECRET, body).await;
    assert_eq!(resp.status().as_u16(), 200);
    let failed = app
        .events()
        .await
        .into_iter()
        .find(|e| e.processing == Processing::Failed);
    assert!(failed.is_some(), "the event failed processing");
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        sample(&text, "salestrack_event_processing_failures_total", &[]).is_some_and(|v| v > 0.0),
        "{text}"
    );
}

/// The series of the latency histogram (one `_count` line per label set).
fn latency_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("salestrack_http_request_duration_seconds_count{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

async fn scrape(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

/// Issue 14: made-up methods and paths must not add series. Other tests of
/// this binary share the process-wide recorder and may add a few series of
/// their own meanwhile, hence the small allowance; a label per method or
/// path would add thousands.
#[tokio::test]
async fn odd_methods_and_random_paths_add_no_series() {
    use futures_util::StreamExt;

    let app = app_with_token().await;
    for path in ["/healthz", "/nowhere", "/r/none-such"] {
        let _ = app.http.get(format!("{}{path}", app.base)).send().await;
    }
    let _ = app
        .http
        .request(
            Method::from_bytes(b"PROBE").expect("method"),
            format!("{}/healthz", app.base),
        )
        .send()
        .await;
    let before = scrape(&app).await;
    let series_before = latency_series(&before);

    let requests = futures_util::stream::iter(0..3000u32).map(|i| {
        let app = &app;
        async move {
            let method = Method::from_bytes(format!("X{i:05}ODD").as_bytes()).expect("method");
            let path = match i % 3 {
                0 => format!("/healthz?{i}"),
                1 => format!("/no/such/{i}/{}", new_id("p")),
                _ => format!("/r/{}", new_id("slug")),
            };
            let _ = app
                .http
                .request(method, format!("{}{path}", app.base))
                .send()
                .await;
        }
    });
    requests.buffer_unordered(16).collect::<Vec<()>>().await;

    let after = scrape(&app).await;
    let series_after = latency_series(&after);
    let added: Vec<_> = series_after.difference(&series_before).collect();
    assert!(
        added.len() <= 20,
        "{} new series after 3000 odd requests, e.g. {:?}",
        added.len(),
        added.iter().take(5).collect::<Vec<_>>()
    );
    let known = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
    ];
    for series in &series_after {
        let method = series
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert!(
            known.contains(&method),
            "method label {method:?} in {series}"
        );
        assert!(
            !series.contains("/no/such"),
            "a raw path as a label: {series}"
        );
    }
    assert!(
        after.len() < before.len() + 64 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}
