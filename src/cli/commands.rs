//! What each command does. `anyhow` lives here, at the binary's edge.

use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::secret::{SecretReader, SecretSource};
use super::{
    AdminCommand, Cli, ClientCommand, Command, ConversionsCommand, EventsCommand, LinkCommand,
};
use crate::app;
use crate::config::{Config, Overrides};
use crate::domain::client::{ClientIn, LinkIn};
use crate::domain::model::*;
use crate::domain::view::rfc3339;
use crate::domain::Tracker;

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as aligned columns.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row));
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut overrides = Overrides {
        database_url: cli.database.clone(),
        ..Default::default()
    };
    if let Command::Serve(args) = &cli.command {
        overrides.listen = args.listen.clone();
        overrides.public_url = args.public_url.clone();
        overrides.sweep_interval = args.sweep_interval.clone();
        overrides.reconcile_interval = args.reconcile_interval.clone();
    }
    if let Command::Demo(args) = &cli.command {
        return super::demo::run(cli.database.as_deref(), cli.config.as_deref(), args).await;
    }
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    let json = cli.json;
    match cli.command {
        Command::Serve(args) => {
            let configured = SecretReader::default().read(SecretSource {
                flag: "--admin-token",
                value: args.admin_token.as_deref(),
                file: args.admin_token_file.as_deref(),
            })?;
            let tracker = app::build_tracker(&config).await?;
            admin_token(&tracker, configured.as_deref()).await?;
            serve(tracker, &config).await
        }
        Command::Migrate => {
            app::build_tracker(&config).await?;
            if json {
                print_json(&json!({"migrated": true}))
            } else {
                println!(
                    "database is up to date: {}",
                    crate::storage::redact_url(&config.database_url)
                );
                Ok(())
            }
        }
        Command::Demo(_) => unreachable!("handled above"),
        Command::Client(cmd) => client(app::build_tracker(&config).await?, cmd, json).await,
        Command::Link(cmd) => link(app::build_tracker(&config).await?, cmd, json).await,
        Command::Conversions(ConversionsCommand::List {
            client,
            orphans,
            unverified,
            mode,
        }) => {
            let tracker = app::build_tracker(&config).await?;
            let client_id = match client {
                Some(c) => Some(tracker.find_client(&c).await?.id),
                None => None,
            };
            let rows = tracker
                .conversions_out(&ConversionFilter {
                    client_id,
                    orphans_only: orphans,
                    unverified_only: unverified,
                    livemode: mode.map(super::Mode::is_live),
                    ..Default::default()
                })
                .await?;
            if json {
                return print_json(&rows);
            }
            print_table(
                &[
                    "ID",
                    "PURCHASED",
                    "AMOUNT",
                    "NET",
                    "STATUS",
                    "KIND",
                    "LINK",
                    "METHOD",
                    "VERIFIED",
                    "MODE",
                ],
                rows.iter()
                    .map(|c| {
                        vec![
                            c.id.clone(),
                            c.purchased_at.clone(),
                            c.amount_display.clone(),
                            crate::domain::money::format_minor(c.net_amount, &c.currency),
                            c.status.as_str().into(),
                            c.kind.as_str().into(),
                            c.link_slug.clone().unwrap_or_else(|| "(orphan)".into()),
                            c.method.map_or("-", |m| m.as_str()).into(),
                            if c.verified { "yes" } else { "NO" }.into(),
                            if c.livemode { "live" } else { "test" }.into(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        Command::Autofix { client } => {
            let tracker = app::build_tracker(&config).await?;
            let report = tracker.autofix(client.as_deref()).await?;
            if json {
                return print_json(&report);
            }
            println!("fixed {}, still orphan {}", report.fixed, report.remaining);
            for o in &report.still_orphan {
                println!("  {}: {}", o.conversion_id, o.why);
            }
            Ok(())
        }
        Command::Diagnose(args) => {
            let tracker = app::build_tracker(&config).await?;
            diagnose(&tracker, args, json).await
        }
        Command::Admin(AdminCommand::SetPassword) => {
            let tracker = app::build_tracker(&config).await?;
            set_password(&tracker, json).await
        }
        Command::Events(EventsCommand::Reprocess {
            unverified,
            failed,
            all,
        }) => {
            let tracker = app::build_tracker(&config).await?;
            reprocess(&tracker, unverified, failed, all, json).await
        }
        Command::Reconcile(args) => {
            let tracker = app::build_tracker(&config).await?;
            super::reconcile::run(&tracker, &config, args, json).await
        }
        Command::Export(super::ExportCommand::Conversions {
            client,
            from,
            to,
            mode,
        }) => {
            let tracker = app::build_tracker(&config).await?;
            super::export::conversions(&tracker, client, from, to, mode, json).await
        }
    }
}

pub(super) async fn serve(tracker: Arc<Tracker>, config: &Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, database = %crate::storage::redact_url(&config.database_url), "salestrack serving");
    println!("salestrack listening on http://{local}");
    let cancel = CancellationToken::new();
    app::cancel_on_signal(cancel.clone());
    super::reconcile::spawn_periodic(&tracker, config, &cancel)?;
    let edge = config.edge_options()?;
    app::serve_with(tracker, listener, config.sweep_every()?, cancel, &edge).await
}

/// Makes sure an admin token exists; prints a generated one once.
pub(super) async fn admin_token(tracker: &Tracker, configured: Option<&str>) -> anyhow::Result<()> {
    use crate::domain::auth::TokenSetup;
    match tracker
        .ensure_admin_token(configured)
        .await
        .context("setting up the admin token")?
    {
        TokenSetup::Generated(token) => {
            println!("admin token (shown once; only its hash is kept): {token}");
            println!(
                "sign in at {}/admin",
                tracker.config().public_url.trim_end_matches('/')
            );
        }
        TokenSetup::Configured => tracing::info!("admin token taken from configuration"),
        TokenSetup::Existing => tracing::info!("admin token already set"),
    }
    Ok(())
}

/// `admin set-password`: the password comes from standard input (one line).
async fn set_password(tracker: &Tracker, json: bool) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    tracker.set_admin_password(&line).await?;
    if json {
        return print_json(&json!({"password_set": true}));
    }
    println!(
        "admin password set; sign in at {}/admin",
        tracker.config().public_url.trim_end_matches('/')
    );
    Ok(())
}

#[derive(Serialize)]
struct ClientOut {
    id: String,
    name: String,
    domain: Option<String>,
    stripe_account: Option<String>,
    webhook_url: String,
    secrets: Vec<String>,
    has_stripe_api_key: bool,
    settings: AttributionSettings,
    created_at: String,
}

async fn client_out(tracker: &Tracker, client: &Client) -> anyhow::Result<ClientOut> {
    let secrets = tracker
        .store()
        .list_client_secrets()
        .await?
        .iter()
        .find(|c| c.client.id == client.id)
        .map(|c| c.secrets.iter().map(|s| s.masked()).collect())
        .unwrap_or_default();
    Ok(ClientOut {
        id: client.id.clone(),
        name: client.name.clone(),
        domain: client.domain.clone(),
        stripe_account: client.stripe_account.clone(),
        webhook_url: tracker.webhook_url(&client.id),
        secrets,
        has_stripe_api_key: client.stripe_api_key.is_some(),
        settings: client.settings,
        created_at: rfc3339(client.created_at),
    })
}

async fn client(tracker: Arc<Tracker>, cmd: ClientCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Add {
            name,
            domain,
            stripe_account,
            webhook_secret,
            webhook_secret_file,
            stripe_api_key,
            stripe_api_key_file,
        } => {
            let mut secrets = SecretReader::default();
            let webhook_secret = secrets.read(SecretSource {
                flag: "--webhook-secret",
                value: webhook_secret.as_deref(),
                file: webhook_secret_file.as_deref(),
            })?;
            let stripe_api_key = secrets.read(SecretSource {
                flag: "--stripe-api-key",
                value: stripe_api_key.as_deref(),
                file: stripe_api_key_file.as_deref(),
            })?;
            let client = tracker
                .add_client(ClientIn {
                    name,
                    domain,
                    stripe_account,
                    webhook_secret,
                    stripe_api_key,
                })
                .await?;
            let out = client_out(&tracker, &client).await?;
            if json {
                return print_json(&out);
            }
            println!("client {} added: {}", out.name, out.id);
            println!("webhook URL to paste into Stripe: {}", out.webhook_url);
            if out.secrets.is_empty() {
                println!(
                    "next: salestrack client add-secret {} < whsec.txt (the endpoint's signing secret, on standard input)",
                    out.id
                );
            }
            Ok(())
        }
        ClientCommand::List => {
            let clients = tracker.store().list_clients().await?;
            let mut out = Vec::new();
            for c in &clients {
                out.push(client_out(&tracker, c).await?);
            }
            if json {
                return print_json(&out);
            }
            print_table(
                &["ID", "NAME", "DOMAIN", "SECRETS", "WEBHOOK URL"],
                out.iter()
                    .map(|c| {
                        vec![
                            c.id.clone(),
                            c.name.clone(),
                            c.domain.clone().unwrap_or_default(),
                            if c.secrets.is_empty() {
                                "none".into()
                            } else {
                                c.secrets.join(",")
                            },
                            c.webhook_url.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        ClientCommand::AddSecret {
            client,
            secret,
            webhook_secret_file,
        } => {
            // Neither given: standard input, as `admin set-password` reads.
            let value = match (&secret, &webhook_secret_file) {
                (None, None) => Some("-"),
                _ => secret.as_deref(),
            };
            let secret = SecretReader::default()
                .read(SecretSource {
                    flag: "--webhook-secret",
                    value,
                    file: webhook_secret_file.as_deref(),
                })?
                .context("no webhook secret given")?;
            let client = tracker.add_secret(&client, &secret).await?;
            let out = client_out(&tracker, &client).await?;
            if json {
                return print_json(&out);
            }
            println!(
                "secret added to {}; active secrets: {}",
                out.name,
                out.secrets.join(", ")
            );
            println!("stored events that failed verification can now be checked again: salestrack events reprocess --unverified");
            Ok(())
        }
    }
}

async fn link(tracker: Arc<Tracker>, cmd: LinkCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        LinkCommand::Add {
            client,
            slug,
            destination,
            label,
            promo_codes,
        } => {
            let link = tracker
                .add_link(LinkIn {
                    client,
                    slug,
                    destination,
                    label,
                    promo_codes,
                })
                .await?;
            if json {
                return print_json(&link);
            }
            println!(
                "link {} added: {} → {}",
                link.slug, link.id, link.destination
            );
            println!(
                "share: {}/r/{}",
                tracker.config().public_url.trim_end_matches('/'),
                link.slug
            );
            Ok(())
        }
        LinkCommand::List { client } => {
            let client_id = match client {
                Some(c) => Some(tracker.find_client(&c).await?.id),
                None => None,
            };
            let links = tracker.store().list_links(client_id.as_deref()).await?;
            if json {
                return print_json(&links);
            }
            print_table(
                &[
                    "ID",
                    "CLIENT",
                    "SLUG",
                    "DESTINATION",
                    "LABEL",
                    "PROMO CODES",
                ],
                links
                    .iter()
                    .map(|l| {
                        vec![
                            l.id.clone(),
                            l.client_id.clone(),
                            l.slug.clone(),
                            l.destination.clone(),
                            l.label.clone().unwrap_or_default(),
                            l.promo_codes.join(","),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
    }
}

async fn diagnose(tracker: &Tracker, args: super::DiagnoseArgs, json: bool) -> anyhow::Result<()> {
    if let Some(slug) = args.link_slug {
        let diagnoses = tracker.diagnose_link(&slug).await?;
        if json {
            return print_json(&diagnoses);
        }
        for d in diagnoses {
            println!(
                "link {} ({}) of client {} ({})",
                d.link.slug, d.link.id, d.client.name, d.client.id
            );
            println!("  destination: {}", d.link.destination);
            println!("  webhook URL: {}", d.webhook_url);
            println!(
                "  recent clicks: {} ({} from bots)",
                d.recent_clicks.len(),
                d.bot_clicks
            );
            for c in d.recent_clicks.iter().take(5) {
                println!(
                    "    {} {}{}",
                    rfc3339(c.at),
                    c.id,
                    if c.bot { " [bot]" } else { "" }
                );
            }
            println!("  conversions: {}", d.conversions.len());
            for c in &d.conversions {
                println!(
                    "    {} {} {} via {}",
                    c.id,
                    crate::domain::money::format_minor(c.amount, &c.currency),
                    c.status.as_str(),
                    c.method.map_or("-", |m| m.as_str())
                );
                for step in &c.trace {
                    println!(
                        "      {:<22} {:<9} {}",
                        step.step,
                        step.outcome.as_str(),
                        step.detail
                    );
                }
            }
            println!("  orphans of this client: {}", d.orphans_nearby.len());
            for o in &d.orphans_nearby {
                println!(
                    "    {} {} — not matched because {}",
                    o.conversion.id,
                    crate::domain::money::format_minor(o.conversion.amount, &o.conversion.currency),
                    o.why_not_matched
                );
            }
            println!("  events mentioning it: {}", d.events_mentioning.len());
            for e in &d.events_mentioning {
                println!(
                    "    #{} {} {} {:?} {:?}",
                    e.id,
                    e.event_type.as_deref().unwrap_or("-"),
                    rfc3339(e.received_at),
                    e.verification,
                    e.processing
                );
            }
            println!("  next steps:");
            for s in &d.next_steps {
                println!("    - {s}");
            }
        }
        return Ok(());
    }
    let Some(id) = args.conversion else {
        bail!("give --link-slug SLUG or --conversion ID");
    };
    let d = tracker.diagnose_conversion(&id).await?;
    if json {
        return print_json(&d);
    }
    let c = &d.conversion;
    println!(
        "conversion {} — {} {} ({}), verified: {}",
        c.id,
        crate::domain::money::format_minor(c.amount, &c.currency),
        c.status.as_str(),
        c.kind.as_str(),
        c.verified
    );
    println!("  client found by: {}", c.client_method.as_str());
    println!(
        "  link: {} via {}",
        d.link
            .as_ref()
            .map_or("(orphan)".to_string(), |l| l.slug.clone()),
        c.method.map_or("-", |m| m.as_str())
    );
    println!("  trace:");
    for step in &c.trace {
        println!(
            "    {:<22} {:<9} {}",
            step.step,
            step.outcome.as_str(),
            step.detail
        );
    }
    println!("  history: {}", d.history.len());
    for h in &d.history {
        println!(
            "    {} {} {:?} → {:?}: {}",
            rfc3339(h.at),
            h.actor,
            h.from_link_id,
            h.to_link_id,
            h.reason
        );
    }
    println!("  next steps:");
    for s in &d.next_steps {
        println!("    - {s}");
    }
    Ok(())
}

async fn reprocess(
    tracker: &Tracker,
    unverified: bool,
    failed: bool,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (unverified, failed) = if !unverified && !failed && !all {
        (true, true)
    } else {
        (unverified || all, failed || all)
    };
    let mut verified_now = 0usize;
    let mut still_unverified = 0usize;
    let mut processed = 0usize;
    let mut still_failing = 0usize;
    if unverified {
        let events = tracker
            .store()
            .list_events(&EventFilter {
                verification: Some(Verification::Unverified),
                limit: i64::MAX,
                ..Default::default()
            })
            .await?;
        for e in events.iter().rev() {
            if e.processing == Processing::Invalid {
                continue;
            }
            if tracker.reverify_event(e).await? {
                verified_now += 1;
            } else {
                still_unverified += 1;
            }
        }
    }
    if failed {
        let report = tracker.retry_events().await?;
        processed += report.processed;
        still_failing += report.still_failing;
    }
    if all {
        let events = tracker
            .store()
            .list_events(&EventFilter {
                processing: Some(Processing::Processed),
                limit: i64::MAX,
                ..Default::default()
            })
            .await?;
        for e in events.iter().rev() {
            match tracker.reprocess_event(e).await? {
                Processing::Processed | Processing::Ignored => processed += 1,
                _ => still_failing += 1,
            }
        }
    }
    let out = json!({
        "verified_now": verified_now,
        "still_unverified": still_unverified,
        "processed": processed,
        "still_failing": still_failing,
    });
    if json {
        return print_json(&out);
    }
    println!(
        "verified now: {verified_now}, still unverified: {still_unverified}, processed: {processed}, still failing: {still_failing}"
    );
    Ok(())
}
