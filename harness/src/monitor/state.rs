//! What the monitor knows after each round: the Prometheus registry `/metrics` encodes and the
//! status `/api/status` (the dashboard) reads. Both are folded from the same [`RunReport`]
//! under one lock, so the page and the metrics never disagree about a round.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::metrics::{Rate, Trend};
use crate::report::{FailedJourney, RunReport, ScenarioReport, Standing};

/// The five events of the golden path, in protocol order: the dashboard's funnel.
pub const EVENTS: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

/// How many failed journeys the status keeps (newest first).
const FAILURES_KEPT: usize = 20;

/// Journey and first-event durations (seconds): 10 ms to 60 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The monitor's metrics, registered once.
#[derive(Debug)]
struct Exported {
    journeys: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    events_expected: Family<Labels, Counter>,
    events_delivered: Family<Labels, Counter>,
    journey_duration: Histograms,
    first_event: Histograms,
    connection_attempts: Family<Labels, Counter>,
    connection_successes: Family<Labels, Counter>,
    content_checks: Family<Labels, Counter>,
    content_passes: Family<Labels, Counter>,
    scenario_up: Family<Labels, Gauge>,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    last_round: Gauge<f64, AtomicU64>,
    rounds: Counter,
    resident_memory: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
}

impl Exported {
    fn register(registry: &mut Registry, every: Duration, started: f64) -> Self {
        let exported = Self {
            journeys: Family::default(),
            failures: Family::default(),
            events_expected: Family::default(),
            events_delivered: Family::default(),
            journey_duration: Family::new_with_constructor(duration_histogram),
            first_event: Family::new_with_constructor(duration_histogram),
            connection_attempts: Family::default(),
            connection_successes: Family::default(),
            content_checks: Family::default(),
            content_passes: Family::default(),
            scenario_up: Family::default(),
            last_success: Family::default(),
            last_round: Gauge::default(),
            rounds: Counter::default(),
            resident_memory: Gauge::default(),
            cpu_seconds: Counter::default(),
        };
        let e = &exported;
        let r = registry;
        r.register(
            "apex_monitor_journeys",
            "Journeys run, by scenario and result (passed, failed)",
            e.journeys.clone(),
        );
        r.register(
            "apex_monitor_journey_failures",
            "Failed journeys, by scenario and failure class (once per class a journey showed)",
            e.failures.clone(),
        );
        r.register(
            "apex_monitor_events_expected",
            "Journeys that expected the event, by scenario and event",
            e.events_expected.clone(),
        );
        r.register(
            "apex_monitor_events_delivered",
            "Journeys the expected event reached, by scenario and event",
            e.events_delivered.clone(),
        );
        r.register(
            "apex_monitor_journey_duration_seconds",
            "Duration of passed journeys, login to answer",
            e.journey_duration.clone(),
        );
        r.register(
            "apex_monitor_first_event_duration_seconds",
            "Time from the journey's start to its first event",
            e.first_event.clone(),
        );
        r.register(
            "apex_monitor_connection_attempts",
            "WebSocket connections attempted",
            e.connection_attempts.clone(),
        );
        r.register(
            "apex_monitor_connection_successes",
            "WebSocket connections that opened",
            e.connection_successes.clone(),
        );
        r.register(
            "apex_monitor_content_checks",
            "Answers whose content was checked",
            e.content_checks.clone(),
        );
        r.register(
            "apex_monitor_content_passes",
            "Answers whose content held up (the quality score)",
            e.content_passes.clone(),
        );
        r.register(
            "apex_monitor_scenario_up",
            "1 when the scenario's last round passed, else 0",
            e.scenario_up.clone(),
        );
        r.register(
            "apex_monitor_last_success_timestamp_seconds",
            "Unix time of the scenario's last round with a passed journey",
            e.last_success.clone(),
        );
        r.register(
            "apex_monitor_last_round_timestamp_seconds",
            "Unix time the last round finished",
            e.last_round.clone(),
        );
        r.register("apex_monitor_rounds", "Rounds finished", e.rounds.clone());
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the monitor process",
            e.resident_memory.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time the monitor process has used",
            e.cpu_seconds.clone(),
        );
        let interval = Gauge::<f64, AtomicU64>::default();
        interval.set(every.as_secs_f64());
        r.register(
            "apex_monitor_round_interval_seconds",
            "The configured time between rounds (--every)",
            interval,
        );
        let start = Gauge::<f64, AtomicU64>::default();
        start.set(started);
        r.register(
            "apex_monitor_start_time_seconds",
            "Unix time the monitor started",
            start,
        );
        exported
    }
}

/// One scenario's standing across rounds.
#[derive(Debug, Default)]
struct ScenarioStatus {
    status: &'static str,
    passed: u64,
    failed: u64,
    content: Rate,
    connection: Rate,
    p95_ms: Option<f64>,
    last_success_at: Option<f64>,
    last_round: (u64, u64),
    detail: Option<String>,
}

/// Everything the monitor serves; updated once per round.
#[derive(Debug)]
pub struct MonitorState {
    registry: Registry,
    exported: Exported,
    target: String,
    every: Duration,
    started_at: f64,
    rounds: u64,
    last_round_at: Option<f64>,
    scenarios: BTreeMap<String, ScenarioStatus>,
    /// Scenario names in the order they run.
    order: Vec<String>,
    funnel: BTreeMap<&'static str, Rate>,
    history: VecDeque<Value>,
    history_kept: usize,
    failures: VecDeque<Value>,
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl MonitorState {
    /// A monitor of `scenarios` (names, in run order) against `target`, one round per
    /// `every`, keeping `history_kept` rounds of history.
    pub fn new(target: &str, scenarios: &[String], every: Duration, history_kept: usize) -> Self {
        let started_at = unix_now();
        let mut registry = Registry::default();
        let exported = Exported::register(&mut registry, every, started_at);
        let scenarios_status = scenarios
            .iter()
            .map(|name| {
                let status = ScenarioStatus {
                    status: "pending",
                    ..Default::default()
                };
                (name.clone(), status)
            })
            .collect();
        Self {
            registry,
            exported,
            target: target.to_owned(),
            every,
            started_at,
            rounds: 0,
            last_round_at: None,
            scenarios: scenarios_status,
            order: scenarios.to_vec(),
            funnel: BTreeMap::new(),
            history: VecDeque::new(),
            history_kept: history_kept.max(1) * scenarios.len().max(1),
            failures: VecDeque::new(),
        }
    }

    /// Folds one round's report in; returns the history entries it added (for `--history`).
    pub fn record_round(&mut self, report: &RunReport, at: f64) -> Vec<Value> {
        self.rounds += 1;
        self.last_round_at = Some(at);
        self.exported.rounds.inc();
        self.exported.last_round.set(at);
        let mut added = Vec::new();
        for scenario in &report.scenarios {
            self.record_scenario(scenario, at);
            for failed in scenario.failed.iter() {
                let entry = self.failure_entry(report, scenario, failed, at);
                self.failures.push_front(entry);
            }
            let entry = self.history_entry(scenario, at);
            self.history.push_back(entry.clone());
            added.push(entry);
        }
        self.failures.truncate(FAILURES_KEPT);
        while self.history.len() > self.history_kept {
            self.history.pop_front();
        }
        added
    }

    fn record_scenario(&mut self, report: &ScenarioReport, at: f64) {
        let name = report.name.clone();
        let labels = || vec![("scenario", name.clone())];
        let e = &self.exported;
        let failed = report.failed.len() as u64;
        let passed = report.journeys.saturating_sub(failed);
        for (result, n) in [("passed", passed), ("failed", failed)] {
            let mut l = labels();
            l.push(("result", result.to_owned()));
            e.journeys.get_or_create(&l).inc_by(n);
        }
        for (class, n) in failed_by_class(report) {
            let mut l = labels();
            l.push(("class", class.to_owned()));
            e.failures.get_or_create(&l).inc_by(n);
        }
        let metrics = &report.metrics;
        for event in EVENTS {
            if let Some(rate) = metrics.rates.get(&format!("event_delivery_rate:{event}")) {
                let mut l = labels();
                l.push(("event", event.to_owned()));
                e.events_expected.get_or_create(&l).inc_by(rate.total);
                e.events_delivered.get_or_create(&l).inc_by(rate.passes);
                let funnel = self.funnel.entry(event).or_default();
                funnel.passes += rate.passes;
                funnel.total += rate.total;
            }
        }
        for (trend, family) in [
            ("journey_duration", &e.journey_duration),
            ("first_event_duration", &e.first_event),
        ] {
            if let Some(trend) = metrics.trends.get(trend) {
                observe(&family.get_or_create(&labels()), trend);
            }
        }
        let rate = |name: &str| metrics.rates.get(name).copied().unwrap_or_default();
        let (connection, content) = (rate("ws_connect_success_rate"), rate("content_pass_rate"));
        e.connection_attempts
            .get_or_create(&labels())
            .inc_by(connection.total);
        e.connection_successes
            .get_or_create(&labels())
            .inc_by(connection.passes);
        e.content_checks
            .get_or_create(&labels())
            .inc_by(content.total);
        e.content_passes
            .get_or_create(&labels())
            .inc_by(content.passes);
        let up = standing(report) == "passing";
        e.scenario_up.get_or_create(&labels()).set(i64::from(up));
        if passed > 0 {
            e.last_success.get_or_create(&labels()).set(at);
        }
        let status = self.scenarios.entry(name.clone()).or_default();
        if !self.order.contains(&name) {
            self.order.push(name);
        }
        status.status = standing(report);
        status.passed += passed;
        status.failed += failed;
        add_rate(&mut status.connection, connection);
        add_rate(&mut status.content, content);
        status.p95_ms = metrics
            .trends
            .get("journey_duration")
            .filter(|t| t.count() > 0)
            .map(|t| t.percentile_ms(95.0));
        status.last_round = (passed, failed);
        if passed > 0 {
            status.last_success_at = Some(at);
        }
        status.detail = detail(report);
    }

    fn history_entry(&self, report: &ScenarioReport, at: f64) -> Value {
        let failed = report.failed.len() as u64;
        let passed = report.journeys.saturating_sub(failed);
        let trend = report
            .metrics
            .trends
            .get("journey_duration")
            .filter(|t| t.count() > 0);
        json!({
            "at": at,
            "round": self.rounds,
            "scenario": report.name,
            "passed": passed,
            "failed": failed,
            "chat_completion": ratio(passed, passed + failed),
            "p50_ms": trend.map(|t| t.percentile_ms(50.0)),
            "p95_ms": trend.map(|t| t.percentile_ms(95.0)),
            "status": self.scenarios.get(&report.name).map_or("pending", |s| s.status),
        })
    }

    fn failure_entry(
        &self,
        report: &RunReport,
        scenario: &ScenarioReport,
        failed: &FailedJourney,
        at: f64,
    ) -> Value {
        let findings: Vec<Value> = failed
            .failures
            .iter()
            .map(|f| json!({"class": f.class.to_string(), "message": f.message}))
            .collect();
        let frames: Vec<Value> = failed
            .last_frames
            .iter()
            .map(|(at, frame)| json!({"at_ms": at.as_secs_f64() * 1000.0, "frame": frame}))
            .collect();
        let entry = json!({
            "at": at,
            "round": self.rounds,
            "scenario": scenario.name,
            "email": failed.email,
            "findings": findings,
            "close": failed.close,
            "last_frames": frames,
        });
        // Tokens and passwords the scenarios use never leave the process.
        serde_json::from_str(&report.redact(&entry.to_string())).unwrap_or(entry)
    }

    /// `/metrics`: the OpenMetrics text exposition, with this process's memory and CPU.
    pub fn encode_metrics(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.exported.resident_memory.set(bytes as i64);
        }
        if let Some(cpu) = crate::metrics::process_cpu_time() {
            let seen = self.exported.cpu_seconds.get();
            let delta = cpu.as_secs_f64() - seen;
            if delta > 0.0 {
                self.exported.cpu_seconds.inc_by(delta);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// `/api/status`: what the dashboard shows.
    pub fn status(&self) -> Value {
        let scenarios: Vec<Value> = self
            .order
            .iter()
            .filter_map(|name| self.scenarios.get(name).map(|s| (name, s)))
            .map(|(name, s)| {
                json!({
                    "name": name,
                    "status": s.status,
                    "passed": s.passed,
                    "failed": s.failed,
                    "chat_completion": ratio(s.passed, s.passed + s.failed),
                    "content_pass": s.content.value(),
                    "connection_success": s.connection.value(),
                    "p95_ms": s.p95_ms,
                    "last_success_at": s.last_success_at,
                    "last_round": {"passed": s.last_round.0, "failed": s.last_round.1},
                    "detail": s.detail,
                })
            })
            .collect();
        let funnel: Vec<Value> = EVENTS
            .iter()
            .map(|event| {
                let rate = self.funnel.get(event).copied().unwrap_or_default();
                json!({"event": event, "expected": rate.total, "delivered": rate.passes})
            })
            .collect();
        json!({
            "generated_at": unix_now(),
            "target": self.target,
            "every_seconds": self.every.as_secs_f64(),
            "started_at": self.started_at,
            "rounds": self.rounds,
            "last_round_at": self.last_round_at,
            "scenarios": scenarios,
            "history": self.history,
            "funnel": funnel,
            "failures": self.failures,
        })
    }
}

/// Failed journeys by failure class: a journey counts once per class it showed, so a ratio to
/// journeys stays a share of journeys. `missing_event:tool_completed` counts as
/// `missing_event` (the event has its own metric) and a harness error's text never becomes a
/// label value.
fn failed_by_class(report: &ScenarioReport) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for journey in &report.failed {
        let mut classes: Vec<String> = journey
            .failures
            .iter()
            .map(|f| {
                let class = f.class.to_string();
                class.split(':').next().unwrap_or_default().to_owned()
            })
            .collect();
        classes.sort();
        classes.dedup();
        for class in classes {
            *counts.entry(class).or_default() += 1;
        }
    }
    counts
}

/// Every value a trend recorded, observed into a Prometheus histogram.
fn observe(histogram: &Histogram, trend: &Trend) {
    for (micros, count) in trend.buckets() {
        for _ in 0..count {
            histogram.observe(micros as f64 / 1e6);
        }
    }
}

/// A scenario's status after a round: a round passes only if it ran a journey and every one
/// passed (a round that ran nothing is not a pass).
pub fn standing(report: &ScenarioReport) -> &'static str {
    match report.standing() {
        Standing::Skipped => "skipped",
        Standing::Passed if report.journeys > 0 => "passing",
        Standing::Passed | Standing::Failed => "failing",
    }
}

fn add_rate(into: &mut Rate, more: Rate) {
    into.passes += more.passes;
    into.total += more.total;
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Why a scenario is not passing, in one line: skipped, its first finding, or a breached
/// threshold.
fn detail(report: &ScenarioReport) -> Option<String> {
    if let Some(skipped) = &report.skipped {
        return Some(skipped.to_string());
    }
    if let Some(failure) = report.failed.iter().flat_map(|j| &j.failures).next() {
        return Some(format!("{}: {}", failure.class, failure.message));
    }
    report
        .verdicts
        .iter()
        .find(|v| !v.passed)
        .map(|v| format!("threshold breached: {}", v.threshold))
}

/// Resident memory of this process (Linux: `VmRSS`); `None` elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Failure, FailureClass};

    fn failed(classes: &[FailureClass]) -> FailedJourney {
        FailedJourney {
            email: "a@apex.test".into(),
            failures: (classes.iter())
                .map(|c| Failure::new(c.clone(), "x", None))
                .collect(),
            last_frames: Vec::new(),
            close: None,
            timeline: Default::default(),
        }
    }

    fn scenario(journeys: u64, failed: Vec<FailedJourney>) -> ScenarioReport {
        ScenarioReport {
            name: "S".into(),
            path: "s.yaml".into(),
            journeys,
            failed,
            failures_by_class: BTreeMap::new(),
            metrics: crate::metrics::Metrics::default(),
            verdicts: Vec::new(),
            duration: Duration::ZERO,
            skipped: None,
            cut_short: 0,
            slowest: None,
        }
    }

    #[test]
    fn a_journey_counts_once_per_class_and_details_stay_out_of_labels() {
        let report = scenario(
            3,
            vec![
                failed(&[
                    FailureClass::MissingEvent("tool_completed".into()),
                    FailureClass::MissingEvent("agent_completed".into()),
                    FailureClass::Timeout,
                ]),
                failed(&[FailureClass::Harness("a crashed worker: boom".into())]),
            ],
        );
        let counts = failed_by_class(&report);
        assert_eq!(
            counts,
            BTreeMap::from([
                ("harness_error".to_owned(), 1),
                ("missing_event".to_owned(), 1),
                ("timeout".to_owned(), 1),
            ])
        );
    }

    #[test]
    fn status_and_metrics_count_the_same_journeys() {
        let mut state = MonitorState::new("t", &["S".to_owned()], Duration::from_secs(30), 2);
        for round in 0..3 {
            let report = RunReport {
                scenarios: vec![scenario(4, vec![failed(&[FailureClass::Timeout])])],
                ..RunReport::default()
            };
            state.record_round(&report, 1000.0 + f64::from(round));
        }
        let status = state.status();
        let s = &status["scenarios"][0];
        assert_eq!(
            (s["passed"].as_u64(), s["failed"].as_u64()),
            (Some(9), Some(3))
        );
        assert_eq!(s["status"], "failing");
        // History is bounded: two rounds of one scenario.
        assert_eq!(status["history"].as_array().unwrap().len(), 2);
        let text = state.encode_metrics();
        assert!(
            text.contains("apex_monitor_journeys_total{scenario=\"S\",result=\"passed\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("apex_monitor_journeys_total{scenario=\"S\",result=\"failed\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "apex_monitor_journey_failures_total{scenario=\"S\",class=\"timeout\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("apex_monitor_scenario_up{scenario=\"S\"} 0"),
            "{text}"
        );
        assert!(text.contains("apex_monitor_rounds_total 3"), "{text}");
    }
}
