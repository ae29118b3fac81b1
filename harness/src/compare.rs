//! Comparing two runs: per-metric deltas with confidence intervals, a noise-aware verdict,
//! and the quadrilemma detector, which names a change that buys one of cost, quality, latency
//! or throughput with another ("latency p95 −18 % while cost per journey (backend compute)
//! +35 %").
//!
//! Runs are read from JSON reports (`run --json`), whose trends carry their histograms, so
//! percentiles get distribution-free confidence intervals and means get standard errors. A
//! change counts only when it is beyond the tolerance **and** the two intervals do not
//! overlap; beyond the tolerance with overlapping intervals is reported as noise.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use serde_json::Value;

use crate::metrics::{Metrics, Rate, Trend};

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
    pub fn from_report(report: &crate::runner::RunReport) -> Self {
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
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        Self::from_json(&value).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_json(report: &Value) -> Result<Self, String> {
        if report["schema_version"] != 1 {
            return Err("not an apex-harness JSON report (schema_version 1)".into());
        }
        let mut scenarios = BTreeMap::new();
        for s in report["scenarios"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default().to_owned();
            scenarios.insert(name, summary_of(s)?);
        }
        let mut totals = summary_of(&report["totals"])?;
        if totals.duration_s == 0.0 {
            totals.duration_s = scenarios.values().map(|s| s.duration_s).sum();
        }
        Ok(Self { totals, scenarios })
    }

    /// The baseline's metrics for a scenario of that name, else its totals.
    pub fn metrics_for(&self, scenario: &str) -> &Metrics {
        &self.scenarios.get(scenario).unwrap_or(&self.totals).metrics
    }
}

fn summary_of(section: &Value) -> Result<RunSummary, String> {
    let mut metrics = Metrics::default();
    for (name, trend) in section["trends"].as_object().into_iter().flatten() {
        let Some(buckets) = trend["histogram_us"].as_array() else {
            return Err(format!(
                "trend `{name}` has no `histogram_us`: the report predates comparisons; \
                 run again to write a new one"
            ));
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
    /// Beyond the tolerance, but the confidence intervals overlap.
    Noise,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Improved => "improved",
            Self::Regressed => "REGRESSED",
            Self::Noise => "noise",
            Self::Unchanged => "unchanged",
        })
    }
}

/// One metric compared.
#[derive(Debug, Clone)]
pub struct Delta {
    pub dimension: Dimension,
    pub name: &'static str,
    pub unit: &'static str,
    pub base: Estimate,
    pub new: Estimate,
    pub higher_is_better: bool,
    /// Relative change (new / base − 1); for quality, the change in percentage points / 100.
    pub change: f64,
    pub verdict: Change,
}

impl Delta {
    /// The change as people read it: `+35.0 %`, `−18.2 %`, `−4.0 pp`.
    pub fn change_text(&self) -> String {
        let sign = if self.change < 0.0 { "−" } else { "+" };
        if self.dimension == Dimension::Quality {
            format!("{sign}{:.1} pp", self.change.abs() * 100.0)
        } else if self.change.is_infinite() {
            format!("{sign}∞ %")
        } else {
            format!("{sign}{:.1} %", self.change.abs() * 100.0)
        }
    }
}

/// Tolerances: relative for cost, latency and throughput; percentage points for quality.
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

/// A metric that only one of the two runs measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub name: &'static str,
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
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.deltas.iter().any(|d| d.verdict == Change::Regressed)
            || self.unmatched.iter().any(|u| u.in_base)
    }

    pub fn regressions(&self) -> impl Iterator<Item = &Delta> {
        self.deltas
            .iter()
            .filter(|d| d.verdict == Change::Regressed)
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

/// Every compared metric: dimension, name, unit, higher is better, how to read it.
const METRICS: &[(Dimension, &str, &str, bool, Extractor)] = &[
    (Dimension::Latency, "latency p95", "ms", false, |s| {
        percentile(s, "journey_duration", 95.0)
    }),
    (Dimension::Latency, "latency p99", "ms", false, |s| {
        percentile(s, "journey_duration", 99.0)
    }),
    (
        Dimension::Throughput,
        "throughput",
        "journeys/s",
        true,
        throughput,
    ),
    (
        Dimension::Cost,
        "cost per journey (backend compute)",
        "ms",
        false,
        |s| mean(s, "backend_compute_duration"),
    ),
    (
        Dimension::Cost,
        "cost per journey (LLM tokens)",
        "tokens",
        false,
        |s| per_journey(s, "llm_tokens"),
    ),
    (
        Dimension::Cost,
        "cost per journey (client CPU)",
        "µs",
        false,
        |s| per_journey(s, "process_cpu_us"),
    ),
    (
        Dimension::Cost,
        "cost per journey (bytes received)",
        "bytes",
        false,
        |s| per_journey(s, "bytes_received"),
    ),
    (
        Dimension::Quality,
        "quality (answers passing content checks)",
        "",
        true,
        |s| rate(s, "content_pass_rate"),
    ),
    (
        Dimension::Quality,
        "quality (runs completed)",
        "",
        true,
        |s| rate(s, "chat_completion_rate"),
    ),
];

/// Compares `new` with `base`.
pub fn compare(base: &RunSummary, new: &RunSummary, tolerance: Tolerance) -> Comparison {
    let mut deltas = Vec::new();
    let mut unmatched = Vec::new();
    for &(dimension, name, unit, higher_is_better, extract) in METRICS {
        let (b, n) = match (extract(base), extract(new)) {
            (Some(b), Some(n)) => (b, n),
            (None, None) => continue,
            (b, _) => {
                unmatched.push(Unmatched {
                    name,
                    in_base: b.is_some(),
                });
                continue;
            }
        };
        let change = if dimension == Dimension::Quality {
            n.value - b.value
        } else if b.value == 0.0 {
            if n.value == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            n.value / b.value - 1.0
        };
        let limit = if dimension == Dimension::Quality {
            tolerance.quality_points
        } else {
            tolerance.relative
        };
        let worse = if higher_is_better { -change } else { change };
        let separated = n.lo > b.hi || n.hi < b.lo;
        let verdict = if worse.abs() <= limit {
            Change::Unchanged
        } else if !separated {
            Change::Noise
        } else if worse > 0.0 {
            Change::Regressed
        } else {
            Change::Improved
        };
        deltas.push(Delta {
            dimension,
            name,
            unit,
            base: b,
            new: n,
            higher_is_better,
            change,
            verdict,
        });
    }
    let mut tradeoffs = Vec::new();
    for better in deltas.iter().filter(|d| d.verdict == Change::Improved) {
        for worse in deltas
            .iter()
            .filter(|d| d.verdict == Change::Regressed && d.dimension != better.dimension)
        {
            tradeoffs.push(format!(
                "{} {} while {} {}",
                better.name,
                better.change_text(),
                worse.name,
                worse.change_text()
            ));
        }
    }
    Comparison {
        deltas,
        unmatched,
        tradeoffs,
        tolerance,
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
    if regressions.is_empty() {
        format!(
            "no regression beyond tolerance (±{:.0} %, quality ±{:.1} pp)",
            c.tolerance.relative * 100.0,
            c.tolerance.quality_points * 100.0
        )
    } else {
        format!("REGRESSION: {}", regressions.join("; "))
    }
}

/// A plain-text table for the terminal.
pub fn text(c: &Comparison) -> String {
    let mut out = format!(
        "{:<42} {:>14} {:>14} {:>10}  {:<11} new 95 % CI\n",
        "metric", "base", "new", "change", "verdict"
    );
    for d in &c.deltas {
        let _ = writeln!(
            out,
            "{:<42} {:>14} {:>14} {:>10}  {:<11} {}",
            d.name,
            number(d.base.value, d.unit),
            number(d.new.value, d.unit),
            d.change_text(),
            d.verdict.to_string(),
            interval(&d.new, d.unit)
        );
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
    let mut out = String::from(
        "## apex-harness compare\n\n| metric | base | new | change | verdict | base 95 % CI | new 95 % CI |\n|---|---:|---:|---:|---|---|---|\n",
    );
    for d in &c.deltas {
        let mark = match d.verdict {
            Change::Regressed => "❌ regressed",
            Change::Improved => "✅ improved",
            Change::Noise => "〰️ noise",
            Change::Unchanged => "unchanged",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {mark} | {} | {} |",
            d.name,
            number(d.base.value, d.unit),
            number(d.new.value, d.unit),
            d.change_text(),
            interval(&d.base, d.unit),
            interval(&d.new, d.unit)
        );
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

    /// A run of `n` journeys of `ms` latency (±10 % spread), `compute_ms` backend compute each,
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

    fn verdict(c: &Comparison, name: &str) -> Change {
        c.deltas.iter().find(|d| d.name == name).unwrap().verdict
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
    fn faster_but_costlier_is_named_as_a_trade_off() {
        let base = run(500, 100, 10, 500, 10.0);
        let new = run(500, 80, 14, 500, 10.0);
        let c = compare(&base, &new, Tolerance::default());
        assert_eq!(verdict(&c, "latency p95"), Change::Improved);
        assert_eq!(
            verdict(&c, "cost per journey (backend compute)"),
            Change::Regressed
        );
        assert!(c.regressed());
        let named = c
            .tradeoffs
            .iter()
            .find(|t| t.starts_with("latency p95 −"))
            .unwrap_or_else(|| panic!("{:?}", c.tradeoffs));
        assert!(
            named.contains("while cost per journey (backend compute) +40.0 %"),
            "{named}"
        );
        assert!(markdown(&c).contains("Trade-offs (quadrilemma)"));
    }

    #[test]
    fn a_quality_drop_of_a_few_points_regresses() {
        let base = run(1000, 50, 5, 1000, 10.0);
        let new = run(1000, 50, 5, 960, 10.0);
        let c = compare(&base, &new, Tolerance::default());
        assert_eq!(
            verdict(&c, "quality (answers passing content checks)"),
            Change::Regressed
        );
        assert!(text(&c).contains("−4.0 pp"), "{}", text(&c));
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

    #[test]
    fn a_metric_one_run_lacks_is_never_skipped_in_silence() {
        let with_quality = run(200, 40, 5, 190, 4.0);
        let mut without = with_quality.clone();
        without.metrics.rates.remove("content_pass_rate");
        let lost = compare(&with_quality, &without, Tolerance::default());
        assert_eq!(
            lost.unmatched,
            [Unmatched {
                name: "quality (answers passing content checks)",
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
        let report = crate::runner::RunReport {
            scenarios: vec![crate::runner::ScenarioReport {
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
            }],
            secrets: Vec::new(),
            cut: None,
        };
        let json = crate::report::json(&report, "bundled");
        let back = Baseline::from_json(&json).unwrap();
        let c = compare(&summary, &back.totals, Tolerance::default());
        assert!(
            c.deltas.iter().all(|d| d.verdict == Change::Unchanged),
            "{}",
            text(&c)
        );
        assert_eq!(back.totals.journeys, 200);
        assert!(back.scenarios.contains_key("s"));
    }
}
