//! Optimizer: finds savings in a user's usage (`analyze_costs`).
//!
//! Two rules, applied in this order (the order matters where they overlap):
//! 1. `response_cache` — every repeat of a prompt fingerprint after its first call could be
//!    served from a cache;
//! 2. `model_downgrade` — a call that is not cache-servable, on a premium model that has a
//!    cheaper `downgrade_to`, with a prompt of at most `small_prompt_max_tokens` tokens, could
//!    be served by the cheaper model; the saving is the difference in price for the same
//!    tokens.
//!
//! Each recommendation carries its effect on the quadrilemma (cost, quality, latency,
//! throughput), so a reader sees what a saving trades away.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::{Pricing, Tier, UsageRecord, round_usd};

/// Which way a recommendation moves one dimension of the quadrilemma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Improves,
    Unchanged,
    AtRisk,
}

/// The effect of a recommendation on cost, quality, latency and throughput.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effect {
    pub cost: Direction,
    pub quality: Direction,
    pub latency: Direction,
    pub throughput: Direction,
    /// One sentence on the trade-off.
    pub note: String,
}

/// The kinds of saving the optimizer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationKind {
    ModelDowngrade,
    ResponseCache,
}

/// One saving, with the calls it affects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub kind: RecommendationKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_model: Option<String>,
    pub affected_calls: u64,
    /// Fingerprints with at least two calls (`response_cache` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_prompts: Option<u64>,
    pub monthly_savings_usd: f64,
    /// Mean latency of the affected calls today.
    pub avg_latency_ms: u64,
    pub effect: Effect,
}

/// The Optimizer's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub projected_monthly_savings_usd: f64,
    /// Largest saving first.
    pub recommendations: Vec<Recommendation>,
    /// Models seen in the usage but missing from the pricing table (never downgraded).
    pub unpriced_models: Vec<String>,
}

#[derive(Default)]
struct Tally {
    calls: u64,
    savings: f64,
    latency: u64,
}

impl Tally {
    fn add(&mut self, savings: f64, latency_ms: u64) {
        self.calls += 1;
        self.savings += savings;
        self.latency += latency_ms;
    }

    fn avg_latency(&self) -> u64 {
        self.latency.checked_div(self.calls).unwrap_or(0)
    }
}

/// Applies the rules to the records. `monthly_factor` scales the window to a month (see
/// [`super::data_helper::UsageSummary::monthly_factor`]).
pub fn analyze_costs(records: &[UsageRecord], pricing: &Pricing, monthly_factor: f64) -> Analysis {
    let mut seen_prompts: HashSet<&str> = HashSet::new();
    let mut repeated_prompts: HashSet<&str> = HashSet::new();
    let mut cache = Tally::default();
    let mut downgrades: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    let mut unpriced: BTreeMap<&str, ()> = BTreeMap::new();

    for record in records {
        if !seen_prompts.insert(&record.prompt_fingerprint) {
            repeated_prompts.insert(&record.prompt_fingerprint);
            cache.add(record.cost_usd, record.latency_ms);
            continue;
        }
        let Some(price) = pricing.models.get(&record.model) else {
            unpriced.insert(&record.model, ());
            continue;
        };
        if price.tier != Tier::Premium || record.tokens_in > pricing.small_prompt_max_tokens {
            continue;
        }
        let Some(target) = price.downgrade_to.as_deref() else {
            continue;
        };
        let Some(target_price) = pricing.models.get(target) else {
            continue;
        };
        let saving = record.cost_usd - target_price.cost_usd(record.tokens_in, record.tokens_out);
        downgrades
            .entry((record.model.as_str(), target))
            .or_default()
            .add(saving, record.latency_ms);
    }

    // Summed before rounding, so the total does not carry each recommendation's rounding.
    let exact_savings = cache.savings + downgrades.values().map(|t| t.savings).sum::<f64>();
    let mut recommendations: Vec<Recommendation> = downgrades
        .into_iter()
        .map(|((from, to), tally)| Recommendation {
            kind: RecommendationKind::ModelDowngrade,
            from_model: Some(from.to_owned()),
            to_model: Some(to.to_owned()),
            affected_calls: tally.calls,
            distinct_prompts: None,
            monthly_savings_usd: round_usd(tally.savings * monthly_factor),
            avg_latency_ms: tally.avg_latency(),
            effect: Effect {
                cost: Direction::Improves,
                quality: Direction::AtRisk,
                latency: Direction::Improves,
                throughput: Direction::Improves,
                note: format!(
                    "Switching to {to} is cheaper and faster on short prompts; check answer \
                     quality on the affected features with an eval first"
                ),
            },
        })
        .collect();
    if cache.calls > 0 {
        recommendations.push(Recommendation {
            kind: RecommendationKind::ResponseCache,
            from_model: None,
            to_model: None,
            affected_calls: cache.calls,
            distinct_prompts: Some(repeated_prompts.len() as u64),
            monthly_savings_usd: round_usd(cache.savings * monthly_factor),
            avg_latency_ms: cache.avg_latency(),
            effect: Effect {
                cost: Direction::Improves,
                quality: Direction::Unchanged,
                latency: Direction::Improves,
                throughput: Direction::Improves,
                note: "Identical prompts get the identical answer from a cache in milliseconds \
                       and free provider rate limit; stale answers are the risk if the prompt's \
                       context changes"
                    .into(),
            },
        });
    }
    recommendations.sort_by(|a, b| {
        b.monthly_savings_usd
            .total_cmp(&a.monthly_savings_usd)
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.from_model.cmp(&b.from_model))
    });
    Analysis {
        projected_monthly_savings_usd: round_usd(exact_savings * monthly_factor),
        recommendations,
        unpriced_models: unpriced.into_keys().map(str::to_owned).collect(),
    }
}
