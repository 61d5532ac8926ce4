//! Identifiers: a short type prefix and random base62 (`clk_4f…`), and the
//! validated `Slug`.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `prefix_` followed by 20 random base62 characters (~119 bits).
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    for _ in 0..20 {
        id.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    id
}

/// A link slug: 1–64 characters of `A-Z a-z 0-9 - _ .`, not starting with a dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid slug {0:?}: use 1–64 letters, digits, '-', '_' or '.'")]
pub struct InvalidSlug(pub String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, InvalidSlug> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && !raw.starts_with('.')
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            let shown: String = raw.chars().take(80).collect();
            Err(InvalidSlug(shown))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_are_unique() {
        let a = new_id("clk");
        let b = new_id("clk");
        assert!(a.starts_with("clk_"));
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }

    #[test]
    fn slugs_accept_plain_names() {
        assert_eq!(Slug::parse("flexus1").unwrap().as_str(), "flexus1");
        assert!(Slug::parse("spring-sale_2.0").is_ok());
    }

    #[test]
    fn slugs_reject_injection_shaped_input() {
        for bad in [
            "",
            "a b",
            "x'; DROP TABLE links;--",
            "<script>",
            "../etc",
            ".hidden",
            &"a".repeat(65),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
