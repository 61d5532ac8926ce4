//! Clicks (SPEC 2.1): record a visit through a link and build the redirect;
//! a flood from one address is flagged (`flood.rs`).

use std::net::IpAddr;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::bot::is_bot;
use super::client::normalize_domain;
use super::flood::{AddrKey, Admit};
use super::ids::{new_id, Slug};
use super::model::*;
use super::text::strip_controls;
use super::{DomainError, DomainResult, Tracker};

/// Hosts of Stripe Payment Links: the redirect passes the click id as
/// `client_reference_id`, so attribution is exact without server code.
const PAYMENT_LINK_HOSTS: &[&str] = &["buy.stripe.com", "donate.stripe.com"];

const MAX_TEXT: usize = 2048;

/// A visit as the edge saw it.
#[derive(Debug, Clone, Default)]
pub struct Visit {
    pub visitor_id: Option<String>,
    pub referrer: Option<String>,
    pub landing_url: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<IpAddr>,
}

/// A recorded redirect click.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub click: Click,
    pub location: String,
    pub visitor_id: String,
}

/// Stranger text as stored: control characters dropped (NUL included, which
/// PostgreSQL's `text` cannot hold), trimmed, clipped to `MAX_TEXT` bytes.
fn clip(value: Option<String>) -> Option<String> {
    value
        .map(|v| strip_controls(&v).trim().to_string())
        .filter(|v| !v.is_empty())
        .map(|v| {
            if v.len() <= MAX_TEXT {
                v
            } else {
                let mut end = MAX_TEXT;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v[..end].to_string()
            }
        })
}

/// Visitor ids are ours (`vis_…`) or a client's: short and plain.
fn valid_visitor_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The destination with `ref` and `sclid` set (and `client_reference_id` for
/// Stripe Payment Links).
pub fn redirect_location(destination: &str, slug: &str, click_id: &str) -> String {
    let Ok(mut url) = url::Url::parse(destination) else {
        return destination.to_string();
    };
    let payment_link = url
        .host_str()
        .is_some_and(|h| PAYMENT_LINK_HOSTS.contains(&h.to_ascii_lowercase().as_str()));
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !matches!(k.as_ref(), "ref" | "sclid" | "client_reference_id"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("ref", slug);
        q.append_pair("sclid", click_id);
        if payment_link {
            q.append_pair("client_reference_id", click_id);
        }
    }
    url.to_string()
}

impl Tracker {
    fn hash_ip(&self, ip: IpAddr) -> AddrKey {
        let mut h = Sha256::new();
        h.update(self.ip_salt.as_bytes());
        h.update(b"|");
        h.update(ip.to_string().as_bytes());
        let mut key = AddrKey::default();
        key.copy_from_slice(&h.finalize()[..16]);
        key
    }

    /// Whether this click is one too many from its address (issue 14 §3):
    /// it is then flagged like a bot's, kept, and never attributed.
    fn flooding(&self, ip_hash: Option<AddrKey>) -> bool {
        let Some(key) = ip_hash else {
            return false;
        };
        match self.click_flood.admit(key, Instant::now()) {
            Admit::Yes => false,
            Admit::FloodStarts => {
                tracing::warn!(
                    ip_hash = %hex::encode(key),
                    "click flood: this address's clicks are flagged until it slows down"
                );
                true
            }
            Admit::No => true,
        }
    }

    fn new_click(&self, link: &Link, visit: Visit, visitor_id: &str) -> Click {
        let user_agent = clip(visit.user_agent);
        let ip_hash = visit.ip.map(|ip| self.hash_ip(ip));
        let flood = self.flooding(ip_hash);
        Click {
            id: new_id("clk"),
            link_id: link.id.clone(),
            client_id: link.client_id.clone(),
            at: now_millis(),
            visitor_id: Some(visitor_id.to_string()),
            referrer: clip(visit.referrer),
            landing_url: clip(visit.landing_url),
            bot: flood || is_bot(user_agent.as_deref()),
            user_agent,
            ip_hash: ip_hash.map(hex::encode),
        }
    }

    /// The link a slug names: with a client given, that client's; else the
    /// oldest link with the slug (so existing links keep working when another
    /// client adds the same slug).
    pub async fn find_link_for_slug(&self, client: Option<&str>, slug: &str) -> DomainResult<Link> {
        let not_found = || DomainError::NotFound {
            what: "link",
            id: slug.chars().take(80).collect(),
        };
        let slug = Slug::parse(slug).map_err(|_| not_found())?;
        let link = match client {
            Some(c) => {
                let client = self.find_client(c).await.map_err(|_| not_found())?;
                self.store.find_link(&client.id, slug.as_str()).await?
            }
            None => self
                .store
                .find_links_by_slug(slug.as_str())
                .await?
                .into_iter()
                .next(),
        };
        link.ok_or_else(not_found)
    }

    /// `GET /r/{slug}`: records the click durably and returns where to go.
    pub async fn record_redirect(
        &self,
        client: Option<&str>,
        slug: &str,
        visit: Visit,
    ) -> DomainResult<Redirect> {
        let link = self.find_link_for_slug(client, slug).await?;
        let visitor_id = visit
            .visitor_id
            .clone()
            .filter(|v| valid_visitor_id(v))
            .unwrap_or_else(|| new_id("vis"));
        let click = self.new_click(&link, visit, &visitor_id);
        if self.click_writes {
            self.store.insert_click(&click).await?;
        }
        let location = redirect_location(&link.destination, &link.slug, &click.id);
        Ok(Redirect {
            click,
            location,
            visitor_id,
        })
    }

    /// `POST /api/v1/track/click`: a visitor landed on the client's own site
    /// with `?ref=`. `origin` (the page's origin) picks the client when the
    /// slug exists for several. Returns the click and whether the origin is
    /// the link's client's domain (for CORS).
    pub async fn record_beacon(
        &self,
        slug: &str,
        origin: Option<&str>,
        visit: Visit,
    ) -> DomainResult<(Click, bool)> {
        let not_found = || DomainError::NotFound {
            what: "link",
            id: slug.chars().take(80).collect(),
        };
        let slug = Slug::parse(slug).map_err(|_| not_found())?;
        let links = self.store.find_links_by_slug(slug.as_str()).await?;
        let origin_domain = origin.map(normalize_domain);
        let mut chosen = None;
        if let Some(od) = &origin_domain {
            for link in &links {
                if let Some(client) = self.store.get_client(&link.client_id).await? {
                    if client
                        .domain
                        .as_deref()
                        .is_some_and(|d| domain_matches(od, d))
                    {
                        chosen = Some((link.clone(), true));
                        break;
                    }
                }
            }
        }
        let (link, origin_ok) = match chosen {
            Some(c) => c,
            None => (links.into_iter().next().ok_or_else(not_found)?, false),
        };
        let visitor_id = visit
            .visitor_id
            .clone()
            .filter(|v| valid_visitor_id(v))
            .unwrap_or_else(|| new_id("vis"));
        let click = self.new_click(&link, visit, &visitor_id);
        self.store.insert_click(&click).await?;
        Ok((click, origin_ok))
    }

    /// Whether an origin belongs to some client's domain (CORS preflight).
    pub async fn origin_is_client_domain(&self, origin: &str) -> DomainResult<bool> {
        let od = normalize_domain(origin);
        Ok(self
            .store
            .list_clients()
            .await?
            .iter()
            .any(|c| c.domain.as_deref().is_some_and(|d| domain_matches(&od, d))))
    }
}

/// `shop.com` matches `shop.com` and its subdomains.
fn domain_matches(origin_domain: &str, client_domain: &str) -> bool {
    origin_domain == client_domain || origin_domain.ends_with(&format!(".{client_domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_carry_ref_and_click_id() {
        let loc = redirect_location(
            "https://shop.com/p?utm_source=x&ref=old",
            "flexus1",
            "clk_1",
        );
        assert_eq!(
            loc,
            "https://shop.com/p?utm_source=x&ref=flexus1&sclid=clk_1"
        );
    }

    #[test]
    fn payment_links_get_the_click_as_client_reference_id() {
        let loc = redirect_location("https://buy.stripe.com/test_abc", "s", "clk_9");
        assert!(loc.contains("client_reference_id=clk_9"), "{loc}");
        let plain = redirect_location("https://shop.com/", "s", "clk_9");
        assert!(!plain.contains("client_reference_id"));
    }

    #[test]
    fn subdomains_belong_to_their_domain() {
        assert!(domain_matches("shop.com", "shop.com"));
        assert!(domain_matches("eu.shop.com", "shop.com"));
        assert!(!domain_matches("evilshop.com", "shop.com"));
    }

    #[test]
    fn stranger_text_is_stored_without_control_characters() {
        assert_eq!(
            clip(Some(" https://ref.example/\0a\u{1}b ".into())).as_deref(),
            Some("https://ref.example/ab")
        );
        assert_eq!(clip(Some("\0\t".into())), None);
    }

    #[test]
    fn long_text_is_clipped_on_a_char_boundary() {
        let long = "é".repeat(3000);
        let clipped = clip(Some(long)).unwrap();
        assert!(clipped.len() <= MAX_TEXT);
    }
}
