//! Admin access (SPEC 4.2): the admin token (only its hash is kept), an
//! optional password (Argon2), and sessions with their CSRF token.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::model::{now_millis, Millis};
use super::report::AdminSession;
use super::{DomainError, DomainResult, Tracker};

const TOKEN_HASH: &str = "admin_token_hash";
const PASSWORD_HASH: &str = "admin_password_hash";
/// How long a login lasts.
pub const SESSION_TTL_MS: Millis = 12 * 3600 * 1000;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// The answer of `check_admin_password`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Correct,
    /// Wrong, or no password is set.
    Wrong,
    /// Not checked: the budget of password checks is spent for now.
    Busy,
}

/// What `ensure_admin_token` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSetup {
    /// The token given by flag or environment is the one in force.
    Configured,
    /// A token already existed (its hash is kept); nothing to print.
    Existing,
    /// A new token was generated: print it once, it is not kept.
    Generated(String),
}

impl Tracker {
    /// Makes sure an admin token exists: the configured one, the stored one,
    /// or a new one (returned once so that `serve` can print it).
    pub async fn ensure_admin_token(&self, configured: Option<&str>) -> DomainResult<TokenSetup> {
        if let Some(token) = configured.map(str::trim).filter(|t| !t.is_empty()) {
            if token.len() < 16 {
                return Err(DomainError::invalid(
                    "the admin token needs at least 16 characters",
                ));
            }
            self.store
                .set_setting(TOKEN_HASH, &sha256_hex(token))
                .await?;
            return Ok(TokenSetup::Configured);
        }
        if self.store.get_setting(TOKEN_HASH).await?.is_some() {
            return Ok(TokenSetup::Existing);
        }
        let token = format!("sta_{}", random_hex(24));
        let stored = self
            .store
            .init_setting(TOKEN_HASH, &sha256_hex(&token))
            .await?;
        if stored == sha256_hex(&token) {
            Ok(TokenSetup::Generated(token))
        } else {
            // Another instance created one at the same moment.
            Ok(TokenSetup::Existing)
        }
    }

    /// Whether `presented` is the admin token (constant-time on the hashes).
    pub async fn check_admin_token(&self, presented: &str) -> DomainResult<bool> {
        let Some(stored) = self.store.get_setting(TOKEN_HASH).await? else {
            return Ok(false);
        };
        Ok(sha256_hex(presented.trim())
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into())
    }

    /// Sets the admin password (kept as an Argon2 hash, computed on the
    /// blocking pool: it takes tens of milliseconds of CPU).
    pub async fn set_admin_password(&self, password: &str) -> DomainResult<()> {
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        if password.chars().count() < 10 {
            return Err(DomainError::invalid(
                "the password needs at least 10 characters",
            ));
        }
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(|e| DomainError::invalid(format!("could not hash the password: {e}")))?
        .map_err(|e| DomainError::invalid(format!("could not hash the password: {e}")))?;
        self.store.set_setting(PASSWORD_HASH, &hash).await?;
        Ok(())
    }

    /// Whether `presented` is the admin password. The Argon2 verification
    /// runs on the blocking pool, and only when `may_verify()` allows it (the
    /// HTTP edge's global budget of password checks): otherwise `Busy`. No
    /// password set means `Wrong`, without asking.
    pub async fn check_admin_password(
        &self,
        presented: &str,
        may_verify: impl FnOnce() -> bool,
    ) -> DomainResult<PasswordCheck> {
        let Some(hash) = self.store.get_setting(PASSWORD_HASH).await? else {
            return Ok(PasswordCheck::Wrong);
        };
        if !may_verify() {
            return Ok(PasswordCheck::Busy);
        }
        let presented = presented.to_owned();
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(presented.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await;
        Ok(match verified {
            Ok(true) => PasswordCheck::Correct,
            Ok(false) => PasswordCheck::Wrong,
            Err(e) => {
                tracing::error!(error = %e, "the password check did not finish");
                PasswordCheck::Wrong
            }
        })
    }

    /// Whether `presented` is the admin token or the admin password (no
    /// budget: for the CLI and tests; the login page limits the password).
    pub async fn check_admin_login(&self, presented: &str) -> DomainResult<bool> {
        if self.check_admin_token(presented).await? {
            return Ok(true);
        }
        Ok(self.check_admin_password(presented, || true).await? == PasswordCheck::Correct)
    }

    /// Opens a session; returns the cookie value (kept only as a hash).
    pub async fn open_session(&self) -> DomainResult<(String, AdminSession)> {
        let id = random_hex(32);
        let now = now_millis();
        let session = AdminSession {
            id_hash: sha256_hex(&id),
            csrf_token: random_hex(24),
            created_at: now,
            expires_at: now + SESSION_TTL_MS,
        };
        self.store.insert_session(&session).await?;
        Ok((id, session))
    }

    /// The live session a cookie value names.
    pub async fn session(&self, cookie_value: &str) -> DomainResult<Option<AdminSession>> {
        if cookie_value.is_empty() || cookie_value.len() > 128 {
            return Ok(None);
        }
        Ok(self
            .store
            .get_session(&sha256_hex(cookie_value), now_millis())
            .await?)
    }

    pub async fn close_session(&self, cookie_value: &str) -> DomainResult<()> {
        self.store.delete_session(&sha256_hex(cookie_value)).await?;
        Ok(())
    }
}

/// Whether a submitted CSRF token matches the session's (constant time).
pub fn csrf_matches(session: &AdminSession, submitted: &str) -> bool {
    !submitted.is_empty()
        && session
            .csrf_token
            .as_bytes()
            .ct_eq(submitted.as_bytes())
            .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> AdminSession {
        AdminSession {
            id_hash: "h".into(),
            csrf_token: "abc123".into(),
            created_at: 0,
            expires_at: 1,
        }
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        assert!(csrf_matches(&session(), "abc123"));
        assert!(!csrf_matches(&session(), "abc124"));
        assert!(!csrf_matches(&session(), ""));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(sha256_hex("").len(), 64);
        assert_ne!(sha256_hex("a"), sha256_hex("b"));
    }
}
