//! Text rules shared by every interface: what strangers send is cleaned
//! (control characters dropped, NUL included: PostgreSQL's `text` cannot
//! hold it, SQLite can, and both backends must keep the same data), what an
//! admin types is checked (no control characters, bounded length) and
//! refused with a clear message.

use super::{DomainError, DomainResult};

/// Longest name or label an admin may set (characters).
pub const MAX_NAME: usize = 200;
/// Longest URL an admin may set (bytes, as URLs are ASCII once parsed).
pub const MAX_URL: usize = 2048;
/// Longest promotion code (characters).
pub const MAX_PROMO_CODE: usize = 100;
/// Longest identifier or secret an admin may paste (`acct_…`, `whsec_…`, `rk_…`).
pub const MAX_TOKEN: usize = 255;

/// `value` without control characters (C0 including NUL, DEL, C1).
pub fn strip_controls(value: &str) -> String {
    if value.chars().any(char::is_control) {
        value.chars().filter(|c| !c.is_control()).collect()
    } else {
        value.to_owned()
    }
}

/// An admin-set text field, trimmed: refused when it holds a control
/// character or is longer than `max` characters. `what` names the field in
/// the message ("a client name").
pub fn admin_text(what: &str, value: &str, max: usize) -> DomainResult<String> {
    let value = value.trim();
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    let len = value.chars().count();
    if len > max {
        return Err(DomainError::invalid(format!(
            "{what} is too long: {len} characters, at most {max}"
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stranger_text_loses_its_control_characters() {
        assert_eq!(strip_controls("a\0b\tc\u{7f}d\u{85}e"), "abcde");
        assert_eq!(strip_controls("plain é"), "plain é");
    }

    #[test]
    fn admin_text_with_a_control_character_or_too_long_is_refused() {
        assert!(admin_text("a name", "Ac\0me", MAX_NAME).is_err());
        assert!(admin_text("a name", "Ac\nme", MAX_NAME).is_err());
        assert!(admin_text("a name", &"é".repeat(MAX_NAME + 1), MAX_NAME).is_err());
        assert_eq!(
            admin_text("a name", &format!(" {} ", "é".repeat(MAX_NAME)), MAX_NAME).unwrap(),
            "é".repeat(MAX_NAME)
        );
    }
}
