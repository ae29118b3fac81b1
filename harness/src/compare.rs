//! Comparing runs: per-metric deltas, a noise-aware verdict, and the quadrilemma detector,
//! which names a change that buys one of cost, quality, latency or throughput with another
//! ("latency p95 −18 % while cost per journey (backend CPU) +35 %").
//!
//! Two ways, by what is known:
//!
//! - **One pair of runs** ([`compare`], [`compare_reports`]: `compare`, `run --baseline`).
//!   Trends carry their histograms, so percentiles get distribution-free intervals and means
//!   standard errors; a change counts when it is beyond the tolerance and the two intervals
//!   do not overlap. Those intervals are each run's sampling noise, not the variation between
//!   runs, which one pair cannot show: the verdict is a report, not a decision.
//! - **Paired rounds** ([`compare_rounds`]: `canary`). Each round runs both targets back to
//!   back; a metric is judged on its per-round changes, so it regresses only when it is worse
//!   beyond the tolerance consistently, round after round.
//!
//! Metrics without an interval (client CPU, bytes, tokens) are reported and never decide.
//! Quality of answers is judged per scenario, over the journeys that check content.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use serde_json::Value;

use crate::metrics::{Metrics, Rate, Trend};
use crate::report::ReportError;

/// 95 % two-sided.
const Z: f64 = 1.96;

/// One run's totals (or one scenario's), as a comparison needs them.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub journeys: u64,
    pub duration_s: f64,
    pub metrics: Metrics,
}

impl RunSummary {
    /// The totals of a run that just finished.
    pub fn from_report(report: &crate::report::RunReport) -> Self {
        Self {
            journeys: report.scenarios.iter().map(|s| s.journeys).sum(),
            duration_s: report
                .scenarios
                .iter()
                .map(|s| s.duration.as_secs_f64())
                .sum(),
            metrics: report.totals(),
        }
    }
}

/// A baseline report: its totals and each scenario, by name.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub totals: RunSummary,
    pub scenarios: BTreeMap<String, RunSummary>,
}

impl Baseline {
    /// Reads a JSON report written by `apex-harness run --json`.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let value = crate::report::read_json(path)?;
        Self::from_json(&value).map_err(|error| ReportError::In {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    pub fn from_json(report: &Value) -> Result<Self, ReportError> {
        if report["schema_version"] != 1 {
            return Err(ReportError::NotAReport);
        }
        let mut scenarios: BTreeMap<String, RunSummary> = BTreeMap::new();
        for s in report["scenarios"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default().to_owned();
            scenarios.entry(name).or_default().add(&summary_of(s)?);
        }
        let mut totals = summary_of(&report["totals"])?;
        if totals.duration_s == 0.0 {
            totals.duration_s = scenarios.values().map(|s| s.duration_s).sum();
        }
        Ok(Self { totals, scenarios })
    }

    /// A run that just finished, as a report of it would read.
    pub fn from_report(report: &crate::report::RunReport) -> Self {
        let mut scenarios: BTreeMap<String, RunSummary> = BTreeMap::new();
        for s in &report.scenarios {
            // Two files may share a name: their journeys count together, as in the totals.
            scenarios
                .entry(s.name.clone())
                .or_default()
                .add(&RunSummary {
                    journeys: s.journeys,
                    duration_s: s.duration.as_secs_f64(),
                    metrics: s.metrics.clone(),
                });
        }
        Self {
            totals: RunSummary::from_report(report),
            scenarios,
        }
    }

    /// The baseline's metrics for a scenario of that name, else its totals.
    pub fn metrics_for(&self, scenario: &str) -> &Metrics {
        &self.scenarios.get(scenario).unwrap_or(&self.totals).metrics
    }
}

pub(crate) fn summary_of(section: &Value) -> Result<RunSummary, ReportError> {
    let mut metrics = Metrics::default();
    for (name, trend) in section["trends"].as_object().into_iter().flatten() {
        let Some(buckets) = trend["histogram_us"].as_array() else {
            return Err(ReportError::NoHistogram {
                trend: name.clone(),
            });
        };
        let buckets: Vec<(u64, u64)> = buckets
            .iter()
            .filter_map(|b| Some((b[0].as_u64()?, b[1].as_u64()?)))
            .collect();
        metrics
            .trends
            .insert(name.clone(), Trend::from_buckets(&buckets));
    }
    for (name, rate) in section["rates"].as_object().into_iter().flatten() {
        metrics.rates.insert(
            name.clone(),
            Rate {
                passes: rate["passes"].as_u64().unwrap_or(0),
                total: rate["total"].as_u64().unwrap_or(0),
            },
        );
    }
    for (name, n) in section["counters"].as_object().into_iter().flatten() {
        metrics
            .counters
            .insert(name.clone(), n.as_u64().unwrap_or(0));
    }
    Ok(RunSummary {
        journeys: section["journeys"].as_u64().unwrap_or(0),
        duration_s: section["duration_s"].as_f64().unwrap_or(0.0),
        metrics,
    })
}

/// The four things a change can buy or cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    Cost,
    Quality,
    Latency,
    Throughput,
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cost => "cost",
            Self::Quality => "quality",
            Self::Latency => "latency",
            Self::Throughput => "throughput",
        })
    }
}

/// A value with its 95 % confidence interval (`lo == hi == value` when none is known).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    fn exact(value: f64) -> Self {
        Self {
            value,
            lo: value,
            hi: value,
        }
    }
}

/// What happened to one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Improved,
    Regressed,
    /// Beyond the tolerance, but not beyond the noise: the intervals overlap (one pair of
    /// runs), or the rounds disagree (paired rounds).
    Noise,
    /// Beyond the tolerance, but too few paired rounds to tell it from the variation between
    /// runs; never a regression.
    Inconclusive,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Improved => "improved",
            Self::Regressed => "REGRESSED",
            Self::Noise => "noise",
            Self::Inconclusive => "inconclusive",
            Self::Unchanged => "unchanged",
        })
    }
}

/// One metric compared.
#[derive(Debug, Clone)]
pub struct Delta {
    pub dimension: Dimension,
    pub name: String,
    pub unit: &'static str,
    /// The baseline's value (paired rounds: all rounds pooled), with its interval.
    pub base: Estimate,
    pub new: Estimate,
    pub higher_is_better: bool,
    /// Relative change (new / base − 1); for quality, the change in percentage points / 100.
    /// Paired rounds: the median of the rounds' changes.
    pub change: f64,
    pub verdict: Change,
    /// Whether the metric can decide. Metrics without an interval (client CPU, bytes, tokens)
    /// are reported with their verdict but never decide a regression, alone or otherwise.
    pub decisive: bool,
    /// The scenario a per-scenario metric belongs to (quality is judged per scenario).
    pub scenario: Option<String>,
    /// Paired rounds: each round's change, in the units of `change`.
    pub rounds: Vec<f64>,
    /// Paired rounds: the 95 % interval of the typical change between the rounds.
    pub change_ci: Option<(f64, f64)>,
}

impl Delta {
    /// The change as people read it: `+35.0 %`, `−18.2 %`, `−4.0 pp`.
    pub fn change_text(&self) -> String {
        self.format_change(self.change)
    }

    fn format_change(&self, change: f64) -> String {
        let sign = if change < 0.0 { "−" } else { "+" };
        if self.dimension == Dimension::Quality {
            format!("{sign}{:.1} pp", change.abs() * 100.0)
        } else if change.is_infinite() {
            format!("{sign}∞ %")
        } else {
            format!("{sign}{:.1} %", change.abs() * 100.0)
        }
    }

    /// How many paired rounds were worse beyond the tolerance, as `3/4`.
    fn rounds_worse(&self, tolerance: Tolerance) -> String {
        if self.rounds.is_empty() {
            return "—".into();
        }
        let limit = tolerance.limit(self.dimension);
        let worse = self
            .rounds
            .iter()
            .filter(|c| oriented(**c, self.higher_is_better) > limit)
            .count();
        format!("{worse}/{}", self.rounds.len())
    }

    fn change_interval(&self) -> String {
        self.change_ci.map_or("—".into(), |(lo, hi)| {
            format!("{} … {}", self.format_change(lo), self.format_change(hi))
        })
    }
}

/// Tolerances: relative for cost, latency and throughput; percentage points for quality.
/// The tolerance is also the minimum effect: a smaller change never counts, however sure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub relative: f64,
    pub quality_points: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            relative: 0.10,
            quality_points: 0.01,
        }
    }
}

impl Tolerance {
    fn limit(&self, dimension: Dimension) -> f64 {
        if dimension == Dimension::Quality {
            self.quality_points
        } else {
            self.relative
        }
    }
}

/// `--tolerance` (percent) of `compare` and `run --baseline`, where timing only reports.
pub const REPORT_TOLERANCE: f64 = 10.0;

/// Paired rounds needed before a metric can regress against the baseline: with fewer, the
/// variation between runs cannot be told from a change, and the verdict is inconclusive.
pub const MIN_ROUNDS: usize = 3;
/// The share of rounds that must be worse beyond the tolerance (rounded up: all of 3 or 4,
/// 4 of 5, 8 of 10) for a regression: worse consistently, not on average.
pub const CONSISTENT_SHARE: f64 = 0.8;
/// Journeys each round must have beyond a latency percentile for that percentile to decide:
/// below it, the percentile is one or two extreme journeys, and one scheduling hiccup in a
/// round moves it (seen: an A/A canary whose p99, from 168 journeys a round, was "worse" in
/// 4 of 4 rounds). p95 needs 200 journeys a round, p99 1,000.
pub const MIN_TAIL_JOURNEYS: f64 = 10.0;

/// A metric that only one of the two runs measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub name: String,
    /// Measured by the baseline and not by the new run: that is a regression (what was
    /// checked before no longer is). Only in the new run: reported, not compared.
    pub in_base: bool,
}

/// The outcome of a comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub deltas: Vec<Delta>,
    /// Metrics that one run has and the other does not; never skipped in silence.
    pub unmatched: Vec<Unmatched>,
    /// Quadrilemma findings: one dimension improved while another regressed.
    pub tradeoffs: Vec<String>,
    pub tolerance: Tolerance,
    /// The paired rounds the verdicts rest on; 0 for one pair of single runs (`compare`,
    /// `run --baseline`), whose intervals are each run's sampling noise and say nothing of
    /// the variation between runs.
    pub rounds: usize,
}

impl Comparison {
    /// A metric that may decide regressed, or one the baseline measured is gone.
    pub fn regressed(&self) -> bool {
        self.regressions().next().is_some() || self.unmatched.iter().any(|u| u.in_base)
    }

    /// The regressions that decide (metrics with an interval).
    pub fn regressions(&self) -> impl Iterator<Item = &Delta> {
        self.deltas
            .iter()
            .filter(|d| d.decisive && d.verdict == Change::Regressed)
    }

    /// Metrics that moved beyond the tolerance with too few rounds to tell.
    pub fn inconclusive(&self) -> impl Iterator<Item = &Delta> {
        self.deltas
            .iter()
            .filter(|d| d.verdict == Change::Inconclusive)
    }
}

fn per_journey(summary: &RunSummary, counter: &str) -> Option<Estimate> {
    let n = summary.metrics.counters.get(counter)?;
    (summary.journeys > 0).then(|| Estimate::exact(*n as f64 / summary.journeys as f64))
}

fn percentile(summary: &RunSummary, trend: &str, p: f64) -> Option<Estimate> {
    let t = summary
        .metrics
        .trends
        .get(trend)
        .filter(|t| t.count() > 0)?;
    let (lo, hi) = t.percentile_ci_ms(p, Z);
    Some(Estimate {
        value: t.percentile_ms(p),
        lo,
        hi,
    })
}

fn mean(summary: &RunSummary, trend: &str) -> Option<Estimate> {
    let t = summary
        .metrics
        .trends
        .get(trend)
        .filter(|t| t.count() > 0)?;
    let half = Z * t.stdev_ms() / (t.count() as f64).sqrt();
    let value = t.mean_ms();
    Some(Estimate {
        value,
        lo: value - half,
        hi: value + half,
    })
}

/// Wilson score interval of a pass rate.
fn rate(summary: &RunSummary, name: &str) -> Option<Estimate> {
    let r = summary.metrics.rates.get(name).filter(|r| r.total > 0)?;
    let (n, p) = (r.total as f64, r.passes as f64 / r.total as f64);
    let denominator = 1.0 + Z * Z / n;
    let centre = (p + Z * Z / (2.0 * n)) / denominator;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denominator;
    Some(Estimate {
        value: p,
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
    })
}

/// Journeys per second, with a Poisson interval on the journey count.
fn throughput(summary: &RunSummary) -> Option<Estimate> {
    if summary.duration_s <= 0.0 || summary.journeys == 0 {
        return None;
    }
    let n = summary.journeys as f64;
    let per_s = |k: f64| k.max(0.0) / summary.duration_s;
    Some(Estimate {
        value: per_s(n),
        lo: per_s(n - Z * n.sqrt()),
        hi: per_s(n + Z * n.sqrt()),
    })
}

type Extractor = fn(&RunSummary) -> Option<Estimate>;

/// One compared metric: dimension, name, unit, higher is better, decisive, how to read it.
type MetricDef = (Dimension, &'static str, &'static str, bool, bool, Extractor);

/// Every metric compared on a run's totals. Quality of answers is not here: it is judged per
/// scenario ([`content_quality`]), where a drop cannot be diluted by scenarios without
/// content checks.
///
/// Throughput never decides: in a run of fixed virtual users it is their number over the
/// journey latency (judged here directly) plus the fixed costs of a round — logins, setup —
/// which swing with the machine and differ between two processes of one build for seconds at
/// a time (the A/A self-test saw −14 % and −32 % "worse in 4 of 4 rounds"). The median journey
/// decides instead: it moves with every journey, and outliers do not move it.
const METRICS: &[MetricDef] = &[
    (Dimension::Latency, "latency p50", "ms", false, true, |s| {
        percentile(s, "journey_duration", 50.0)
    }),
    (Dimension::Latency, "latency p95", "ms", false, true, |s| {
        percentile(s, "journey_duration", 95.0)
    }),
    (Dimension::Latency, "latency p99", "ms", false, true, |s| {
        percentile(s, "journey_duration", 99.0)
    }),
    (
        Dimension::Throughput,
        "throughput",
        "journeys/s",
        true,
        false,
        throughput,
    ),
    (
        Dimension::Cost,
        "cost per journey (backend CPU)",
        "ms",
        false,
        true,
        |s| mean(s, "backend_compute_duration"),
    ),
    (
        Dimension::Cost,
        "cost per journey (LLM tokens)",
        "tokens",
        false,
        false,
        |s| per_journey(s, "llm_tokens"),
    ),
    (
        Dimension::Cost,
        "cost per journey (client CPU)",
        "µs",
        false,
        false,
        |s| per_journey(s, "process_cpu_us"),
    ),
    (
        Dimension::Cost,
        "cost per journey (bytes received)",
        "bytes",
        false,
        false,
        |s| per_journey(s, "bytes_received"),
    ),
    (
        Dimension::Quality,
        "quality (runs completed)",
        "",
        true,
        true,
        |s| rate(s, "chat_completion_rate"),
    ),
];

/// The name of a scenario's content-quality metric.
pub fn content_quality(scenario: &str) -> String {
    format!("quality of {scenario} (answers passing content checks)")
}

fn content_rate(summary: &RunSummary) -> Option<Estimate> {
    rate(summary, "content_pass_rate")
}

/// The change from `base` to `new`: relative, or in points for quality.
fn change_of(dimension: Dimension, base: f64, new: f64) -> f64 {
    if dimension == Dimension::Quality {
        new - base
    } else if base == 0.0 {
        if new == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        new / base - 1.0
    }
}

/// A change turned so that positive is worse.
fn oriented(change: f64, higher_is_better: bool) -> f64 {
    if higher_is_better { -change } else { change }
}

/// One pair of single runs: beyond the tolerance and the two intervals apart. Without
/// intervals, the tolerance alone. Only quality decides: the intervals of timing and cost
/// metrics are each run's sampling noise, and one pair cannot tell a slower build from a
/// busier machine (measured: two runs of one build on this project's 2-core machine differed
/// by −34 % in throughput, +27 % in backend CPU and +162 % in p95, intervals apart).
fn single(
    (dimension, name, unit, higher_is_better, decisive): (
        Dimension,
        String,
        &'static str,
        bool,
        bool,
    ),
    b: Estimate,
    n: Estimate,
    tolerance: Tolerance,
    scenario: Option<String>,
) -> Delta {
    let change = change_of(dimension, b.value, n.value);
    let worse = oriented(change, higher_is_better);
    let separated = n.lo > b.hi || n.hi < b.lo;
    let has_interval = decisive;
    let decisive = has_interval && dimension == Dimension::Quality;
    let verdict = if worse.abs() <= tolerance.limit(dimension) {
        Change::Unchanged
    } else if has_interval && !separated {
        Change::Noise
    } else if worse > 0.0 {
        Change::Regressed
    } else {
        Change::Improved
    };
    Delta {
        dimension,
        name,
        unit,
        base: b,
        new: n,
        higher_is_better,
        change,
        verdict,
        decisive,
        scenario,
        rounds: Vec::new(),
        change_ci: None,
    }
}

/// Every pair where one dimension improved while another regressed (deciding metrics only).
fn tradeoffs(deltas: &[Delta]) -> Vec<String> {
    let mut found = Vec::new();
    for better in deltas
        .iter()
        .filter(|d| d.decisive && d.verdict == Change::Improved)
    {
        for worse in deltas.iter().filter(|d| {
            d.decisive && d.verdict == Change::Regressed && d.dimension != better.dimension
        }) {
            found.push(format!(
                "{} {} while {} {}",
                better.name,
                better.change_text(),
                worse.name,
                worse.change_text()
            ));
        }
    }
    found
}

/// Compares the totals of one run, `new`, with those of another, `base`.
pub fn compare(base: &RunSummary, new: &RunSummary, tolerance: Tolerance) -> Comparison {
    let mut deltas = Vec::new();
    let mut unmatched = Vec::new();
    for &(dimension, name, unit, higher_is_better, decisive, extract) in METRICS {
        match (extract(base), extract(new)) {
            (Some(b), Some(n)) => deltas.push(single(
                (dimension, name.to_owned(), unit, higher_is_better, decisive),
                b,
                n,
                tolerance,
                None,
            )),
            (None, None) => {}
            (b, _) => unmatched.push(Unmatched {
                name: name.to_owned(),
                in_base: b.is_some(),
            }),
        }
    }
    Comparison {
        tradeoffs: tradeoffs(&deltas),
        deltas,
        unmatched,
        tolerance,
        rounds: 0,
    }
}

/// Compares two reports: their totals, and the content quality of each scenario both have.
pub fn compare_reports(base: &Baseline, new: &Baseline, tolerance: Tolerance) -> Comparison {
    let mut comparison = compare(&base.totals, &new.totals, tolerance);
    for (scenario, b) in &base.scenarios {
        let Some(n) = new.scenarios.get(scenario) else {
            if content_rate(b).is_some() {
                comparison.unmatched.push(Unmatched {
                    name: content_quality(scenario),
                    in_base: true,
                });
            }
            continue;
        };
        if let (Some(b), Some(n)) = (content_rate(b), content_rate(n)) {
            comparison.deltas.push(single(
                (
                    Dimension::Quality,
                    content_quality(scenario),
                    "",
                    true,
                    true,
                ),
                b,
                n,
                tolerance,
                Some(scenario.clone()),
            ));
        }
    }
    comparison.tradeoffs = tradeoffs(&comparison.deltas);
    comparison
}

/// Two-sided 95 % quantile of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    TABLE.get(df.wrapping_sub(1)).copied().unwrap_or(Z)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.is_empty() {
        0.0
    } else if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Paired rounds: each round's change, the median, and the 95 % interval of the mean change
/// (on log ratios for relative metrics, so +100 % and −50 % weigh alike; a change beyond
/// 1000× counts as 1000×).
fn paired(
    (dimension, name, unit, higher_is_better, decisive): (
        Dimension,
        String,
        &'static str,
        bool,
        bool,
    ),
    pairs: &[(f64, f64)],
    pooled: (Estimate, Estimate),
    tolerance: Tolerance,
    scenario: Option<String>,
) -> Delta {
    let rounds: Vec<f64> = pairs
        .iter()
        .map(|&(b, n)| change_of(dimension, b, n))
        .collect();
    let change_ci = round_interval(dimension == Dimension::Quality, &rounds);
    let change = median(&rounds);
    let limit = tolerance.limit(dimension);
    let typical = oriented(change, higher_is_better);
    let verdict = if typical.abs() <= limit {
        Change::Unchanged
    } else if !decisive {
        if typical > 0.0 {
            Change::Regressed
        } else {
            Change::Improved
        }
    } else if rounds.len() < MIN_ROUNDS {
        Change::Inconclusive
    } else {
        consistent(&rounds, change_ci, higher_is_better, limit)
    };
    Delta {
        dimension,
        name,
        unit,
        base: pooled.0,
        new: pooled.1,
        higher_is_better,
        change,
        verdict,
        decisive,
        scenario,
        rounds,
        change_ci,
    }
}

/// The 95 % interval of the mean change between rounds (on the log scale for ratios, so a
/// halving and a doubling weigh alike; in points for quality), when there are two rounds.
fn round_interval(quality: bool, rounds: &[f64]) -> Option<(f64, f64)> {
    let to_scale = |c: f64| {
        if quality {
            c
        } else {
            (1.0 + c).clamp(1e-3, 1e3).ln()
        }
    };
    let from_scale = |x: f64| if quality { x } else { x.exp() - 1.0 };
    let scaled: Vec<f64> = rounds.iter().map(|c| to_scale(*c)).collect();
    let k = scaled.len();
    let mean = scaled.iter().sum::<f64>() / k as f64;
    (k >= 2).then(|| {
        let var = scaled.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
        let half = t95(k - 1) * (var / k as f64).sqrt();
        (from_scale(mean - half), from_scale(mean + half))
    })
}

/// A decisive metric's verdict from enough rounds: regressed (or improved) only when most
/// rounds ([`CONSISTENT_SHARE`]) and the whole interval lie beyond the tolerance that way.
fn consistent(
    rounds: &[f64],
    change_ci: Option<(f64, f64)>,
    higher_is_better: bool,
    limit: f64,
) -> Change {
    let worse: Vec<f64> = rounds
        .iter()
        .map(|c| oriented(*c, higher_is_better))
        .collect();
    let typical = oriented(median(rounds), higher_is_better);
    let need = ((rounds.len() as f64) * CONSISTENT_SHARE).ceil() as usize;
    let worse_rounds = worse.iter().filter(|w| **w > limit).count();
    let better_rounds = worse.iter().filter(|w| **w < -limit).count();
    // The interval turned so that positive is worse.
    let (worse_lo, worse_hi) = match change_ci {
        Some((lo, hi)) if higher_is_better => (-hi, -lo),
        Some(ci) => ci,
        None => (f64::NEG_INFINITY, f64::INFINITY),
    };
    if typical > 0.0 && worse_rounds >= need && worse_lo > limit {
        Change::Regressed
    } else if typical < 0.0 && better_rounds >= need && worse_hi < -limit {
        Change::Improved
    } else {
        Change::Noise
    }
}

impl RunSummary {
    fn add(&mut self, other: &RunSummary) {
        self.journeys += other.journeys;
        self.duration_s += other.duration_s;
        self.metrics.merge(&other.metrics);
    }
}

fn pool<'a>(runs: impl Iterator<Item = &'a RunSummary>) -> RunSummary {
    let mut total = RunSummary::default();
    for run in runs {
        total.add(run);
    }
    total
}

/// Per scenario with content checks: the share of its answers passing them, paired round by
/// round.
fn quality_by_scenario(rounds: &[(Baseline, Baseline)], tolerance: Tolerance) -> Vec<Delta> {
    let mut deltas = Vec::new();
    let scenarios: Vec<&String> = rounds
        .iter()
        .flat_map(|(b, _)| b.scenarios.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for scenario in scenarios {
        let pairs: Vec<(f64, f64)> = rounds
            .iter()
            .filter_map(|(b, n)| {
                let b = content_rate(b.scenarios.get(scenario)?)?;
                let n = content_rate(n.scenarios.get(scenario)?)?;
                Some((b.value, n.value))
            })
            .collect();
        let pooled_b = pool(rounds.iter().filter_map(|(b, _)| b.scenarios.get(scenario)));
        let pooled_n = pool(rounds.iter().filter_map(|(_, n)| n.scenarios.get(scenario)));
        if let (false, Some(b), Some(n)) = (
            pairs.is_empty(),
            content_rate(&pooled_b),
            content_rate(&pooled_n),
        ) {
            deltas.push(paired(
                (
                    Dimension::Quality,
                    content_quality(scenario),
                    "",
                    true,
                    true,
                ),
                &pairs,
                (b, n),
                tolerance,
                Some(scenario.clone()),
            ));
        }
    }
    deltas
}

/// Compares paired rounds, each a run of the baseline and a run of the candidate made back to
/// back: every metric is judged on its per-round changes, so the variation between runs is
/// what a change must stand out from. A metric regresses only when it moved beyond the
/// tolerance in the bad direction in at least [`CONSISTENT_SHARE`] of at least
/// [`MIN_ROUNDS`] rounds, its median change is beyond the tolerance, and the whole 95 %
/// interval of its change between rounds is beyond the tolerance: the change is at least the
/// minimum effect, not merely some change. Content quality is judged per scenario.
pub fn compare_rounds(rounds: &[(Baseline, Baseline)], tolerance: Tolerance) -> Comparison {
    let base = pool(rounds.iter().map(|(b, _)| &b.totals));
    let new = pool(rounds.iter().map(|(_, n)| &n.totals));
    let mut deltas = Vec::new();
    // The fewest journeys with a latency in any one run of any round.
    let fewest = rounds
        .iter()
        .flat_map(|(b, n)| [&b.totals, &n.totals])
        .map(|t| {
            t.metrics
                .trends
                .get("journey_duration")
                .map_or(0, |t| t.count())
        })
        .min()
        .unwrap_or(0) as f64;
    for &(dimension, name, unit, higher_is_better, decisive, extract) in METRICS {
        let beyond = match name {
            "latency p95" => Some(0.05),
            "latency p99" => Some(0.01),
            _ => None,
        };
        let decisive = decisive && beyond.is_none_or(|share| fewest * share >= MIN_TAIL_JOURNEYS);
        let pairs: Vec<(f64, f64)> = rounds
            .iter()
            .filter_map(|(b, n)| Some((extract(&b.totals)?.value, extract(&n.totals)?.value)))
            .collect();
        if let (false, Some(b), Some(n)) = (pairs.is_empty(), extract(&base), extract(&new)) {
            deltas.push(paired(
                (dimension, name.to_owned(), unit, higher_is_better, decisive),
                &pairs,
                (b, n),
                tolerance,
                None,
            ));
        }
    }
    deltas.extend(quality_by_scenario(rounds, tolerance));
    // Both sides of every round ran the same scenario files: their metric sets match.
    Comparison {
        tradeoffs: tradeoffs(&deltas),
        deltas,
        unmatched: Vec::new(),
        tolerance,
        rounds: rounds.len(),
    }
}

fn number(value: f64, unit: &str) -> String {
    match unit {
        "" => format!("{:.2} %", value * 100.0),
        "ms" => format!("{value:.2} ms"),
        "journeys/s" => format!("{value:.1}/s"),
        other => format!("{value:.1} {other}"),
    }
}

fn interval(e: &Estimate, unit: &str) -> String {
    if e.lo == e.hi {
        "—".into()
    } else {
        format!("{} … {}", number(e.lo, unit), number(e.hi, unit))
    }
}

/// What the comparison cannot know, in a sentence, when it rests on one pair of runs.
pub const ONE_PAIR_NOTE: &str = "one pair of runs: each interval is that run's own sampling \
    noise; the variation between runs (a busier machine, another process) is unknown from one \
    pair, so latency, throughput and cost are reported, not judged. `canary` judges them in \
    paired rounds.";

fn unmatched_text(u: &Unmatched) -> String {
    if u.in_base {
        format!(
            "{}: measured by the baseline only, not by the new run (a regression)",
            u.name
        )
    } else {
        format!("{}: measured by the new run only (not compared)", u.name)
    }
}

fn verdict_line(c: &Comparison) -> String {
    let regressions: Vec<String> = c
        .regressions()
        .map(|d| format!("{} {}", d.name, d.change_text()))
        .chain(
            (c.unmatched.iter().filter(|u| u.in_base))
                .map(|u| format!("{} no longer measured", u.name)),
        )
        .collect();
    let inconclusive: Vec<String> = c
        .inconclusive()
        .map(|d| format!("{} {}", d.name, d.change_text()))
        .collect();
    if !regressions.is_empty() {
        format!("REGRESSION: {}", regressions.join("; "))
    } else if !inconclusive.is_empty() {
        format!(
            "INCONCLUSIVE: {} rounds, {MIN_ROUNDS} needed to judge: {}",
            c.rounds,
            inconclusive.join("; ")
        )
    } else {
        format!(
            "no regression beyond tolerance (±{:.0} %, quality ±{:.1} pp)",
            c.tolerance.relative * 100.0,
            c.tolerance.quality_points * 100.0
        )
    }
}

/// The verdict as shown: a metric that cannot decide says `worse*` / `better*`, never
/// REGRESSED.
fn verdict_cell(d: &Delta) -> String {
    match (d.decisive, d.verdict) {
        (true, v) => v.to_string(),
        (false, Change::Regressed) => "worse*".into(),
        (false, Change::Improved) => "better*".into(),
        (false, v) => format!("{v}*"),
    }
}

/// What a `*` means, by what is known.
fn not_decisive_note(c: &Comparison) -> &'static str {
    if c.rounds > 0 {
        "* reported, never decides: throughput (the virtual users over the latency, plus \
         logins), no interval (client CPU, bytes, tokens), or too few journeys a round beyond \
         a latency percentile (p95 needs 200, p99 1,000)"
    } else {
        "* reported, never decides from one pair of runs: timing and cost move with the \
         machine (client CPU, bytes and tokens have no interval at all); only quality decides \
         here"
    }
}

/// A plain-text table for the terminal.
pub fn text(c: &Comparison) -> String {
    let paired = c.rounds > 0;
    let mut out = if paired {
        format!(
            "{:<58} {:>14} {:>14} {:>10}  {:<13} {:>6}  change 95 % CI\n",
            "metric (paired rounds: change is the median)",
            "base",
            "new",
            "change",
            "verdict",
            "worse"
        )
    } else {
        format!(
            "{:<58} {:>14} {:>14} {:>10}  {:<13} new 95 % CI\n",
            "metric", "base", "new", "change", "verdict"
        )
    };
    for d in &c.deltas {
        let _ = write!(
            out,
            "{:<58} {:>14} {:>14} {:>10}  {:<13} ",
            d.name,
            number(d.base.value, d.unit),
            number(d.new.value, d.unit),
            d.change_text(),
            verdict_cell(d),
        );
        let _ = if paired {
            writeln!(
                out,
                "{:>6}  {}",
                d.rounds_worse(c.tolerance),
                d.change_interval()
            )
        } else {
            writeln!(out, "{}", interval(&d.new, d.unit))
        };
    }
    if c.deltas.iter().any(|d| !d.decisive) {
        let _ = writeln!(out, "{}", not_decisive_note(c));
    }
    if !paired {
        let _ = writeln!(out, "note: {ONE_PAIR_NOTE}");
    }
    for u in &c.unmatched {
        let _ = writeln!(out, "UNMATCHED: {}", unmatched_text(u));
    }
    for t in &c.tradeoffs {
        let _ = writeln!(out, "TRADE-OFF: {t}");
    }
    let _ = writeln!(out, "{}", verdict_line(c));
    out
}

/// Markdown for a pull-request comment.
pub fn markdown(c: &Comparison) -> String {
    let paired = c.rounds > 0;
    let mut out = if paired {
        format!(
            "## apex-harness compare\n\n{} paired rounds; change is the median of the rounds' changes.\n\n| metric | base | new | change | verdict | rounds worse | change 95 % CI |\n|---|---:|---:|---:|---|---:|---|\n",
            c.rounds
        )
    } else {
        String::from(
            "## apex-harness compare\n\n| metric | base | new | change | verdict | base 95 % CI | new 95 % CI |\n|---|---:|---:|---:|---|---|---|\n",
        )
    };
    for d in &c.deltas {
        let mark = match (d.decisive, d.verdict) {
            (false, Change::Regressed) => "worse",
            (false, Change::Improved) => "better",
            (_, Change::Regressed) => "❌ regressed",
            (_, Change::Improved) => "✅ improved",
            (_, Change::Noise) => "〰️ noise",
            (_, Change::Inconclusive) => "❔ inconclusive",
            (_, Change::Unchanged) => "unchanged",
        };
        let mark = if d.decisive {
            mark.to_owned()
        } else {
            format!("{mark}*")
        };
        let (left, right) = if paired {
            (d.rounds_worse(c.tolerance), d.change_interval())
        } else {
            (interval(&d.base, d.unit), interval(&d.new, d.unit))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {mark} | {left} | {right} |",
            d.name,
            number(d.base.value, d.unit),
            number(d.new.value, d.unit),
            d.change_text(),
        );
    }
    if c.deltas.iter().any(|d| !d.decisive) {
        let _ = writeln!(out, "\n{}", not_decisive_note(c));
    }
    if !paired {
        let _ = writeln!(out, "\n_{ONE_PAIR_NOTE}_");
    }
    if !c.unmatched.is_empty() {
        out.push_str("\n**Measured by one run only:**\n\n");
        for u in &c.unmatched {
            let _ = writeln!(out, "- {}", unmatched_text(u));
        }
    }
    if !c.tradeoffs.is_empty() {
        out.push_str("\n**Trade-offs (quadrilemma):**\n\n");
        for t in &c.tradeoffs {
            let _ = writeln!(out, "- {t}");
        }
    }
    let _ = writeln!(out, "\n{}", verdict_line(c));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A run of `n` journeys of `ms` latency (±10 % spread), `compute_ms` backend CPU each,
    /// and `good` of them with a correct answer, over `seconds`.
    fn run(n: u64, ms: u64, compute_ms: u64, good: u64, seconds: f64) -> RunSummary {
        let mut metrics = Metrics::default();
        for i in 0..n {
            let jitter = ms * (i % 21) / 100; // 0..20 % of ms
            metrics.record(
                "journey_duration",
                Duration::from_millis(ms - ms / 10 + jitter),
            );
            metrics.record(
                "backend_compute_duration",
                Duration::from_millis(compute_ms),
            );
            metrics.rate("content_pass_rate", i < good);
            metrics.rate("chat_completion_rate", true);
        }
        RunSummary {
            journeys: n,
            duration_s: seconds,
            metrics,
        }
    }

    /// A report with one scenario per (name, run).
    fn report(scenarios: &[(&str, RunSummary)]) -> Baseline {
        let mut totals = RunSummary::default();
        for (_, s) in scenarios {
            totals.add(s);
        }
        Baseline {
            totals,
            scenarios: scenarios
                .iter()
                .map(|(name, s)| ((*name).to_owned(), s.clone()))
                .collect(),
        }
    }

    /// A load scenario without content checks: no `content_pass_rate`.
    fn load(n: u64, ms: u64, seconds: f64) -> RunSummary {
        let mut s = run(n, ms, 1, 0, seconds);
        s.metrics.rates.remove("content_pass_rate");
        s
    }

    fn delta<'c>(c: &'c Comparison, name: &str) -> &'c Delta {
        c.deltas
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no `{name}` in\n{}", text(c)))
    }

    fn verdict(c: &Comparison, name: &str) -> Change {
        delta(c, name).verdict
    }

    #[test]
    fn the_same_run_twice_is_unchanged() {
        let a = run(500, 40, 5, 500, 10.0);
        let c = compare(&a, &a.clone(), Tolerance::default());
        assert!(!c.regressed(), "{}", text(&c));
        assert!(c.tradeoffs.is_empty());
        assert!(c.deltas.iter().all(|d| d.verdict == Change::Unchanged));
    }

    #[test]
    fn one_pair_reports_timing_and_cost_but_only_quality_decides() {
        let base = run(500, 100, 10, 500, 10.0);
        let new = run(500, 80, 14, 500, 10.0);
        let c = compare(&base, &new, Tolerance::default());
        let cost = delta(&c, "cost per journey (backend CPU)");
        assert_eq!(cost.verdict, Change::Regressed);
        assert!(!cost.decisive);
        assert!(!c.regressed(), "{}", text(&c));
        assert!(c.tradeoffs.is_empty(), "{:?}", c.tradeoffs);
        assert!(text(&c).contains("worse*"), "{}", text(&c));
        assert!(!text(&c).contains("REGRESSED"), "{}", text(&c));
    }

    #[test]
    fn faster_but_costlier_is_named_as_a_trade_off() {
        let pairs: Vec<_> = (0..4)
            .map(|_| {
                (
                    report(&[("s", run(500, 100, 10, 500, 10.0))]),
                    report(&[("s", run(500, 80, 14, 500, 10.0))]),
                )
            })
            .collect();
        let c = compare_rounds(&pairs, Tolerance::default());
        assert_eq!(verdict(&c, "latency p95"), Change::Improved);
        assert_eq!(
            verdict(&c, "cost per journey (backend CPU)"),
            Change::Regressed
        );
        assert!(c.regressed());
        let named = c
            .tradeoffs
            .iter()
            .find(|t| t.starts_with("latency p95 −"))
            .unwrap_or_else(|| panic!("{:?}", c.tradeoffs));
        assert!(
            named.contains("while cost per journey (backend CPU) +40.0 %"),
            "{named}"
        );
        assert!(markdown(&c).contains("Trade-offs (quadrilemma)"));
    }

    #[test]
    fn one_pair_says_what_it_cannot_know() {
        let a = run(500, 40, 5, 500, 10.0);
        let c = compare(&a, &a.clone(), Tolerance::default());
        assert_eq!(c.rounds, 0);
        assert!(
            text(&c).contains("the variation between runs"),
            "{}",
            text(&c)
        );
        assert!(markdown(&c).contains("the variation between runs"));
    }

    #[test]
    fn a_quality_drop_of_a_few_points_in_a_scenario_regresses() {
        let base = report(&[("golden", run(1000, 50, 5, 1000, 10.0))]);
        let new = report(&[("golden", run(1000, 50, 5, 960, 10.0))]);
        let c = compare_reports(&base, &new, Tolerance::default());
        let name = content_quality("golden");
        assert_eq!(verdict(&c, &name), Change::Regressed);
        assert_eq!(delta(&c, &name).scenario.as_deref(), Some("golden"));
        assert!(text(&c).contains("−4.0 pp"), "{}", text(&c));
    }

    #[test]
    fn metrics_without_an_interval_are_reported_and_never_decide() {
        let mut base = report(&[("s", run(500, 40, 5, 500, 10.0))]);
        base.totals.metrics.count("process_cpu_us", 100_000);
        base.totals.metrics.count("bytes_received", 100_000);
        let mut new = base.clone();
        new.totals.metrics.count("process_cpu_us", 1_000_000);
        new.totals.metrics.count("bytes_received", 1_000_000);
        let pairs: Vec<_> = (0..4).map(|_| (base.clone(), new.clone())).collect();
        let c = compare_rounds(&pairs, Tolerance::default());
        let cpu = delta(&c, "cost per journey (client CPU)");
        assert_eq!(cpu.verdict, Change::Regressed);
        assert!(!cpu.decisive);
        assert!(!c.regressed(), "{}", text(&c));
        assert!(text(&c).contains("never decides"), "{}", text(&c));
    }

    #[test]
    fn a_big_change_on_few_samples_is_noise_not_a_regression() {
        // Three journeys each: 30 % slower, but the intervals overlap.
        let mut base = run(3, 100, 5, 3, 1.0);
        let mut new = run(3, 130, 5, 3, 1.0);
        base.metrics
            .record("journey_duration", Duration::from_millis(400));
        new.metrics
            .record("journey_duration", Duration::from_millis(60));
        let c = compare(&base, &new, Tolerance::default());
        assert_eq!(verdict(&c, "latency p95"), Change::Noise, "{}", text(&c));
    }

    /// Paired rounds: baseline latency `base_ms[i]`, candidate `new_ms[i]`.
    fn rounds(base_ms: &[u64], new_ms: &[u64]) -> Vec<(Baseline, Baseline)> {
        base_ms
            .iter()
            .zip(new_ms)
            .map(|(b, n)| {
                (
                    report(&[("load", load(300, *b, 1.0))]),
                    report(&[("load", load(300, *n, 1.0))]),
                )
            })
            .collect()
    }

    #[test]
    fn a_percentile_from_too_few_journeys_a_round_never_decides() {
        // 300 journeys a round: 15 beyond p95 (decides), 3 beyond p99 (does not).
        let c = compare_rounds(
            &rounds(&[40, 45, 38, 42], &[55, 60, 52, 58]),
            Tolerance::default(),
        );
        assert!(delta(&c, "latency p95").decisive, "{}", text(&c));
        let p99 = delta(&c, "latency p99");
        assert!(!p99.decisive, "{}", text(&c));
        assert!(
            c.regressions().all(|d| d.name != "latency p99"),
            "{}",
            text(&c)
        );
    }

    #[test]
    fn paired_rounds_that_disagree_are_noise_not_a_regression() {
        // Each round far apart, in both directions: what two identical builds on a busy
        // machine look like.
        let c = compare_rounds(
            &rounds(&[40, 40, 40, 40], &[60, 25, 70, 30]),
            Tolerance::default(),
        );
        assert_eq!(c.rounds, 4);
        assert_eq!(verdict(&c, "latency p95"), Change::Noise, "{}", text(&c));
        assert!(!c.regressed(), "{}", text(&c));
    }

    #[test]
    fn worse_in_every_round_regresses() {
        let c = compare_rounds(
            &rounds(&[40, 45, 38, 42], &[55, 60, 52, 58]),
            Tolerance::default(),
        );
        let p95 = delta(&c, "latency p95");
        assert_eq!(p95.verdict, Change::Regressed, "{}", text(&c));
        assert_eq!(p95.rounds.len(), 4);
        let (lo, _) = p95.change_ci.unwrap();
        assert!(lo > 0.0, "{}", text(&c));
        assert!(text(&c).contains("4/4"), "{}", text(&c));
    }

    #[test]
    fn worse_in_most_but_not_enough_rounds_is_noise() {
        // Three of four rounds 40 % slower, one 20 % faster: not consistent.
        let c = compare_rounds(
            &rounds(&[40, 40, 40, 40], &[56, 56, 32, 56]),
            Tolerance::default(),
        );
        assert_eq!(verdict(&c, "latency p95"), Change::Noise, "{}", text(&c));
    }

    #[test]
    fn too_few_rounds_are_inconclusive_never_a_regression() {
        let c = compare_rounds(&rounds(&[40, 40], &[400, 400]), Tolerance::default());
        assert_eq!(
            verdict(&c, "latency p95"),
            Change::Inconclusive,
            "{}",
            text(&c)
        );
        assert!(!c.regressed());
        assert!(text(&c).contains("INCONCLUSIVE"), "{}", text(&c));
    }

    #[test]
    fn a_small_consistent_change_below_the_tolerance_is_unchanged() {
        // 5 % slower in every round: real, but below the minimum effect.
        let c = compare_rounds(
            &rounds(&[100, 100, 100, 100], &[105, 105, 105, 105]),
            Tolerance::default(),
        );
        assert_eq!(
            verdict(&c, "latency p95"),
            Change::Unchanged,
            "{}",
            text(&c)
        );
    }

    #[test]
    fn a_quality_drop_in_one_scenario_regresses_whatever_the_others_do() {
        // One golden journey per round, wrong in every candidate round; 250 load journeys
        // without content checks around it.
        let pair = |good| {
            report(&[
                ("golden", run(1, 20, 1, good, 0.1)),
                ("load", load(250, 20, 1.0)),
            ])
        };
        let pairs: Vec<_> = (0..3).map(|_| (pair(1), pair(0))).collect();
        let c = compare_rounds(&pairs, Tolerance::default());
        let golden = delta(&c, &content_quality("golden"));
        assert_eq!(golden.verdict, Change::Regressed, "{}", text(&c));
        assert_eq!(golden.scenario.as_deref(), Some("golden"));
        assert_eq!((golden.base.value, golden.new.value), (1.0, 0.0));
        assert!(
            !c.deltas.iter().any(|d| d.name == content_quality("load")),
            "a scenario without content checks has no quality of answers: {}",
            text(&c)
        );
        assert!(c.regressed());
    }

    #[test]
    fn a_metric_one_run_lacks_is_never_skipped_in_silence() {
        let with_quality = run(200, 40, 5, 190, 4.0);
        let mut without = with_quality.clone();
        without.metrics.rates.remove("chat_completion_rate");
        let lost = compare(&with_quality, &without, Tolerance::default());
        assert_eq!(
            lost.unmatched,
            [Unmatched {
                name: "quality (runs completed)".into(),
                in_base: true
            }]
        );
        assert!(lost.regressed(), "{}", text(&lost));
        assert!(text(&lost).contains("measured by the baseline only"));
        let gained = compare(&without, &with_quality, Tolerance::default());
        assert!(!gained.regressed(), "{}", text(&gained));
        assert!(text(&gained).contains("measured by the new run only"));
    }

    #[test]
    fn a_report_round_trips_through_its_json() {
        let summary = run(200, 40, 5, 190, 4.0);
        let report = crate::report::RunReport {
            scenarios: vec![crate::report::ScenarioReport {
                name: "s".into(),
                path: "s.yaml".into(),
                journeys: summary.journeys,
                failed: Vec::new(),
                failures_by_class: BTreeMap::new(),
                metrics: summary.metrics.clone(),
                verdicts: Vec::new(),
                duration: Duration::from_secs_f64(summary.duration_s),
                skipped: None,
                cut_short: 0,
                slowest: None,
                shard: None,
            }],
            ..Default::default()
        };
        let json = crate::report::json(&report, "bundled");
        let back = Baseline::from_json(&json).unwrap();
        let c = compare_reports(&Baseline::from_report(&report), &back, Tolerance::default());
        assert!(
            c.deltas.iter().all(|d| d.verdict == Change::Unchanged),
            "{}",
            text(&c)
        );
        assert!(c.deltas.iter().any(|d| d.scenario.as_deref() == Some("s")));
        assert_eq!(back.totals.journeys, 200);
        assert!(back.scenarios.contains_key("s"));
    }
}
