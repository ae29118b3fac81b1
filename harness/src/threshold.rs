//! Thresholds in k6's spirit: a named metric, an aggregate, a comparison and a bound —
//! `journey_duration: p(99) < 3000`, `chat_completion_rate: rate > 0.95`. A breached threshold
//! fails the run with its own exit code even when every journey passed.
//!
//! Trend bounds are milliseconds. Parse errors point at the column of the expression.

use std::fmt;

use crate::metrics::{Metrics, Trend};

/// What kind of value a metric holds, which decides the aggregates it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Trend,
    Rate,
    Counter,
}

/// The metrics the runner records, with their kinds.
pub const KNOWN_METRICS: &[(&str, MetricKind)] = &[
    ("journey_duration", MetricKind::Trend),
    ("login_duration", MetricKind::Trend),
    ("connect_duration", MetricKind::Trend),
    ("first_event_duration", MetricKind::Trend),
    ("agent_completed_duration", MetricKind::Trend),
    ("chat_completion_rate", MetricKind::Rate),
    ("ws_connect_success_rate", MetricKind::Rate),
    ("error_rate", MetricKind::Rate),
    ("journeys_started", MetricKind::Counter),
    ("journeys_completed", MetricKind::Counter),
    ("journeys_failed", MetricKind::Counter),
    ("resyncs_received", MetricKind::Counter),
];

fn kind_of(metric: &str) -> Option<MetricKind> {
    if metric.starts_with("event_duration:") {
        return Some(MetricKind::Trend);
    }
    if metric.starts_with("event_delivery_rate:") {
        return Some(MetricKind::Rate);
    }
    KNOWN_METRICS
        .iter()
        .find(|(name, _)| *name == metric)
        .map(|(_, k)| *k)
}

/// How a metric is summarised before the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    /// `p(N)`, N in 0..=100.
    Percentile(f64),
    Avg,
    Min,
    Max,
    Med,
    Count,
    Rate,
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Percentile(p) => write!(f, "p({p})"),
            Self::Avg => f.write_str("avg"),
            Self::Min => f.write_str("min"),
            Self::Max => f.write_str("max"),
            Self::Med => f.write_str("med"),
            Self::Count => f.write_str("count"),
            Self::Rate => f.write_str("rate"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Comparison {
    fn holds(self, observed: f64, bound: f64) -> bool {
        match self {
            Self::Lt => observed < bound,
            Self::Le => observed <= bound,
            Self::Gt => observed > bound,
            Self::Ge => observed >= bound,
            Self::Eq => (observed - bound).abs() < f64::EPSILON,
            Self::Ne => (observed - bound).abs() >= f64::EPSILON,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }
}

/// The right-hand side of a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// A plain number: milliseconds for latencies, 0..1 for rates.
    Value(f64),
    /// `baseline * F`: the same metric and aggregate in the baseline report (`--baseline`),
    /// times F.
    Baseline(f64),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => write!(f, "{v}"),
            Self::Baseline(factor) if *factor == 1.0 => f.write_str("baseline"),
            Self::Baseline(factor) => write!(f, "baseline * {factor}"),
        }
    }
}

/// One threshold on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: String,
    pub aggregate: Aggregate,
    pub comparison: Comparison,
    pub bound: Bound,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} {}",
            self.metric,
            self.aggregate,
            self.comparison.symbol(),
            self.bound
        )
    }
}

/// A threshold that does not parse, with the 1-based column of the problem in the text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ThresholdError {
    pub column: usize,
    pub message: String,
    pub hint: String,
}

fn error(column: usize, message: impl Into<String>, hint: impl Into<String>) -> ThresholdError {
    ThresholdError {
        column,
        message: message.into(),
        hint: hint.into(),
    }
}

/// Parses `metric: expression` as given on the command line.
pub fn parse_spec(spec: &str) -> Result<Threshold, ThresholdError> {
    let Some((metric, expression)) = spec.split_once(':') else {
        return Err(error(
            1,
            "expected `metric: expression`",
            "e.g. `journey_duration: p(99) < 3000`",
        ));
    };
    let offset = metric.len() + 1 + (expression.len() - expression.trim_start().len());
    parse(metric.trim(), expression.trim()).map_err(|e| ThresholdError {
        column: e.column + offset,
        ..e
    })
}

/// Parses one expression (`p(99) < 3000`) for `metric`. Columns are relative to `expression`.
pub fn parse(metric: &str, expression: &str) -> Result<Threshold, ThresholdError> {
    let kind = metric_kind(metric)?;
    let text = expression;
    let (comparison, op_at, op_len) = parse_comparison(text)?;
    let left = &text[..op_at];
    let aggregate = parse_aggregate(left)?;
    check_applies(kind, aggregate, metric)?;
    let bound = parse_bound(text, op_at + op_len)?;
    Ok(Threshold {
        metric: metric.to_owned(),
        aggregate,
        comparison,
        bound,
    })
}

/// The kind of a metric the runner records; any other name is an error listing them.
fn metric_kind(metric: &str) -> Result<MetricKind, ThresholdError> {
    kind_of(metric).ok_or_else(|| {
        let mut names: Vec<&str> = KNOWN_METRICS.iter().map(|(n, _)| *n).collect();
        names.extend(["event_duration:<type>", "event_delivery_rate:<type>"]);
        error(
            1,
            format!("unknown metric `{metric}`"),
            format!("known metrics: {}", names.join(", ")),
        )
    })
}

/// The comparison operator, where it starts in `text` and its length.
fn parse_comparison(text: &str) -> Result<(Comparison, usize, usize), ThresholdError> {
    let op_at = text.find(['<', '>', '=', '!']).ok_or_else(|| {
        error(
            text.len() + 1,
            "missing comparison",
            "use one of < <= > >= == !=",
        )
    })?;
    let rest = &text[op_at..];
    let (comparison, op_len) = match rest.get(..2) {
        Some("<=") => (Comparison::Le, 2),
        Some(">=") => (Comparison::Ge, 2),
        Some("==") => (Comparison::Eq, 2),
        Some("!=") => (Comparison::Ne, 2),
        _ if rest.starts_with('<') => (Comparison::Lt, 1),
        _ if rest.starts_with('>') => (Comparison::Gt, 1),
        _ => {
            return Err(error(
                op_at + 1,
                "unknown comparison",
                "use one of < <= > >= == !=",
            ));
        }
    };
    Ok((comparison, op_at, op_len))
}

/// The aggregate before the comparison (`left`, as written, untrimmed for its column).
fn parse_aggregate(left: &str) -> Result<Aggregate, ThresholdError> {
    let aggregate = match left.trim() {
        "avg" => Aggregate::Avg,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        "med" => Aggregate::Med,
        "count" => Aggregate::Count,
        "rate" => Aggregate::Rate,
        p if p.starts_with("p(") && p.ends_with(')') => {
            let n: f64 = p[2..p.len() - 1]
                .trim()
                .parse()
                .ok()
                .filter(|n| (0.0..=100.0).contains(n))
                .ok_or_else(|| {
                    error(3, "percentile must be a number from 0 to 100", "e.g. p(99)")
                })?;
            Aggregate::Percentile(n)
        }
        "" => {
            return Err(error(
                1,
                "missing aggregate before the comparison",
                "e.g. p(99), avg, rate",
            ));
        }
        other => {
            return Err(error(
                left.find(other).unwrap_or(0) + 1,
                format!("unknown aggregate `{other}`"),
                "use p(N), avg, min, max, med, count or rate",
            ));
        }
    };
    Ok(aggregate)
}

/// Whether `aggregate` means something for a metric of `kind` (a percentile of a rate
/// does not).
fn check_applies(
    kind: MetricKind,
    aggregate: Aggregate,
    metric: &str,
) -> Result<(), ThresholdError> {
    let allowed = match kind {
        MetricKind::Trend => !matches!(aggregate, Aggregate::Rate),
        MetricKind::Rate => matches!(aggregate, Aggregate::Rate),
        MetricKind::Counter => matches!(aggregate, Aggregate::Count),
    };
    if allowed {
        return Ok(());
    }
    let hint = match kind {
        MetricKind::Trend => {
            "latency metrics take p(N), avg, min, max, med or count (milliseconds)"
        }
        MetricKind::Rate => "rate metrics take `rate`, a share from 0 to 1",
        MetricKind::Counter => "counters take `count`",
    };
    Err(error(
        1,
        format!("`{aggregate}` does not apply to `{metric}`"),
        hint,
    ))
}

/// The bound after the comparison, which ends at `bound_at` in `text`: a number, or
/// `baseline` with an optional `* F`.
fn parse_bound(text: &str, bound_at: usize) -> Result<Bound, ThresholdError> {
    let bound_text = text[bound_at..].trim();
    let bound_column =
        bound_at + 1 + (text[bound_at..].len() - text[bound_at..].trim_start().len());
    let not_a_bound = || {
        error(
            bound_column,
            format!("`{bound_text}` is not a number or `baseline * F`"),
            "the bound is a plain number (milliseconds for latencies, 0..1 for rates) or \
             relative to the --baseline report, e.g. `baseline * 1.10`",
        )
    };
    let bound = match bound_text.strip_prefix("baseline") {
        Some("") => Bound::Baseline(1.0),
        Some(rest) => {
            let factor = rest.trim().strip_prefix('*').ok_or_else(not_a_bound)?;
            Bound::Baseline(
                factor
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f: &f64| f.is_finite() && *f >= 0.0)
                    .ok_or_else(not_a_bound)?,
            )
        }
        None => Bound::Value(bound_text.parse().map_err(|_| not_a_bound())?),
    };
    Ok(bound)
}

/// The stability protocol's defaults: completion and WebSocket success above 95 %, errors
/// below 5 %, journey p99 under 3 s.
pub fn defaults() -> Vec<Threshold> {
    [
        ("chat_completion_rate", "rate > 0.95"),
        ("ws_connect_success_rate", "rate > 0.95"),
        ("error_rate", "rate < 0.05"),
        ("journey_duration", "p(99) < 3000"),
    ]
    .into_iter()
    .map(|(metric, expression)| parse(metric, expression).expect("defaults parse"))
    .collect()
}

/// The outcome of one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub threshold: Threshold,
    /// `None` when the metric has no data (which fails the threshold).
    pub observed: Option<f64>,
    /// The bound compared against: the number, or `baseline * F` resolved; `None` when a
    /// relative threshold has no baseline value (which fails the threshold).
    pub bound: Option<f64>,
    pub passed: bool,
}

fn trend_value(trend: &Trend, aggregate: Aggregate) -> f64 {
    match aggregate {
        Aggregate::Percentile(p) => trend.percentile_ms(p),
        Aggregate::Med => trend.percentile_ms(50.0),
        Aggregate::Avg => trend.mean_ms(),
        Aggregate::Min => trend.min_ms(),
        Aggregate::Max => trend.max_ms(),
        Aggregate::Count | Aggregate::Rate => trend.count() as f64,
    }
}

/// The value of `metric` under `aggregate`, `None` without data.
pub fn observe(metrics: &Metrics, name: &str, aggregate: Aggregate) -> Option<f64> {
    match aggregate {
        Aggregate::Rate => metrics.rates.get(name).and_then(|r| r.value()),
        Aggregate::Count => metrics
            .counters
            .get(name)
            .map(|n| *n as f64)
            .or_else(|| metrics.trends.get(name).map(|t| t.count() as f64)),
        other => metrics
            .trends
            .get(name)
            .filter(|t| t.count() > 0)
            .map(|t| trend_value(t, other)),
    }
}

/// Evaluates a threshold against a run's metrics; `baseline` resolves `baseline * F` bounds.
pub fn evaluate(threshold: &Threshold, metrics: &Metrics, baseline: Option<&Metrics>) -> Verdict {
    let observed = observe(metrics, &threshold.metric, threshold.aggregate);
    let bound = match threshold.bound {
        Bound::Value(v) => Some(v),
        Bound::Baseline(factor) => baseline
            .and_then(|b| observe(b, &threshold.metric, threshold.aggregate))
            .map(|v| v * factor),
    };
    Verdict {
        threshold: threshold.clone(),
        observed,
        bound,
        passed: matches!((observed, bound), (Some(o), Some(b)) if threshold.comparison.holds(o, b)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn expressions_parse_into_their_parts() {
        let t = parse_spec("journey_duration: p(99.9) <= 2500").unwrap();
        assert_eq!(t.aggregate, Aggregate::Percentile(99.9));
        assert_eq!(t.comparison, Comparison::Le);
        assert_eq!(t.bound, Bound::Value(2500.0));
        assert_eq!(t.to_string(), "journey_duration: p(99.9) <= 2500");
        assert_eq!(
            parse("error_rate", "rate<0.05").unwrap().comparison,
            Comparison::Lt
        );
    }

    #[test]
    fn errors_point_at_the_column_with_a_hint() {
        let column = |spec: &str| parse_spec(spec).unwrap_err().column;
        //                 1234567890123456789012345678
        assert_eq!(column("journey_duration: p(99) < fast"), 27);
        assert_eq!(column("journey_duration: q(99) < 3000"), 19);
        assert_eq!(column("journey_duration: p(99) 3000"), 29);
        let unknown = parse_spec("latency: p(99) < 3").unwrap_err();
        assert!(
            unknown.hint.contains("journey_duration"),
            "{}",
            unknown.hint
        );
        let wrong = parse("chat_completion_rate", "p(99) < 3").unwrap_err();
        assert!(
            wrong.message.contains("does not apply"),
            "{}",
            wrong.message
        );
        assert!(parse("journey_duration", "p(101) < 3").is_err());
    }

    #[test]
    fn defaults_pass_a_healthy_run_and_fail_a_slow_or_failing_one() {
        let mut healthy = Metrics::default();
        for _ in 0..100 {
            healthy.record("journey_duration", Duration::from_millis(40));
            healthy.rate("chat_completion_rate", true);
            healthy.rate("ws_connect_success_rate", true);
            healthy.rate("error_rate", false);
        }
        assert!(
            defaults()
                .iter()
                .all(|t| evaluate(t, &healthy, None).passed)
        );

        let mut slow = healthy.clone();
        for _ in 0..5 {
            slow.record("journey_duration", Duration::from_secs(4));
        }
        let breached: Vec<String> = defaults()
            .iter()
            .map(|t| evaluate(t, &slow, None))
            .filter(|v| !v.passed)
            .map(|v| v.threshold.metric)
            .collect();
        assert_eq!(breached, ["journey_duration"]);

        let mut failing = healthy;
        for _ in 0..10 {
            failing.rate("chat_completion_rate", false);
        }
        let verdict = evaluate(&defaults()[0], &failing, None);
        assert!(!verdict.passed);
        assert!((verdict.observed.unwrap() - 100.0 / 110.0).abs() < 1e-9);
    }

    #[test]
    fn a_metric_without_data_fails_its_threshold() {
        let verdict = evaluate(&defaults()[3], &Metrics::default(), None);
        assert_eq!((verdict.observed, verdict.passed), (None, false));
    }

    #[test]
    fn relative_bounds_resolve_against_the_baseline_and_fail_without_one() {
        let t = parse_spec("journey_duration: p(95) < baseline * 1.10").unwrap();
        assert_eq!(t.bound, Bound::Baseline(1.1));
        assert_eq!(t.to_string(), "journey_duration: p(95) < baseline * 1.1");
        assert_eq!(
            parse("error_rate", "rate <= baseline").unwrap().bound,
            Bound::Baseline(1.0)
        );
        assert_eq!(
            parse_spec("journey_duration: p(95) < baseline / 2")
                .unwrap_err()
                .column,
            27
        );
        let run = |ms: u64| {
            let mut m = Metrics::default();
            for _ in 0..50 {
                m.record("journey_duration", Duration::from_millis(ms));
            }
            m
        };
        let base = run(100);
        let ok = evaluate(&t, &run(105), Some(&base));
        assert!(ok.passed, "{ok:?}");
        assert!((ok.bound.unwrap() - 110.0).abs() < 0.2, "{ok:?}");
        assert!(!evaluate(&t, &run(115), Some(&base)).passed);
        let alone = evaluate(&t, &run(100), None);
        assert_eq!((alone.bound, alone.passed), (None, false));
    }
}
