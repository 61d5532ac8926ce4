//! The `salestrack` command line (SPEC 4.1): parsing and dispatch. Every
//! command that prints data takes `--json`.

mod commands;
mod demo;
mod export;
mod reconcile;
mod secret;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Pull events Stripe could not deliver (for clients with an API key).
    Reconcile(ReconcileArgs),
    /// Export data.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Admin access to the dashboard.
    #[command(subcommand)]
    Admin(AdminCommand),
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
    /// How often to pull missed events from Stripe (default 0: never).
    #[arg(long, env = "SALESTRACK_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<String>,
    /// The admin token (16+ characters) for the dashboard and the JSON API;
    /// `-` reads it from standard input. Without it (or its file), one is
    /// generated on first start and printed once.
    #[arg(long, env = "SALESTRACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (`-`: standard input); takes
    /// precedence over --admin-token.
    #[arg(long, value_name = "PATH", env = "SALESTRACK_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
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
        /// The endpoint's signing secret (`whsec_…`); `-` reads it from
        /// standard input. Prefer --webhook-secret-file: arguments show in `ps`.
        #[arg(long, conflicts_with = "webhook_secret_file")]
        webhook_secret: Option<String>,
        /// A file holding the signing secret (`-`: standard input).
        #[arg(long, value_name = "PATH")]
        webhook_secret_file: Option<PathBuf>,
        /// A restricted Stripe API key (read access to Events) for
        /// `reconcile`; `-` reads it from standard input.
        #[arg(long, conflicts_with = "stripe_api_key_file")]
        stripe_api_key: Option<String>,
        /// A file holding the Stripe API key (`-`: standard input).
        #[arg(long, value_name = "PATH")]
        stripe_api_key_file: Option<PathBuf>,
    },
    /// List clients.
    List,
    /// Add another active webhook secret (rotation). The secret comes from
    /// WHSEC, from --webhook-secret-file, or else from standard input.
    AddSecret {
        client: String,
        /// The signing secret (`whsec_…`), or `-` for standard input.
        #[arg(conflicts_with = "webhook_secret_file")]
        secret: Option<String>,
        /// A file holding the signing secret (`-`: standard input).
        #[arg(long, value_name = "PATH")]
        webhook_secret_file: Option<PathBuf>,
    },
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
        /// Only live-mode or only test-mode conversions.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
}

/// Stripe's live or test mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Live,
    Test,
}

impl Mode {
    pub fn is_live(self) -> bool {
        self == Self::Live
    }
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Only this client (id or name); default: every client with an API key.
    #[arg(long)]
    pub client: Option<String>,
    /// How far back to read Stripe's events (Stripe keeps 30 days).
    #[arg(long, default_value = "72h")]
    pub since: String,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Conversions as CSV (RFC 4180) on stdout, oldest first.
    Conversions {
        #[arg(long)]
        client: Option<String>,
        /// Purchased at or after: YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// Purchased before (exclusive): YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        to: Option<String>,
        /// Only live-mode or only test-mode conversions.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
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

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the admin password (read from standard input) for the login page.
    SetPassword,
}
