//! `salestrack export conversions`: CSV on stdout (`--json`: the same rows
//! as a JSON array).

use std::io::Write;

use super::Mode;
use crate::domain::export::{export_filter, parse_date_bound, write_csv};
use crate::domain::Tracker;

pub(super) async fn conversions(
    tracker: &Tracker,
    client: Option<String>,
    from: Option<String>,
    to: Option<String>,
    mode: Option<Mode>,
    json: bool,
) -> anyhow::Result<()> {
    let client_id = match client {
        Some(c) => Some(tracker.find_client(&c).await?.id),
        None => None,
    };
    let from = from.as_deref().map(parse_date_bound).transpose()?;
    let to = to.as_deref().map(parse_date_bound).transpose()?;
    let filter = export_filter(client_id, from, to, mode.map(Mode::is_live))?;
    let rows = tracker.export_rows(&filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    write_csv(&rows, &mut stdout)?;
    stdout.flush()?;
    Ok(())
}
