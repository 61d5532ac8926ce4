//! The contract every `Store` backend keeps, written once against the trait
//! and run on each backend (atuin's `db_story`): `contract_tests!` in
//! `sqlite/tests.rs` and `postgres/tests.rs` turns every check below into a
//! test on a fresh store of that backend. Backend-specific checks (PRAGMAs,
//! query plans, advisory locks) stay in the backend's own tests.

use super::{DynStore, StoreError, StoreResult, UnitEnd};
use crate::domain::model::*;
use crate::domain::report::AdminSession;
use crate::stripe::event::{Hints, PaymentFacts, PaymentSource};

/// One `#[tokio::test]` per contract check, each on a fresh store:
/// `$fresh().await` gives `Option<(guard, DynStore)>` (`None`: skipped).
macro_rules! contract_tests {
    ($fresh:path) => {
        $crate::storage::contract::contract_tests!(@each $fresh;
            settings_init_and_set,
            clients_order_and_name_conflict,
            webhook_secrets,
            links_and_promo_codes,
            clicks_latest_respects_bounds_and_bots,
            events_insert_dedup_and_null_keys,
            events_inserted_together_in_a_unit_and_alone,
            events_verify_process_list_retry,
            alias_moves_facts_and_chained_aliases,
            conversions_save_update_merge_conflict,
            conversions_list_filters,
            customer_history_by_customer_then_email,
            orphans_oldest_first,
            history_add_and_list,
            reports_count_per_client_currency_day_and_link,
            sessions_expire_and_can_be_deleted,
            concurrent_deliveries_store_one_event,
            concurrent_upgrades_have_one_winner,
            racing_conversions_of_one_purchase_conflict,
            ties_keep_insertion_order,
            locks_are_granted_and_released,);
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((_guard, store)) = $fresh().await else {
                    return;
                };
                $crate::storage::contract::$name(store).await;
            }
        )*
    };
}
pub(crate) use contract_tests;

pub(crate) fn client(id: &str, name: &str, created_at: Millis) -> Client {
    Client {
        id: id.into(),
        name: name.into(),
        domain: Some(format!("{name}.example")),
        stripe_account: None,
        stripe_api_key: Some("rk_test_x".into()),
        settings: AttributionSettings::default(),
        created_at,
    }
}

pub(crate) fn link(
    id: &str,
    client_id: &str,
    slug: &str,
    codes: &[&str],
    created_at: Millis,
) -> Link {
    Link {
        id: id.into(),
        client_id: client_id.into(),
        slug: slug.into(),
        destination: "https://example.com/".into(),
        label: None,
        promo_codes: codes.iter().map(|c| c.to_string()).collect(),
        created_at,
    }
}

pub(crate) fn click(id: &str, client_id: &str, at: Millis, bot: bool) -> Click {
    Click {
        id: id.into(),
        link_id: "l1".into(),
        client_id: client_id.into(),
        at,
        visitor_id: None,
        referrer: None,
        landing_url: None,
        user_agent: Some("ua".into()),
        ip_hash: None,
        bot,
    }
}

pub(crate) fn event(dedup_key: Option<&str>, body: &str) -> NewEvent {
    NewEvent {
        dedup_key: dedup_key.map(Into::into),
        stripe_event_id: Some("evt_1".into()),
        event_type: Some("invoice.paid".into()),
        account: None,
        livemode: Some(false),
        api_version: None,
        endpoint: "/webhook".into(),
        endpoint_client_id: None,
        source: EventSource::Push,
        received_at: 1_000,
        headers: "{}".into(),
        body: body.as_bytes().to_vec(),
        verification: Verification::Unverified,
        verification_reason: Some(UnverifiedReason::NoSecret),
        client_id: None,
        client_method: None,
        processing: Processing::Pending,
    }
}

pub(crate) async fn insert(store: &DynStore, e: &NewEvent) -> i64 {
    match store.insert_event(e).await.unwrap() {
        InsertEvent::Inserted(id) => id,
        InsertEvent::Duplicate(d) => panic!("unexpected duplicate {}", d.id),
    }
}

pub(crate) fn fact(event_id: i64, client_id: &str, key: &str) -> SaleFact {
    SaleFact {
        event_id,
        client_id: client_id.into(),
        purchase_key: key.into(),
        verified: true,
        livemode: false,
        client_method: ClientMethod::WebhookSecret,
        body: FactBody::Payment(PaymentFacts {
            source: PaymentSource::Invoice,
            object_id: key.into(),
            counts: true,
            invoice: Some(key.into()),
            payment_intent: None,
            charge: None,
            checkout_session: None,
            subscription: None,
            customer: Some("cus_1".into()),
            email: None,
            amount: 1000,
            currency: "usd".into(),
            purchased_at: 1,
            billing_reason: None,
            hints: Hints::default(),
        }),
    }
}

pub(crate) fn conversion(id: &str, client_id: &str, key: &str, purchased_at: Millis) -> Conversion {
    Conversion {
        id: id.into(),
        client_id: client_id.into(),
        purchase_key: key.into(),
        link_id: Some("l1".into()),
        click_id: None,
        customer: None,
        email: None,
        subscription: None,
        amount: 1000,
        currency: "usd".into(),
        net_amount: 1000,
        purchased_at,
        kind: ConversionKind::New,
        livemode: false,
        verified: true,
        status: ConversionStatus::Paid,
        method: Some(Method::ClickId),
        client_method: ClientMethod::WebhookSecret,
        trace: vec![TraceStep {
            step: "click_id".into(),
            outcome: StepOutcome::Matched,
            detail: "c1".into(),
        }],
        created_at: purchased_at,
        updated_at: purchased_at,
    }
}

pub(crate) async fn settings_init_and_set(s: DynStore) {
    s.ping().await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap(), None);
    assert_eq!(s.init_setting("k", "a").await.unwrap(), "a");
    assert_eq!(s.init_setting("k", "b").await.unwrap(), "a");
    s.set_setting("k", "c").await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("c"));
    // The readiness write probe rewrites its own row.
    s.ping_write().await.unwrap();
    let probed = s.get_setting(super::READY_PROBE_KEY).await.unwrap();
    assert!(probed.is_some_and(|v| v.parse::<i64>().is_ok()));
}

pub(crate) async fn clients_order_and_name_conflict(s: DynStore) {
    s.insert_client(&client("c2", "beta", 10)).await.unwrap();
    s.insert_client(&client("c1", "alpha", 5)).await.unwrap();
    s.insert_client(&client("c3", "gamma", 10)).await.unwrap();
    let ids: Vec<_> = s
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);

    let err = s
        .insert_client(&client("c4", "beta", 20))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    assert_eq!(
        s.get_client("c1").await.unwrap(),
        Some(client("c1", "alpha", 5))
    );
    assert_eq!(
        s.find_client_by_name("gamma").await.unwrap().unwrap().id,
        "c3"
    );
    assert!(s.find_client_by_name("nope").await.unwrap().is_none());

    let settings = AttributionSettings {
        window_primary_days: 7,
        window_fallback_days: 14,
        any_time_fallback: false,
    };
    s.update_client_settings("c1", &settings).await.unwrap();
    assert_eq!(
        s.get_client("c1").await.unwrap().unwrap().settings,
        settings
    );
    assert!(matches!(
        s.update_client_settings("zz", &settings).await,
        Err(StoreError::NotFound)
    ));
}

pub(crate) async fn webhook_secrets(s: DynStore) {
    s.insert_client(&client("c1", "alpha", 1)).await.unwrap();
    s.insert_client(&client("c2", "beta", 2)).await.unwrap();
    s.add_webhook_secret("c2", &WebhookSecret::new("whsec_a"))
        .await
        .unwrap();
    s.add_webhook_secret("c2", &WebhookSecret::new("whsec_a"))
        .await
        .unwrap();
    s.add_webhook_secret("c2", &WebhookSecret::new("whsec_b"))
        .await
        .unwrap();
    let all = s.list_client_secrets().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].client.id, "c1");
    assert!(all[0].secrets.is_empty());
    assert_eq!(all[1].client.id, "c2");
    assert_eq!(
        all[1].secrets,
        [WebhookSecret::new("whsec_a"), WebhookSecret::new("whsec_b")]
    );
    // A secret of a client that does not exist is refused.
    assert!(s
        .add_webhook_secret("zz", &WebhookSecret::new("whsec_c"))
        .await
        .is_err());
}

pub(crate) async fn links_and_promo_codes(s: DynStore) {
    s.insert_client(&client("c1", "alpha", 1)).await.unwrap();
    s.insert_client(&client("c2", "beta", 2)).await.unwrap();
    let l1 = link("l1", "c1", "spring", &["SPRING10", "promo_123"], 1);
    let l2 = link("l2", "c2", "spring", &[], 2);
    let l3 = link("l3", "c1", "summer", &["SUMMER"], 3);
    s.insert_link(&l1).await.unwrap();
    s.insert_link(&l2).await.unwrap();
    s.insert_link(&l3).await.unwrap();

    let err = s
        .insert_link(&link("l4", "c1", "spring", &["X"], 4))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // The failed insert left no promotion code behind.
    assert!(s
        .find_link_by_promo_code("c1", "x")
        .await
        .unwrap()
        .is_none());

    assert_eq!(s.get_link("l1").await.unwrap(), Some(l1.clone()));
    assert_eq!(
        s.list_links(None).await.unwrap(),
        [l1.clone(), l2.clone(), l3.clone()]
    );
    assert_eq!(
        s.list_links(Some("c1")).await.unwrap(),
        [l1.clone(), l3.clone()]
    );
    assert_eq!(
        s.find_links_by_slug("spring").await.unwrap(),
        [l1.clone(), l2.clone()]
    );
    assert_eq!(s.find_link("c2", "spring").await.unwrap(), Some(l2.clone()));
    assert!(s.find_link("c2", "summer").await.unwrap().is_none());

    assert_eq!(
        s.find_link_by_promo_code("c1", "spring10").await.unwrap(),
        Some(l1.clone())
    );
    assert_eq!(
        s.find_link_by_promo_code("c1", "promo_123").await.unwrap(),
        Some(l1.clone())
    );
    assert_eq!(
        s.find_link_by_promo_code("c1", "Summer").await.unwrap(),
        Some(l3)
    );
    assert!(s
        .find_link_by_promo_code("c2", "SPRING10")
        .await
        .unwrap()
        .is_none());
}

pub(crate) async fn clicks_latest_respects_bounds_and_bots(s: DynStore) {
    s.insert_click(&click("k1", "c1", 100, false))
        .await
        .unwrap();
    s.insert_click(&click("k2", "c1", 200, false))
        .await
        .unwrap();
    s.insert_click(&click("k3", "c1", 250, true)).await.unwrap();
    s.insert_click(&click("k4", "c2", 260, false))
        .await
        .unwrap();
    s.insert_click(&click("k5", "c1", 300, false))
        .await
        .unwrap();

    let id = |c: Option<Click>| c.map(|c| c.id);
    assert_eq!(
        id(s.latest_click("c1", None, 1000).await.unwrap()).as_deref(),
        Some("k5")
    );
    assert_eq!(
        id(s.latest_click("c1", None, 299).await.unwrap()).as_deref(),
        Some("k2")
    );
    assert_eq!(
        id(s.latest_click("c1", None, 200).await.unwrap()).as_deref(),
        Some("k2")
    );
    assert_eq!(
        id(s.latest_click("c1", Some(201), 299).await.unwrap()),
        None
    );
    assert_eq!(
        id(s.latest_click("c1", Some(100), 199).await.unwrap()).as_deref(),
        Some("k1")
    );
    assert_eq!(id(s.latest_click("c1", None, 99).await.unwrap()), None);
    assert_eq!(id(s.latest_click("c3", None, 1000).await.unwrap()), None);

    assert_eq!(
        s.get_click("c1", "k3").await.unwrap(),
        Some(click("k3", "c1", 250, true))
    );
    assert!(s.get_click("c2", "k3").await.unwrap().is_none());
    assert_eq!(s.count_clicks(None).await.unwrap(), 5);
    assert_eq!(s.count_clicks(Some("c1")).await.unwrap(), 4);
    let recent: Vec<_> = s
        .recent_clicks_for_link("l1", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(recent, ["k5", "k4"]);
    let err = s
        .insert_click(&click("k1", "c1", 1, false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

pub(crate) async fn events_insert_dedup_and_null_keys(s: DynStore) {
    let first = insert(&s, &event(Some("acct:evt_1"), "{\"a\":1}")).await;
    let mut again = event(Some("acct:evt_1"), "{\"other\":true}");
    again.received_at = 2_000;
    match s.insert_event(&again).await.unwrap() {
        InsertEvent::Duplicate(stored) => {
            assert_eq!(stored.id, first);
            assert_eq!(stored.body, b"{\"a\":1}");
            assert_eq!(stored.received_at, 1_000);
            assert_eq!(stored.deliveries, 1);
        }
        InsertEvent::Inserted(id) => panic!("inserted twice as {id}"),
    }
    let a = insert(&s, &event(None, "garbage")).await;
    let b = insert(&s, &event(None, "garbage")).await;
    assert_ne!(a, b);

    s.record_delivery(first).await.unwrap();
    let stored = s.get_event(first).await.unwrap().unwrap();
    assert_eq!(stored.deliveries, 2);
    assert_eq!(stored.dedup_key.as_deref(), Some("acct:evt_1"));
    assert_eq!(stored.source, EventSource::Push);
    assert_eq!(stored.verification, Verification::Unverified);
    assert_eq!(stored.verification_reason, Some(UnverifiedReason::NoSecret));
    assert_eq!(stored.livemode, Some(false));
    assert_eq!(stored.processing, Processing::Pending);
    assert!(s.get_event(9_999).await.unwrap().is_none());
    assert!(matches!(
        s.record_delivery(9_999).await,
        Err(StoreError::NotFound)
    ));
}

/// `insert_events`: answers in order; a key stored before, or earlier in
/// the same call, is a duplicate of the first; events without a key never
/// are. The same inside a unit of work (SQLite: one transaction, synced by
/// `sync` after `CommitUnsynced`) and outside one.
pub(crate) async fn events_inserted_together_in_a_unit_and_alone(s: DynStore) {
    let before = insert(&s, &event(Some("k0"), "{\"n\":0}")).await;
    let batch = |tag: &str| {
        vec![
            event(Some(&format!("{tag}1")), "{\"n\":1}"),
            event(Some("k0"), "{\"again\":0}"),
            event(None, "not json"),
            event(Some(&format!("{tag}1")), "{\"again\":1}"),
            event(Some(&format!("{tag}2")), "{\"n\":2}"),
        ]
    };
    let check = |rows: Vec<StoreResult<InsertEvent>>| -> (i64, i64) {
        let rows: Vec<InsertEvent> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 5);
        let id = |r: &InsertEvent| match r {
            InsertEvent::Inserted(id) => *id,
            InsertEvent::Duplicate(d) => panic!("unexpected duplicate of {}", d.id),
        };
        let dup = |r: &InsertEvent| match r {
            InsertEvent::Duplicate(d) => (d.id, d.body.clone()),
            InsertEvent::Inserted(id) => panic!("inserted twice as {id}"),
        };
        let first = id(&rows[0]);
        assert_eq!(dup(&rows[1]), (before, b"{\"n\":0}".to_vec()));
        let keyless = id(&rows[2]);
        assert_eq!(dup(&rows[3]), (first, b"{\"n\":1}".to_vec()));
        let second = id(&rows[4]);
        assert!(first != keyless && keyless != second && first != second);
        (first, second)
    };

    let (alone, _) = check(s.insert_events(&batch("a")).await);
    assert_eq!(
        s.get_event(alone).await.unwrap().unwrap().body,
        b"{\"n\":1}"
    );

    let mut rows = None;
    s.unit(Box::pin(async {
        rows = Some(s.insert_events(&batch("u")).await);
        UnitEnd::CommitUnsynced
    }))
    .await
    .unwrap();
    s.sync().await.unwrap();
    let (first, second) = check(rows.unwrap());
    for id in [first, second] {
        let stored = s.get_event(id).await.unwrap().unwrap();
        assert_eq!(stored.processing, Processing::Pending);
    }
}

pub(crate) async fn events_verify_process_list_retry(s: DynStore) {
    let e1 = insert(&s, &event(Some("k1"), "{\"id\":\"evt_1\"}")).await;
    let e2 = insert(
        &s,
        &event(Some("k2"), "{\"id\":\"evt_2\",\"x\":\"needle\"}"),
    )
    .await;
    let e3 = insert(&s, &event(Some("k3"), "{\"id\":\"evt_3\"}")).await;

    s.set_event_unverified_reason(e1, UnverifiedReason::Mismatch)
        .await
        .unwrap();
    assert_eq!(
        s.get_event(e1).await.unwrap().unwrap().verification_reason,
        Some(UnverifiedReason::Mismatch)
    );
    assert!(s
        .mark_event_verified(
            e1,
            "c1",
            ClientMethod::WebhookSecret,
            Some("{\"h\":1}"),
            Some(b"{\"id\":\"evt_1\",\"v\":2}")
        )
        .await
        .unwrap());
    assert!(!s
        .mark_event_verified(e1, "c2", ClientMethod::WebhookSecret, None, None)
        .await
        .unwrap());
    let v = s.get_event(e1).await.unwrap().unwrap();
    assert_eq!(v.verification, Verification::Verified);
    assert_eq!(v.verification_reason, None);
    assert_eq!(v.client_id.as_deref(), Some("c1"));
    assert_eq!(v.client_method, Some(ClientMethod::WebhookSecret));
    assert_eq!(v.headers, "{\"h\":1}");
    assert_eq!(v.body, b"{\"id\":\"evt_1\",\"v\":2}");
    // Verified events keep no unverified reason.
    s.set_event_unverified_reason(e1, UnverifiedReason::Stale)
        .await
        .unwrap();
    assert_eq!(
        s.get_event(e1).await.unwrap().unwrap().verification_reason,
        None
    );

    // Verification without new headers/body keeps the stored ones.
    assert!(s
        .mark_event_verified(e3, "c1", ClientMethod::Api, None, None)
        .await
        .unwrap());
    assert_eq!(
        s.get_event(e3).await.unwrap().unwrap().body,
        b"{\"id\":\"evt_3\"}"
    );

    s.set_event_processing(e1, None, Processing::Processed, None)
        .await
        .unwrap();
    s.set_event_processing(
        e2,
        Some(("c2", ClientMethod::StripeAccount)),
        Processing::Failed,
        Some("boom"),
    )
    .await
    .unwrap();
    let p2 = s.get_event(e2).await.unwrap().unwrap();
    assert_eq!(p2.processing, Processing::Failed);
    assert_eq!(p2.processing_error.as_deref(), Some("boom"));
    assert_eq!(p2.client_id.as_deref(), Some("c2"));
    assert_eq!(p2.client_method, Some(ClientMethod::StripeAccount));
    assert_eq!(p2.attempts, 1);
    let p1 = s.get_event(e1).await.unwrap().unwrap();
    assert_eq!(p1.client_id.as_deref(), Some("c1"));
    assert_eq!(p1.attempts, 1);

    let ids = |v: Vec<StoredEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_events(&EventFilter::default()).await.unwrap()),
        [e3, e2, e1]
    );
    let f = EventFilter {
        limit: 2,
        ..Default::default()
    };
    assert_eq!(ids(s.list_events(&f).await.unwrap()), [e3, e2]);
    // The next page starts below the last id shown, filters kept.
    let f = EventFilter {
        before_id: Some(e2),
        limit: 2,
        ..Default::default()
    };
    assert_eq!(ids(s.list_events(&f).await.unwrap()), [e1]);
    let f = EventFilter {
        before_id: Some(e3),
        verification: Some(Verification::Verified),
        ..Default::default()
    };
    assert_eq!(ids(s.list_events(&f).await.unwrap()), [e1]);
    let f = EventFilter {
        body_contains: Some("needle".into()),
        ..Default::default()
    };
    assert_eq!(ids(s.list_events(&f).await.unwrap()), [e2]);
    let f = EventFilter {
        verification: Some(Verification::Verified),
        client_id: Some("c1".into()),
        ..Default::default()
    };
    assert_eq!(ids(s.list_events(&f).await.unwrap()), [e3, e1]);
    let f = EventFilter {
        verification: Some(Verification::Verified),
        processing: Some(Processing::Processed),
        ..Default::default()
    };
    assert_eq!(ids(s.list_events(&f).await.unwrap()), [e1]);

    // e2 failed once, e3 still pending.
    assert_eq!(ids(s.events_to_retry(3, 10).await.unwrap()), [e2, e3]);
    assert_eq!(ids(s.events_to_retry(1, 10).await.unwrap()), [e3]);
    s.set_event_processing(e3, None, Processing::NoClient, None)
        .await
        .unwrap();
    assert_eq!(ids(s.events_to_retry(1, 10).await.unwrap()), [e3]);
    assert_eq!(ids(s.events_to_retry(3, 1).await.unwrap()), [e2]);
}

pub(crate) async fn alias_moves_facts_and_chained_aliases(s: DynStore) {
    let e1 = insert(&s, &event(Some("k1"), "{}")).await;
    let e2 = insert(&s, &event(Some("k2"), "{}")).await;
    let e3 = insert(&s, &event(Some("k3"), "{}")).await;
    s.upsert_fact(&fact(e1, "c1", "ch_1")).await.unwrap();
    s.upsert_fact(&fact(e2, "c1", "pi_1")).await.unwrap();
    s.upsert_fact(&fact(e3, "c2", "pi_1")).await.unwrap();
    // Upsert replaces.
    let mut f1 = fact(e1, "c1", "ch_1");
    f1.verified = false;
    s.upsert_fact(&f1).await.unwrap();
    assert_eq!(
        s.facts_for_purchase("c1", "ch_1").await.unwrap(),
        [f1.clone()]
    );

    s.set_alias("c1", "ch_1", "pi_1").await.unwrap();
    assert_eq!(
        s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
        Some("pi_1")
    );
    assert!(s.facts_for_purchase("c1", "ch_1").await.unwrap().is_empty());
    let ids: Vec<_> = s
        .facts_for_purchase("c1", "pi_1")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.event_id)
        .collect();
    assert_eq!(ids, [e1, e2]);

    // pi_1 turns out to belong to an invoice: everything follows.
    s.set_alias("c1", "pi_1", "in_1").await.unwrap();
    assert_eq!(
        s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
        Some("in_1")
    );
    assert_eq!(
        s.resolve_alias("c1", "pi_1").await.unwrap().as_deref(),
        Some("in_1")
    );
    let facts = s.facts_for_purchase("c1", "in_1").await.unwrap();
    assert_eq!(facts.len(), 2);
    assert!(facts.iter().all(|f| f.purchase_key == "in_1"));
    // Other clients are untouched.
    assert_eq!(s.facts_for_purchase("c2", "pi_1").await.unwrap().len(), 1);
    assert!(s.resolve_alias("c2", "pi_1").await.unwrap().is_none());

    // Re-pointing an alias replaces it; a self-alias changes nothing.
    s.set_alias("c1", "ch_1", "in_2").await.unwrap();
    assert_eq!(
        s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
        Some("in_2")
    );
    s.set_alias("c1", "ch_1", "ch_1").await.unwrap();
    assert_eq!(
        s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
        Some("in_2")
    );
}

pub(crate) async fn conversions_save_update_merge_conflict(s: DynStore) {
    let mut a = conversion("cv1", "c1", "in_1", 100);
    s.save_conversion(&a).await.unwrap();
    assert_eq!(s.get_conversion("cv1").await.unwrap(), Some(a.clone()));

    a.link_id = None;
    a.method = None;
    a.status = ConversionStatus::PartiallyRefunded;
    a.net_amount = 400;
    a.trace.push(TraceStep {
        step: "refund".into(),
        outcome: StepOutcome::Skipped,
        detail: String::new(),
    });
    a.updated_at = 200;
    s.save_conversion(&a).await.unwrap();
    assert_eq!(
        s.get_conversion_by_key("c1", "in_1").await.unwrap(),
        Some(a.clone())
    );
    assert!(s
        .get_conversion_by_key("c2", "in_1")
        .await
        .unwrap()
        .is_none());

    // A second live conversion with the same key is a conflict.
    let b = conversion("cv2", "c1", "in_1", 150);
    let err = s.save_conversion(&b).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Another client may use the same key.
    s.save_conversion(&conversion("cv3", "c2", "in_1", 150))
        .await
        .unwrap();

    // Re-keying.
    let c = conversion("cv4", "c1", "pi_9", 120);
    s.save_conversion(&c).await.unwrap();
    let err = s.rekey_conversion("cv4", "in_1").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    s.rekey_conversion("cv4", "in_9").await.unwrap();
    assert_eq!(
        s.get_conversion_by_key("c1", "in_9")
            .await
            .unwrap()
            .unwrap()
            .id,
        "cv4"
    );
    assert!(s
        .get_conversion_by_key("c1", "pi_9")
        .await
        .unwrap()
        .is_none());

    // Merge cv1 into cv4: cv1 leaves every list, stays readable by id.
    s.merge_conversion("cv1", "cv4").await.unwrap();
    assert!(s
        .get_conversion_by_key("c1", "in_1")
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.get_conversion("cv1").await.unwrap().unwrap().id, "cv1");
    let listed: Vec<_> = s
        .list_conversions(&ConversionFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ["cv3", "cv4"]);
    assert!(s.orphan_ids(None, 0).await.unwrap().is_empty());
    assert!(matches!(
        s.rekey_conversion("cv1", "in_x").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.merge_conversion("zz", "cv4").await,
        Err(StoreError::NotFound)
    ));

    // The key is free again for a live conversion.
    s.save_conversion(&b).await.unwrap();
    assert_eq!(
        s.get_conversion_by_key("c1", "in_1").await.unwrap(),
        Some(b.clone())
    );
}

pub(crate) async fn conversions_list_filters(s: DynStore) {
    let mut a = conversion("a", "c1", "k1", 100);
    a.customer = Some("cus_1".into());
    a.email = Some("Ann@Example.com".into());
    a.subscription = Some("sub_1".into());
    a.kind = ConversionKind::TrialStart;
    let mut b = conversion("b", "c1", "k2", 300);
    b.link_id = None;
    b.verified = false;
    let mut c = conversion("c", "c1", "k3", 300);
    c.link_id = Some("l2".into());
    let d = conversion("d", "c2", "k1", 200);
    for x in [&a, &b, &c, &d] {
        s.save_conversion(x).await.unwrap();
    }
    let ids = |v: Vec<Conversion>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let all = s
        .list_conversions(&ConversionFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(all), ["c", "b", "d", "a"]);
    let f = |f: ConversionFilter| {
        let s = &s;
        async move { ids(s.list_conversions(&f).await.unwrap()) }
    };
    assert_eq!(
        f(ConversionFilter {
            client_id: Some("c1".into()),
            limit: 2,
            ..Default::default()
        })
        .await,
        ["c", "b"]
    );
    assert_eq!(
        f(ConversionFilter {
            link_id: Some("l1".into()),
            ..Default::default()
        })
        .await,
        ["d", "a"]
    );
    // The next page after "c": "b" shares its purchase time and is not
    // skipped (a bound on the time alone would skip it).
    assert_eq!(
        f(ConversionFilter {
            after: Some((300, "c".into())),
            ..Default::default()
        })
        .await,
        ["b", "d", "a"]
    );
    assert_eq!(
        f(ConversionFilter {
            after: Some((300, "b".into())),
            client_id: Some("c1".into()),
            limit: 1,
            ..Default::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        f(ConversionFilter {
            orphans_only: true,
            ..Default::default()
        })
        .await,
        ["b"]
    );
    assert_eq!(
        f(ConversionFilter {
            unverified_only: true,
            client_id: Some("c2".into()),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        f(ConversionFilter {
            subscription: Some("sub_1".into()),
            ..Default::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        f(ConversionFilter {
            kind: Some(ConversionKind::TrialStart),
            ..Default::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        f(ConversionFilter {
            subscription: Some("sub_2".into()),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        f(ConversionFilter {
            customer: Some("cus_1".into()),
            ..Default::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        f(ConversionFilter {
            email: Some("ann@example.COM".into()),
            ..Default::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        f(ConversionFilter {
            purchase_key: Some("k1".into()),
            client_id: Some("c2".into()),
            ..Default::default()
        })
        .await,
        ["d"]
    );
}

pub(crate) async fn customer_history_by_customer_then_email(s: DynStore) {
    let mk = |id: &str, at: Millis, customer: Option<&str>, email: Option<&str>| {
        let mut c = conversion(id, "c1", &format!("key_{id}"), at);
        c.customer = customer.map(Into::into);
        c.email = email.map(Into::into);
        c
    };
    let old_cus = mk("h1", 100, Some("cus_1"), None);
    let newer_cus = mk("h2", 200, Some("cus_1"), None);
    let by_mail = mk("h3", 300, Some("cus_other"), Some("Bob@Example.com"));
    let mut orphan = mk("h4", 150, Some("cus_1"), Some("bob@example.com"));
    orphan.link_id = None;
    let mut other_client = mk("h5", 160, Some("cus_1"), None);
    other_client.client_id = "c2".into();
    let current = mk("cur", 250, Some("cus_1"), Some("bob@example.com"));
    for c in [
        &old_cus,
        &newer_cus,
        &by_mail,
        &orphan,
        &other_client,
        &current,
    ] {
        s.save_conversion(c).await.unwrap();
    }
    let h = |customer: Option<&'static str>, email: Option<&'static str>, before: Millis| {
        let s = &s;
        async move {
            s.customer_history("c1", customer, email, before, "cur")
                .await
                .unwrap()
                .map(|c| c.id)
        }
    };
    assert_eq!(h(Some("cus_1"), None, 1000).await.as_deref(), Some("h2"));
    assert_eq!(h(Some("cus_1"), None, 199).await.as_deref(), Some("h1"));
    assert_eq!(h(Some("cus_1"), None, 200).await.as_deref(), Some("h2"));
    assert_eq!(h(Some("cus_1"), None, 99).await, None);
    // Customer unknown: falls back to the email, case-insensitively.
    assert_eq!(
        h(Some("cus_new"), Some("BOB@example.com"), 1000)
            .await
            .as_deref(),
        Some("h3")
    );
    assert_eq!(
        h(None, Some("bob@example.com"), 1000).await.as_deref(),
        Some("h3")
    );
    assert_eq!(h(None, Some("bob@example.com"), 299).await, None);
    assert_eq!(h(None, None, 1000).await, None);
    // The excluded conversion itself never matches.
    assert_eq!(
        s.customer_history("c1", Some("cus_1"), None, 240, "h2")
            .await
            .unwrap()
            .map(|c| c.id)
            .as_deref(),
        Some("h1")
    );
    // Merged conversions are not history.
    s.merge_conversion("h2", "h1").await.unwrap();
    assert_eq!(h(Some("cus_1"), None, 1000).await.as_deref(), Some("h1"));
}

pub(crate) async fn orphans_oldest_first(s: DynStore) {
    for (id, client, at, linked) in [
        ("o1", "c1", 300, false),
        ("o2", "c1", 100, false),
        ("o3", "c2", 200, false),
        ("x1", "c1", 50, true),
        ("o4", "c1", 400, false),
    ] {
        let mut c = conversion(id, client, &format!("k_{id}"), at);
        if !linked {
            c.link_id = None;
        }
        s.save_conversion(&c).await.unwrap();
    }
    s.merge_conversion("o4", "o1").await.unwrap();
    assert_eq!(s.orphan_ids(None, 0).await.unwrap(), ["o2", "o3", "o1"]);
    assert_eq!(s.orphan_ids(Some("c1"), 0).await.unwrap(), ["o2", "o1"]);
    assert_eq!(s.orphan_ids(None, 2).await.unwrap(), ["o2", "o3"]);
}

pub(crate) async fn history_add_and_list(s: DynStore) {
    let entry = |conversion_id: &str, reason: &str| NewHistoryEntry {
        conversion_id: conversion_id.into(),
        actor: "system".into(),
        from_link_id: None,
        to_link_id: Some("l1".into()),
        from_method: None,
        to_method: Some(Method::ClickWindowPrimary),
        reason: reason.into(),
    };
    s.add_history(&entry("cv1", "first")).await.unwrap();
    s.add_history(&entry("cv2", "other")).await.unwrap();
    let mut manual = entry("cv1", "second");
    manual.actor = "admin".into();
    manual.from_link_id = Some("l1".into());
    manual.to_link_id = Some("l2".into());
    manual.from_method = Some(Method::ClickWindowPrimary);
    manual.to_method = Some(Method::Manual);
    s.add_history(&manual).await.unwrap();

    let h = s.list_history("cv1").await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].reason, "first");
    assert_eq!(h[0].to_method, Some(Method::ClickWindowPrimary));
    assert_eq!(h[1].reason, "second");
    assert_eq!(h[1].actor, "admin");
    assert_eq!(h[1].from_link_id.as_deref(), Some("l1"));
    assert_eq!(h[1].from_method, Some(Method::ClickWindowPrimary));
    assert_eq!(h[1].to_method, Some(Method::Manual));
    assert!(h[0].id < h[1].id && h[1].at >= h[0].at && h[0].at > 0);
    assert!(s.list_history("nope").await.unwrap().is_empty());
}

pub(crate) async fn reports_count_per_client_currency_day_and_link(s: DynStore) {
    let day = 24 * 3600 * 1000;
    let now = 100 * day;
    s.insert_client(&client("c1", "one", 1)).await.unwrap();
    s.insert_client(&client("c2", "two", 2)).await.unwrap();
    s.add_webhook_secret("c1", &WebhookSecret::new("whsec_abcdefgh"))
        .await
        .unwrap();
    s.insert_link(&link("l1", "c1", "a", &[], 1)).await.unwrap();
    s.insert_link(&link("l2", "c1", "b", &[], 2)).await.unwrap();
    let mut k = click("k1", "c1", now - 2 * day, false);
    k.link_id = "l1".into();
    k.visitor_id = Some("v1".into());
    s.insert_click(&k).await.unwrap();
    let mut k2 = click("k2", "c1", now - 2 * day + 5, false);
    k2.link_id = "l1".into();
    k2.visitor_id = Some("v1".into());
    s.insert_click(&k2).await.unwrap();
    let mut bot = click("k3", "c1", now - day / 2, true);
    bot.link_id = "l1".into();
    s.insert_click(&bot).await.unwrap();

    let mut usd = conversion("v1", "c1", "pi_1", now - 2 * day);
    usd.created_at = now - day / 2;
    s.save_conversion(&usd).await.unwrap();
    let mut jpy = conversion("v2", "c1", "pi_2", now - 2 * day);
    jpy.currency = "jpy".into();
    jpy.amount = 4900;
    jpy.net_amount = 4900;
    jpy.created_at = now - 3 * day;
    s.save_conversion(&jpy).await.unwrap();
    let mut orphan = conversion("v3", "c1", "pi_3", now - 3 * day);
    orphan.link_id = None;
    orphan.created_at = now - 3 * day;
    s.save_conversion(&orphan).await.unwrap();
    let mut forged = conversion("v4", "c1", "pi_4", now - day);
    forged.verified = false;
    forged.amount = 999_999;
    s.save_conversion(&forged).await.unwrap();
    let mut live = conversion("v5", "c1", "pi_5", now - day);
    live.livemode = true;
    s.save_conversion(&live).await.unwrap();

    let activity = s.client_activity(now).await.unwrap();
    assert_eq!(activity.len(), 2);
    let a = &activity[0];
    assert_eq!(a.client_id, "c1");
    assert_eq!(a.secrets, 1);
    assert_eq!(a.orphans, 1);
    assert_eq!(
        a.conversions_24h, 2,
        "v1 and the live v5 were created in the last day; v4 is unverified"
    );
    assert_eq!(a.clicks_7d, 2, "bot clicks do not count");
    assert_eq!(activity[1].secrets, 0);

    let test_totals = s.currency_totals(Some("c1"), false).await.unwrap();
    let usd_total = test_totals.iter().find(|t| t.currency == "usd").unwrap();
    assert_eq!(
        usd_total.revenue, 2000,
        "v1 + orphan v3; the unverified v4 is held out"
    );
    let jpy_total = test_totals.iter().find(|t| t.currency == "jpy").unwrap();
    assert_eq!(jpy_total.revenue, 4900);
    let live_totals = s.currency_totals(None, true).await.unwrap();
    assert_eq!(live_totals.len(), 1);
    assert_eq!(live_totals[0].revenue, 1000);

    let days = s.daily_counts(Some("c1"), now - 10 * day).await.unwrap();
    let total_clicks: i64 = days.iter().map(|d| d.clicks).sum();
    let total_conversions: i64 = days.iter().map(|d| d.conversions).sum();
    assert_eq!(total_clicks, 2);
    assert_eq!(total_conversions, 4, "verified conversions of both modes");
    assert!(days.windows(2).all(|w| w[0].day < w[1].day));

    let links = s.link_stats("c1", false).await.unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].link_id, "l1");
    assert_eq!(links[0].clicks, 2);
    assert_eq!(links[0].unique_clicks, 1);
    assert_eq!(links[0].bot_clicks, 1);
    assert_eq!(
        links[0].conversions, 2,
        "v1 and v2 (test mode); v4 unverified"
    );
    assert_eq!(links[0].revenue.len(), 2);
}

pub(crate) async fn sessions_expire_and_can_be_deleted(s: DynStore) {
    let session = AdminSession {
        id_hash: "h1".into(),
        csrf_token: "csrf".into(),
        created_at: 10,
        expires_at: 100,
    };
    s.insert_session(&session).await.unwrap();
    assert_eq!(s.get_session("h1", 50).await.unwrap(), Some(session));
    assert_eq!(s.get_session("h1", 100).await.unwrap(), None, "expired");
    s.delete_session("h1").await.unwrap();
    assert_eq!(s.get_session("h1", 50).await.unwrap(), None);
}

// ---- races and orders several instances rely on ------------------------------

pub(crate) async fn concurrent_deliveries_store_one_event(s: DynStore) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut e = event(Some("acct:evt_race"), "{\"id\":\"evt_race\"}");
                e.received_at = 1_000 + i;
                s.insert_event(&e).await.unwrap()
            })
        })
        .collect();
    let mut inserted = Vec::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            InsertEvent::Inserted(id) => inserted.push(id),
            InsertEvent::Duplicate(d) => duplicates.push(d.id),
        }
    }
    assert_eq!(inserted.len(), 1, "exactly one delivery is stored");
    assert!(
        duplicates.iter().all(|d| *d == inserted[0]),
        "{duplicates:?}"
    );
    let all = s
        .list_events(&EventFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

pub(crate) async fn concurrent_upgrades_have_one_winner(s: DynStore) {
    let id = insert(&s, &event(Some("k_up"), "{}")).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.mark_event_verified(
                    id,
                    &format!("c{i}"),
                    ClientMethod::WebhookSecret,
                    None,
                    None,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "one upgrade wins");
    let stored = s.get_event(id).await.unwrap().unwrap();
    assert_eq!(stored.verification, Verification::Verified);
}

pub(crate) async fn racing_conversions_of_one_purchase_conflict(s: DynStore) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.save_conversion(&conversion(&format!("cv{i}"), "c1", "in_race", 100))
                    .await
            })
        })
        .collect();
    let mut saved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => saved += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("expected a conflict, got {e:?}"),
        }
    }
    assert_eq!(saved, 1, "one live conversion per purchase key");
    let live = s
        .list_conversions(&ConversionFilter {
            purchase_key: Some("in_race".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
}

pub(crate) async fn ties_keep_insertion_order(s: DynStore) {
    // Created in the same millisecond: insertion order decides, not the ids.
    for (id, name) in [("c_z", "zulu"), ("c_a", "alpha"), ("c_m", "mike")] {
        s.insert_client(&client(id, name, 7)).await.unwrap();
    }
    let ids: Vec<_> = s
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c_z", "c_a", "c_m"]);
    let ids: Vec<_> = s
        .list_client_secrets()
        .await
        .unwrap()
        .iter()
        .map(|c| c.client.id.clone())
        .collect();
    assert_eq!(ids, ["c_z", "c_a", "c_m"]);
    // A settings update does not move a client.
    s.update_client_settings("c_z", &AttributionSettings::default())
        .await
        .unwrap();
    assert_eq!(s.list_clients().await.unwrap()[0].id, "c_z");

    s.insert_link(&link("l_z", "c_z", "same", &["b", "A", "c"], 9))
        .await
        .unwrap();
    s.insert_link(&link("l_a", "c_a", "same", &[], 9))
        .await
        .unwrap();
    let found = s.find_links_by_slug("same").await.unwrap();
    assert_eq!(found[0].id, "l_z");
    assert_eq!(found[1].id, "l_a");
    assert_eq!(
        found[0].promo_codes,
        ["b", "A", "c"],
        "codes keep their order"
    );
}

pub(crate) async fn locks_are_granted_and_released(s: DynStore) {
    // One at a time, as the domain takes them.
    drop(s.lock_purchases(&["c1"]).await.unwrap());
    // Several clients at once (a sale moving from a suspected client to the
    // verified one); the same one twice is fine.
    drop(s.lock_purchases(&["c2", "c1", "c2"]).await.unwrap());
    drop(s.lock_purchases(&[]).await.unwrap());
    drop(s.lock_purchases(&["c2"]).await.unwrap());
    drop(s.lock_purchases(&["c1"]).await.unwrap());
    // A job run right after a run of the same instance runs.
    for _ in 0..3 {
        let job = s.try_lock_job("sweep").await.unwrap();
        assert!(job.is_some());
    }
}
