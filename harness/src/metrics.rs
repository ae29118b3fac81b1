//! The measurements of a run: latency trends (HDR histograms, microsecond resolution,
//! reported in milliseconds), rates (passes out of attempts) and counters, by name.
//!
//! Names the runner records (the harness issue lists them): `journey_duration`,
//! `login_duration`, `connect_duration`, `first_event_duration`, `chat_completion_rate`,
//! `ws_connect_success_rate`, `error_rate`, `journeys_started`, ...

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies up to an hour, three significant digits.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency distribution.
#[derive(Debug, Clone)]
pub struct Trend {
    histogram: Histogram<u64>,
}

impl Default for Trend {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
        }
    }
}

impl Trend {
    pub fn record(&mut self, value: Duration) {
        let micros = (value.as_micros() as u64).clamp(1, MAX_MICROS);
        self.histogram.saturating_record(micros);
    }

    /// Merges another worker's trend into this one.
    pub fn merge(&mut self, other: &Trend) {
        self.histogram.add(&other.histogram).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `p`-th percentile (0..=100), in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.histogram
            .value_at_quantile((p / 100.0).clamp(0.0, 1.0)) as f64
            / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        self.histogram.mean() / 1000.0
    }

    pub fn min_ms(&self) -> f64 {
        self.histogram.min() as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.histogram.max() as f64 / 1000.0
    }

    pub fn stdev_ms(&self) -> f64 {
        self.histogram.stdev() / 1000.0
    }

    /// The recorded values as `(microseconds, count)` buckets, for the JSON report: enough to
    /// rebuild the distribution (to HDR precision) for comparisons.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A trend rebuilt from [`Trend::buckets`].
    pub fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut trend = Self::default();
        for &(micros, count) in buckets {
            trend
                .histogram
                .saturating_record_n(micros.clamp(1, MAX_MICROS), count);
        }
        trend
    }

    /// A distribution-free confidence interval (normal approximation of the binomial ranks,
    /// `z` = 1.96 for 95 %) for the `p`-th percentile, in milliseconds.
    pub fn percentile_ci_ms(&self, p: f64, z: f64) -> (f64, f64) {
        let n = self.count() as f64;
        if n == 0.0 {
            return (0.0, 0.0);
        }
        let q = (p / 100.0).clamp(0.0, 1.0);
        let spread = z * (n * q * (1.0 - q)).sqrt();
        let at = |rank: f64| {
            let quantile = (rank / n).clamp(0.0, 1.0);
            self.histogram.value_at_quantile(quantile) as f64 / 1000.0
        };
        (at((n * q - spread).floor()), at((n * q + spread).ceil()))
    }
}

/// CPU time this process has used so far, every thread counted (the OS's process CPU clock);
/// `None` where there is none.
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        Some(Duration::new(
            u64::try_from(now.tv_sec).ok()?,
            u32::try_from(now.tv_nsec).ok()?,
        ))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Passes out of attempts (`chat_completion_rate`, `error_rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub passes: u64,
    pub total: u64,
}

impl Rate {
    pub fn add(&mut self, passed: bool) {
        self.passes += u64::from(passed);
        self.total += 1;
    }

    /// The share of passes; `None` before the first attempt.
    pub fn value(&self) -> Option<f64> {
        (self.total > 0).then(|| self.passes as f64 / self.total as f64)
    }
}

/// All metrics of a run, by name.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub trends: BTreeMap<String, Trend>,
    pub rates: BTreeMap<String, Rate>,
    pub counters: BTreeMap<String, u64>,
}

impl Metrics {
    pub fn record(&mut self, name: &str, value: Duration) {
        self.trends
            .entry(name.to_owned())
            .or_default()
            .record(value);
    }

    pub fn rate(&mut self, name: &str, passed: bool) {
        self.rates.entry(name.to_owned()).or_default().add(passed);
    }

    pub fn count(&mut self, name: &str, by: u64) {
        *self.counters.entry(name.to_owned()).or_default() += by;
    }

    /// Merges another worker's metrics into these.
    pub fn merge(&mut self, other: &Metrics) {
        for (name, trend) in &other.trends {
            self.trends.entry(name.clone()).or_default().merge(trend);
        }
        for (name, rate) in &other.rates {
            let mine = self.rates.entry(name.clone()).or_default();
            mine.passes += rate.passes;
            mine.total += rate.total;
        }
        for (name, n) in &other.counters {
            *self.counters.entry(name.clone()).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_every_recorded_value_after_a_merge() {
        let mut a = Metrics::default();
        let mut b = Metrics::default();
        for ms in 1..=90 {
            a.record("journey_duration", Duration::from_millis(ms));
        }
        for ms in 91..=100 {
            b.record("journey_duration", Duration::from_millis(ms));
        }
        a.merge(&b);
        let trend = &a.trends["journey_duration"];
        assert_eq!(trend.count(), 100);
        assert!(
            (trend.percentile_ms(50.0) - 50.0).abs() < 0.1,
            "{}",
            trend.percentile_ms(50.0)
        );
        assert!((trend.percentile_ms(99.0) - 99.0).abs() < 0.1);
        assert!((trend.max_ms() - 100.0).abs() < 0.1);
    }

    #[test]
    fn rates_are_undefined_until_the_first_attempt() {
        let mut m = Metrics::default();
        assert_eq!(
            m.rates.get("chat_completion_rate").and_then(Rate::value),
            None
        );
        m.rate("chat_completion_rate", true);
        m.rate("chat_completion_rate", false);
        assert_eq!(m.rates["chat_completion_rate"].value(), Some(0.5));
    }
}
