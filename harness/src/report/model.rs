//! What a run produced, as data: each scenario's journeys, failures, metrics and verdicts,
//! and the run's exit code. The runner fills it in; the renderers beside this module and the
//! comparisons ([`crate::compare`]) read it, so neither of them depends on the other.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::exit_codes;
use crate::metrics::Metrics;
use crate::scenario::ScenarioFile;
use crate::threshold::Verdict;
use crate::verify::{Failure, FailureClass};

/// Why a run stopped before its journeys were done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// `--max-duration` ran out.
    Deadline(Duration),
    /// `--fail-fast`: a journey failed.
    FailFast,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deadline(d) => write!(f, "--max-duration {d:?} ran out"),
            Self::FailFast => {
                f.write_str("--fail-fast stopped the run at the first failed journey")
            }
        }
    }
}

/// Why a scenario was not run. The summary counts the scenarios a cut left out, so that
/// reason is a variant of its own rather than a sentence to search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The run was cut before the scenario started.
    NotRun(Cut),
    /// The scenario needs what this target does not have.
    Unsupported(String),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRun(cut) => write!(f, "not run: {cut}"),
            Self::Unsupported(reason) => f.write_str(reason),
        }
    }
}

/// When a journey's phases ended and its events arrived, since it started: the waterfall of
/// the HTML report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub email: String,
    /// Login done and connection open (`None` when the journey did not get there).
    pub login: Option<Duration>,
    pub connect: Option<Duration>,
    /// Each expected event and when it arrived; `None` when it never did.
    pub events: Vec<(String, Option<Duration>)>,
    pub total: Duration,
}

/// A failed journey, kept for the diagnosis.
#[derive(Debug, Clone)]
pub struct FailedJourney {
    pub email: String,
    pub failures: Vec<Failure>,
    /// The last frames received before the failure, with their arrival times.
    pub last_frames: Vec<(Duration, Value)>,
    /// How the last connection ended, when the server closed it or it was lost:
    /// `1000 "main cleanup"`.
    pub close: Option<String>,
    /// Its phases and events in time.
    pub timeline: Timeline,
}

/// Where a scenario stands, as every report's verdict cell shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Passed,
    Failed,
    /// Not run: it neither passes nor fails the run.
    Skipped,
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: String,
    pub path: PathBuf,
    pub journeys: u64,
    pub failed: Vec<FailedJourney>,
    pub failures_by_class: BTreeMap<String, u64>,
    pub metrics: Metrics,
    pub verdicts: Vec<Verdict>,
    pub duration: Duration,
    /// Why the scenario was not run (it needs what this target does not have, or the run
    /// was cut before it); it neither passes nor fails the run.
    pub skipped: Option<Skipped>,
    /// Journeys stopped by `--fail-fast` after another one failed (not in `journeys`).
    pub cut_short: u64,
    /// The slowest passed journey's phases and events.
    pub slowest: Option<Timeline>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }

    pub fn standing(&self) -> Standing {
        match (&self.skipped, self.passed()) {
            (Some(_), _) => Standing::Skipped,
            (None, true) => Standing::Passed,
            (None, false) => Standing::Failed,
        }
    }

    /// A scenario that did not run because it needs what this target does not have.
    pub(crate) fn skipped(file: &ScenarioFile, reason: String) -> Self {
        Self::not_started(file, Skipped::Unsupported(reason))
    }

    /// A scenario left out because the run was cut before it.
    pub(crate) fn not_run(file: &ScenarioFile, cut: Cut) -> Self {
        Self::not_started(file, Skipped::NotRun(cut))
    }

    fn not_started(file: &ScenarioFile, why: Skipped) -> Self {
        Self {
            name: file.scenario.name.clone(),
            path: file.path.clone(),
            journeys: 0,
            failed: Vec::new(),
            failures_by_class: BTreeMap::new(),
            metrics: Metrics::default(),
            verdicts: Vec::new(),
            duration: Duration::ZERO,
            skipped: Some(why),
            cut_short: 0,
            slowest: None,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub scenarios: Vec<ScenarioReport>,
    /// Passwords and tokens the scenarios used; never shown in a report.
    pub secrets: Vec<String>,
    /// Why the run stopped before every selected scenario was done, if it did.
    pub cut: Option<Cut>,
}

impl RunReport {
    /// Every scenario's metrics merged: the run's totals.
    pub fn totals(&self) -> Metrics {
        let mut totals = Metrics::default();
        for scenario in &self.scenarios {
            totals.merge(&scenario.metrics);
        }
        totals
    }

    /// The text with every secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }

    /// No journey of the run executed: every selected scenario was skipped, or none was
    /// selected. Such a run verified nothing and must not pass.
    pub fn nothing_ran(&self) -> bool {
        self.scenarios
            .iter()
            .all(|s| s.journeys == 0 && s.failed.is_empty())
    }

    /// The documented exit code: journeys first, then thresholds.
    pub fn exit_code(&self) -> u8 {
        // Infrastructure only when the target could not be reached at all: every journey of
        // every scenario failed as `unreachable` and nothing else.
        let infrastructure = self.scenarios.iter().all(|s| {
            s.journeys > 0
                && (s.failed.iter().flat_map(|j| &j.failures))
                    .all(|f| f.class == FailureClass::Unreachable)
                && s.failed.len() as u64 == s.journeys
        });
        if self.nothing_ran() {
            // Verified nothing: the selection does not fit the target (exit 2, as bad usage).
            exit_codes::USAGE
        } else if infrastructure {
            exit_codes::INFRASTRUCTURE
        } else if self.scenarios.iter().any(|s| !s.failed.is_empty()) {
            exit_codes::JOURNEY_FAILED
        } else if self
            .scenarios
            .iter()
            .any(|s| s.verdicts.iter().any(|v| !v.passed))
        {
            exit_codes::THRESHOLD_BREACHED
        } else {
            exit_codes::PASS
        }
    }
}

/// `text` with every secret replaced by `[redacted]`.
pub fn redact(secrets: &[String], text: &str) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "[redacted]")
        })
}
