//! Identifiers: a short type prefix, then base62 time and randomness
//! (`clk_0Q8f…`), and the validated `Slug`.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `prefix_` followed by 20 base62 characters: 9 of the creation time in
/// milliseconds, then 11 random (~65 bits). The alphabet is in ASCII order,
/// so ids of one prefix sort by creation time: a new row lands at the end of
/// its primary-key index instead of on a random page, so a batch of inserts
/// dirties a few pages instead of one per row (ULID's reasoning).
pub fn new_id(prefix: &str) -> String {
    let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    id_at(prefix, millis, &mut rand::thread_rng())
}

fn id_at(prefix: &str, millis: u64, rng: &mut impl Rng) -> String {
    let base = ALPHABET.len() as u64;
    let mut time = [b'0'; 9];
    let mut rest = millis;
    for digit in time.iter_mut().rev() {
        *digit = ALPHABET[(rest % base) as usize];
        rest /= base;
    }
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    id.extend(time.iter().map(|&b| b as char));
    for _ in 0..11 {
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
    fn ids_sort_by_creation_time() {
        let mut rng = rand::thread_rng();
        let times = [
            0,
            1,
            61,
            62,
            3_843,
            1_700_000_000_000,
            1_700_000_000_001,
            4_102_444_800_000,
        ];
        let ids: Vec<String> = times.iter().map(|&t| id_at("clk", t, &mut rng)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| id.len() == 24));
        // 2100-01-01 still fits the nine time digits.
        assert_eq!(&ids[7][4..13], "01AE08Ie8");
    }

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
