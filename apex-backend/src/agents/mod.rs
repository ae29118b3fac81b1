//! The agents: a small, deterministic AI-spend optimizer over a user's usage records.
//!
//! The pipeline is Data Helper ([`data_helper::fetch_usage_data`]) → Optimizer
//! ([`optimizer::analyze_costs`]) → Report Generator ([`report::generate_report`]). Each stage
//! is a pure function of its inputs, so the same records and pricing always give the same
//! answer and the fixtures' expected truths can be checked exactly. The rules are written down
//! in `fixtures/README.md`; the run orchestration (events, persistence) lives in `crate::run`.

pub mod data_helper;
pub mod optimizer;
pub mod report;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One call to an AI API, as recorded in a user's usage log (`fixtures/usage/<user>.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// RFC 3339 UTC timestamp of the call.
    pub ts: String,
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: u64,
    /// What the call cost, in USD.
    pub cost_usd: f64,
    /// Identical prompts have identical fingerprints.
    pub prompt_fingerprint: String,
    /// The product feature that made the call.
    pub feature: String,
}

/// Quality tier of a model in the pricing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Premium,
    Standard,
    Economy,
}

/// Price and tier of one model, in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub provider: String,
    pub tier: Tier,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// The cheaper model of the same provider that serves small prompts as well.
    #[serde(default)]
    pub downgrade_to: Option<String>,
}

impl ModelPrice {
    /// What a call with these token counts costs on this model, in USD.
    pub fn cost_usd(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input_per_mtok + tokens_out as f64 * self.output_per_mtok) / 1e6
    }
}

/// The pricing table (`fixtures/pricing.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// A premium call whose prompt has at most this many tokens can go to the cheaper tier.
    pub small_prompt_max_tokens: u64,
    pub models: BTreeMap<String, ModelPrice>,
}

/// Rounds a USD amount to the six decimals used in results and expected truths.
pub fn round_usd(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}
