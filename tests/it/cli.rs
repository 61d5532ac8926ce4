//! SPEC 4.1 — the real `salestrack` binary against a temporary SQLite file.
//! Sales are fed through the same database with the library's own ingest,
//! as a running server would.

use std::process::{Command, Output};

use salestrack::domain::ids::new_id;
use salestrack::domain::ingest::{Delivery, Endpoint, IngestOutcome};
use salestrack::domain::{DomainConfig, Tracker};
use salestrack::stripe::signature::header_for;
use serde_json::{json, Value};

use crate::helpers::{event, now_s};

const SECRET: &str = "whsec_cli_full_secret_7f3a91c2d4e5";
const API: &str = "2025-03-31.basil";

const FIELDS: [&str; 13] = [
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
];

/// The binary, a temporary directory (its working directory) and a fresh
/// database of the suite's backend (a SQLite file in that directory).
pub(crate) struct Bin {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) db: String,
    _db: crate::helpers::DbGuard,
}

pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub(crate) fn command(dir: &std::path::Path, log: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salestrack"));
    cmd.current_dir(dir).env("RUST_LOG", log);
    for (k, _) in std::env::vars() {
        if k.starts_with("SALESTRACK_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub(crate) fn finish(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Bin {
    /// `None` when the suite's database is not available (see `spawn_app!`).
    pub(crate) fn new() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (guard, db) = crate::helpers::fresh_database_blocking(dir.path(), "x.db")?;
        Some(Self {
            dir,
            db,
            _db: guard,
        })
    }

    fn run_with_log(&self, log: &str, args: &[&str]) -> Run {
        let out = command(self.dir.path(), log)
            .arg("--database")
            .arg(&self.db)
            .args(args)
            .output()
            .expect("run salestrack");
        finish(out)
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_with_log("warn", args)
    }

    /// Runs a command that must succeed with `--json` and parses its output.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let r = self.run(&all);
        assert!(r.ok(), "{args:?} failed: {r:?}");
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {r:?}"))
    }

    pub(crate) fn fails(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(!r.ok(), "{args:?} should fail: {r:?}");
        assert!(
            !r.stderr.trim().is_empty(),
            "{args:?} fails with a message: {r:?}"
        );
        r
    }

    /// Migrates, adds client Shop (domain shop.com, `SECRET`) and link s1.
    fn with_shop(&self) -> (String, String) {
        assert!(self.run(&["migrate"]).ok());
        let client = self.json(&[
            "client",
            "add",
            "--name",
            "Shop",
            "--domain",
            "shop.com",
            "--webhook-secret",
            SECRET,
        ]);
        let link = self.json(&[
            "link",
            "add",
            "--client",
            "Shop",
            "--slug",
            "s1",
            "--destination",
            "https://shop.com/s1",
        ]);
        (
            client["id"].as_str().unwrap().to_string(),
            link["id"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) async fn tracker(&self) -> Tracker {
        let store = salestrack::storage::connect(&self.db)
            .await
            .expect("open the CLI's database");
        Tracker::new(store, DomainConfig::default())
            .await
            .expect("tracker")
    }

    fn conversions(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["conversions", "list"];
        args.extend_from_slice(extra);
        match self.json(&args) {
            Value::Array(rows) => rows,
            other => panic!("conversions list --json is an array: {other}"),
        }
    }
}

fn payment_intent(id: &str, metadata: Value) -> Value {
    json!({
        "id": id, "object": "payment_intent", "amount": 4900, "amount_received": 4900,
        "currency": "usd", "customer": format!("cus_{id}"), "receipt_email": format!("{id}@example.com"),
        "metadata": metadata, "status": "succeeded", "livemode": false,
    })
}

/// Delivers a sale signed with `secret` to the client's URL, as the server would.
async fn deliver(
    tracker: &Tracker,
    client_id: &str,
    secret: &str,
    pi: &str,
    metadata: Value,
) -> IngestOutcome {
    let body = event(
        &new_id("evt"),
        "payment_intent.succeeded",
        API,
        now_s(),
        payment_intent(pi, metadata),
    );
    let signature = header_for(&body, secret, now_s());
    tracker
        .ingest(Delivery {
            endpoint: Endpoint::Client(client_id.to_string()),
            signature: Some(signature.clone()),
            headers: vec![
                ("stripe-signature".into(), signature),
                ("content-type".into(), "application/json".into()),
            ],
            body,
            received_at: chrono::Utc::now().timestamp_millis(),
        })
        .await
        .expect("stored")
}

fn row<'a>(rows: &'a [Value], key: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["purchase_key"] == key)
        .unwrap_or_else(|| panic!("no conversion {key} in {rows:#?}"))
}

// ---- migrate, clients ----------------------------------------------------------

#[test]
fn migrate_creates_the_database_and_can_run_again() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let first = bin.run(&["migrate"]);
    assert!(first.ok(), "{first:?}");
    if bin.db.starts_with("sqlite:") {
        assert!(
            bin.dir.path().join("x.db").exists(),
            "the SQLite file exists"
        );
    }
    assert_eq!(bin.json(&["migrate"])["migrated"], true);
}

#[test]
fn client_add_prints_id_name_and_webhook_url_and_only_a_masked_secret() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let out = bin.run_with_log(
        "debug",
        &[
            "client",
            "add",
            "--name",
            "Shop",
            "--domain",
            "https://www.Shop.com/",
            "--webhook-secret",
            SECRET,
            "--json",
        ],
    );
    assert!(out.ok(), "{out:?}");
    assert!(
        !out.all().contains(SECRET),
        "the full secret leaked: {out:?}"
    );
    let client: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let id = client["id"].as_str().expect("id");
    assert!(!id.is_empty());
    assert_eq!(client["name"], "Shop");
    assert_eq!(client["domain"], "shop.com", "the domain is normalised");
    let url = client["webhook_url"].as_str().expect("webhook_url");
    assert!(url.ends_with(&format!("/webhooks/stripe/{id}")), "{url}");
    let shown = client.to_string();
    assert!(
        shown.contains("91c2d4e5") || shown.contains("d4e5"),
        "a masked secret is shown: {shown}"
    );

    // The human output does not show it either.
    let human = bin.run_with_log(
        "debug",
        &[
            "client",
            "add",
            "--name",
            "Shop2",
            "--webhook-secret",
            SECRET,
        ],
    );
    assert!(human.ok(), "{human:?}");
    assert!(!human.all().contains(SECRET), "{human:?}");
    assert!(human.stdout.contains("/webhooks/stripe/"), "{human:?}");
}

#[test]
fn client_list_shows_every_client_with_masked_secrets_only() {
    let Some(bin) = Bin::new() else {
        return;
    };
    bin.with_shop();
    bin.json(&["client", "add", "--name", "Other"]);
    let list = bin.json(&["client", "list"]);
    let clients = list.as_array().expect("an array");
    let names: Vec<_> = clients
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Shop", "Other"]);
    assert!(clients
        .iter()
        .all(|c| c["id"].is_string() && c["webhook_url"].is_string()));
    assert!(!list.to_string().contains(SECRET), "{list}");
    let human = bin.run(&["client", "list"]);
    assert!(
        human.ok() && human.stdout.contains("Shop") && human.stdout.contains("Other"),
        "{human:?}"
    );
    assert!(!human.all().contains(SECRET), "{human:?}");
}

#[test]
fn client_add_secret_adds_a_second_active_secret_shown_masked() {
    let Some(bin) = Bin::new() else {
        return;
    };
    bin.with_shop();
    let second = "whsec_cli_rotated_secret_aa11bb22";
    let out = bin.run_with_log("debug", &["client", "add-secret", "Shop", second]);
    assert!(out.ok(), "{out:?}");
    assert!(!out.all().contains(second), "{out:?}");
    let list = bin.json(&["client", "list"]);
    let shop = &list.as_array().unwrap()[0];
    let secrets = shop["secrets"].as_array().expect("secrets listed (masked)");
    assert_eq!(secrets.len(), 2, "{shop}");
    assert!(!list.to_string().contains(second) && !list.to_string().contains(SECRET));

    let bad = bin.fails(&["client", "add-secret", "Shop", "not-a-secret"]);
    assert!(bad.stderr.contains("whsec_"), "{bad:?}");
    bin.fails(&["client", "add-secret", "Nobody", "whsec_whatever_123456"]);
}

#[test]
fn a_client_name_is_unique() {
    let Some(bin) = Bin::new() else {
        return;
    };
    bin.with_shop();
    let dup = bin.fails(&[
        "client",
        "add",
        "--name",
        "Shop",
        "--webhook-secret",
        SECRET,
    ]);
    assert!(
        !dup.all().contains(SECRET),
        "the secret leaked in an error: {dup:?}"
    );
    assert!(dup.stderr.contains("Shop"), "{dup:?}");
    assert_eq!(bin.json(&["client", "list"]).as_array().unwrap().len(), 1);
}

// ---- links -------------------------------------------------------------------------

#[test]
fn link_add_prints_id_slug_and_client_id_with_the_client_by_name_or_id() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let (client_id, _) = bin.with_shop();
    let by_id = bin.json(&[
        "link",
        "add",
        "--client",
        &client_id,
        "--slug",
        "by-id",
        "--destination",
        "https://shop.com/x?utm=1",
        "--label",
        "Creator",
    ]);
    assert!(by_id["id"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(by_id["slug"], "by-id");
    assert_eq!(by_id["client_id"], client_id.as_str());

    let links = bin.json(&["link", "list"]);
    let links = links.as_array().unwrap();
    let s1 = links
        .iter()
        .find(|l| l["slug"] == "s1")
        .expect("s1 added by name");
    assert_eq!(s1["client_id"], client_id.as_str());
    assert_eq!(links.len(), 2);
}

#[test]
fn a_duplicate_slug_is_refused_with_a_clear_message() {
    let Some(bin) = Bin::new() else {
        return;
    };
    bin.with_shop();
    let dup = bin.fails(&[
        "link",
        "add",
        "--client",
        "Shop",
        "--slug",
        "s1",
        "--destination",
        "https://shop.com/other",
    ]);
    assert!(dup.stderr.contains("s1"), "names the slug: {dup:?}");
    assert!(dup.stderr.to_lowercase().contains("already"), "{dup:?}");
    assert_eq!(bin.json(&["link", "list"]).as_array().unwrap().len(), 1);

    // Another client may use the same slug.
    bin.json(&["client", "add", "--name", "Other"]);
    let other = bin.json(&[
        "link",
        "add",
        "--client",
        "Other",
        "--slug",
        "s1",
        "--destination",
        "https://other.com/",
    ]);
    assert_eq!(other["slug"], "s1");
}

#[test]
fn link_list_filters_by_client() {
    let Some(bin) = Bin::new() else {
        return;
    };
    bin.with_shop();
    bin.json(&["client", "add", "--name", "Other"]);
    bin.json(&[
        "link",
        "add",
        "--client",
        "Other",
        "--slug",
        "o1",
        "--destination",
        "https://o.com/",
    ]);
    let all = bin.json(&["link", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let other = bin.json(&["link", "list", "--client", "Other"]);
    let slugs: Vec<_> = other
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["slug"].clone())
        .collect();
    assert_eq!(slugs, [json!("o1")]);
    bin.fails(&["link", "list", "--client", "Nobody"]);
}

#[test]
fn invalid_slugs_destinations_and_clients_are_refused_with_a_message() {
    let Some(bin) = Bin::new() else {
        return;
    };
    bin.with_shop();
    let long = "a".repeat(65);
    for slug in [
        "bad slug",
        "../etc",
        "x'; DROP TABLE links;--",
        "<b>",
        ".hidden",
        long.as_str(),
        "",
    ] {
        let r = bin.fails(&[
            "link",
            "add",
            "--client",
            "Shop",
            "--slug",
            slug,
            "--destination",
            "https://shop.com/",
        ]);
        assert!(r.stderr.contains("slug"), "{slug:?}: {r:?}");
    }
    for dest in [
        "not a url",
        "ftp://shop.com/file",
        "javascript:alert(1)",
        "shop.com/no-scheme",
    ] {
        let r = bin.fails(&[
            "link",
            "add",
            "--client",
            "Shop",
            "--slug",
            "ok",
            "--destination",
            dest,
        ]);
        assert!(r.stderr.contains("destination"), "{dest:?}: {r:?}");
    }
    let r = bin.fails(&[
        "link",
        "add",
        "--client",
        "Nobody",
        "--slug",
        "ok",
        "--destination",
        "https://x.com/",
    ]);
    assert!(r.stderr.contains("Nobody"), "{r:?}");
    assert_eq!(
        bin.json(&["link", "list"]).as_array().unwrap().len(),
        1,
        "only s1"
    );
}

// ---- conversions, autofix, diagnose, reprocess --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_list_json_has_every_field_and_filters_orphans_and_unverified() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let (client_id, link_id) = bin.with_shop();
    let tracker = bin.tracker().await;
    let ok = deliver(
        &tracker,
        &client_id,
        SECRET,
        "pi_cli_linked",
        json!({"link_slug": "s1"}),
    )
    .await;
    assert!(matches!(ok, IngestOutcome::Accepted { .. }), "{ok:?}");
    deliver(&tracker, &client_id, SECRET, "pi_cli_orphan", json!({})).await;
    let forged = deliver(
        &tracker,
        &client_id,
        "whsec_not_the_right_one_0000",
        "pi_cli_forged",
        json!({}),
    )
    .await;
    assert!(
        matches!(forged, IngestOutcome::Unverified { .. }),
        "{forged:?}"
    );

    let rows = bin.conversions(&[]);
    assert_eq!(
        rows.len(),
        3,
        "every conversion, unverified included: {rows:#?}"
    );
    for r in &rows {
        let obj = r.as_object().expect("objects");
        for f in FIELDS {
            assert!(obj.contains_key(f), "{f} missing in {r}");
        }
        assert_eq!(r["client_id"], client_id.as_str());
        assert_eq!(r["amount"], 4900);
        assert_eq!(r["net_amount"], 4900);
        assert_eq!(r["currency"], "usd");
        assert_eq!(r["status"], "paid");
        assert_eq!(r["kind"], "new");
        assert_eq!(r["livemode"], false);
    }
    let linked = row(&rows, "pi_cli_linked");
    assert_eq!(linked["link_slug"], "s1");
    assert_eq!(linked["method"], "link_slug");
    assert_eq!(linked["client_method"], "webhook_secret");
    assert_eq!(linked["verified"], true);
    if let Some(l) = linked.get("link_id") {
        assert_eq!(l, link_id.as_str());
    }
    let orphan = row(&rows, "pi_cli_orphan");
    assert!(
        orphan["link_slug"].is_null(),
        "null for an orphan: {orphan}"
    );
    assert!(orphan["method"].is_null(), "{orphan}");
    let forged = row(&rows, "pi_cli_forged");
    assert_eq!(forged["verified"], false);
    assert_ne!(forged["client_method"], "webhook_secret");

    let orphans = bin.conversions(&["--orphans"]);
    let keys: Vec<_> = orphans
        .iter()
        .map(|r| r["purchase_key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"pi_cli_orphan"), "{keys:?}");
    assert!(!keys.contains(&"pi_cli_linked"), "{keys:?}");
    assert!(orphans.iter().all(|r| r["link_slug"].is_null()));

    let unverified = bin.conversions(&["--unverified"]);
    let keys: Vec<_> = unverified
        .iter()
        .map(|r| r["purchase_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["pi_cli_forged"]);

    let by_client = bin.conversions(&["--client", "Shop"]);
    assert_eq!(by_client.len(), 3);

    let table = bin.run(&["conversions", "list"]);
    assert!(
        table.ok() && table.stdout.contains("s1") && table.stdout.contains("(orphan)"),
        "{table:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autofix_json_reports_fixed_and_remaining() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let (client_id, _) = bin.with_shop();
    let tracker = bin.tracker().await;
    deliver(
        &tracker,
        &client_id,
        SECRET,
        "pi_fix_later",
        json!({"link_slug": "later"}),
    )
    .await;
    deliver(
        &tracker,
        &client_id,
        SECRET,
        "pi_fix_never",
        json!({"link_slug": "never"}),
    )
    .await;
    assert_eq!(bin.conversions(&["--orphans"]).len(), 2);

    bin.json(&[
        "link",
        "add",
        "--client",
        "Shop",
        "--slug",
        "later",
        "--destination",
        "https://shop.com/l",
    ]);
    let report = bin.json(&["autofix"]);
    assert_eq!(report["fixed"], 1, "{report}");
    assert_eq!(report["remaining"], 1, "{report}");
    let rows = bin.conversions(&[]);
    assert_eq!(row(&rows, "pi_fix_later")["link_slug"], "later");
    assert!(row(&rows, "pi_fix_never")["link_slug"].is_null());

    let again = bin.json(&["autofix", "--client", "Shop"]);
    assert_eq!(
        (again["fixed"].as_u64(), again["remaining"].as_u64()),
        (Some(0), Some(1)),
        "{again}"
    );
    let human = bin.run(&["autofix"]);
    assert!(
        human.ok() && human.stdout.contains("never"),
        "the reason names the slug: {human:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_a_link_slug_mentions_it_and_the_next_steps() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let (client_id, _) = bin.with_shop();
    let tracker = bin.tracker().await;
    deliver(
        &tracker,
        &client_id,
        SECRET,
        "pi_diag",
        json!({"link_slug": "s1"}),
    )
    .await;

    let text = bin.run(&["diagnose", "--link-slug", "s1"]);
    assert!(text.ok(), "{text:?}");
    assert!(text.stdout.contains("s1"), "{text:?}");
    assert!(text.stdout.to_lowercase().contains("next step"), "{text:?}");
    assert!(text.stdout.contains("Shop"), "names the client: {text:?}");

    let json = bin.json(&["diagnose", "--link-slug", "s1"]);
    let text = json.to_string();
    assert!(text.contains("s1") && text.contains("next_steps"), "{json}");
    assert!(
        text.contains("pi_diag"),
        "the conversion is part of it: {json}"
    );

    let unknown = bin.fails(&["diagnose", "--link-slug", "nope"]);
    assert!(unknown.stderr.contains("nope"), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_a_conversion_shows_its_trace() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let (client_id, _) = bin.with_shop();
    let tracker = bin.tracker().await;
    deliver(
        &tracker,
        &client_id,
        SECRET,
        "pi_trace",
        json!({"link_slug": "s1"}),
    )
    .await;
    let rows = bin.conversions(&[]);
    let id = row(&rows, "pi_trace")["id"].as_str().unwrap().to_string();

    let text = bin.run(&["diagnose", "--conversion", &id]);
    assert!(text.ok(), "{text:?}");
    let out = text.stdout.to_lowercase();
    assert!(out.contains("trace"), "{text:?}");
    for step in ["click_id", "link_slug", "click_window_primary"] {
        assert!(out.contains(step), "{step} missing: {text:?}");
    }
    let line = |step: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{step} ")))
            .unwrap_or_else(|| panic!("no {step} line: {text:?}"))
            .to_string()
    };
    assert!(line("link_slug").contains("matched"), "{text:?}");
    assert!(!line("click_id").contains(" matched"), "{text:?}");
    assert!(line("click_window_primary").contains("skipped"), "{text:?}");
    assert!(text.stdout.contains(&id));

    let json = bin.json(&["diagnose", "--conversion", &id]);
    assert!(json.to_string().contains("link_slug"), "{json}");
    bin.fails(&["diagnose", "--conversion", "conv_nope"]);
}

// Multi-threaded: the CLI runs as a blocking child process while this
// process's store may still be releasing a lock in the background (the
// PostgreSQL advisory lock is given back by a task on drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocessing_unverified_events_after_adding_the_secret_verifies_the_sale() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let (client_id, _) = bin.with_shop();
    let tracker = bin.tracker().await;
    let new_secret = "whsec_cli_new_endpoint_secret_99";
    let outcome = deliver(
        &tracker,
        &client_id,
        new_secret,
        "pi_late_secret",
        json!({"link_slug": "s1"}),
    )
    .await;
    assert!(
        matches!(outcome, IngestOutcome::Unverified { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        row(&bin.conversions(&[]), "pi_late_secret")["verified"],
        false
    );

    // Reprocessing without the secret changes nothing.
    let before = bin.json(&["events", "reprocess", "--unverified"]);
    assert_eq!(before["verified_now"], 0, "{before}");
    assert_eq!(
        row(&bin.conversions(&[]), "pi_late_secret")["verified"],
        false
    );

    assert!(bin.run(&["client", "add-secret", "Shop", new_secret]).ok());
    let report = bin.json(&["events", "reprocess", "--unverified"]);
    assert_eq!(report["verified_now"], 1, "{report}");
    let rows = bin.conversions(&[]);
    let sale = row(&rows, "pi_late_secret");
    assert_eq!(sale["verified"], true, "{sale}");
    assert_eq!(sale["client_method"], "webhook_secret");
    assert_eq!(sale["link_slug"], "s1");
    assert!(bin.conversions(&["--unverified"]).is_empty());
    assert_eq!(rows.len(), 1, "still one conversion");
}

// ---- demo and configuration ----------------------------------------------------------------

#[test]
fn demo_populates_a_database_with_every_method_an_orphan_and_an_unverified_sale() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let demo = finish(
        command(dir.path(), "warn")
            .args(["demo", "--no-serve", "--database", &db])
            .output()
            .unwrap(),
    );
    assert!(demo.ok(), "{demo:?}");
    let list = finish(
        command(dir.path(), "warn")
            .args(["--database", &db, "conversions", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert!(list.ok(), "{list:?}");
    let rows: Vec<Value> = serde_json::from_str(&list.stdout).expect("JSON array");
    for method in [
        "click_id",
        "link_slug",
        "promotion_code",
        "customer_history",
        "click_window_primary",
        "click_window_fallback",
        "click_any_time",
    ] {
        assert!(
            rows.iter().any(|r| r["method"] == method),
            "no {method} conversion in the demo: {rows:#?}"
        );
    }
    assert!(rows.iter().any(|r| r["link_slug"].is_null()), "an orphan");
    assert!(
        rows.iter().any(|r| r["verified"] == false),
        "an unverified sale"
    );

    // Run again: the demo database is recreated, not doubled.
    let again = finish(
        command(dir.path(), "warn")
            .args(["demo", "--no-serve", "--database", &db])
            .output()
            .unwrap(),
    );
    assert!(again.ok(), "{again:?}");
    let list = finish(
        command(dir.path(), "warn")
            .args(["--database", &db, "conversions", "list", "--json"])
            .output()
            .unwrap(),
    );
    let rows_again: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows_again.len(), rows.len());
}

#[test]
fn an_unknown_database_scheme_is_refused_naming_database_url() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["migrate"][..], &["client", "list"][..]] {
        let r = finish(
            command(dir.path(), "warn")
                .args(["--database", "mysql://admin:hunter2@db.example/x"])
                .args(args)
                .output()
                .unwrap(),
        );
        assert!(!r.ok(), "{r:?}");
        assert!(r.stderr.contains("database_url"), "{r:?}");
        assert!(!r.all().contains("hunter2"), "the password leaked: {r:?}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn the_database_url_may_come_from_the_environment() {
    let Some(bin) = Bin::new() else {
        return;
    };
    let r = finish(
        command(bin.dir.path(), "warn")
            .env("SALESTRACK_DATABASE_URL", &bin.db)
            .args(["client", "add", "--name", "EnvShop", "--json"])
            .output()
            .unwrap(),
    );
    assert!(r.ok(), "{r:?}");
    let list = bin.json(&["client", "list"]);
    assert_eq!(list.as_array().unwrap()[0]["name"], "EnvShop");
}
