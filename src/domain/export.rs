//! Conversions as RFC 4180 CSV (`salestrack export conversions`, and the
//! same for the JSON API): a header row, then one row per conversion,
//! oldest purchase first, CRLF line ends, fields quoted where needed.
//!
//! Money stays in minor units (`amount`, `net_amount`) next to a plain
//! decimal in the currency's own decimals (`amount_display`: `49.00` USD,
//! `4900` JPY, `1.234` KWD), never summed across currencies. Free-text
//! cells that a spreadsheet would run as a formula get a leading `'` in the
//! CSV (`ExportRow::for_spreadsheets`); the JSON rows are left as stored.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use super::model::*;
use super::money::decimals;
use super::view::rfc3339;
use super::{DomainError, DomainResult, Tracker};

/// The columns, in order.
pub const EXPORT_COLUMNS: [&str; 17] = [
    "id",
    "purchased_at",
    "client_id",
    "client_name",
    "link_slug",
    "amount",
    "amount_display",
    "net_amount",
    "currency",
    "status",
    "kind",
    "method",
    "client_method",
    "verified",
    "livemode",
    "purchase_key",
    "customer",
];

/// One exported conversion; field order is `EXPORT_COLUMNS`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportRow {
    pub id: String,
    /// RFC 3339, UTC.
    pub purchased_at: String,
    pub client_id: String,
    pub client_name: String,
    /// Empty for an orphan.
    pub link_slug: Option<String>,
    /// Minor units.
    pub amount: i64,
    pub amount_display: String,
    pub net_amount: i64,
    /// Lowercase ISO code, as Stripe writes it.
    pub currency: String,
    pub status: ConversionStatus,
    pub kind: ConversionKind,
    pub method: Option<Method>,
    pub client_method: ClientMethod,
    pub verified: bool,
    pub livemode: bool,
    pub purchase_key: String,
    pub customer: Option<String>,
}

impl ExportRow {
    /// The row with every free-text cell made inert for spreadsheets. The
    /// purchase key and customer come from Stripe payloads (an unverified,
    /// possibly forged delivery's too), the client's name and the slug from
    /// people; a cell that starts with `=`, `+`, `-`, `@`, a tab or a
    /// carriage return is run as a formula when the file is opened in a
    /// spreadsheet (OWASP "CSV injection"), so it gets a leading `'`. Ids,
    /// amounts and codes are written by salestrack and left as they are.
    fn for_spreadsheets(&self) -> ExportRow {
        ExportRow {
            client_name: inert(&self.client_name),
            link_slug: self.link_slug.as_deref().map(inert),
            purchase_key: inert(&self.purchase_key),
            customer: self.customer.as_deref().map(inert),
            ..self.clone()
        }
    }
}

/// `text`, with a `'` in front when a spreadsheet would read it as a formula.
fn inert(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

/// `4900 usd` → `49.00`; `4900 jpy` → `4900`; `1234 kwd` → `1.234`.
pub fn decimal_amount(amount: i64, currency: &str) -> String {
    let d = decimals(currency);
    if d == 0 {
        return amount.to_string();
    }
    let factor = 10u64.pow(d);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / factor,
        abs % factor,
        width = d as usize
    )
}

/// A date bound: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_date_bound(raw: &str) -> DomainResult<Millis> {
    let raw = raw.trim();
    if let Ok(date) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(t) = date.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            DomainError::invalid(format!(
                "{raw:?} is not a date (use YYYY-MM-DD or RFC 3339, e.g. 2026-01-31T12:00:00Z)"
            ))
        })
}

/// `live` → `true`, `test` → `false`.
pub fn parse_mode(raw: &str) -> DomainResult<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "live" => Ok(true),
        "test" => Ok(false),
        other => Err(DomainError::invalid(format!(
            "mode {other:?} is neither `live` nor `test`"
        ))),
    }
}

/// The filter of an export: client, `[from, to)` on the purchase time, mode.
/// Fails when `from` is not before `to`.
pub fn export_filter(
    client_id: Option<String>,
    from: Option<Millis>,
    to: Option<Millis>,
    livemode: Option<bool>,
) -> DomainResult<ConversionFilter> {
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(DomainError::invalid(
                "the start of the period must be before its end (`to` is exclusive)",
            ));
        }
    }
    Ok(ConversionFilter {
        client_id,
        from,
        to,
        livemode,
        ..Default::default()
    })
}

/// Writes `rows` as CSV: the header row always, even with no rows.
pub fn write_csv<W: Write>(rows: &[ExportRow], out: W) -> Result<(), csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    writer.write_record(EXPORT_COLUMNS)?;
    for row in rows {
        writer.serialize(row.for_spreadsheets())?;
    }
    writer.flush()?;
    Ok(())
}

impl Tracker {
    /// The conversions `filter` selects, as export rows, oldest first.
    pub async fn export_rows(&self, filter: &ConversionFilter) -> DomainResult<Vec<ExportRow>> {
        let mut conversions = self.store.list_conversions(filter).await?;
        conversions.reverse();
        let clients: HashMap<String, String> = self
            .store
            .list_clients()
            .await?
            .into_iter()
            .map(|c| (c.id, c.name))
            .collect();
        let slugs: HashMap<String, String> = self
            .store
            .list_links(filter.client_id.as_deref())
            .await?
            .into_iter()
            .map(|l| (l.id, l.slug))
            .collect();
        Ok(conversions
            .into_iter()
            .map(|c| ExportRow {
                purchased_at: rfc3339(c.purchased_at),
                client_name: clients.get(&c.client_id).cloned().unwrap_or_default(),
                link_slug: c.link_id.as_ref().and_then(|l| slugs.get(l).cloned()),
                amount_display: decimal_amount(c.amount, &c.currency),
                id: c.id,
                client_id: c.client_id,
                amount: c.amount,
                net_amount: c.net_amount,
                currency: c.currency,
                status: c.status,
                kind: c.kind,
                method: c.method,
                client_method: c.client_method,
                verified: c.verified,
                livemode: c.livemode,
                purchase_key: c.purchase_key,
                customer: c.customer,
            })
            .collect())
    }

    /// Writes the CSV of the conversions `filter` selects into `out`;
    /// returns how many rows it wrote.
    pub async fn export_conversions_csv<W: Write>(
        &self,
        filter: &ConversionFilter,
        out: W,
    ) -> DomainResult<usize> {
        let rows = self.export_rows(filter).await?;
        write_csv(&rows, out).map_err(|e| DomainError::invalid(format!("writing CSV: {e}")))?;
        Ok(rows.len())
    }

    /// The same CSV as a string (for an HTTP body).
    pub async fn export_conversions_csv_string(
        &self,
        filter: &ConversionFilter,
    ) -> DomainResult<String> {
        let mut buf = Vec::new();
        self.export_conversions_csv(filter, &mut buf).await?;
        String::from_utf8(buf).map_err(|e| DomainError::invalid(format!("CSV is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(client_name: &str) -> ExportRow {
        ExportRow {
            id: "conv_1".into(),
            purchased_at: "2026-01-02T03:04:05Z".into(),
            client_id: "cli_1".into(),
            client_name: client_name.into(),
            link_slug: None,
            amount: 4900,
            amount_display: "49.00".into(),
            net_amount: 3400,
            currency: "usd".into(),
            status: ConversionStatus::PartiallyRefunded,
            kind: ConversionKind::New,
            method: Some(Method::LinkSlug),
            client_method: ClientMethod::WebhookSecret,
            verified: true,
            livemode: false,
            purchase_key: "pi_1".into(),
            customer: None,
        }
    }

    #[test]
    fn amounts_are_written_in_each_currencys_decimals() {
        assert_eq!(decimal_amount(4900, "usd"), "49.00");
        assert_eq!(decimal_amount(5, "EUR"), "0.05");
        assert_eq!(decimal_amount(4900, "jpy"), "4900");
        assert_eq!(decimal_amount(1234, "kwd"), "1.234");
        assert_eq!(decimal_amount(7, "bhd"), "0.007");
        assert_eq!(decimal_amount(-150, "usd"), "-1.50");
    }

    #[test]
    fn dates_are_days_at_midnight_utc_or_rfc3339() {
        assert_eq!(parse_date_bound("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_date_bound("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert!(parse_date_bound("yesterday").is_err());
        assert!(parse_date_bound("2026-02-30").is_err());
    }

    #[test]
    fn an_empty_or_reversed_period_is_refused() {
        assert!(export_filter(None, Some(10), Some(10), None).is_err());
        assert!(export_filter(None, Some(10), Some(5), None).is_err());
        let f = export_filter(Some("cli".into()), Some(1), Some(2), Some(true)).unwrap();
        assert_eq!((f.from, f.to, f.livemode), (Some(1), Some(2), Some(true)));
    }

    #[test]
    fn modes_are_live_or_test() {
        assert!(parse_mode("live").unwrap());
        assert!(!parse_mode("TEST").unwrap());
        assert!(parse_mode("prod").is_err());
    }

    #[test]
    fn the_csv_has_a_header_crlf_lines_and_quoted_fields() {
        let mut out = Vec::new();
        write_csv(&[row("Acme \"Best\", Inc.")], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next().unwrap(), EXPORT_COLUMNS.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "conv_1,2026-01-02T03:04:05Z,cli_1,\"Acme \"\"Best\"\", Inc.\",,4900,49.00,3400,usd,\
             partially_refunded,new,link_slug,webhook_secret,true,false,pi_1,"
        );
        assert_eq!(lines.next(), Some(""));
    }

    #[test]
    fn cells_a_spreadsheet_would_run_as_formulas_are_made_inert() {
        let mut forged = row("=HYPERLINK(\"http://evil.example\",\"x\")");
        forged.purchase_key = "+cmd|' /C calc'!A0".into();
        forged.customer = Some("@SUM(1+1)".into());
        forged.link_slug = Some("-A1".into());
        forged.amount_display = "-1.50".into();
        let mut out = Vec::new();
        write_csv(&[forged], &mut out).unwrap();
        let mut reader = csv::Reader::from_reader(&out[..]);
        let record = reader.records().next().unwrap().unwrap();
        let cell = |name: &str| {
            let i = EXPORT_COLUMNS.iter().position(|c| *c == name).unwrap();
            record[i].to_string()
        };
        assert_eq!(
            cell("client_name"),
            "'=HYPERLINK(\"http://evil.example\",\"x\")"
        );
        assert_eq!(cell("purchase_key"), "'+cmd|' /C calc'!A0");
        assert_eq!(cell("customer"), "'@SUM(1+1)");
        assert_eq!(cell("link_slug"), "'-A1");
        // A negative amount is a number, written by salestrack: unchanged.
        assert_eq!(cell("amount_display"), "-1.50");
        assert_eq!(inert("\tx"), "'\tx");
        assert_eq!(inert("\rx"), "'\rx");
        // Ordinary text is untouched.
        assert_eq!(inert("Acme, Inc."), "Acme, Inc.");
        assert_eq!(inert(""), "");
    }

    #[test]
    fn an_empty_export_still_has_its_header() {
        let mut out = Vec::new();
        write_csv(&[], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\r\n", EXPORT_COLUMNS.join(","))
        );
    }
}
