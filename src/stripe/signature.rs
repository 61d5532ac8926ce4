//! Stripe-Signature verification (SPEC 2.4), deciding exactly as Stripe's
//! official Python and Node libraries do.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How old a signature's timestamp may be, in seconds (Stripe's default).
pub const DEFAULT_TOLERANCE_S: i64 = 300;

/// The only scheme Stripe signs live events with; `v0` (test mode) and any
/// future scheme are ignored, so an attacker cannot downgrade to them.
const SCHEME: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum SignatureError {
    /// The Stripe-Signature header is absent or empty.
    #[error("no Stripe-Signature header")]
    NoHeader,
    /// No `t`, `t` not an integer, a `t` or `v1` element without `=`, or no
    /// `v1` entry at all.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// No `v1` entry matches the expected signature.
    #[error("no signature matches the payload")]
    NoMatch,
    /// The signature matches but its timestamp is older than the tolerance.
    #[error("signature timestamp outside the tolerance")]
    Stale,
}

/// A parsed `Stripe-Signature: t=…,v1=…[,v1=…][,v0=…]` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// Unix seconds.
    pub timestamp: i64,
    /// Every `v1` value, in header order, exactly as sent.
    pub v1: Vec<String>,
}

impl SignatureHeader {
    /// Parses the header the way Stripe's libraries do: split on `,` alone;
    /// in each element the key is the text before the first `=` and the value
    /// the text between the first and any second `=` (Python's
    /// `split("=", 2)[1]`, Node's `split("=")[1]`). Keys are compared
    /// exactly; elements with other keys — even without `=` — are ignored.
    /// With several `t` elements the first wins (Python; Node takes the last).
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        if header.is_empty() {
            return Err(SignatureError::NoHeader);
        }
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for element in header.split(',') {
            let mut parts = element.split('=');
            let key = parts.next().unwrap_or_default();
            if key != "t" && key != SCHEME {
                continue;
            }
            // Python raises (IndexError) on a `t` or `v1` element without `=`.
            let value = parts.next().ok_or(SignatureError::Malformed)?;
            if key == "t" {
                if timestamp.is_none() {
                    timestamp = Some(parse_timestamp(value)?);
                }
            } else {
                v1.push(value.to_owned());
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if v1.is_empty() {
            return Err(SignatureError::Malformed);
        }
        Ok(Self { timestamp, v1 })
    }

    /// Ok if any `v1` equals HMAC-SHA256(secret bytes incl. `whsec_`,
    /// `"{t}." + payload`) as lowercase hex (constant-time compare); then, if
    /// `tolerance > 0` and `timestamp < now - tolerance` → `Stale`. Future
    /// timestamps are accepted.
    pub fn verify(
        &self,
        payload: &[u8],
        secret: &str,
        now: i64,
        tolerance: i64,
    ) -> Result<(), SignatureError> {
        let expected = compute_v1(payload, secret, self.timestamp);
        // Compare against every entry, without stopping at the first match.
        let matched = self.v1.iter().fold(subtle::Choice::from(0), |acc, sig| {
            acc | expected.as_bytes().ct_eq(sig.as_bytes())
        });
        if !bool::from(matched) {
            return Err(SignatureError::NoMatch);
        }
        if tolerance > 0 && self.timestamp < now.saturating_sub(tolerance) {
            return Err(SignatureError::Stale);
        }
        Ok(())
    }
}

/// `t` as both libraries read it where they agree: an optionally signed
/// decimal integer, surrounding whitespace allowed (Python's `int()`, Node's
/// `parseInt`). The signed content uses the number re-printed (`%d`), so
/// `t=+0017` signs as `17.`. Where they disagree (`t=17abc`, which only
/// Node's `parseInt` reads), Python's stricter reading decides.
fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    let digits = value.trim();
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    digits.parse().map_err(|_| SignatureError::Malformed)
}

/// Verifies a delivery: `header` is the Stripe-Signature value, if any.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secret: &str,
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::NoHeader)?;
    SignatureHeader::parse(header)?.verify(payload, secret, now, tolerance)
}

/// The `v1` signature of `payload` at `timestamp`, lowercase hex.
pub fn compute_v1(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// A `t=…,v1=…` header as Stripe would send it, for tests and the demo.
pub fn header_for(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!(
        "t={timestamp},{SCHEME}={}",
        compute_v1(payload, secret, timestamp)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const VECTORS: &str = include_str!("../../tests/fixtures/stripe/signature_vectors.json");
    const SECRET: &str = "whsec_test_attribution_5f1c9e2b7a4d8c03";
    const T: i64 = 1_760_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#;

    #[derive(Deserialize)]
    struct File {
        default_tolerance_s: i64,
        hmac_sha256_primitive_vectors: Primitives,
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Primitives {
        cases: Vec<Primitive>,
    }

    #[derive(Deserialize)]
    struct Primitive {
        key: String,
        message: String,
        hmac_sha256_hex: String,
        case: String,
    }

    #[derive(Deserialize)]
    struct Vector {
        id: String,
        secret: String,
        header: String,
        payload: String,
        now: i64,
        tolerance: i64,
        valid: bool,
        why: String,
    }

    fn file() -> File {
        serde_json::from_str(VECTORS).expect("signature_vectors.json parses")
    }

    #[test]
    fn every_stripe_library_vector_decides_as_the_libraries_do() {
        let file = file();
        assert_eq!(file.default_tolerance_s, DEFAULT_TOLERANCE_S);
        assert!(file.vectors.len() >= 20, "vectors were loaded");
        let mut failures = Vec::new();
        for v in &file.vectors {
            let got = verify(
                v.payload.as_bytes(),
                Some(&v.header),
                &v.secret,
                v.now,
                v.tolerance,
            );
            if got.is_ok() != v.valid {
                failures.push(format!(
                    "{}: expected valid={}, got {got:?} ({})",
                    v.id, v.valid, v.why
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "failing vectors:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn vectors_fail_for_the_reason_the_libraries_give() {
        use SignatureError::*;
        let expected = [
            ("invalid_wrong_secret", NoMatch),
            ("invalid_tampered_payload", NoMatch),
            ("invalid_reserialized_payload", NoMatch),
            ("invalid_trailing_newline", NoMatch),
            ("invalid_stale_timestamp", Stale),
            ("invalid_missing_v1", Malformed),
            ("invalid_v0_only", Malformed),
            ("invalid_malformed_header", Malformed),
            ("invalid_empty_header", NoHeader),
            ("invalid_missing_timestamp", Malformed),
            ("invalid_non_numeric_timestamp", Malformed),
            ("invalid_several_v1_none_valid", NoMatch),
        ];
        let file = file();
        for (id, reason) in expected {
            let v = file
                .vectors
                .iter()
                .find(|v| v.id == id)
                .unwrap_or_else(|| panic!("vector {id} exists"));
            let got = verify(
                v.payload.as_bytes(),
                Some(&v.header),
                &v.secret,
                v.now,
                v.tolerance,
            );
            assert_eq!(got, Err(reason), "vector {id}");
        }
    }

    #[test]
    fn hmac_primitive_matches_known_answers() {
        for c in file().hmac_sha256_primitive_vectors.cases {
            let mut mac = HmacSha256::new_from_slice(c.key.as_bytes()).unwrap();
            mac.update(c.message.as_bytes());
            assert_eq!(
                hex::encode(mac.finalize().into_bytes()),
                c.hmac_sha256_hex,
                "case {}",
                c.case
            );
        }
    }

    #[test]
    fn compute_v1_signs_timestamp_dot_payload() {
        let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"1760000000.");
        mac.update(BODY);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(compute_v1(BODY, SECRET, T), expected);
        assert_eq!(header_for(BODY, SECRET, T), format!("t={T},v1={expected}"));
    }

    #[test]
    fn header_for_round_trips() {
        let header = header_for(BODY, SECRET, T);
        assert_eq!(verify(BODY, Some(&header), SECRET, T + 10, 300), Ok(()));
        let parsed = SignatureHeader::parse(&header).unwrap();
        assert_eq!(parsed.timestamp, T);
        assert_eq!(parsed.v1, vec![compute_v1(BODY, SECRET, T)]);
    }

    #[test]
    fn an_absent_or_empty_header_is_no_header() {
        assert_eq!(
            verify(BODY, None, SECRET, T, 300),
            Err(SignatureError::NoHeader)
        );
        assert_eq!(
            verify(BODY, Some(""), SECRET, T, 300),
            Err(SignatureError::NoHeader)
        );
        assert_eq!(SignatureHeader::parse(""), Err(SignatureError::NoHeader));
    }

    #[test]
    fn a_non_integer_timestamp_is_malformed() {
        let sig = compute_v1(BODY, SECRET, T);
        for header in [
            format!("t=abc,v1={sig}"),
            format!("t=,v1={sig}"),
            format!("t=1.5,v1={sig}"),
            format!("t=1_760_000_000,v1={sig}"),
            format!("t=99999999999999999999,v1={sig}"),
            format!("t,v1={sig}"),
        ] {
            assert_eq!(
                verify(BODY, Some(&header), SECRET, T, 300),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn a_header_without_v1_or_with_a_bare_v1_is_malformed() {
        let sig = compute_v1(BODY, SECRET, T);
        for header in [
            "t=1760000000".to_owned(),
            format!("t=1760000000,v0={sig}"),
            format!("t=1760000000,V1={sig}"),
            format!("t=1760000000,v1={sig},v1"),
            format!("t=1760000000, v1={sig}"),
            "not a header".to_owned(),
            ",".to_owned(),
        ] {
            assert_eq!(
                verify(BODY, Some(&header), SECRET, T, 300),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn a_signature_older_than_the_tolerance_is_stale() {
        let header = header_for(BODY, SECRET, T);
        assert_eq!(verify(BODY, Some(&header), SECRET, T + 300, 300), Ok(()));
        assert_eq!(
            verify(BODY, Some(&header), SECRET, T + 301, 300),
            Err(SignatureError::Stale)
        );
        // Tolerance 0 (or below) turns the age check off.
        assert_eq!(verify(BODY, Some(&header), SECRET, T + 86_400, 0), Ok(()));
        assert_eq!(verify(BODY, Some(&header), SECRET, T + 86_400, -1), Ok(()));
    }

    #[test]
    fn a_future_timestamp_is_accepted() {
        let header = header_for(BODY, SECRET, T);
        assert_eq!(verify(BODY, Some(&header), SECRET, T - 3_600, 300), Ok(()));
    }

    #[test]
    fn a_wrong_secret_is_no_match_even_when_stale() {
        let header = header_for(BODY, SECRET, T);
        assert_eq!(
            verify(BODY, Some(&header), "whsec_other", T, 300),
            Err(SignatureError::NoMatch)
        );
        // The signature is checked first, as the libraries do.
        assert_eq!(
            verify(BODY, Some(&header), "whsec_other", T + 10_000, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn the_secret_is_used_whole_including_its_prefix() {
        let stripped = SECRET.strip_prefix("whsec_").unwrap();
        let header = header_for(BODY, stripped, T);
        assert_eq!(
            verify(BODY, Some(&header), SECRET, T, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn v1_matches_only_as_exact_lowercase_hex() {
        let sig = compute_v1(BODY, SECRET, T);
        for bad in [
            sig.to_uppercase(),
            format!(" {sig}"),
            format!("{sig} "),
            sig[..63].to_owned(),
        ] {
            let header = format!("t={T},v1={bad}");
            assert_eq!(
                verify(BODY, Some(&header), SECRET, T, 300),
                Err(SignatureError::NoMatch),
                "{header}"
            );
        }
    }

    #[test]
    fn parsing_follows_the_libraries_on_odd_but_agreed_shapes() {
        let sig = compute_v1(BODY, SECRET, T);
        for header in [
            // Order does not matter; unknown and empty elements are ignored.
            format!("v0=abc,v1={sig},t={T},v2=def"),
            format!("t={T},,v1={sig},"),
            format!("t={T},junk,v1={sig}"),
            // The value ends at a second `=` (Python split("=", 2), Node split("=")).
            format!("t={T},v1={sig}=trailer"),
            // `t` is read as an integer and re-printed before signing.
            format!("t=+0{T},v1={sig}"),
            format!("t= {T} ,v1={sig}"),
        ] {
            assert_eq!(
                verify(BODY, Some(&header), SECRET, T, 300),
                Ok(()),
                "{header}"
            );
        }
    }

    #[test]
    fn where_python_and_node_disagree_python_decides() {
        let sig = compute_v1(BODY, SECRET, T);
        // Several `t`: Python reads the first, Node the last.
        let header = format!("t={T},v1={sig},t=5");
        assert_eq!(verify(BODY, Some(&header), SECRET, T, 300), Ok(()));
        // Trailing garbage after `t`: Python's int() refuses, Node's parseInt reads 1760000000.
        let header = format!("t={T}abc,v1={sig}");
        assert_eq!(
            verify(BODY, Some(&header), SECRET, T, 300),
            Err(SignatureError::Malformed)
        );
        // An empty `v1` beside a good one: Python skips it, Node throws.
        let header = format!("t={T},v1=,v1={sig}");
        assert_eq!(verify(BODY, Some(&header), SECRET, T, 300), Ok(()));
    }

    #[test]
    fn parse_collects_every_v1_in_order() {
        let parsed = SignatureHeader::parse("v1=b,t=42,v0=z,v1=a").unwrap();
        assert_eq!(
            parsed,
            SignatureHeader {
                timestamp: 42,
                v1: vec!["b".into(), "a".into()],
            }
        );
    }

    #[test]
    fn the_payload_is_signed_as_raw_bytes() {
        let body = b"\xff\xfe not utf-8";
        let header = header_for(body, SECRET, T);
        assert_eq!(verify(body, Some(&header), SECRET, T, 300), Ok(()));
        assert_eq!(
            verify(b"\xff\xfe not utf-9", Some(&header), SECRET, T, 300),
            Err(SignatureError::NoMatch)
        );
    }
}
