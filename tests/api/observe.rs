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
