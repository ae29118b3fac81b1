//! Canary: the same scenarios against a baseline and a candidate deployment in paired rounds
//! (each round runs both back to back, and the rounds alternate which goes first: ABBAAB…, so
//! drift and order hit both alike), then the rollback rules on the candidate:
//!
//! 1. its error rate is above 5 % (the stability protocol);
//! 2. its journey p99 is above 3 s (the stability protocol);
//! 3. the share of its answers passing content checks dropped in a scenario that checks
//!    content, consistently across rounds ([`crate::compare::compare_rounds`]), whatever the
//!    other scenarios did;
//! 4. another metric that may decide (latency p50/p95/p99, backend CPU, runs completed)
//!    regressed against the baseline consistently across rounds, beyond the tolerance, which
//!    is the minimum effect.
//!
//! Rules 3 and 4 need [`MIN_ROUNDS`] rounds: with fewer they are inconclusive and never fire.
//! Any rule that fires recommends a rollback, and the report says which and why.

use std::fmt::Write as _;

use crate::client::Target;
use crate::compare::{Baseline, Comparison, MIN_ROUNDS, RunSummary, Tolerance, compare_rounds};
use crate::report::RunReport;
use crate::runner::{RunOptions, run_scenario};
use crate::scenario::ScenarioFile;
use crate::threshold::{Aggregate, observe};

/// The candidate's error rate above this recommends a rollback.
pub const MAX_ERROR_RATE: f64 = 0.05;
/// The candidate's journey p99 above this (ms) recommends a rollback.
pub const MAX_P99_MS: f64 = 3000.0;

/// Rule names, as reports print them.
pub const RULE_ERROR_RATE: &str = "error rate > 5 %";
pub const RULE_P99: &str = "p99 > 3 s";
pub const RULE_QUALITY: &str = "quality drop in a scenario";
pub const RULE_REGRESSION: &str = "regression against the baseline";

/// One rollback rule and whether it fired.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: &'static str,
    pub fired: bool,
    pub detail: String,
}

/// The outcome of a canary.
#[derive(Debug, Clone)]
pub struct CanaryReport {
    /// Every round pooled, per target.
    pub baseline: RunSummary,
    pub candidate: RunSummary,
    pub rounds: usize,
    pub comparison: Comparison,
    pub rules: Vec<Rule>,
    /// No journey completed against the baseline: nothing to judge against.
    pub baseline_unusable: bool,
}

impl CanaryReport {
    /// The names of the rules that fired.
    pub fn fired(&self) -> Vec<&'static str> {
        self.rules
            .iter()
            .filter(|r| r.fired)
            .map(|r| r.name)
            .collect()
    }

    pub fn rollback(&self) -> bool {
        self.rules.iter().any(|r| r.fired)
    }
}

/// Runs every file once against `options.target`.
async fn run_round(files: &[ScenarioFile], options: &RunOptions) -> Baseline {
    let mut report = RunReport::default();
    for file in files {
        report.scenarios.push(run_scenario(file, options).await);
    }
    Baseline::from_report(&report)
}

/// `--tolerance` (percent) of `canary`: the minimum timing or cost effect that can roll a
/// deploy back. In the self-test's A/A canaries on 2 cores, two processes of one build
/// differed consistently across a canary's rounds by up to 45 % in median journey latency and
/// 18 % in backend CPU per journey (one process slower for seconds at a time, which pairing
/// rounds cannot cancel), and 10 % rolled back 3 of 40 identical builds; 50 % rolled back
/// none. Quality keeps its 1 point.
pub const TOLERANCE: f64 = 50.0;

/// Runs `files` in `rounds` paired rounds against both targets.
pub async fn run(
    files: &[ScenarioFile],
    options: &RunOptions,
    baseline: &Target,
    candidate: &Target,
    rounds: u32,
    tolerance: Tolerance,
) -> CanaryReport {
    let with = |target: &Target| RunOptions {
        target: target.clone(),
        ..options.clone()
    };
    let (base_options, cand_options) = (with(baseline), with(candidate));
    let mut pairs = Vec::new();
    for round in 0..rounds.max(1) {
        // ABBA: a target that runs second in one round runs first in the next, so warm-up or
        // a steady drift favours neither.
        let pair = if round % 2 == 0 {
            let base = run_round(files, &base_options).await;
            (base, run_round(files, &cand_options).await)
        } else {
            let cand = run_round(files, &cand_options).await;
            (run_round(files, &base_options).await, cand)
        };
        pairs.push(pair);
    }
    judge(&pairs, tolerance)
}

/// The rules applied to paired rounds (baseline, candidate).
pub fn judge(pairs: &[(Baseline, Baseline)], tolerance: Tolerance) -> CanaryReport {
    let (base, cand) = (pooled(pairs, |p| &p.0), pooled(pairs, |p| &p.1));
    let comparison = compare_rounds(pairs, tolerance);
    let error_rate = observe(&cand.metrics, "error_rate", Aggregate::Rate);
    let p99 = observe(
        &cand.metrics,
        "journey_duration",
        Aggregate::Percentile(99.0),
    );
    let (quality_fired, quality_detail) = regressions_rule(&comparison, pairs.len(), true);
    let (regression_fired, regression_detail) = regressions_rule(&comparison, pairs.len(), false);
    let rules = vec![
        Rule {
            name: RULE_ERROR_RATE,
            fired: error_rate.is_none_or(|r| r > MAX_ERROR_RATE),
            detail: error_rate.map_or("no journeys".into(), |r| {
                format!("candidate error rate {:.2} %", r * 100.0)
            }),
        },
        Rule {
            name: RULE_P99,
            fired: p99.is_none_or(|p| p > MAX_P99_MS),
            detail: p99.map_or("no successful journey".into(), |p| {
                format!("candidate journey p99 {p:.1} ms")
            }),
        },
        Rule {
            name: RULE_QUALITY,
            fired: quality_fired,
            detail: quality_detail,
        },
        Rule {
            name: RULE_REGRESSION,
            fired: regression_fired,
            detail: regression_detail,
        },
    ];
    let baseline_unusable = base
        .metrics
        .counters
        .get("journeys_completed")
        .is_none_or(|n| *n == 0);
    CanaryReport {
        baseline: base,
        candidate: cand,
        rounds: pairs.len(),
        comparison,
        rules,
        baseline_unusable,
    }
}

/// One side's rounds pooled into one summary, for the absolute rules (error rate, p99).
fn pooled(
    pairs: &[(Baseline, Baseline)],
    side: fn(&(Baseline, Baseline)) -> &Baseline,
) -> RunSummary {
    let mut total = RunSummary::default();
    for pair in pairs {
        let run = &side(pair).totals;
        total.journeys += run.journeys;
        total.duration_s += run.duration_s;
        total.metrics.merge(&run.metrics);
    }
    total
}

/// The quality rule (`quality`: per-scenario content metrics) or the regression rule (the
/// run's metrics): whether it fired, and why or why not.
fn regressions_rule(comparison: &Comparison, rounds: usize, quality: bool) -> (bool, String) {
    let regressions: Vec<String> = comparison
        .regressions()
        .filter(|d| d.scenario.is_some() == quality)
        .map(|d| regression_text(d, quality))
        .collect();
    let inconclusive = comparison
        .inconclusive()
        .filter(|d| d.scenario.is_some() == quality)
        .count();
    let detail = if !regressions.is_empty() {
        regressions.join("; ")
    } else if rounds < MIN_ROUNDS {
        format!(
            "inconclusive: {rounds} round(s), at least {MIN_ROUNDS} needed to judge against the \
             baseline{}",
            if inconclusive > 0 {
                format!(" ({inconclusive} metric(s) moved beyond the tolerance)")
            } else {
                String::new()
            }
        )
    } else if quality
        && !comparison
            .deltas
            .iter()
            .any(|d| d.scenario.is_some() && d.decisive)
    {
        "no scenario checks content (no expect_response step)".to_owned()
    } else {
        "none consistent across rounds beyond tolerance".to_owned()
    };
    (!regressions.is_empty(), detail)
}

/// A regressed metric for people: its change, its values (a quality rate) or how it was
/// taken, and in how many rounds it was worse.
fn regression_text(d: &crate::compare::Delta, quality: bool) -> String {
    format!(
        "{} {} ({}, worse in {} of {} rounds)",
        d.name,
        d.change_text(),
        if quality {
            format!(
                "{:.1} % → {:.1} %",
                d.base.value * 100.0,
                d.new.value * 100.0
            )
        } else {
            "median of the rounds".to_owned()
        },
        d.rounds
            .iter()
            .filter(|c| {
                let worse = if d.higher_is_better { -**c } else { **c };
                worse > 0.0
            })
            .count(),
        d.rounds.len()
    )
}

fn recommendation(report: &CanaryReport) -> String {
    let fired = report.fired();
    if !fired.is_empty() {
        let reasons: Vec<String> = report
            .rules
            .iter()
            .filter(|r| r.fired)
            .map(|r| format!("{} ({})", r.name, r.detail))
            .collect();
        format!("ROLLBACK: {}", reasons.join("; "))
    } else if report.rounds < MIN_ROUNDS {
        format!(
            "PROMOTE: the stability rules held; against the baseline inconclusive ({} round(s), \
             {MIN_ROUNDS} needed)",
            report.rounds
        )
    } else {
        "PROMOTE: no rollback rule fired".into()
    }
}

/// The canary report for the terminal.
pub fn text(report: &CanaryReport) -> String {
    let mut out = format!(
        "{} paired rounds   baseline: {} journeys   candidate: {} journeys\n\n",
        report.rounds, report.baseline.journeys, report.candidate.journeys
    );
    out.push_str(&crate::compare::text(&report.comparison));
    out.push('\n');
    for rule in &report.rules {
        let _ = writeln!(
            out,
            "rule {:<34} {}  ({})",
            rule.name,
            if rule.fired { "FIRED" } else { "ok   " },
            rule.detail
        );
    }
    let _ = writeln!(out, "{}", recommendation(report));
    out
}

/// The canary report as Markdown.
pub fn markdown(report: &CanaryReport) -> String {
    let mut out =
        String::from("## apex-harness canary\n\n| rule | fired | detail |\n|---|---|---|\n");
    for rule in &report.rules {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            rule.name,
            if rule.fired { "❌ yes" } else { "no" },
            rule.detail
        );
    }
    let _ = writeln!(out, "\n**{}**\n", recommendation(report));
    out.push_str(&crate::compare::markdown(&report.comparison).replacen(
        "## apex-harness compare",
        "### Candidate against baseline",
        1,
    ));
    out
}
