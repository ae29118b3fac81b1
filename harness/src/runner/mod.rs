//! Runs scenario files: virtual users execute the steps under the scenario's load, every
//! journey is judged, isolation is checked across all users' transcripts, metrics and
//! thresholds make the verdict.

mod steps;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Target;
use crate::exit_codes;
use crate::journey::JourneyOutcome;
use crate::metrics::Metrics;
use crate::profile::Profile;
use crate::scenario::{ScenarioFile, UserSpec};
use crate::threshold::{self, Threshold, Verdict};
use crate::verify::{Failure, check_isolation};

pub use steps::{JourneyContext, VuSession, lookup, run_journey, run_journey_with};

/// What to run against and how, beyond the files.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub target: Target,
    /// Overrides every scenario's profile.
    pub profile: Option<Profile>,
    pub vus: Option<u32>,
    pub iterations: Option<u32>,
    /// Added to every scenario's thresholds (or to the defaults).
    pub thresholds: Vec<Threshold>,
    /// Where `users.yaml` and `expected/` are, for pools and fixture truths.
    pub fixtures_dir: PathBuf,
    /// Draw a live progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// The report `baseline * F` thresholds are relative to (`run --baseline`).
    pub baseline: Option<Arc<crate::compare::Baseline>>,
    /// Proxies in front of the bundled backend's Redis and Postgres, for faults there.
    pub dependencies: Option<crate::fault::DependencyProxies>,
}

/// A failed journey, kept for the diagnosis.
#[derive(Debug, Clone)]
pub struct FailedJourney {
    pub email: String,
    pub failures: Vec<Failure>,
    /// The last frames received before the failure, with their arrival times.
    pub last_frames: Vec<(Duration, Value)>,
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
    /// Why the scenario was not run (it needs what this target does not have); it neither
    /// passes nor fails the run.
    pub skipped: Option<String>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub scenarios: Vec<ScenarioReport>,
    /// Passwords and tokens the scenarios used; never shown in a report.
    pub secrets: Vec<String>,
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
        self.secrets
            .iter()
            .filter(|s| s.len() >= 4)
            .fold(text.to_owned(), |text, secret| {
                text.replace(secret.as_str(), "[redacted]")
            })
    }

    /// The documented exit code: journeys first, then thresholds.
    pub fn exit_code(&self) -> u8 {
        let infrastructure = self.scenarios.iter().all(|s| {
            s.journeys > 0
                && s.failures_by_class.keys().all(|c| c == "handshake_failed")
                && s.failed.len() as u64 == s.journeys
        });
        if !self.scenarios.is_empty() && infrastructure {
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

/// Fixture users and their truths, by email.
#[derive(Debug, Default)]
struct Fixtures {
    truths: HashMap<String, Value>,
}

impl Fixtures {
    fn load(dir: &Path) -> Self {
        let Ok(users) = std::fs::read_to_string(dir.join("users.yaml")) else {
            return Self::default();
        };
        let users: Value = serde_saphyr::from_str(&users).unwrap_or_default();
        let mut truths = HashMap::new();
        for user in users["users"].as_array().into_iter().flatten() {
            let (Some(email), Some(usage)) = (user["email"].as_str(), user["usage"].as_str())
            else {
                continue;
            };
            let stem = Path::new(usage)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if let Ok(text) =
                std::fs::read_to_string(dir.join("expected").join(format!("{stem}.yaml")))
                && let Ok(truth) = serde_saphyr::from_str::<Value>(&text)
            {
                truths.insert(email.to_lowercase(), truth);
            }
        }
        Self { truths }
    }
}

/// `${NAME}` replaced from the environment (unset: left as is, and the login will say so).
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + end];
                out.push_str(&std::env::var(name).unwrap_or_else(|_| format!("${{{name}}}")));
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The scenario's users as (email, password), pools expanded.
fn users_of(specs: &[UserSpec]) -> Vec<(String, String)> {
    let mut users = Vec::new();
    for spec in specs {
        if spec.pool.as_deref() == Some("vu") {
            users.extend(
                (1..=48).map(|n| (format!("vu{n:02}@apex.test"), "correct-horse".to_owned())),
            );
        } else if let Some(email) = &spec.email {
            let password = spec
                .password
                .as_deref()
                .map_or_else(|| "correct-horse".to_owned(), interpolate);
            users.push((interpolate(email), password));
        }
    }
    if users.is_empty() {
        users.extend((1..=48).map(|n| (format!("vu{n:02}@apex.test"), "correct-horse".to_owned())));
    }
    users
}

/// The passwords and tokens a scenario uses, after `${ENV}` interpolation.
fn secrets_of(scenario: &crate::scenario::Scenario) -> Vec<String> {
    use crate::scenario::Step;
    let mut secrets: Vec<String> = users_of(&scenario.users)
        .into_iter()
        .map(|(_, password)| password)
        .collect();
    for step in &scenario.steps {
        match step {
            Step::Login(s) => secrets.extend(s.password.iter().map(|p| interpolate(p))),
            Step::Connect(s) => secrets.extend(s.token.iter().map(|t| interpolate(t))),
            _ => {}
        }
    }
    secrets
}

/// Runs one scenario under its load.
pub async fn run_scenario(file: &ScenarioFile, options: &RunOptions) -> ScenarioReport {
    let scenario = &file.scenario;
    let profile = options
        .profile
        .clone()
        .unwrap_or_else(|| file.profile.clone());
    let fixtures = Arc::new(Fixtures::load(&options.fixtures_dir));
    let users = Arc::new(users_of(&scenario.users));
    let vus = options.vus.unwrap_or(scenario.load.vus).max(1);
    let iterations = options.iterations.or(scenario.load.iterations);
    let until = match (iterations, scenario.load.duration) {
        (None, Some(duration)) => Some(Instant::now() + duration),
        _ => None,
    };
    let per_vu = iterations.unwrap_or(if until.is_some() { u32::MAX } else { 1 });
    let pace = scenario
        .load
        .arrival_rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let ticker = Arc::new(tokio::sync::Mutex::new(pace.map(tokio::time::interval)));
    let timeout = scenario.target.timeout.unwrap_or(Duration::from_secs(10));
    let ramp = scenario.load.ramp_up.unwrap_or_default();
    let http = options.target.http_client();
    // Faults: placed before the first journey, removed when the scenario ends.
    let (faults, journeys_target) = if scenario.faults.is_empty() {
        (None, options.target.clone())
    } else {
        match crate::fault::ScenarioFaults::start(
            &scenario.faults,
            &options.target,
            options.dependencies.as_ref(),
        )
        .await
        {
            Ok((faults, target)) => (Some(Arc::new(faults)), target),
            Err(crate::fault::PlaceError::NeedsServices(reason)) => {
                return ScenarioReport {
                    name: scenario.name.clone(),
                    path: file.path.clone(),
                    journeys: 0,
                    failed: Vec::new(),
                    failures_by_class: BTreeMap::new(),
                    metrics: Metrics::default(),
                    verdicts: Vec::new(),
                    duration: Duration::ZERO,
                    skipped: Some(reason),
                };
            }
            Err(crate::fault::PlaceError::Failed(e)) => {
                return unrunnable(file, format!("faults: {e}"));
            }
        }
    };
    let started = Instant::now();
    let cpu_before = crate::metrics::process_cpu_time();
    let scenario_tag = {
        let mut hash = 0u32;
        for b in file.path.to_string_lossy().bytes() {
            hash = hash.wrapping_mul(31).wrapping_add(u32::from(b));
        }
        hash
    };

    let bar = if options.progress {
        let bar = match iterations {
            Some(n) => indicatif::ProgressBar::new(u64::from(n) * u64::from(vus)),
            None if until.is_some() => indicatif::ProgressBar::new_spinner(),
            None => indicatif::ProgressBar::new(u64::from(vus)),
        };
        // Draws only when stderr is a terminal, so CI logs stay clean.
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(scenario.name.clone());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let failed_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks = (0..vus).map(|vu| {
        let (http, users, fixtures, ticker, profile) = (
            http.clone(),
            users.clone(),
            fixtures.clone(),
            ticker.clone(),
            profile.clone(),
        );
        let (bar, failed_so_far) = (bar.clone(), failed_so_far.clone());
        // A VU bypasses the fault proxy when every target fault names other VUs.
        let through_proxy = scenario
            .faults
            .iter()
            .filter(|f| f.between == crate::scenario::FaultPlace::Target)
            .any(|f| f.vus.is_empty() || f.vus.contains(&vu));
        let target = if through_proxy {
            journeys_target.clone()
        } else {
            options.target.clone()
        };
        let faults = faults.clone();
        let steps = scenario.steps.clone();
        let mut vu_session =
            (scenario.load.login == crate::scenario::LoginMode::OncePerVu).then(VuSession::default);
        let delay = ramp.mul_f64(f64::from(vu) / f64::from(vus));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (email, password) = users[vu as usize % users.len()].clone();
            let truth = fixtures.truths.get(&email.to_lowercase()).cloned();
            let ctx = JourneyContext {
                http: &http,
                target: &target,
                profile: &profile,
                timeout,
                truth: truth.as_ref(),
                faults: faults.as_deref(),
            };
            let mut outcomes = Vec::new();
            for iteration in 0..per_vu {
                if until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                if let Some(interval) = ticker.lock().await.as_mut() {
                    interval.tick().await;
                }
                let marker = format!("mk{scenario_tag:08x}v{vu}i{iteration}");
                let outcome = run_journey_with(
                    &ctx,
                    &steps,
                    &email,
                    &password,
                    &marker,
                    vu_session.as_mut(),
                )
                .await;
                if !outcome.passed() {
                    let failed =
                        failed_so_far.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    bar.set_message(format!("{failed} failed"));
                }
                bar.inc(1);
                outcomes.push(outcome);
            }
            outcomes
        })
    });
    let mut outcomes: Vec<JourneyOutcome> = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        outcomes.extend(task.await.unwrap_or_default());
    }
    bar.finish_and_clear();
    drop(faults);

    // Isolation across every user's transcripts.
    let owners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .flat_map(|(i, o)| o.transcripts.iter().map(move |_| i))
        .collect();
    let breaches = {
        let pairs: Vec<_> = outcomes
            .iter()
            .flat_map(|o| o.transcripts.iter().map(move |t| (&o.identity, t)))
            .collect();
        check_isolation(&pairs)
    };
    for (journey, found) in owners.into_iter().zip(breaches) {
        outcomes[journey].failures.extend(found);
    }

    let mut metrics = Metrics::default();
    let mut failed = Vec::new();
    let mut failures_by_class = BTreeMap::new();
    for outcome in &outcomes {
        outcome.record(&mut metrics);
        if !outcome.passed() {
            for failure in &outcome.failures {
                *failures_by_class
                    .entry(failure.class.to_string())
                    .or_insert(0) += 1;
            }
            let frames: Vec<_> = outcome
                .transcripts
                .iter()
                .flat_map(|t| t.frames.iter())
                .collect();
            failed.push(FailedJourney {
                email: outcome.identity.email.clone(),
                failures: outcome.failures.clone(),
                last_frames: frames
                    .iter()
                    .rev()
                    .take(6)
                    .rev()
                    .map(|f| (f.at, f.value.clone()))
                    .collect(),
            });
        }
    }
    // Cost on the client side: this process's CPU (with `--target bundled` that includes the
    // backend, which runs in-process).
    if let (Some(before), Some(after)) = (cpu_before, crate::metrics::process_cpu_time()) {
        metrics.count(
            "process_cpu_us",
            after.saturating_sub(before).as_micros() as u64,
        );
    }
    let mut thresholds = if file.thresholds.is_empty() {
        threshold::defaults()
    } else {
        file.thresholds.clone()
    };
    thresholds.extend(options.thresholds.iter().cloned());
    let verdicts = thresholds
        .iter()
        .map(|t| {
            let baseline = options
                .baseline
                .as_deref()
                .map(|b| b.metrics_for(&scenario.name));
            threshold::evaluate(t, &metrics, baseline)
        })
        .collect();
    ScenarioReport {
        name: scenario.name.clone(),
        path: file.path.clone(),
        journeys: outcomes.len() as u64,
        failed,
        failures_by_class,
        metrics,
        verdicts,
        duration: started.elapsed(),
        skipped: None,
    }
}

/// A scenario that could not start: reported as an infrastructure failure (exit code 4).
fn unrunnable(file: &ScenarioFile, message: String) -> ScenarioReport {
    let class = crate::verify::FailureClass::HandshakeFailed;
    ScenarioReport {
        name: file.scenario.name.clone(),
        path: file.path.clone(),
        journeys: 1,
        failed: vec![FailedJourney {
            email: "-".into(),
            failures: vec![Failure::new(class.clone(), message, None)],
            last_frames: Vec::new(),
        }],
        failures_by_class: BTreeMap::from([(class.to_string(), 1)]),
        metrics: Metrics::default(),
        verdicts: Vec::new(),
        duration: Duration::ZERO,
        skipped: None,
    }
}

/// Runs every scenario, one after the other.
pub async fn run(files: &[ScenarioFile], options: &RunOptions) -> RunReport {
    let mut report = RunReport::default();
    for file in files {
        report.secrets.extend(secrets_of(&file.scenario));
        report.scenarios.push(run_scenario(file, options).await);
    }
    report.secrets.sort();
    report.secrets.dedup();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_passwords_and_tokens_are_redacted_from_reports() {
        let scenario: crate::scenario::Scenario = serde_saphyr::from_str(
            r#"
name: secrets
users: [{ email: qa@example.test, password: "${APEX_HARNESS_REDACTION_TEST}" }]
steps:
  - connect: { token: "tok-abcdef" }
"#,
        )
        .unwrap();
        let unset = secrets_of(&scenario);
        assert!(
            unset.contains(&"${APEX_HARNESS_REDACTION_TEST}".to_owned()),
            "{unset:?}"
        );
        let report = RunReport {
            scenarios: Vec::new(),
            secrets: secrets_of(&scenario),
        };
        let text = "login as qa@example.test with ${APEX_HARNESS_REDACTION_TEST}, token tok-abcdef";
        assert_eq!(
            report.redact(text),
            "login as qa@example.test with [redacted], token [redacted]"
        );
        assert_eq!(
            interpolate("a ${HOME_DOES_NOT_EXIST_X} b"),
            "a ${HOME_DOES_NOT_EXIST_X} b"
        );
    }
}
