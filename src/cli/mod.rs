//! The `salestrack` command line (SPEC 4.1): parsing and dispatch. Every
//! command that prints data takes `--json`.

mod commands;
mod demo;

use clap::{Args, Parser, Subcommand};

pub use commands::run;

#[derive(Debug, Parser)]
#[command(
    name = "salestrack",
    version,
    about = "Self-hosted sales attribution for link-based marketing on Stripe"
)]
pub struct Cli {
    /// Database URL: sqlite://FILE (default sqlite://salestrack.db) or postgres://…
    #[arg(long, global = true, env = "SALESTRACK_DATABASE_URL")]
    pub database: Option<String>,
    /// A TOML configuration file.
    #[arg(long, global = true, env = "SALESTRACK_CONFIG")]
    pub config: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve HTTP and the background sweeps.
    Serve(ServeArgs),
    /// Create or update the database schema.
    Migrate,
    /// A fresh demo database, populated with a realistic story, served.
    Demo(DemoArgs),
    /// Manage clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage tracked links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// List conversions.
    #[command(subcommand)]
    Conversions(ConversionsCommand),
    /// Run the fixer over every orphan (or one client's).
    Autofix {
        #[arg(long)]
        client: Option<String>,
    },
    /// Everything about one link or one sale.
    Diagnose(DiagnoseArgs),
    /// Stored webhook events.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "SALESTRACK_LISTEN")]
    pub listen: Option<String>,
    /// Public base URL shown in webhook URLs.
    #[arg(long, env = "SALESTRACK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How often the sweep runs (default 5m; 0 turns it off).
    #[arg(long, env = "SALESTRACK_SWEEP_INTERVAL")]
    pub sweep_interval: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[arg(long)]
    pub listen: Option<String>,
    /// Populate the database and exit without serving.
    #[arg(long)]
    pub no_serve: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Add a client.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        stripe_account: Option<String>,
        #[arg(long)]
        webhook_secret: Option<String>,
        #[arg(long)]
        stripe_api_key: Option<String>,
    },
    /// List clients.
    List,
    /// Add another active webhook secret (rotation).
    AddSecret { client: String, secret: String },
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Add a tracked link.
    Add {
        #[arg(long)]
        client: String,
        #[arg(long)]
        slug: String,
        #[arg(long)]
        destination: String,
        #[arg(long)]
        label: Option<String>,
        /// A Stripe promotion code (or its `promo_…` id) that belongs to this link; repeatable.
        #[arg(long = "promo-code")]
        promo_codes: Vec<String>,
    },
    /// List links.
    List {
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConversionsCommand {
    /// List conversions, newest first (all of them without a filter).
    List {
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        orphans: bool,
        #[arg(long)]
        unverified: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct DiagnoseArgs {
    #[arg(long)]
    pub link_slug: Option<String>,
    #[arg(long)]
    pub conversion: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Verify and process stored events again.
    Reprocess {
        /// Re-verify unverified events with the current secrets.
        #[arg(long, group = "which")]
        unverified: bool,
        /// Process failed events again.
        #[arg(long, group = "which")]
        failed: bool,
        /// Both, and every processed event too.
        #[arg(long, group = "which")]
        all: bool,
    },
}
