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
}
