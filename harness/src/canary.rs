//! Canary: the same scenarios against a baseline and a candidate deployment, interleaved
//! (rounds alternate which target goes first, so drift hits both alike), then the stability
//! protocol's rollback rules on the candidate:
//!
//! 1. its error rate is above 5 %;
//! 2. its journey p99 is above 3 s;
//! 3. it regressed beyond tolerance against the baseline target ([`crate::compare`]).
//!
//! Any rule that fires recommends a rollback, and the report says which.

use std::fmt::Write as _;

use crate::client::Target;
use crate::compare::{Comparison, RunSummary, Tolerance, compare};
use crate::runner::{RunOptions, run_scenario};
use crate::scenario::ScenarioFile;
use crate::threshold::{Aggregate, observe};

/// The candidate's error rate above this recommends a rollback.
pub const MAX_ERROR_RATE: f64 = 0.05;
/// The candidate's journey p99 above this (ms) recommends a rollback.
pub const MAX_P99_MS: f64 = 3000.0;

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
    pub baseline: RunSummary,
    pub candidate: RunSummary,
    pub comparison: Comparison,
    pub rules: Vec<Rule>,
    /// Neither target completed a single journey: nothing to judge.
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

fn add(summary: &mut RunSummary, report: &crate::runner::ScenarioReport) {
    summary.journeys += report.journeys;
    summary.duration_s += report.duration.as_secs_f64();
    summary.metrics.merge(&report.metrics);
}

/// Runs `files` `rounds` times against both targets, interleaved.
pub async fn run(
    files: &[ScenarioFile],
    options: &RunOptions,
    baseline: &Target,
    candidate: &Target,
    rounds: u32,
    tolerance: Tolerance,
) -> CanaryReport {
    let mut base = RunSummary::default();
    let mut cand = RunSummary::default();
    let with = |target: &Target| RunOptions {
        target: target.clone(),
        ..options.clone()
    };
    let (base_options, cand_options) = (with(baseline), with(candidate));
    for round in 0..rounds.max(1) {
        for file in files {
            if round % 2 == 0 {
                add(&mut base, &run_scenario(file, &base_options).await);
                add(&mut cand, &run_scenario(file, &cand_options).await);
            } else {
                add(&mut cand, &run_scenario(file, &cand_options).await);
                add(&mut base, &run_scenario(file, &base_options).await);
            }
        }
    }
    let comparison = compare(&base, &cand, tolerance);
    let error_rate = observe(&cand.metrics, "error_rate", Aggregate::Rate);
    let p99 = observe(
        &cand.metrics,
        "journey_duration",
        Aggregate::Percentile(99.0),
    );
    let regressions: Vec<String> = comparison
        .regressions()
        .map(|d| format!("{} {}", d.name, d.change_text()))
        .collect();
    let rules = vec![
        Rule {
            name: "error rate > 5 %",
            fired: error_rate.is_none_or(|r| r > MAX_ERROR_RATE),
            detail: error_rate.map_or("no journeys".into(), |r| {
                format!("candidate error rate {:.2} %", r * 100.0)
            }),
        },
        Rule {
            name: "p99 > 3 s",
            fired: p99.is_none_or(|p| p > MAX_P99_MS),
            detail: p99.map_or("no successful journey".into(), |p| {
                format!("candidate journey p99 {p:.1} ms")
            }),
        },
        Rule {
            name: "regression against the baseline",
            fired: !regressions.is_empty(),
            detail: if regressions.is_empty() {
                "none beyond tolerance".into()
            } else {
                regressions.join("; ")
            },
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
        comparison,
        rules,
        baseline_unusable,
    }
}

fn recommendation(report: &CanaryReport) -> String {
    let fired = report.fired();
    if fired.is_empty() {
        "PROMOTE: no rollback rule fired".into()
    } else {
        format!("ROLLBACK: {}", fired.join(", "))
    }
}

/// The canary report for the terminal.
pub fn text(report: &CanaryReport) -> String {
    let mut out = format!(
        "baseline: {} journeys   candidate: {} journeys\n\n",
        report.baseline.journeys, report.candidate.journeys
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
