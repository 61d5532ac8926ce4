//! Small server-rendered bar charts of clicks and conversions per day. The
//! template draws the SVG from these numbers; no script is involved.

use chrono::{Duration, NaiveDate};

use crate::domain::report::DailyCount;

const WIDTH: i64 = 600;
const HEIGHT: i64 = 120;
const TOP: i64 = 6;

#[derive(Debug, Clone)]
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    /// `2026-11-20: 12 clicks`, shown on hover.
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: &'static str,
    /// CSS class of the bars.
    pub class: &'static str,
    pub width: i64,
    pub height: i64,
    pub bars: Vec<Bar>,
    pub max: i64,
    pub total: i64,
    pub days: i64,
    pub first_day: String,
    pub last_day: String,
}

/// Clicks and conversions of the `days` days ending `today`, one bar per day
/// (days with nothing get an empty bar).
pub fn daily(counts: &[DailyCount], today: NaiveDate, days: i64) -> (Chart, Chart) {
    let first = today - Duration::days(days - 1);
    let series: Vec<(String, i64, i64)> = (0..days)
        .map(|i| {
            let day = (first + Duration::days(i)).format("%Y-%m-%d").to_string();
            let found = counts.iter().find(|c| c.day == day);
            (
                day,
                found.map_or(0, |c| c.clicks),
                found.map_or(0, |c| c.conversions),
            )
        })
        .collect();
    let clicks: Vec<(String, i64)> = series.iter().map(|(d, c, _)| (d.clone(), *c)).collect();
    let conversions: Vec<(String, i64)> = series.iter().map(|(d, _, v)| (d.clone(), *v)).collect();
    (
        chart("Clicks per day", "clicks", &clicks, "click", "clicks"),
        chart(
            "Conversions per day",
            "conversions",
            &conversions,
            "conversion",
            "conversions",
        ),
    )
}

fn chart(
    title: &'static str,
    class: &'static str,
    values: &[(String, i64)],
    one: &str,
    many: &str,
) -> Chart {
    let n = values.len().max(1) as i64;
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let slot = WIDTH / n;
    let gap = (slot / 5).max(1);
    let usable = HEIGHT - TOP;
    let bars = values
        .iter()
        .enumerate()
        .map(|(i, (day, v))| {
            let h = if max == 0 {
                0
            } else {
                // Any non-zero day stays visible.
                ((v * usable + max - 1) / max).max(if *v > 0 { 2 } else { 0 })
            };
            Bar {
                x: i as i64 * slot + gap / 2,
                y: HEIGHT - h,
                w: (slot - gap).max(1),
                h,
                label: format!("{day}: {v} {}", if *v == 1 { one } else { many }),
            }
        })
        .collect();
    Chart {
        title,
        class,
        width: WIDTH,
        height: HEIGHT,
        bars,
        max,
        total: values.iter().map(|(_, v)| v).sum(),
        days: values.len() as i64,
        first_day: values.first().map(|(d, _)| d.clone()).unwrap_or_default(),
        last_day: values.last().map(|(d, _)| d.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: &str, clicks: i64, conversions: i64) -> DailyCount {
        DailyCount {
            day: d.into(),
            clicks,
            conversions,
        }
    }

    #[test]
    fn every_day_gets_a_bar_and_the_tallest_fills_the_chart() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let (clicks, conversions) = daily(
            &[day("2026-11-25", 10, 1), day("2026-11-27", 5, 0)],
            today,
            7,
        );
        assert_eq!(clicks.bars.len(), 7);
        assert_eq!(clicks.first_day, "2026-11-21");
        assert_eq!(clicks.last_day, "2026-11-27");
        assert_eq!(clicks.total, 15);
        assert_eq!(clicks.max, 10);
        let tall = &clicks.bars[4];
        assert_eq!(tall.h, HEIGHT - TOP);
        assert_eq!(tall.y, TOP);
        assert_eq!(tall.label, "2026-11-25: 10 clicks");
        assert_eq!(clicks.bars[0].h, 0);
        assert_eq!(conversions.bars[4].label, "2026-11-25: 1 conversion");
    }

    #[test]
    fn an_empty_series_draws_no_bars_of_height() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let (clicks, _) = daily(&[], today, 30);
        assert!(clicks.bars.iter().all(|b| b.h == 0));
        assert_eq!(clicks.max, 0);
    }
}
