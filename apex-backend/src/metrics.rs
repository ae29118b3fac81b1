//! The backend's metrics, exposed by `GET /metrics` in the OpenMetrics text format
//! (docs/protocol.md §2.8).
//!
//! Built on `prometheus-client`, with one [`Registry`] per instance: several backends run in
//! one test process, so there is no global recorder. Values that belong to another part of the
//! instance (resident memory, the bus's state, the store's cache) are read at scrape time by a
//! [`Collector`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::bus::EventBus;
use crate::store::Store;

/// The `Content-Type` of [`Metrics::render`]'s text, which Prometheus scrapes as OpenMetrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the journey duration histogram.
const JOURNEY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the store and bus operation histograms: database and Redis
/// round trips.
const OPERATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a run ended (or that it started), the `outcome` label of `apex_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Started,
    Completed,
    Failed,
    Interrupted,
}

impl RunOutcome {
    const ALL: [Self; 4] = [
        Self::Started,
        Self::Completed,
        Self::Failed,
        Self::Interrupted,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    agent: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

fn operation_histogram() -> Histogram {
    Histogram::new(OPERATION_BUCKETS)
}

/// Latency histograms of one dependency's operations, labelled by operation (the method
/// name). Cheap to clone: clones share the histograms.
#[derive(Debug, Clone)]
pub struct OperationDurations(Family<OperationLabels, Histogram>);

impl Default for OperationDurations {
    fn default() -> Self {
        Self(Family::new_with_constructor(operation_histogram))
    }
}

impl OperationDurations {
    /// Awaits `work` and records how long it took under `operation`, whatever its result.
    pub async fn time<T>(&self, operation: &'static str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.0
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        out
    }
}

/// Lookups of one cache, as a store reports them for `apex_cache_requests_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheLookups {
    /// The cache's name (the `cache` label).
    pub cache: &'static str,
    pub hits: u64,
    pub misses: u64,
}

/// Every metric the backend exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections open now.
    pub connections_open: Gauge,
    /// WebSocket connections accepted.
    pub connections_opened: Counter,
    connections_closed: Family<CloseLabels, Counter>,
    /// WebSocket upgrades refused by authentication.
    pub handshakes_rejected: Counter,
    runs: Family<RunLabels, Counter>,
    /// Stream events written to connections (first sends).
    pub events_sent: Counter,
    /// Sent events whose delivery a client acknowledged.
    pub events_acked: Counter,
    /// Stream events re-sent because they were not acknowledged in time.
    pub events_redelivered: Counter,
    /// Events given up on after the last redelivery.
    pub events_unacked_dropped: Counter,
    /// Error frames sent to clients.
    pub error_frames: Counter,
    /// Successful logins.
    pub logins_ok: Counter,
    /// Logins refused for bad credentials.
    pub logins_failed: Counter,
    /// Login and demo requests refused by a rate limit (429).
    pub logins_limited: Counter,
    /// Logins refused because the hashing queue was full (503).
    pub logins_busy: Counter,
    /// Time from a user message to its `agent_completed` event.
    pub journey_duration: Histogram,
    /// Latency of every store call, by method.
    pub store_operations: OperationDurations,
    /// Latency of every event bus call, by method.
    pub bus_operations: OperationDurations,
}

/// Registers `metric` under `name` and returns it (metrics are handles: clones share values).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// [`register`] for a metric in seconds: `_seconds` is appended to `name`, with a `# UNIT`.
fn register_seconds<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let connections_open = register(
            r,
            "apex_ws_connections_open",
            "WebSocket connections open now",
            Gauge::default(),
        );
        let connections_opened = register(
            r,
            "apex_ws_connections_opened",
            "WebSocket connections accepted",
            Counter::default(),
        );
        let connections_closed = register(
            r,
            "apex_ws_connections_closed",
            "WebSocket connections closed, by close code",
            Family::default(),
        );
        let handshakes_rejected = register(
            r,
            "apex_ws_handshakes_rejected",
            "WebSocket upgrades refused by authentication",
            Counter::default(),
        );
        let runs = register(
            r,
            "apex_runs",
            "Agent runs, by agent and outcome",
            Family::default(),
        );
        let events_sent = register(
            r,
            "apex_events_sent",
            "Stream events written to connections (first sends)",
            Counter::default(),
        );
        let events_acked = register(
            r,
            "apex_events_acked",
            "Sent events whose delivery a client acknowledged",
            Counter::default(),
        );
        let events_redelivered = register(
            r,
            "apex_events_redelivered",
            "Stream events re-sent because they were not acknowledged in time",
            Counter::default(),
        );
        let events_unacked_dropped = register(
            r,
            "apex_events_unacked_dropped",
            "Events given up on after the last redelivery",
            Counter::default(),
        );
        let error_frames = register(
            r,
            "apex_error_frames",
            "Error frames sent to clients",
            Counter::default(),
        );
        let logins: Family<ResultLabels, Counter> = register(
            r,
            "apex_logins",
            "Login attempts, by result",
            Family::default(),
        );
        let journey_duration = register_seconds(
            r,
            "apex_journey_duration",
            "Time from a user message to its agent_completed event",
            Histogram::new(JOURNEY_BUCKETS),
        );
        let store_operations = register_seconds(
            r,
            "apex_store_operation_duration",
            "Latency of store (database) calls, by operation",
            OperationDurations::default().0,
        );
        let bus_operations = register_seconds(
            r,
            "apex_bus_operation_duration",
            "Latency of event bus (Redis) calls, by operation",
            OperationDurations::default().0,
        );
        registry.register_collector(Box::new(ProcessCollector));
        let login = |result| logins.get_or_create_owned(&ResultLabels { result });
        let metrics = Self {
            registry,
            connections_open,
            connections_opened,
            connections_closed,
            handshakes_rejected,
            runs,
            events_sent,
            events_acked,
            events_redelivered,
            events_unacked_dropped,
            error_frames,
            logins_ok: login("ok"),
            logins_failed: login("failed"),
            logins_limited: login("rate_limited"),
            logins_busy: login("busy"),
            journey_duration,
            store_operations: OperationDurations(store_operations),
            bus_operations: OperationDurations(bus_operations),
        };
        // Every run outcome is shown from the start, at 0.
        for outcome in RunOutcome::ALL {
            let _ = metrics.runs.get_or_create(&RunLabels {
                agent: crate::run::SUPERVISOR,
                outcome: outcome.label(),
            });
        }
        metrics
    }
}

impl Metrics {
    /// Adds the metrics read from the instance's store and bus at each scrape: the bus's
    /// degraded state and the store's cache lookups.
    pub fn watch_services(&mut self, store: Arc<dyn Store>, bus: Arc<dyn EventBus>) {
        self.registry
            .register_collector(Box::new(ServicesCollector { store, bus }));
    }

    /// Counts a run of `agent` (as events name it) reaching `outcome`.
    pub fn run(&self, agent: &'static str, outcome: RunOutcome) {
        self.runs
            .get_or_create(&RunLabels {
                agent,
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts a closed connection under its close code (1005 when none was exchanged).
    pub fn connection_closed(&self, code: u16) {
        self.connections_open.dec();
        self.connections_closed
            .get_or_create(&CloseLabels { code })
            .inc();
    }

    /// Records a journey's duration.
    pub fn journey(&self, duration: Duration) {
        self.journey_duration.observe(duration.as_secs_f64());
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String fails only if a collector does; keep what was written.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Encodes one unlabelled gauge or counter read at scrape time. `help` is written as given
/// (the registry adds the final period only to the metrics registered with it).
fn encode_const(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// `process_resident_memory_bytes`, read at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(bytes) = resident_memory_bytes() else {
            return Ok(());
        };
        encode_const(
            &mut encoder,
            "process_resident_memory",
            "Resident memory of this process.",
            Some(&Unit::Bytes),
            &ConstGauge::new(bytes),
        )
    }
}

/// The bus's degraded state and the store's cache lookups, read at each scrape.
struct ServicesCollector {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for ServicesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicesCollector")
            .field("store", &self.store.kind())
            .field("bus", &self.bus.kind())
            .finish()
    }
}

impl Collector for ServicesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        encode_const(
            &mut encoder,
            "apex_bus_degraded",
            "1 while the event bus delivers in-process only (Redis unreachable).",
            None,
            &ConstGauge::new(i64::from(self.bus.is_degraded())),
        )?;
        encode_const(
            &mut encoder,
            "apex_bus_degradations",
            "Times the event bus entered degraded mode.",
            None,
            &ConstCounter::new(self.bus.degradations()),
        )?;
        let caches = self.store.caches();
        if caches.is_empty() {
            return Ok(());
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "apex_cache_requests",
            "Cache lookups, by cache and result (hit or miss).",
            None,
            counter.metric_type(),
        )?;
        for lookups in caches {
            for (result, n) in [("hit", lookups.hits), ("miss", lookups.misses)] {
                let labels = CacheLabels {
                    cache: lookups.cache,
                    result,
                };
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Resident memory of this process (Linux: `VmRSS` in `/proc/self/status`); `None` elsewhere.
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.journey(Duration::from_millis(3));
        metrics.journey(Duration::from_secs(20));
        let text = metrics.render();
        for line in [
            "# UNIT apex_journey_duration_seconds seconds",
            "apex_journey_duration_seconds_bucket{le=\"0.005\"} 1",
            "apex_journey_duration_seconds_bucket{le=\"10.0\"} 1",
            "apex_journey_duration_seconds_bucket{le=\"+Inf\"} 2",
            "apex_journey_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn closes_are_counted_by_code() {
        let metrics = Metrics::default();
        metrics.connections_opened.inc_by(2);
        metrics.connections_open.inc_by(2);
        metrics.connection_closed(1000);
        metrics.connection_closed(1009);
        let text = metrics.render();
        assert!(
            text.contains("apex_ws_connections_closed_total{code=\"1009\"} 1"),
            "{text}"
        );
        assert!(text.contains("apex_ws_connections_open 0"), "{text}");
    }

    #[test]
    fn runs_are_counted_by_agent_and_outcome_from_zero() {
        let metrics = Metrics::default();
        metrics.run("supervisor", RunOutcome::Completed);
        let text = metrics.render();
        for line in [
            "# TYPE apex_runs counter",
            "apex_runs_total{agent=\"supervisor\",outcome=\"completed\"} 1",
            "apex_runs_total{agent=\"supervisor\",outcome=\"failed\"} 0",
            "apex_logins_total{result=\"busy\"} 0",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }

    #[tokio::test]
    async fn operations_are_timed_by_name() {
        let metrics = Metrics::default();
        let out = metrics.store_operations.time("ping", async { 7 }).await;
        assert_eq!(out, 7);
        let text = metrics.render();
        for line in [
            "# UNIT apex_store_operation_duration_seconds seconds",
            "apex_store_operation_duration_seconds_count{operation=\"ping\"} 1",
            "apex_store_operation_duration_seconds_bucket{le=\"0.0005\",operation=\"ping\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
