//! Layer 1 — which client an event belongs to (SPEC 2.5) — and the
//! management of clients, their secrets and their links.

use crate::stripe::signature::{SignatureError, SignatureHeader};

use super::ids::{new_id, Slug};
use super::model::*;
use super::text::{admin_text, MAX_NAME, MAX_PROMO_CODE, MAX_TOKEN, MAX_URL};
use super::{DomainError, DomainResult, Tracker};

/// The result of checking a delivery's signature against candidate clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified { client_id: String },
    Unverified(UnverifiedReason),
}

/// Method 1: the first candidate client one of whose active secrets verifies
/// the signature. Candidates are tried oldest first.
pub fn verify_delivery(
    payload: &[u8],
    header: Option<&str>,
    candidates: &[ClientSecrets],
    now_s: i64,
    tolerance_s: i64,
) -> Verdict {
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Verdict::Unverified(UnverifiedReason::NoHeader);
    };
    let parsed = match SignatureHeader::parse(header) {
        Ok(parsed) => parsed,
        Err(SignatureError::NoHeader) => return Verdict::Unverified(UnverifiedReason::NoHeader),
        Err(_) => return Verdict::Unverified(UnverifiedReason::Malformed),
    };
    if candidates.iter().all(|c| c.secrets.is_empty()) {
        return Verdict::Unverified(UnverifiedReason::NoSecret);
    }
    let mut stale = false;
    for candidate in candidates {
        for secret in &candidate.secrets {
            match parsed.verify(payload, secret.expose(), now_s, tolerance_s) {
                Ok(()) => {
                    return Verdict::Verified {
                        client_id: candidate.client.id.clone(),
                    }
                }
                Err(SignatureError::Stale) => stale = true,
                Err(_) => {}
            }
        }
    }
    Verdict::Unverified(if stale {
        UnverifiedReason::Stale
    } else {
        UnverifiedReason::Mismatch
    })
}

/// Methods 2–5: the client an unverified (or secret-less) event most likely
/// belongs to. `clients` are oldest first.
pub fn suspect_client(
    clients: &[ClientSecrets],
    account: Option<&str>,
    email: Option<&str>,
) -> Option<(String, ClientMethod)> {
    if let Some(account) = account.filter(|a| !a.is_empty()) {
        if let Some(c) = clients
            .iter()
            .find(|c| c.client.stripe_account.as_deref() == Some(account))
        {
            return Some((c.client.id.clone(), ClientMethod::StripeAccount));
        }
    }
    if let Some(email_domain) = email.and_then(email_domain) {
        if let Some(c) = clients.iter().find(|c| {
            c.client
                .domain
                .as_deref()
                .map(normalize_domain)
                .is_some_and(|d| d == email_domain)
        }) {
            return Some((c.client.id.clone(), ClientMethod::EmailDomain));
        }
    }
    if let Some(c) = clients.iter().find(|c| !c.secrets.is_empty()) {
        return Some((c.client.id.clone(), ClientMethod::FirstClientWithSecret));
    }
    clients
        .first()
        .map(|c| (c.client.id.clone(), ClientMethod::FirstClient))
}

fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.rsplit_once('@')?;
    let domain = normalize_domain(domain);
    (!domain.is_empty()).then_some(domain)
}

/// `https://www.Shop.com/` → `shop.com`.
pub fn normalize_domain(raw: &str) -> String {
    let d = raw.trim().to_ascii_lowercase();
    let d = d
        .strip_prefix("https://")
        .or_else(|| d.strip_prefix("http://"))
        .unwrap_or(&d);
    let d = d.split(['/', ':']).next().unwrap_or_default();
    d.strip_prefix("www.").unwrap_or(d).to_string()
}

/// What `add_client` needs. No `Debug`: it holds secrets.
#[derive(Clone, Default)]
pub struct ClientIn {
    pub name: String,
    pub domain: Option<String>,
    pub stripe_account: Option<String>,
    pub webhook_secret: Option<String>,
    pub stripe_api_key: Option<String>,
}

/// What `add_link` needs.
#[derive(Debug, Clone, Default)]
pub struct LinkIn {
    pub client: String,
    pub slug: String,
    pub destination: String,
    pub label: Option<String>,
    pub promo_codes: Vec<String>,
}

fn check_secret(secret: &str) -> DomainResult<WebhookSecret> {
    let secret = secret.trim();
    if !secret.starts_with("whsec_")
        || secret.len() < 10
        || secret.len() > MAX_TOKEN
        || secret.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(DomainError::invalid(
            "a webhook signing secret starts with whsec_ (copy it from the Stripe dashboard)",
        ));
    }
    Ok(WebhookSecret::new(secret))
}

impl Tracker {
    pub async fn add_client(&self, input: ClientIn) -> DomainResult<Client> {
        let name = admin_text("a client name", &input.name, MAX_NAME)?;
        if name.is_empty() {
            return Err(DomainError::invalid(format!(
                "a client needs a name of 1–{MAX_NAME} characters"
            )));
        }
        let domain = input
            .domain
            .as_deref()
            .map(|d| admin_text("a domain", d, MAX_NAME))
            .transpose()?;
        let secret = input
            .webhook_secret
            .as_deref()
            .map(check_secret)
            .transpose()?;
        let stripe_account = input
            .stripe_account
            .as_deref()
            .map(|a| admin_text("a Stripe account id", a, MAX_TOKEN))
            .transpose()?
            .filter(|a| !a.is_empty());
        if let Some(acct) = &stripe_account {
            if !acct.starts_with("acct_") {
                return Err(DomainError::invalid(
                    "a Stripe account id starts with acct_",
                ));
            }
        }
        let stripe_api_key = input
            .stripe_api_key
            .as_deref()
            .map(|k| admin_text("a Stripe API key", k, MAX_TOKEN))
            .transpose()?
            .filter(|k| !k.is_empty());
        if stripe_api_key
            .as_deref()
            .is_some_and(|k| k.contains(char::is_whitespace))
        {
            return Err(DomainError::invalid(
                "a Stripe API key has no spaces (copy it from the Stripe dashboard)",
            ));
        }
        let client = Client {
            id: new_id("cli"),
            name,
            domain: domain
                .as_deref()
                .map(normalize_domain)
                .filter(|d| !d.is_empty()),
            stripe_account,
            stripe_api_key,
            settings: AttributionSettings::default(),
            created_at: now_millis(),
        };
        self.store
            .insert_client(&client)
            .await
            .map_err(|e| match e {
                crate::storage::StoreError::Conflict(_) => {
                    DomainError::Conflict(format!("a client named {:?} exists", client.name))
                }
                other => other.into(),
            })?;
        if let Some(secret) = secret {
            self.store.add_webhook_secret(&client.id, &secret).await?;
        }
        tracing::info!(client_id = %client.id, "client added");
        Ok(client)
    }

    /// A client by id or, failing that, by name.
    pub async fn find_client(&self, id_or_name: &str) -> DomainResult<Client> {
        if id_or_name.contains('\0') {
            // No stored id or name holds one (PostgreSQL could not even be
            // asked): not found on every backend.
            return Err(DomainError::NotFound {
                what: "client",
                id: super::text::strip_controls(id_or_name),
            });
        }
        if let Some(c) = self.store.get_client(id_or_name).await? {
            return Ok(c);
        }
        self.store
            .find_client_by_name(id_or_name)
            .await?
            .ok_or_else(|| DomainError::NotFound {
                what: "client",
                id: id_or_name.to_string(),
            })
    }

    /// Adds another active secret (rotation: several may be active).
    pub async fn add_secret(&self, client: &str, secret: &str) -> DomainResult<Client> {
        let client = self.find_client(client).await?;
        let secret = check_secret(secret)?;
        self.store.add_webhook_secret(&client.id, &secret).await?;
        tracing::info!(client_id = %client.id, secret = %secret.masked(), "webhook secret added");
        Ok(client)
    }

    pub async fn add_link(&self, input: LinkIn) -> DomainResult<Link> {
        let client = self.find_client(&input.client).await?;
        let slug =
            Slug::parse(input.slug.trim()).map_err(|e| DomainError::invalid(e.to_string()))?;
        let destination = admin_text("a destination URL", &input.destination, MAX_URL)?;
        let destination = url::Url::parse(&destination)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| DomainError::invalid("the destination must be an http(s) URL"))?;
        let mut promo_codes: Vec<String> = Vec::new();
        for code in input.promo_codes {
            let code = admin_text("a promotion code", &code, MAX_PROMO_CODE)?;
            if code.is_empty() {
                return Err(DomainError::invalid(format!(
                    "a promotion code has 1–{MAX_PROMO_CODE} characters"
                )));
            }
            if !promo_codes.contains(&code) {
                promo_codes.push(code);
            }
        }
        let label = input
            .label
            .as_deref()
            .map(|l| admin_text("a link label", l, MAX_NAME))
            .transpose()?
            .filter(|l| !l.is_empty());
        let destination = destination.to_string();
        if destination.len() > MAX_URL {
            // Parsing percent-encodes: the stored form must fit too.
            return Err(DomainError::invalid(format!(
                "a destination URL is too long once encoded: {} bytes, at most {MAX_URL}",
                destination.len()
            )));
        }
        let link = Link {
            id: new_id("lnk"),
            client_id: client.id.clone(),
            slug: slug.as_str().to_string(),
            destination,
            label,
            promo_codes,
            created_at: now_millis(),
        };
        self.store.insert_link(&link).await.map_err(|e| match e {
            crate::storage::StoreError::Conflict(_) => DomainError::Conflict(format!(
                "client {} already has a link {:?}",
                client.name, link.slug
            )),
            other => other.into(),
        })?;
        Ok(link)
    }

    pub async fn update_settings(
        &self,
        client: &str,
        settings: AttributionSettings,
    ) -> DomainResult<Client> {
        let client = self.find_client(client).await?;
        if settings.window_primary_days < 1
            || settings.window_fallback_days < settings.window_primary_days
            || settings.window_fallback_days > 3650
        {
            return Err(DomainError::invalid(
                "windows must satisfy 1 ≤ primary ≤ fallback ≤ 3650 days",
            ));
        }
        self.store
            .update_client_settings(&client.id, &settings)
            .await?;
        self.find_client(&client.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(
        id: &str,
        account: Option<&str>,
        domain: Option<&str>,
        secrets: &[&str],
    ) -> ClientSecrets {
        ClientSecrets {
            client: Client {
                id: id.into(),
                name: id.into(),
                domain: domain.map(Into::into),
                stripe_account: account.map(Into::into),
                stripe_api_key: None,
                settings: AttributionSettings::default(),
                created_at: 0,
            },
            secrets: secrets.iter().map(|s| WebhookSecret::new(*s)).collect(),
        }
    }

    fn signed(body: &[u8], secret: &str, t: i64) -> String {
        crate::stripe::signature::header_for(body, secret, t)
    }

    #[test]
    fn the_client_whose_secret_verifies_wins() {
        let clients = [
            client("a", None, None, &["whsec_aaaaaaaa"]),
            client("b", None, None, &["whsec_old_bbbb", "whsec_new_bbbb"]),
        ];
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let header = signed(body, "whsec_new_bbbb", 1000);
        assert_eq!(
            verify_delivery(body, Some(&header), &clients, 1010, 300),
            Verdict::Verified {
                client_id: "b".into()
            }
        );
    }

    #[test]
    fn unverified_reasons_are_named() {
        let clients = [client("a", None, None, &["whsec_aaaaaaaa"])];
        let body = b"{}";
        assert_eq!(
            verify_delivery(body, None, &clients, 0, 300),
            Verdict::Unverified(UnverifiedReason::NoHeader)
        );
        assert_eq!(
            verify_delivery(body, Some("garbage"), &clients, 0, 300),
            Verdict::Unverified(UnverifiedReason::Malformed)
        );
        let header = signed(body, "whsec_other000", 1000);
        assert_eq!(
            verify_delivery(body, Some(&header), &clients, 1000, 300),
            Verdict::Unverified(UnverifiedReason::Mismatch)
        );
        let header = signed(body, "whsec_aaaaaaaa", 1000);
        assert_eq!(
            verify_delivery(body, Some(&header), &clients, 1301, 300),
            Verdict::Unverified(UnverifiedReason::Stale)
        );
        let none = [client("a", None, None, &[])];
        assert_eq!(
            verify_delivery(body, Some(&header), &none, 1000, 300),
            Verdict::Unverified(UnverifiedReason::NoSecret)
        );
    }

    #[test]
    fn suspects_follow_account_then_email_domain_then_secret_then_age() {
        let clients = [
            client("first", None, None, &[]),
            client("with_secret", None, Some("other.com"), &["whsec_xxxxxxxx"]),
            client("shop", Some("acct_1"), Some("shop.com"), &[]),
        ];
        assert_eq!(
            suspect_client(&clients, Some("acct_1"), None),
            Some(("shop".into(), ClientMethod::StripeAccount))
        );
        assert_eq!(
            suspect_client(&clients, None, Some("Jo@Shop.com")),
            Some(("shop".into(), ClientMethod::EmailDomain))
        );
        assert_eq!(
            suspect_client(&clients, Some("acct_unknown"), Some("jo@gmail.com")),
            Some(("with_secret".into(), ClientMethod::FirstClientWithSecret))
        );
        let no_secrets = [
            client("first", None, None, &[]),
            client("second", None, None, &[]),
        ];
        assert_eq!(
            suspect_client(&no_secrets, None, None),
            Some(("first".into(), ClientMethod::FirstClient))
        );
        assert_eq!(suspect_client(&[], None, None), None);
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(normalize_domain("https://www.Shop.com/path"), "shop.com");
        assert_eq!(normalize_domain("lowbackability.com"), "lowbackability.com");
    }
}
