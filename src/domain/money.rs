//! Money in minor units with its currency, and how each currency is shown.

/// Number of decimals a currency uses in its minor unit, as Stripe counts them.
pub fn decimals(currency: &str) -> u32 {
    match currency.to_ascii_lowercase().as_str() {
        // Stripe's zero-decimal currencies.
        "bif" | "clp" | "djf" | "gnf" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf" | "ugx"
        | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        // Three-decimal currencies.
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// A currency code is three ASCII letters.
pub fn is_valid_currency(currency: &str) -> bool {
    currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic())
}

/// `4900 usd` → `USD 49.00`; `4900 jpy` → `JPY 4900`; `1234 kwd` → `KWD 1.234`.
pub fn format_minor(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let d = decimals(currency);
    if d == 0 {
        return format!("{code} {amount}");
    }
    let factor = 10i64.pow(d);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let whole = abs / factor as u64;
    let frac = abs % factor as u64;
    format!("{code} {sign}{whole}.{frac:0width$}", width = d as usize)
}

/// How a currency is written before its amount, in English-style grouping
/// (`$`, `€`, `¥`); `None` for codes without a well-known symbol, which are
/// written as the ISO code (`KWD 1.234`).
fn symbol(currency: &str) -> Option<&'static str> {
    Some(match currency.to_ascii_lowercase().as_str() {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        "jpy" => "¥",
        "cny" => "CN¥",
        "krw" => "₩",
        "inr" => "₹",
        "cad" => "CA$",
        "aud" => "A$",
        "nzd" => "NZ$",
        "hkd" => "HK$",
        "sgd" => "S$",
        "mxn" => "MX$",
        "brl" => "R$",
        "ils" => "₪",
        "vnd" => "₫",
        "php" => "₱",
        "thb" => "฿",
        "ngn" => "₦",
        "uah" => "₴",
        "try" => "₺",
        _ => return None,
    })
}

/// Money the way people read it, in the currency's own decimals and sign:
/// `4900 jpy` → `¥4,900`, `2500 eur` → `€25.00`, `4900 usd` → `$49.00`,
/// `1234 kwd` → `KWD 1.234`.
pub fn display(amount: i64, currency: &str) -> String {
    let d = decimals(currency);
    let factor = 10u64.pow(d);
    let abs = amount.unsigned_abs();
    let whole = group_thousands(abs / factor);
    let number = if d == 0 {
        whole
    } else {
        format!("{whole}.{:0width$}", abs % factor, width = d as usize)
    };
    let sign = if amount < 0 { "-" } else { "" };
    match symbol(currency) {
        Some(s) => format!("{sign}{s}{number}"),
        None => format!("{sign}{} {number}", currency.to_ascii_uppercase()),
    }
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_decimal_currencies_show_cents() {
        assert_eq!(format_minor(4900, "usd"), "USD 49.00");
        assert_eq!(format_minor(-5, "eur"), "EUR -0.05");
    }

    #[test]
    fn zero_decimal_currencies_show_whole_units() {
        assert_eq!(format_minor(4900, "jpy"), "JPY 4900");
        assert_eq!(format_minor(15000, "KRW"), "KRW 15000");
    }

    #[test]
    fn three_decimal_currencies_show_mils() {
        assert_eq!(format_minor(1234, "kwd"), "KWD 1.234");
    }

    #[test]
    fn currency_codes_are_three_letters() {
        assert!(is_valid_currency("usd"));
        assert!(!is_valid_currency("us"));
        assert!(!is_valid_currency("u$d"));
    }

    #[test]
    fn display_uses_the_currency_symbol_and_decimals() {
        assert_eq!(display(4900, "jpy"), "¥4,900");
        assert_eq!(display(2500, "eur"), "€25.00");
        assert_eq!(display(4900, "USD"), "$49.00");
        assert_eq!(display(1234, "kwd"), "KWD 1.234");
        assert_eq!(display(123_456_789, "gbp"), "£1,234,567.89");
        assert_eq!(display(15000, "krw"), "₩15,000");
    }

    #[test]
    fn display_shows_negative_and_unknown_currencies() {
        assert_eq!(display(-500, "usd"), "-$5.00");
        assert_eq!(display(5, "chf"), "CHF 0.05");
        assert_eq!(display(0, "jpy"), "¥0");
        assert_eq!(display(i64::MIN, "usd"), "-$92,233,720,368,547,758.08");
    }
}
