//! Reports of a run: the end-of-run summary for a terminal or CI log, the versioned JSON
//! document (`--json PATH`, schema in docs/scenarios.md), JUnit XML, Markdown and a
//! self-contained HTML page (`--html PATH`), all
//! rendered from the run's data in [`model`].

mod error;
mod html;
pub mod model;

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::threshold::Verdict;
pub use error::ReportError;
pub use html::html;
pub use model::{
    Cut, FailedJourney, RunReport, RunShard, ScenarioReport, ScenarioShard, SeenRuns, Skipped,
    Standing, Timeline,
};

/// Reads a JSON report (`run --json`) as a JSON value.
pub fn read_json(path: &std::path::Path) -> Result<Value, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|error| ReportError::Read {
        path: path.to_owned(),
        error,
    })?;
    serde_json::from_str(&text).map_err(|error| ReportError::NotJson {
        path: path.to_owned(),
        error,
    })
}

/// Version of the JSON report's shape.
pub const JSON_SCHEMA_VERSION: u32 = 1;

fn trend_row(report: &ScenarioReport, name: &str) -> Option<String> {
    let trend = report.metrics.trends.get(name)?;
    Some(format!(
        "    {name:<26} p50 {:>8.2}  p90 {:>8.2}  p95 {:>8.2}  p99 {:>8.2}  max {:>8.2} ms  (n={})",
        trend.percentile_ms(50.0),
        trend.percentile_ms(90.0),
        trend.percentile_ms(95.0),
        trend.percentile_ms(99.0),
        trend.max_ms(),
        trend.count()
    ))
}

/// Journey p95 and p99 (ms) and the completion rate of a scenario, as table cells.
fn table_cells(s: &ScenarioReport) -> (String, String, String) {
    let trend = s.metrics.trends.get("journey_duration");
    let p = |q: f64| trend.map_or("-".to_owned(), |t| format!("{:.1}", t.percentile_ms(q)));
    let completion = s
        .metrics
        .rates
        .get("chat_completion_rate")
        .and_then(|r| r.value())
        .map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0));
    (p(95.0), p(99.0), completion)
}

/// One scenario as the terminal shows it: one line; with `verbose` its latencies, rates and
/// every threshold; without, only the thresholds it breached. A failed scenario's failures
/// are shown in full either way (the first three journeys' diagnoses).
pub fn scenario_block(scenario: &ScenarioReport, verbose: bool) -> String {
    let mut out = String::new();
    if let Some(reason) = &scenario.skipped {
        let _ = writeln!(
            out,
            "SKIP  {}  ({})  {reason}",
            scenario.name,
            scenario.path.display()
        );
        return out;
    }
    let verdict = if scenario.passed() { "PASS" } else { "FAIL" };
    let cut = match scenario.cut_short {
        0 => String::new(),
        n => format!(", {n} cut short"),
    };
    let journeys = match scenario.journeys {
        1 => "1 journey".to_owned(),
        n => format!("{n} journeys"),
    };
    let _ = writeln!(
        out,
        "{verdict}  {}  ({})  {journeys}, {} failed{cut}, {:.1}s",
        scenario.name,
        scenario.path.display(),
        scenario.failed.len(),
        scenario.duration.as_secs_f64()
    );
    if verbose {
        metric_lines(&mut out, scenario);
    }
    for verdict in scenario.verdicts.iter().filter(|v| verbose || !v.passed) {
        let observed = observed_text(verdict);
        let mark = if verdict.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(
            out,
            "    threshold {mark} {}  (observed {observed})",
            verdict.threshold
        );
    }
    failure_lines(&mut out, scenario);
    out
}

/// Latency trends and rates, for `-v`.
fn metric_lines(out: &mut String, scenario: &ScenarioReport) {
    for name in [
        "journey_duration",
        "login_duration",
        "connect_duration",
        "first_event_duration",
        "agent_completed_duration",
    ] {
        if let Some(row) = trend_row(scenario, name) {
            let _ = writeln!(out, "{row}");
        }
    }
    for (name, rate) in &scenario.metrics.rates {
        if let Some(value) = rate.value() {
            let _ = writeln!(
                out,
                "    {name:<26} {:.2}% ({}/{})",
                value * 100.0,
                rate.passes,
                rate.total
            );
        }
    }
}

/// Failures by class and the first failed journeys' diagnoses: failures, last frames, how
/// the connection ended.
fn failure_lines(out: &mut String, scenario: &ScenarioReport) {
    for (class, n) in &scenario.failures_by_class {
        let _ = writeln!(out, "    failures  {class}: {n}");
    }
    for journey in scenario.failed.iter().take(3) {
        let _ = writeln!(out, "    journey of {} failed:", journey.email);
        for failure in &journey.failures {
            let _ = writeln!(out, "      {}: {}", failure.class, failure.message);
        }
        let _ = writeln!(out, "      last frames received:");
        for (at, frame) in &journey.last_frames {
            let text = frame.to_string();
            let short: String = text.chars().take(160).collect();
            let _ = writeln!(
                out,
                "        +{:>8.1}ms  {short}",
                at.as_secs_f64() * 1000.0
            );
        }
        if let Some(close) = &journey.close {
            let _ = writeln!(out, "      connection {close}");
        }
    }
}

/// The end of the summary: why the run stopped early or verified nothing, with `verbose` a
/// table of every scenario, and the totals.
pub fn summary_end(report: &RunReport, verbose: bool) -> String {
    let mut out = String::new();
    if let Some(cut) = report.cut {
        let cut_short: u64 = report.scenarios.iter().map(|s| s.cut_short).sum();
        let not_run = report
            .scenarios
            .iter()
            .filter(|s| matches!(s.skipped, Some(Skipped::NotRun(_))))
            .count();
        let _ = writeln!(
            out,
            "\nstopped early: {cut}; {cut_short} journeys cut short, {not_run} scenarios not run"
        );
    }
    if report.nothing_ran() {
        let _ = writeln!(
            out,
            "\nnothing ran: no journey executed (every selected scenario was skipped), so \
             nothing was verified"
        );
    }
    if verbose {
        table(&mut out, report);
    }
    let count =
        |f: &dyn Fn(&ScenarioReport) -> bool| report.scenarios.iter().filter(|s| f(s)).count();
    let skipped = count(&|s| s.skipped.is_some());
    let passed = count(&|s| s.skipped.is_none() && s.passed());
    let journeys: u64 = report.scenarios.iter().map(|s| s.journeys).sum();
    let failed: usize = report.scenarios.iter().map(|s| s.failed.len()).sum();
    let _ = writeln!(
        out,
        "\nTOTAL  {} scenarios: {passed} passed, {} failed, {skipped} skipped; {journeys} \
         journeys, {failed} failed",
        report.scenarios.len(),
        report.scenarios.len() - passed - skipped
    );
    out
}

/// Every scenario in a table, names whole, for `-v`.
fn table(out: &mut String, report: &RunReport) {
    let width = report
        .scenarios
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("scenario".len());
    let _ = writeln!(
        out,
        "\n{:<width$} {:>7} {:>9} {:>7} {:>10} {:>10} {:>11}",
        "scenario", "verdict", "journeys", "failed", "p95 ms", "p99 ms", "completion"
    );
    for s in &report.scenarios {
        let (p95, p99, completion) = table_cells(s);
        let _ = writeln!(
            out,
            "{:<width$} {:>7} {:>9} {:>7} {p95:>10} {p99:>10} {completion:>11}",
            s.name,
            match s.standing() {
                Standing::Skipped => "skip",
                Standing::Passed => "pass",
                Standing::Failed => "FAIL",
            },
            s.journeys,
            s.failed.len(),
        );
    }
    if let Some(trend) = report.totals().trends.get("journey_duration") {
        let _ = writeln!(
            out,
            "all journeys  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2} ms",
            trend.percentile_ms(50.0),
            trend.percentile_ms(95.0),
            trend.percentile_ms(99.0),
            trend.max_ms()
        );
    }
}

/// The whole summary at once (for a finished report; `run` streams the scenario blocks as
/// they finish and prints [`summary_end`] after them).
pub fn summary(report: &RunReport, verbose: bool) -> String {
    let mut out: String = report
        .scenarios
        .iter()
        .map(|s| scenario_block(s, verbose))
        .collect();
    out.push_str(&summary_end(report, verbose));
    out
}

/// The JSON report (schema version [`JSON_SCHEMA_VERSION`]).
/// Trends, rates and counters of a metrics set, as the JSON report shows them.
fn metrics_json(metrics: &Metrics) -> (Value, Value, Value) {
    let trends: serde_json::Map<String, Value> = metrics
        .trends
        .iter()
        .map(|(name, t)| {
            (name.clone(), json!({
                "count": t.count(), "p50_ms": t.percentile_ms(50.0), "p90_ms": t.percentile_ms(90.0),
                "p95_ms": t.percentile_ms(95.0), "p99_ms": t.percentile_ms(99.0), "max_ms": t.max_ms(),
                "mean_ms": t.mean_ms(), "histogram_us": t.buckets(),
            }))
        })
        .collect();
    let rates: serde_json::Map<String, Value> = metrics
        .rates
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                json!({ "value": r.value(), "passes": r.passes, "total": r.total }),
            )
        })
        .collect();
    (
        Value::Object(trends),
        Value::Object(rates),
        json!(metrics.counters),
    )
}

/// What a shard ran of a scenario, and its ledger of run ids (`run --shard`).
fn scenario_shard_json(shard: &ScenarioShard) -> Value {
    json!({
        "vus": shard.vus,
        "vus_total": shard.vus_total,
        "runs": shard.runs,
        "seen": shard.seen.iter().map(|seen| json!({
            "user": seen.email, "failed": seen.failed, "ids": seen.ids,
        })).collect::<Vec<_>>(),
    })
}

/// Which shard of a run the report is, or which shards it merged.
fn run_shard_json(shard: Option<&RunShard>) -> Value {
    match shard {
        None => Value::Null,
        Some(RunShard::One(shard)) => json!({ "index": shard.index, "count": shard.count }),
        Some(RunShard::Merged { count }) => json!({ "count": count, "merged": true }),
    }
}

/// A journey's waterfall: when its phases ended and its events arrived, in ms since it
/// started (`null` for what it never got to). [`timeline_of`] reads it back.
fn timeline_json(timeline: &Timeline) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    json!({
        "user": timeline.email,
        "login_ms": timeline.login.map(ms),
        "connect_ms": timeline.connect.map(ms),
        "events": timeline.events.iter().map(|(event, at)| json!({ "type": event, "at_ms": at.map(ms) })).collect::<Vec<_>>(),
        "total_ms": ms(timeline.total),
    })
}

/// A timeline as [`timeline_json`] writes it (`None` when `value` is not one).
pub fn timeline_of(value: &Value) -> Option<Timeline> {
    let at = |v: &Value| {
        v.as_f64()
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    };
    Some(Timeline {
        email: value["user"].as_str()?.to_owned(),
        login: at(&value["login_ms"]),
        connect: at(&value["connect_ms"]),
        events: (value["events"].as_array()?.iter())
            .map(|e| Some((e["type"].as_str()?.to_owned(), at(&e["at_ms"]))))
            .collect::<Option<_>>()?,
        total: at(&value["total_ms"])?,
    })
}

/// The JSON report (schema version [`JSON_SCHEMA_VERSION`]).
pub fn json(report: &RunReport, target: &str) -> Value {
    let scenarios: Vec<Value> = report
        .scenarios
        .iter()
        .map(|s| {
            let (trends, rates, counters) = metrics_json(&s.metrics);
            let mut scenario = json!({
                "name": s.name,
                "path": s.path,
                "passed": s.passed(),
                "skipped": s.skipped.as_ref().map(Skipped::to_string),
                "journeys": s.journeys,
                "cut_short": s.cut_short,
                "failed_journeys": s.failed.len(),
                "duration_s": s.duration.as_secs_f64(),
                "failures_by_class": s.failures_by_class,
                "trends": trends,
                "rates": rates,
                "counters": counters,
                "thresholds": s.verdicts.iter().map(|v| json!({
                    "threshold": v.threshold.to_string(), "observed": v.observed, "bound": v.bound, "passed": v.passed,
                })).collect::<Vec<_>>(),
                "failed": s.failed.iter().map(|j| json!({
                    "user": j.email,
                    "failures": j.failures.iter().map(|f| json!({ "class": f.class.to_string(), "message": f.message })).collect::<Vec<_>>(),
                    "close": j.close,
                    "last_frames": j.last_frames.iter().map(|(at, frame)| json!({ "at_ms": at.as_secs_f64() * 1000.0, "frame": frame })).collect::<Vec<_>>(),
                    "timeline": timeline_json(&j.timeline),
                })).collect::<Vec<_>>(),
                "slowest": s.slowest.as_ref().map(timeline_json),
            });
            if let Some(shard) = &s.shard {
                scenario["shard"] = scenario_shard_json(shard);
            }
            scenario
        })
        .collect();
    let totals = report.totals();
    let (trends, rates, counters) = metrics_json(&totals);
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "target": target,
        "seed": report.seed,
        "shard": run_shard_json(report.shard.as_ref()),
        "exit_code": report.exit_code(),
        "stopped_early": report.cut.map(|c| c.to_string()),
        "totals": {
            "journeys": report.scenarios.iter().map(|s| s.journeys).sum::<u64>(),
            "duration_s": report.scenarios.iter().map(|s| s.duration.as_secs_f64()).sum::<f64>(),
            "failed_journeys": report.scenarios.iter().map(|s| s.failed.len()).sum::<usize>(),
            "trends": trends,
            "rates": rates,
            "counters": counters,
        },
        "scenarios": scenarios,
    })
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: a test suite for the run, a test case per scenario; a failed scenario lists its
/// failure classes, breached thresholds and the first failed journeys.
pub fn junit(report: &RunReport) -> String {
    let failures = report.scenarios.iter().filter(|s| !s.passed()).count();
    let time: f64 = report
        .scenarios
        .iter()
        .map(|s| s.duration.as_secs_f64())
        .sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"apex-harness\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">\n  <testsuite name=\"scenarios\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">\n",
        report.scenarios.len(),
        report.scenarios.len()
    );
    for scenario in &report.scenarios {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml_escape(&scenario.name),
            xml_escape(&scenario.path.display().to_string()),
            scenario.duration.as_secs_f64()
        );
        if let Some(reason) = &scenario.skipped {
            let _ = write!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                xml_escape(&reason.to_string())
            );
            continue;
        }
        if scenario.passed() {
            out.push_str("/>\n");
            continue;
        }
        let mut body = String::new();
        for (class, n) in &scenario.failures_by_class {
            let _ = writeln!(body, "{class}: {n}");
        }
        for verdict in scenario.verdicts.iter().filter(|v| !v.passed) {
            let _ = writeln!(
                body,
                "threshold breached: {} (observed {})",
                verdict.threshold,
                observed_text(verdict)
            );
        }
        for journey in scenario.failed.iter().take(5) {
            for failure in &journey.failures {
                let _ = writeln!(
                    body,
                    "{}: {}: {}",
                    journey.email, failure.class, failure.message
                );
            }
        }
        let message = format!(
            "{} of {} journeys failed",
            scenario.failed.len(),
            scenario.journeys
        );
        let _ = write!(
            out,
            ">\n      <failure message=\"{}\" type=\"verdict\">{}</failure>\n    </testcase>\n",
            xml_escape(&message),
            xml_escape(&body)
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A verdict's observed value for people: four decimals, or `no data` when the metric had no
/// samples (a threshold on a metric without samples is breached).
fn observed_text(verdict: &Verdict) -> String {
    let observed = verdict
        .observed
        .map_or("no data".to_owned(), |v| format!("{v:.4}"));
    match (verdict.threshold.bound, verdict.bound) {
        (crate::threshold::Bound::Value(_), _) => observed,
        (_, Some(bound)) => format!("{observed}, bound {bound:.4} from the baseline"),
        (_, None) => format!("{observed}, no baseline value: pass --baseline"),
    }
}

/// Markdown for a CI step summary or a pull-request comment.
pub fn markdown(report: &RunReport) -> String {
    let mut out = String::from(
        "## apex-harness\n\n| scenario | verdict | journeys | failed | p95 ms | p99 ms | completion |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for s in &report.scenarios {
        let (p95, p99, completion) = table_cells(s);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {p95} | {p99} | {completion} |",
            s.name,
            match s.standing() {
                Standing::Skipped => "⏭ skipped",
                Standing::Passed => "✅ pass",
                Standing::Failed => "❌ fail",
            },
            s.journeys,
            s.failed.len(),
        );
    }
    for s in report.scenarios.iter().filter(|s| !s.passed()) {
        let _ = writeln!(out, "\n### {} failed\n", s.name);
        for (class, n) in &s.failures_by_class {
            let _ = writeln!(out, "- `{class}`: {n}");
        }
        for v in s.verdicts.iter().filter(|v| !v.passed) {
            let _ = writeln!(
                out,
                "- threshold `{}` breached (observed {})",
                v.threshold,
                observed_text(v)
            );
        }
        if let Some(journey) = s.failed.first() {
            let _ = writeln!(out, "\nFirst failed journey ({}):\n\n```", journey.email);
            for failure in &journey.failures {
                let _ = writeln!(out, "{}: {}", failure.class, failure.message);
            }
            let _ = writeln!(out, "```");
        }
    }
    let _ = writeln!(out, "\nExit code: {}", report.exit_code());
    out
}
