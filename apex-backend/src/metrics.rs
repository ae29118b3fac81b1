//! Counters and a histogram, rendered in the Prometheus text format by `GET /metrics`.
//!
//! Hand-rolled on atomics: the set is small and fixed, and it keeps the exporter's dependency
//! tree (and its C-built TLS stack) out of the build.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the journey duration histogram.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: DURATION_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric the backend exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicI64,
    pub connections_opened: AtomicU64,
    connections_closed: Mutex<BTreeMap<u16, u64>>,
    pub handshakes_rejected: AtomicU64,
    pub runs_started: AtomicU64,
    pub runs_completed: AtomicU64,
    pub runs_failed: AtomicU64,
    pub runs_interrupted: AtomicU64,
    pub events_sent: AtomicU64,
    pub events_redelivered: AtomicU64,
    pub events_unacked_dropped: AtomicU64,
    pub error_frames: AtomicU64,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    /// Login and demo requests refused by a rate limit (429).
    pub logins_limited: AtomicU64,
    /// Logins refused because the hashing queue was full (503).
    pub logins_busy: AtomicU64,
    pub journey_duration: Histogram,
}

impl Metrics {
    /// Counts a closed connection under its close code (1005 when none was exchanged).
    pub fn connection_closed(&self, code: u16) {
        self.connections_open.fetch_sub(1, Relaxed);
        *self
            .connections_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        if let Some(bytes) = resident_memory_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of this process.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {bytes}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP apex_ws_connections_open WebSocket connections open now.\n\
             # TYPE apex_ws_connections_open gauge\napex_ws_connections_open {}",
            self.connections_open.load(Relaxed)
        );
        counter(
            &mut out,
            "apex_ws_connections_opened_total",
            "WebSocket connections accepted.",
            self.connections_opened.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP apex_ws_connections_closed_total WebSocket connections closed, by close code.\n\
             # TYPE apex_ws_connections_closed_total counter"
        );
        for (code, n) in self
            .connections_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "apex_ws_connections_closed_total{{code=\"{code}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "apex_ws_handshakes_rejected_total",
            "WebSocket upgrades refused with 401.",
            self.handshakes_rejected.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP apex_runs_total Agent runs, by outcome.\n# TYPE apex_runs_total counter"
        );
        for (outcome, value) in [
            ("started", &self.runs_started),
            ("completed", &self.runs_completed),
            ("failed", &self.runs_failed),
            ("interrupted", &self.runs_interrupted),
        ] {
            let _ = writeln!(
                out,
                "apex_runs_total{{outcome=\"{outcome}\"}} {}",
                value.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "apex_events_sent_total",
            "Stream events written to connections (first sends).",
            self.events_sent.load(Relaxed),
        );
        counter(
            &mut out,
            "apex_events_redelivered_total",
            "Stream events re-sent because they were not acknowledged in time.",
            self.events_redelivered.load(Relaxed),
        );
        counter(
            &mut out,
            "apex_events_unacked_dropped_total",
            "Events given up on after the last redelivery.",
            self.events_unacked_dropped.load(Relaxed),
        );
        counter(
            &mut out,
            "apex_error_frames_total",
            "Error frames sent to clients.",
            self.error_frames.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP apex_logins_total Login attempts, by result.\n# TYPE apex_logins_total counter"
        );
        let _ = writeln!(
            out,
            "apex_logins_total{{result=\"ok\"}} {}",
            self.logins_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "apex_logins_total{{result=\"failed\"}} {}",
            self.logins_failed.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "apex_logins_total{{result=\"rate_limited\"}} {}",
            self.logins_limited.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "apex_logins_total{{result=\"busy\"}} {}",
            self.logins_busy.load(Relaxed)
        );
        self.journey_duration.render(
            &mut out,
            "apex_journey_duration_seconds",
            "Time from a user message to its agent_completed event.",
        );
        out
    }
}

/// Resident memory of this process (Linux: `VmRSS` in `/proc/self/status`); `None` elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.journey_duration.observe(Duration::from_millis(3));
        metrics.journey_duration.observe(Duration::from_secs(20));
        let text = metrics.render();
        assert!(
            text.contains("apex_journey_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apex_journey_duration_seconds_bucket{le=\"10\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apex_journey_duration_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("apex_journey_duration_seconds_count 2"),
            "{text}"
        );
    }

    #[test]
    fn closes_are_counted_by_code() {
        let metrics = Metrics::default();
        metrics.connections_opened.fetch_add(2, Relaxed);
        metrics.connections_open.fetch_add(2, Relaxed);
        metrics.connection_closed(1000);
        metrics.connection_closed(1009);
        let text = metrics.render();
        assert!(
            text.contains("apex_ws_connections_closed_total{code=\"1009\"} 1"),
            "{text}"
        );
        assert!(text.contains("apex_ws_connections_open 0"), "{text}");
    }
}
