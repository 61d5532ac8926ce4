//! End to end in real headless Chromium, driven over WebDriver (chromedriver
//! started here on a free port): sign in, see a client ⚠️ with its orphans,
//! add the missing link, press Auto-Fix Now, see the orphan count fall and
//! the status turn ✅; open diagnose-sale for the slug and see the trace.
//! Screenshots of the main pages go to `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test
//! skips with a message, except under CI (`CI` set), where it fails.

mod adminkit;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use adminkit::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const SECRET: &str = "whsec_browser_test_secret_0001";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

type Check = Result<(), String>;

fn ensure(ok: bool, what: impl Into<String>) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// Kills chromedriver (and with it the browser) when the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tools_present() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

async fn start_driver() -> (Driver, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{url}/status")).send().await {
            if r.status().is_success() {
                return (driver, url);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start on port {port}");
}

async fn browser(driver_url: &str, profile: &Path) -> Client {
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1800",
        "--hide-scrollbars",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": args}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("WebDriver session")
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(c: &Client, name: &str) -> Check {
    let png = c
        .screenshot()
        .await
        .map_err(|e| format!("screenshot {name}: {e}"))?;
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png)
        .map_err(|e| format!("writing {name}.png: {e}"))
}

/// Waits (up to 15 s) for an element: after a click that navigates, the
/// new page may not be there yet on a busy machine.
async fn wait_for(c: &Client, css: &str) -> Result<fantoccini::elements::Element, String> {
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))
}

async fn text_of(c: &Client, css: &str) -> Result<String, String> {
    wait_for(c, css)
        .await?
        .text()
        .await
        .map_err(|e| format!("{css} text: {e}"))
}

async fn fill(c: &Client, css: &str, value: &str) -> Check {
    c.find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .send_keys(value)
        .await
        .map_err(|e| format!("typing into {css}: {e}"))
}

async fn click(c: &Client, css: &str) -> Check {
    c.find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("clicking {css}: {e}"))
}

async fn path_of(c: &Client) -> Result<String, String> {
    let url = c.current_url().await.map_err(|e| e.to_string())?;
    Ok(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    })
}

async fn story(c: &Client, app: &App) -> Check {
    // A shop whose last two sales name a link that does not exist yet.
    let shop = app.add_client("Lowbackability", Some(SECRET)).await;
    app.add_link(&shop, "flexus1", Some("Flexus (YouTube)"))
        .await;
    app.sell(
        &shop,
        SECRET,
        "cus_1",
        "ann@example.com",
        4900,
        json!({"link_slug": "flexus1"}),
    )
    .await;
    app.sell(
        &shop,
        SECRET,
        "cus_2",
        "bo@example.com",
        2500,
        json!({"link_slug": "spring"}),
    )
    .await;
    app.sell(
        &shop,
        SECRET,
        "cus_3",
        "cy@example.com",
        9900,
        json!({"link_slug": "spring"}),
    )
    .await;
    // Clicks recorded after the sales (for the charts) leave them orphans
    // until a fixer runs.
    for days_ago in [0, 1, 1, 3, 6, 9, 14] {
        app.add_click(&shop, "flexus1", days_ago).await;
    }
    let quiet = app.add_client("Quiet Co", None).await;

    // Sign in: the dashboard sends us to the login page first.
    c.goto(&app.url("/admin"))
        .await
        .map_err(|e| e.to_string())?;
    let at = path_of(c).await?;
    ensure(
        at.starts_with("/admin/login"),
        format!("not sent to login: {at}"),
    )?;
    shot(c, "01-login").await?;
    fill(c, "#secret", "wrong-token-here").await?;
    click(c, "button[type=submit]").await?;
    let error = text_of(c, ".alert").await?;
    ensure(
        error.contains("not the admin token"),
        format!("wrong token message: {error}"),
    )?;
    fill(c, "#secret", TOKEN).await?;
    click(c, "button[type=submit]").await?;

    // ⚠️ with its orphans.
    let row = text_of(c, &format!("tr[data-client='{}']", shop.id)).await?;
    ensure(path_of(c).await? == "/admin", "signed in lands on /admin")?;
    ensure(
        row.contains("⚠️ Issues"),
        format!("shop should have issues: {row}"),
    )?;
    ensure(row.contains("2 orphans"), format!("shop's reason: {row}"))?;
    let quiet_row = text_of(c, &format!("tr[data-client='{}']", quiet.id)).await?;
    ensure(
        quiet_row.contains("❌ Not Working"),
        format!("quiet client: {quiet_row}"),
    )?;
    ensure(
        text_of(c, "#orphan-count").await? == "2",
        "two orphans on the overview",
    )?;
    shot(c, "02-overview-before-autofix").await?;

    // Add the missing link through the client's page.
    c.goto(&app.url(&format!("/admin/clients/{}", shop.id)))
        .await
        .map_err(|e| e.to_string())?;
    fill(c, "#slug", "spring").await?;
    fill(c, "#destination", "https://lowbackability.com/spring").await?;
    fill(c, "#label", "Spring newsletter").await?;
    click(c, "form[action$='/links'] button[type=submit]").await?;
    let flash = text_of(c, ".flash").await?;
    ensure(flash.contains("Link added"), format!("link flash: {flash}"))?;
    shot(c, "03-client").await?;

    // Auto-Fix Now.
    c.goto(&app.url("/admin"))
        .await
        .map_err(|e| e.to_string())?;
    click(c, "#autofix").await?;
    let flash = text_of(c, ".flash").await?;
    ensure(
        flash.contains("fixed 2, still orphan 0"),
        format!("autofix flash: {flash}"),
    )?;
    ensure(text_of(c, "#orphan-count").await? == "0", "no orphans left")?;
    let row = text_of(c, &format!("tr[data-client='{}']", shop.id)).await?;
    ensure(row.contains("✅ Working"), format!("shop now works: {row}"))?;
    shot(c, "04-overview-after-autofix").await?;

    // Diagnose the slug: its conversions and their traces.
    c.goto(&app.url("/admin/diagnose-sale"))
        .await
        .map_err(|e| e.to_string())?;
    fill(c, "input[name=linkSlug]", "spring").await?;
    click(c, "form.filters button[type=submit]").await?;
    wait_for(c, "article.diagnosis ol.trace").await?;
    let page = text_of(c, "main").await?;
    ensure(
        page.contains("Conversions of this link and their traces"),
        "diagnosis shown",
    )?;
    ensure(
        page.contains("decided by autofix") || page.contains("decided by link_slug"),
        format!("decision shown: {page}"),
    )?;
    let steps = c
        .find_all(Locator::Css("ol.trace li"))
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        steps.len() >= 2 * 2,
        format!("trace steps of both sales: {}", steps.len()),
    )?;
    ensure(page.contains("link slug"), "the link slug step")?;
    shot(c, "05-diagnose-sale").await?;

    // The other pages, for the screenshots.
    for (path, name) in [
        ("/admin/clients".to_string(), "06-clients"),
        ("/admin/conversions".to_string(), "07-conversions"),
        ("/admin/events".to_string(), "08-events"),
    ] {
        c.goto(&app.url(&path)).await.map_err(|e| e.to_string())?;
        wait_for(c, "main h1").await?;
        ensure(path_of(c).await? == path, format!("{path} shown"))?;
        shot(c, name).await?;
    }
    click(c, "table tbody tr td a").await?;
    ensure(
        path_of(c).await?.starts_with("/admin/events/"),
        "event page",
    )?;
    shot(c, "09-event").await?;
    c.goto(&app.url("/admin/conversions"))
        .await
        .map_err(|e| e.to_string())?;
    click(c, "table tbody tr td a").await?;
    wait_for(c, "table#history").await?;
    let conversion = text_of(c, "main").await?;
    ensure(
        conversion.contains("Attribution trace") && conversion.contains("History"),
        "conversion page",
    )?;
    shot(c, "10-conversion").await?;

    // Log out: the dashboard is closed again.
    click(c, "form.logout button").await?;
    wait_for(c, "#secret").await?;
    ensure(path_of(c).await?.starts_with("/admin/login"), "logged out")?;
    c.goto(&app.url("/admin"))
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        path_of(c).await?.starts_with("/admin/login"),
        "session ended",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_fixes_orphans_and_diagnoses_a_sale_in_a_real_browser() {
    if !tools_present() {
        if std::env::var_os("CI").is_some() {
            panic!("chromium and chromium-driver are required under CI (apt-get install chromium chromium-driver)");
        }
        eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} missing; install them with `apt-get install -y chromium chromium-driver` to run the browser test");
        return;
    }
    let app = spawn().await;
    let (_driver, url) = start_driver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(&url, profile.path()).await;
    let outcome = story(&c, &app).await;
    if outcome.is_err() {
        let _ = shot(&c, "99-failure").await;
    }
    let _ = c.close().await;
    if let Err(e) = outcome {
        panic!("browser story failed: {e} (see target/screenshots/99-failure.png)");
    }
}
