//! Data Helper: loads a user's usage records and summarises them (`fetch_usage_data`).

use std::collections::BTreeMap;

use serde::Serialize;
use time::Date;
use time::format_description::well_known::Rfc3339;

use super::{UsageRecord, round_usd};

/// Spend of one model over the dataset window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUsage {
    pub model: String,
    pub calls: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub monthly_cost_usd: f64,
    pub avg_latency_ms: u64,
}

/// What the Data Helper hands to the Optimizer and reports in `tool_completed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageSummary {
    pub total_calls: u64,
    /// Calendar days from the first to the last record, inclusive (0 without records).
    pub window_days: u32,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    /// 30 / window_days: scales the window's totals to a month.
    pub monthly_factor: f64,
    pub total_monthly_cost_usd: f64,
    /// Per model, most expensive first.
    pub models: Vec<ModelUsage>,
    /// Records whose timestamp could not be read; they count towards cost but not the window.
    pub undated_records: u64,
}

/// Summarises the records. Pure: the same records give the same summary.
pub fn fetch_usage_data(records: &[UsageRecord]) -> UsageSummary {
    let mut first: Option<Date> = None;
    let mut last: Option<Date> = None;
    let mut undated = 0;
    for record in records {
        match time::OffsetDateTime::parse(&record.ts, &Rfc3339) {
            Ok(ts) => {
                let day = ts.to_offset(time::UtcOffset::UTC).date();
                first = Some(first.map_or(day, |d| d.min(day)));
                last = Some(last.map_or(day, |d| d.max(day)));
            }
            Err(_) => undated += 1,
        }
    }
    let window_days = match (first, last) {
        (Some(first), Some(last)) => (last - first).whole_days() as u32 + 1,
        _ => 0,
    };
    let monthly_factor = if window_days == 0 {
        0.0
    } else {
        30.0 / f64::from(window_days)
    };

    let mut per_model: BTreeMap<&str, (u64, u64, u64, f64, u64)> = BTreeMap::new();
    let mut total_cost = 0.0;
    for record in records {
        total_cost += record.cost_usd;
        let entry = per_model.entry(&record.model).or_default();
        entry.0 += 1;
        entry.1 += record.tokens_in;
        entry.2 += record.tokens_out;
        entry.3 += record.cost_usd;
        entry.4 += record.latency_ms;
    }
    let mut models: Vec<ModelUsage> = per_model
        .into_iter()
        .map(
            |(model, (calls, tokens_in, tokens_out, cost, latency))| ModelUsage {
                model: model.to_owned(),
                calls,
                tokens_in,
                tokens_out,
                monthly_cost_usd: round_usd(cost * monthly_factor),
                avg_latency_ms: latency / calls,
            },
        )
        .collect();
    models.sort_by(|a, b| {
        b.monthly_cost_usd
            .total_cmp(&a.monthly_cost_usd)
            .then_with(|| a.model.cmp(&b.model))
    });

    UsageSummary {
        total_calls: records.len() as u64,
        window_days,
        first_day: first.map(|d| d.to_string()),
        last_day: last.map(|d| d.to_string()),
        monthly_factor,
        total_monthly_cost_usd: round_usd(total_cost * monthly_factor),
        models,
        undated_records: undated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: &str, model: &str, cost: f64) -> UsageRecord {
        UsageRecord {
            ts: ts.into(),
            model: model.into(),
            tokens_in: 100,
            tokens_out: 50,
            latency_ms: 400,
            cost_usd: cost,
            prompt_fingerprint: format!("fp-{ts}"),
            feature: "test".into(),
        }
    }

    #[test]
    fn empty_dataset_has_no_window_and_no_cost() {
        let summary = fetch_usage_data(&[]);
        assert_eq!(summary.window_days, 0);
        assert_eq!(summary.total_monthly_cost_usd, 0.0);
        assert!(summary.models.is_empty());
    }

    #[test]
    fn a_fifteen_day_window_doubles_to_a_month() {
        let records = [
            record("2026-10-01T10:00:00Z", "a", 1.0),
            record("2026-10-15T23:59:59Z", "b", 2.0),
        ];
        let summary = fetch_usage_data(&records);
        assert_eq!(summary.window_days, 15);
        assert_eq!(summary.total_monthly_cost_usd, 6.0);
        assert_eq!(summary.models[0].model, "b");
        assert_eq!(summary.first_day.as_deref(), Some("2026-10-01"));
    }
}
