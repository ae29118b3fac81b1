//! Report Generator: turns the summary and the analysis into the answer (`generate_report`):
//! Markdown for the person and a structured `result` for machines.

use std::fmt::Write as _;

use serde::Serialize;

use super::data_helper::UsageSummary;
use super::optimizer::{Analysis, Direction, Recommendation, RecommendationKind};

/// What the user asked for, as far as the report's framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// A question about AI spend, savings or usage.
    SpendAnalysis,
    /// Anything else: answered with what the optimizer can do and the headline numbers.
    General,
}

const SPEND_WORDS: &[&str] = &[
    "cost", "spend", "spent", "saving", "save", "money", "wast", "budget", "bill", "price",
    "pricing", "cheap", "expens", "token", "llm", "model", "usage", "optimi", "dollar", "$",
];

/// Classifies a user message by its words. Deliberately simple and deterministic.
pub fn classify(message: &str) -> Intent {
    let lower = message.to_lowercase();
    if SPEND_WORDS.iter().any(|w| lower.contains(w)) {
        Intent::SpendAnalysis
    } else {
        Intent::General
    }
}

/// The structured answer in `agent_completed.payload.result`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    pub intent: Intent,
    pub currency: &'static str,
    pub total_calls: u64,
    pub window_days: u32,
    pub total_monthly_cost_usd: f64,
    pub projected_monthly_savings_usd: f64,
    /// Savings as a share of the monthly cost, in percent (0 without cost).
    pub savings_pct: f64,
    pub recommendations: Vec<Recommendation>,
    pub unpriced_models: Vec<String>,
}

/// The Report Generator's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub markdown: String,
    pub result: RunResult,
}

/// Writes the report. Pure: the same inputs give byte-identical Markdown.
pub fn generate_report(
    user_email: &str,
    message: &str,
    summary: &UsageSummary,
    analysis: &Analysis,
) -> Report {
    let intent = classify(message);
    let cost = summary.total_monthly_cost_usd;
    let savings = analysis.projected_monthly_savings_usd;
    let savings_pct = if cost > 0.0 {
        (savings / cost * 1000.0).round() / 10.0
    } else {
        0.0
    };
    let mut md = String::new();
    if intent == Intent::General {
        md.push_str(
            "I'm the Apex AI-spend optimizer: I analyse your AI API usage and find where you \
             pay more than you need to. Ask me things like \"where am I wasting money on LLM \
             calls?\". Here is what your usage shows right now.\n\n",
        );
    }
    let _ = writeln!(md, "## AI spend analysis for {user_email}\n");
    if summary.total_calls == 0 {
        md.push_str(
            "I found **no AI usage records** for your account, so there is nothing to analyse \
             yet. Once your applications log calls (model, tokens, latency, cost), ask again \
             and I will look for savings.\n",
        );
        return Report {
            markdown: md,
            result: result(intent, summary, analysis, savings_pct),
        };
    }
    let _ = writeln!(
        md,
        "Analysed **{} calls** over **{} days** ({} – {}). Current monthly spend: **{}**. \
         Projected monthly savings: **{}** ({savings_pct:.1} %).\n",
        summary.total_calls,
        summary.window_days,
        summary.first_day.as_deref().unwrap_or("?"),
        summary.last_day.as_deref().unwrap_or("?"),
        usd(cost),
        usd(savings),
    );
    if analysis.recommendations.is_empty() {
        md.push_str(
            "### Recommendations\n\nNo savings found: every premium-model call has a prompt too \
             large for a cheaper tier, and no prompt repeats. Your spend is already lean.\n\n",
        );
    } else {
        md.push_str("### Recommendations\n\n");
        for (i, rec) in analysis.recommendations.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, describe(rec));
        }
        md.push('\n');
    }
    md.push_str("### Spend by model\n\n| model | calls | monthly cost |\n|---|---:|---:|\n");
    for model in &summary.models {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            model.model,
            model.calls,
            usd(model.monthly_cost_usd)
        );
    }
    if !analysis.unpriced_models.is_empty() {
        let _ = writeln!(
            md,
            "\nModels missing from the pricing table (not analysed for downgrades): {}.",
            analysis.unpriced_models.join(", ")
        );
    }
    Report {
        markdown: md,
        result: result(intent, summary, analysis, savings_pct),
    }
}

fn result(
    intent: Intent,
    summary: &UsageSummary,
    analysis: &Analysis,
    savings_pct: f64,
) -> RunResult {
    RunResult {
        intent,
        currency: "USD",
        total_calls: summary.total_calls,
        window_days: summary.window_days,
        total_monthly_cost_usd: summary.total_monthly_cost_usd,
        projected_monthly_savings_usd: analysis.projected_monthly_savings_usd,
        savings_pct,
        recommendations: analysis.recommendations.clone(),
        unpriced_models: analysis.unpriced_models.clone(),
    }
}

/// Dollars with cents; amounts under a cent keep four decimals so they do not read as zero.
fn usd(value: f64) -> String {
    if value != 0.0 && value.abs() < 0.01 {
        format!("${value:.4}")
    } else {
        format!("${value:.2}")
    }
}

fn describe(rec: &Recommendation) -> String {
    let effect = &rec.effect;
    let trade = format!(
        "Cost {}, quality {}, latency {}, throughput {}.",
        word(effect.cost),
        word(effect.quality),
        word(effect.latency),
        word(effect.throughput)
    );
    match rec.kind {
        RecommendationKind::ModelDowngrade => format!(
            "**Move small-prompt `{}` calls to `{}`**: {} calls, saves **{}/month**. {trade} {}.",
            rec.from_model.as_deref().unwrap_or("?"),
            rec.to_model.as_deref().unwrap_or("?"),
            rec.affected_calls,
            usd(rec.monthly_savings_usd),
            effect.note,
        ),
        RecommendationKind::ResponseCache => format!(
            "**Cache repeated prompts**: {} repeat calls of {} distinct prompts, saves **{}/month**. \
             {trade} {}.",
            rec.affected_calls,
            rec.distinct_prompts.unwrap_or(0),
            usd(rec.monthly_savings_usd),
            effect.note,
        ),
    }
}

fn word(direction: Direction) -> &'static str {
    match direction {
        Direction::Improves => "improves",
        Direction::Unchanged => "unchanged",
        Direction::AtRisk => "at risk",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_questions_and_small_talk_are_told_apart() {
        assert_eq!(
            classify("Where am I wasting money on LLM calls?"),
            Intent::SpendAnalysis
        );
        assert_eq!(classify("What's the weather in Paris?"), Intent::General);
    }

    #[test]
    fn sub_cent_amounts_do_not_round_to_zero() {
        assert_eq!(usd(0.004), "$0.0040");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.0), "$0.00");
    }
}
