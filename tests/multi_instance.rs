//! Several instances on one PostgreSQL database (SPEC 6): two real `serve`
//! processes share a fresh database, deliveries race across them, and
//! Auto-Fix runs in two processes at once.
//!
//! Skips (with a message) when PostgreSQL is not reachable, unless
//! `SALESTRACK_REQUIRE_PG=1`; `SALESTRACK_TEST_PG_URL` picks the server.

mod support;

use std::time::Duration;

use salestrack::domain::model::*;
use salestrack::storage::postgres::scratch::ScratchDb;
use salestrack::storage::{self, DynStore};
use salestrack::stripe::signature::header_for;
use serde_json::json;
use support::*;

async fn all_events(store: &DynStore) -> Vec<StoredEvent> {
    store
        .list_events(&EventFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_count_every_sale_once() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(240), scenario(&db.url))
        .await
        .expect("no deadlock: the scenario finishes in time");
}

async fn scenario(db_url: &str) {
    // Migrate once before rolling out, as the README says.
    let migrated = cli_json(db_url, &["migrate"]).await;
    assert_eq!(migrated["migrated"], json!(true));
    let client = cli_json(
        db_url,
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
    let client_id = client["id"].as_str().unwrap().to_string();
    cli_json(
        db_url,
        &[
            "link",
            "add",
            "--client",
            &client_id,
            "--slug",
            "spring",
            "--destination",
            "https://shop.example.com/spring",
        ],
    )
    .await;

    let (a, b) = tokio::join!(Instance::start(db_url), Instance::start(db_url));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let now = now_s();

    // 1. The same signed event, delivered to both instances at once (twice
    //    each), for 25 events; and 2. 25 sales each described by two events
    //    (payment intent, charge) that reach different instances at once.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..25 {
        let body = payment_intent_event(
            &format!("evt_same_{i}"),
            &format!("pi_same_{i}"),
            &format!("cus_same_{i}"),
            now - 60,
            Some("spring"),
        );
        for target in [&a.base, &b.base, &a.base, &b.base] {
            let (http, target, id, body) = (
                http.clone(),
                target.clone(),
                client_id.clone(),
                body.clone(),
            );
            tasks.spawn(async move { deliver(&http, &target, &id, body).await });
        }
        let pi = format!("pi_pair_{i}");
        let customer = format!("cus_pair_{i}");
        let intent = payment_intent_event(&format!("evt_pi_{i}"), &pi, &customer, now - 60, None);
        let charge = charge_event(&format!("evt_ch_{i}"), &pi, &customer, now - 60);
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        for (target, body) in [(first, intent), (second, charge)] {
            let (http, target, id) = (http.clone(), target.base.clone(), client_id.clone());
            tasks.spawn(async move { deliver(&http, &target, &id, body).await });
        }
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200, "every delivery is acknowledged");
    }

    let store = storage::connect(db_url).await.unwrap();
    let events = all_events(&store).await;
    assert_eq!(events.len(), 75, "one stored event per event id");
    let same: Vec<_> = events
        .iter()
        .filter(|e| {
            e.stripe_event_id
                .as_deref()
                .is_some_and(|id| id.starts_with("evt_same_"))
        })
        .collect();
    assert_eq!(same.len(), 25);
    assert!(
        same.iter().all(|e| e.deliveries == 4),
        "each of the four deliveries is counted on the one stored event"
    );
    for e in &events {
        assert_eq!(
            e.processing,
            Processing::Processed,
            "{:?} {:?}: {:?} (a race between instances must not fail an event)",
            e.stripe_event_id,
            e.event_type,
            e.processing_error
        );
    }
    let conversions = store
        .list_conversions(&ConversionFilter::default())
        .await
        .unwrap();
    assert_eq!(conversions.len(), 50, "one conversion per sale");
    let mut keys: Vec<_> = conversions.iter().map(|c| c.purchase_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 50);
    for c in conversions
        .iter()
        .filter(|c| c.purchase_key.starts_with("pi_same_"))
    {
        assert_eq!(c.method, Some(Method::LinkSlug), "{c:?}");
        assert_eq!(store.list_history(&c.id).await.unwrap().len(), 1);
    }
    let pairs: Vec<_> = conversions
        .iter()
        .filter(|c| c.purchase_key.starts_with("pi_pair_"))
        .collect();
    assert_eq!(pairs.len(), 25);
    assert!(
        pairs.iter().all(|c| c.link_id.is_none()),
        "no click yet: orphans"
    );

    // 3. A click arrives late (the beacon): Auto-Fix on two instances at once
    //    fixes each orphan exactly once.
    let click = http
        .get(format!("{}/r/spring", a.base))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(click.status().as_u16(), 302);
    let (one, two) = tokio::join!(
        cli_json(db_url, &["autofix"]),
        cli_json(db_url, &["autofix"])
    );
    let fixed = one["fixed"].as_u64().unwrap() + two["fixed"].as_u64().unwrap();
    assert_eq!(fixed, 25, "each orphan fixed once in all: {one} {two}");
    let orphans = store
        .list_conversions(&ConversionFilter {
            orphans_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(orphans.is_empty(), "{orphans:?}");
    for c in &pairs {
        let history = store.list_history(&c.id).await.unwrap();
        assert_eq!(
            history.len(),
            1,
            "one history entry for {}: {history:?}",
            c.id
        );
        assert_eq!(history[0].actor, "autofix");
    }

    // 4. Both instances still serve.
    for base in [&a.base, &b.base] {
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status().as_u16(), 200);
    }
}

/// Background sweeps of two instances at the same moment: one runs, the
/// other leaves the run to it; every orphan is fixed once, nothing waits
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_on_two_instances_never_fix_twice() {
    use salestrack::domain::client::{ClientIn, LinkIn};
    use salestrack::domain::ingest::{Delivery, Endpoint};
    use salestrack::domain::{DomainConfig, Tracker};
    use salestrack::jobs::sweep::Sweep;
    use std::sync::Arc;

    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let instance = || async {
        let store = storage::connect(&db.url).await.unwrap();
        Arc::new(Tracker::new(store, DomainConfig::default()).await.unwrap())
    };
    let (a, b) = (instance().await, instance().await);
    let client = a
        .add_client(ClientIn {
            name: "Acme".into(),
            webhook_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let link = a
        .add_link(LinkIn {
            client: client.id.clone(),
            slug: "spring".into(),
            destination: "https://shop.example.com/spring".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let at = now_s() - 60;
    for i in 0..20 {
        let body = payment_intent_event(
            &format!("evt_o_{i}"),
            &format!("pi_o_{i}"),
            &format!("cus_o_{i}"),
            at,
            None,
        );
        let tracker = if i % 2 == 0 { &a } else { &b };
        tracker
            .ingest(Delivery {
                endpoint: Endpoint::Client(client.id.clone()),
                signature: Some(header_for(&body, SECRET, now_s())),
                headers: vec![],
                body,
                received_at: now_millis(),
            })
            .await
            .unwrap();
    }
    assert_eq!(a.store().orphan_ids(None, 0).await.unwrap().len(), 20);
    // The click beacon arrives late.
    a.store()
        .insert_click(&Click {
            id: "clk_late".into(),
            link_id: link.id.clone(),
            client_id: client.id.clone(),
            at: (at + 30) * 1000,
            visitor_id: None,
            referrer: None,
            landing_url: None,
            user_agent: Some("Mozilla/5.0".into()),
            ip_hash: None,
            bot: false,
        })
        .await
        .unwrap();

    let (sa, sb) = (Sweep::new(a.clone()), Sweep::new(b.clone()));
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(sa.run_once(), sb.run_once())
    })
    .await
    .expect("sweeps finish");
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.orphans.fixed + rb.orphans.fixed,
        20,
        "fixed once in all: {ra:?} {rb:?}"
    );
    let store = a.store();
    assert!(store.orphan_ids(None, 0).await.unwrap().is_empty());
    for c in store
        .list_conversions(&ConversionFilter::default())
        .await
        .unwrap()
    {
        assert_eq!(
            store.list_history(&c.id).await.unwrap().len(),
            1,
            "{}",
            c.id
        );
    }
    // The lock went with the run: the next sweep runs (and finds nothing).
    let again = sb.run_once().await.unwrap();
    assert_eq!(again.orphans.fixed, 0);
}
