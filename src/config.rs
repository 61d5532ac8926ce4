//! Configuration: embedded defaults → optional TOML file → `SALESTRACK_*`
//! environment → command-line flags. Validated at start.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../config.default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub database_url: String,
    pub listen: String,
    pub public_url: String,
    pub sweep_interval: String,
    pub signature_tolerance_s: i64,
    /// Unverified webhook bodies each URL may store whole (README
    /// "Forged and unverified deliveries"): bytes per minute, at once, and
    /// what is kept of one past it.
    pub unverified_bytes_per_minute: u64,
    pub unverified_burst_bytes: u64,
    pub unverified_kept_bytes: usize,
    pub max_attempts: i64,
    /// PostgreSQL: most connections per instance (at least 3).
    pub db_pool_size: u32,
    /// PostgreSQL: the server cancels statements that run longer ("0" = never).
    pub db_statement_timeout: String,
    /// PostgreSQL: how long to wait for a connection before answering 503.
    pub db_connect_timeout: String,
    /// Stripe's API, for reconciliation (a local server in tests).
    pub stripe_api_base: String,
    /// How often `serve` reconciles with Stripe's events ("0" = never).
    pub reconcile_interval: String,
    /// How far back each periodic reconciliation reads.
    pub reconcile_window: String,
    /// The edge's limits (`http::server`): timeouts, connection cap,
    /// shutdown deadline, and `/metrics`'s bearer token (unset: open).
    pub header_timeout: String,
    pub body_timeout: String,
    pub idle_timeout: String,
    pub max_connections: usize,
    pub shutdown_grace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` name the
    /// client: a TOML list, or one comma-separated string (as
    /// `SALESTRACK_TRUSTED_PROXIES` gives it).
    pub trusted_proxies: ProxyList,
}

/// `trusted_proxies` as written: `["10.0.0.0/8", "::1"]` or
/// `"10.0.0.0/8,::1"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProxyList {
    List(Vec<String>),
    Text(String),
}

impl ProxyList {
    fn entries(&self) -> Vec<&str> {
        let raw: Vec<&str> = match self {
            Self::List(list) => list.iter().map(String::as_str).collect(),
            Self::Text(text) => text.split(',').collect(),
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_interval: Option<String>,
}

impl Config {
    pub fn load(file: Option<&str>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULTS));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("SALESTRACK_").ignore(&[
                "config",
                "admin_token",
                "admin_token_file",
            ]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                field: "database_url",
                reason: format!(
                    "{} (use sqlite://FILE or postgres://…)",
                    crate::storage::redact_url(&self.database_url)
                ),
            });
        }
        self.listen_addr()?;
        self.sweep_every()?;
        self.db_options()?;
        self.reconcile_every()?;
        self.reconcile_window()?;
        self.edge_options()?;
        self.trusted_proxies()?;
        if !url::Url::parse(&self.stripe_api_base)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConfigError::Invalid {
                field: "stripe_api_base",
                reason: format!("{:?} is not an http(s) URL", self.stripe_api_base),
            });
        }
        if url::Url::parse(&self.public_url).is_err() {
            return Err(ConfigError::Invalid {
                field: "public_url",
                reason: format!("{:?} is not a URL", self.public_url),
            });
        }
        if self.signature_tolerance_s < 0 {
            return Err(ConfigError::Invalid {
                field: "signature_tolerance_s",
                reason: "must be ≥ 0".into(),
            });
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            field: "listen",
            reason: format!("{:?}: {e}", self.listen),
        })
    }

    /// `None` when sweeps are off (`0`).
    pub fn sweep_every(&self) -> Result<Option<Duration>, ConfigError> {
        parse_interval(&self.sweep_interval).map_err(|reason| ConfigError::Invalid {
            field: "sweep_interval",
            reason,
        })
    }
}

impl Config {
    /// `None` when periodic reconciliation is off (`0`, the default).
    pub fn reconcile_every(&self) -> Result<Option<Duration>, ConfigError> {
        parse_interval(&self.reconcile_interval).map_err(|reason| ConfigError::Invalid {
            field: "reconcile_interval",
            reason,
        })
    }

    /// The window each periodic reconciliation reads.
    pub fn reconcile_window(&self) -> Result<Duration, ConfigError> {
        match parse_interval(&self.reconcile_window) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(ConfigError::Invalid {
                field: "reconcile_window",
                reason: "must be longer than 0".into(),
            }),
            Err(reason) => Err(ConfigError::Invalid {
                field: "reconcile_window",
                reason,
            }),
        }
    }
}

impl Config {
    /// The budget of unverified bodies stored whole.
    pub fn unverified_budget(&self) -> crate::domain::unverified_budget::BudgetConfig {
        crate::domain::unverified_budget::BudgetConfig {
            bytes_per_minute: self.unverified_bytes_per_minute,
            burst_bytes: self.unverified_burst_bytes,
            kept_bytes: self.unverified_kept_bytes,
        }
    }

    /// The CIDRs of `trusted_proxies` (empty: every peer is the client).
    pub fn trusted_proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.trusted_proxies
            .entries()
            .into_iter()
            .map(parse_trusted_proxy)
            .collect::<Result<_, _>>()
            .map_err(|reason| ConfigError::Invalid {
                field: "trusted_proxies",
                reason,
            })
    }
}

/// One `trusted_proxies` entry: a CIDR (`10.0.0.0/8`) or a single address
/// (`127.0.0.1`, taken as `/32`; `::1` as `/128`).
pub fn parse_trusted_proxy(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{entry:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
}

impl Config {
    /// Pool size and timeouts of the database connection.
    pub fn db_options(&self) -> Result<crate::storage::DbOptions, ConfigError> {
        use crate::storage::DbOptions;
        if self.db_pool_size < DbOptions::MIN_POOL_SIZE {
            return Err(ConfigError::Invalid {
                field: "db_pool_size",
                reason: format!(
                    "{} is too small: at least {} (lock holders keep a connection each)",
                    self.db_pool_size,
                    DbOptions::MIN_POOL_SIZE
                ),
            });
        }
        let statement_timeout = parse_interval(&self.db_statement_timeout)
            .map_err(|reason| ConfigError::Invalid {
                field: "db_statement_timeout",
                reason,
            })?
            .unwrap_or(Duration::ZERO);
        let connect_timeout = match parse_interval(&self.db_connect_timeout) {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(ConfigError::Invalid {
                    field: "db_connect_timeout",
                    reason: "must be longer than 0".into(),
                })
            }
            Err(reason) => {
                return Err(ConfigError::Invalid {
                    field: "db_connect_timeout",
                    reason,
                })
            }
        };
        Ok(DbOptions {
            pool_size: self.db_pool_size,
            statement_timeout,
            connect_timeout,
        })
    }
}

impl Config {
    /// The edge's limits; every duration must be longer than 0.
    pub fn edge_options(&self) -> Result<crate::http::server::EdgeOptions, ConfigError> {
        let positive = |field: &'static str, raw: &str| match parse_interval(raw) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(ConfigError::Invalid {
                field,
                reason: "must be longer than 0".into(),
            }),
            Err(reason) => Err(ConfigError::Invalid { field, reason }),
        };
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(ConfigError::Invalid {
                field: "max_connections",
                reason: "must be between 1 and 1000000".into(),
            });
        }
        let metrics_token = match self.metrics_token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if t.len() < 16 => {
                return Err(ConfigError::Invalid {
                    field: "metrics_token",
                    reason: "must be at least 16 characters".into(),
                })
            }
            Some(t) => Some(crate::http::metrics::MetricsToken::new(t)),
        };
        Ok(crate::http::server::EdgeOptions {
            header_timeout: positive("header_timeout", &self.header_timeout)?,
            body_timeout: positive("body_timeout", &self.body_timeout)?,
            idle_timeout: positive("idle_timeout", &self.idle_timeout)?,
            max_connections: self.max_connections,
            shutdown_grace: positive("shutdown_grace", &self.shutdown_grace)?,
            metrics_token,
        })
    }
}

/// `5m`, `30s`, `1h`; `0` means off.
pub fn parse_interval(raw: &str) -> Result<Option<Duration>, String> {
    let raw = raw.trim();
    if raw == "0" {
        return Ok(None);
    }
    let d = humantime::parse_duration(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    Ok((!d.is_zero()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_zero_turns_off() {
        assert_eq!(
            parse_interval("5m").unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_interval("0").unwrap(), None);
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn defaults_load_and_flags_win() {
        let c = Config::load(
            None,
            &Overrides {
                database_url: Some("sqlite://x.db".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.database_url, "sqlite://x.db");
        assert_eq!(c.sweep_every().unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(
            c.db_options().unwrap(),
            crate::storage::DbOptions::default()
        );
        assert_eq!(c.stripe_api_base, "https://api.stripe.com");
        assert_eq!(c.reconcile_every().unwrap(), None);
        assert_eq!(
            c.reconcile_window().unwrap(),
            Duration::from_secs(72 * 3600)
        );
    }

    #[test]
    fn edge_limits_default_sensibly_and_are_checked() {
        let load = |file: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, file).unwrap();
            Config::load(path.to_str(), &Overrides::default())
        };
        let edge = load("").unwrap().edge_options().unwrap();
        let defaults = crate::http::server::EdgeOptions::default();
        assert_eq!(edge.header_timeout, defaults.header_timeout);
        assert_eq!(edge.body_timeout, defaults.body_timeout);
        assert_eq!(edge.idle_timeout, defaults.idle_timeout);
        assert_eq!(edge.max_connections, defaults.max_connections);
        assert_eq!(edge.shutdown_grace, defaults.shutdown_grace);
        assert!(
            edge.metrics_token.is_none(),
            "/metrics stays open by default"
        );
        let edge = load("metrics_token = \"0123456789abcdef\"\nheader_timeout = \"2s\"")
            .unwrap()
            .edge_options()
            .unwrap();
        assert!(edge.metrics_token.is_some());
        assert_eq!(edge.header_timeout, Duration::from_secs(2));
        for bad in [
            "metrics_token = \"short\"",
            "header_timeout = \"0\"",
            "body_timeout = \"soon\"",
            "max_connections = 0",
        ] {
            assert!(load(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn unknown_database_schemes_are_refused() {
        let err = Config::load(
            None,
            &Overrides {
                database_url: Some("mysql://u:secret@h/db".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("database_url"), "{text}");
        assert!(!text.contains("secret"), "password leaked: {text}");
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses_from_a_file_or_the_environment() {
        assert_eq!(
            parse_trusted_proxy("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_trusted_proxy(" ::1 ").unwrap().to_string(), "::1/128");
        assert!(parse_trusted_proxy("10.0.0.0/33").is_err());
        assert!(parse_trusted_proxy("proxy.local").is_err());
        let defaults = Config::load(None, &Overrides::default()).unwrap();
        assert!(defaults.trusted_proxies().unwrap().is_empty());
        let mut c = defaults.clone();
        c.trusted_proxies = ProxyList::Text("127.0.0.1/32, 10.0.0.0/8".into());
        assert_eq!(c.trusted_proxies().unwrap().len(), 2);
        c.trusted_proxies = ProxyList::List(vec!["fd00::/8".into(), "nope".into()]);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("nope"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "trusted_proxies = [\"192.168.0.0/16\"]").unwrap();
        let c = Config::load(path.to_str(), &Overrides::default()).unwrap();
        assert_eq!(
            c.trusted_proxies().unwrap()[0].to_string(),
            "192.168.0.0/16"
        );
    }

    #[test]
    fn database_pool_and_timeouts_are_checked() {
        let load = |file: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, file).unwrap();
            Config::load(path.to_str(), &Overrides::default())
        };
        let c =
            load("db_pool_size = 20\ndb_statement_timeout = \"0\"\ndb_connect_timeout = \"2s\"")
                .unwrap();
        let o = c.db_options().unwrap();
        assert_eq!(o.pool_size, 20);
        assert_eq!(o.statement_timeout, Duration::ZERO, "0 turns it off");
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        let err = load("db_pool_size = 2").unwrap_err().to_string();
        assert!(err.contains("db_pool_size"), "{err}");
        let err = load("db_connect_timeout = \"0\"").unwrap_err().to_string();
        assert!(err.contains("db_connect_timeout"), "{err}");
    }
}
