//! Runs scenario files: virtual users execute the steps under the scenario's load, every
//! journey is judged when it ends (its invariants, and isolation against every user's
//! identities and the ids journeys have learnt, [`crate::verify::Isolation`]) and keeps only
//! what a report needs; at the scenario's end the other runs each journey's frames carried
//! are checked again, and metrics and thresholds make the verdict. What a run produced is [`crate::report::model`]'s data; what
//! keeps a scenario or the builder from starting is a [`RunError`].

mod cutoff;
mod error;
mod load;
mod outcome;
mod steps;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Target;
use crate::metrics::Metrics;
use crate::profile::Profile;
use crate::scenario::{ScenarioFile, UserSpec};
use crate::threshold::{self, Threshold};
use crate::verify::{Failure, FailureClass};

pub use crate::report::model::{
    FailedJourney, RunReport, ScenarioReport, ScenarioShard, SeenRuns, redact,
};
pub use cutoff::{Cut, Cutoff};
pub use error::RunError;
pub use load::{NotStarted, Prepared};
pub use outcome::{JourneyOutcome, Timings};
pub use steps::{JourneyContext, VuSession, lookup, run_journey, run_journey_with};

/// What to run against and how, beyond the files.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub target: Target,
    /// Replaces every scenario's profile (`--profile`); the scenario's `fields:` and
    /// `target:` still apply over it.
    pub profile: Option<Profile>,
    /// `--target-setting`s: over every scenario's target settings.
    pub target_settings: crate::profile::TargetSettings,
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
    /// The bundled backend's further instances (1, 2, …) on the same services, for scenarios
    /// with `instances`; empty for one instance or a URL target.
    pub more_instances: Vec<crate::bundled::Instance>,
    /// `--max-duration` and `--fail-fast`; its clock runs from when it was made.
    pub cutoff: Cutoff,
    /// What every journey's marker derives from (`--seed`): the same seed, the same markers,
    /// on every shard of a run.
    pub seed: u64,
    /// `--shard K/N`: run only this shard's virtual users and check frames against every
    /// other shard's users too.
    pub shard: Option<crate::shard::Shard>,
}

impl RunOptions {
    /// Every scenario as its file says, against `target`, with the fixtures in
    /// `fixtures_dir`: no overrides, no baseline, no limits, no progress bar.
    pub fn new(target: Target, fixtures_dir: PathBuf) -> Self {
        Self {
            target,
            profile: None,
            target_settings: Default::default(),
            vus: None,
            iterations: None,
            thresholds: Vec::new(),
            fixtures_dir,
            progress: false,
            baseline: None,
            dependencies: None,
            more_instances: Vec::new(),
            cutoff: Cutoff::default(),
            seed: 0,
            shard: None,
        }
    }
}

/// A user of `fixtures/users.yaml`.
#[derive(Debug, Clone)]
struct FixtureUser {
    /// The id the reference backend gives the user (its `connection_established.user_id`):
    /// known in advance, so a frame carrying it on another user's connection is a breach.
    id: Option<String>,
    email: String,
    password: Option<String>,
    pool: Option<String>,
    /// The usage log, whose stem names the user's truth in `expected/`.
    usage: Option<String>,
}

/// `users.yaml`, only the fields the harness reads (a 10,000-user file parsed whole into a
/// generic value cost tens of MiB at its peak). A field of another type than expected is
/// skipped, not an error: the backend, not the harness, validates its fixtures.
#[derive(Debug, Default, serde::Deserialize)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct UserEntry {
    id: Option<Value>,
    email: Option<Value>,
    password: Option<Value>,
    pool: Option<Value>,
    usage: Option<Value>,
}

impl UserEntry {
    fn into_user(self) -> Option<FixtureUser> {
        let text = |v: Option<Value>| match v? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Some(FixtureUser {
            email: text(self.email)?,
            id: text(self.id),
            password: text(self.password),
            pool: text(self.pool),
            usage: text(self.usage),
        })
    }
}

/// Fixture users (`users.yaml`) and their truths, by email.
#[derive(Debug, Default)]
struct Fixtures {
    users: Vec<FixtureUser>,
    /// Each user's truth, shared by the users of one dataset (one copy per dataset, not per
    /// user).
    truths: HashMap<String, Arc<Value>>,
}

impl Fixtures {
    fn load(dir: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(dir.join("users.yaml")) else {
            return Self::default();
        };
        let file: UsersFile = serde_saphyr::from_str(&text).unwrap_or_default();
        drop(text);
        let mut by_dataset: HashMap<String, Option<Arc<Value>>> = HashMap::new();
        let mut truths = HashMap::new();
        let users: Vec<FixtureUser> = (file.users.into_iter())
            .filter_map(UserEntry::into_user)
            .collect();
        for user in &users {
            let (email, Some(usage)) = (&user.email, &user.usage) else {
                continue;
            };
            let stem = Path::new(usage)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let truth = by_dataset.entry(stem.to_owned()).or_insert_with(|| {
                let text =
                    std::fs::read_to_string(dir.join("expected").join(format!("{stem}.yaml")));
                let truth = text.ok()?;
                serde_saphyr::from_str::<Value>(&truth).ok().map(Arc::new)
            });
            if let Some(truth) = truth {
                truths.insert(email.to_lowercase(), truth.clone());
            }
        }
        Self { users, truths }
    }

    /// Every fixture user as (email, id): what no other user's frame may carry.
    fn identities(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        (self.users.iter()).map(|u| (u.email.as_str(), u.id.as_deref()))
    }

    /// The scenario's users as (email, password): pools are the fixture users of that pool;
    /// a user without a password takes its fixture user's; no users at all is the `vu` pool.
    fn users_of(&self, specs: &[UserSpec]) -> Result<Vec<(String, String)>, RunError> {
        let pool = |name: &str| -> Result<Vec<(String, String)>, RunError> {
            let members: Vec<_> = (self.users.iter())
                .filter(|u| u.pool.as_deref() == Some(name))
                .filter_map(|u| Some((u.email.clone(), u.password.clone()?)))
                .collect();
            if members.is_empty() {
                Err(RunError::NoPoolMember {
                    pool: name.to_owned(),
                })
            } else {
                Ok(members)
            }
        };
        let mut users = Vec::new();
        for spec in specs {
            if let Some(name) = &spec.pool {
                users.extend(pool(name)?);
            } else if let Some(email) = &spec.email {
                let email = interpolate(email);
                let password = match &spec.password {
                    Some(password) => interpolate(password),
                    None => (self.users.iter())
                        .find(|u| u.email.eq_ignore_ascii_case(&email))
                        .and_then(|u| u.password.clone())
                        .ok_or_else(|| RunError::NoPassword {
                            email: email.clone(),
                        })?,
                };
                users.push((email, password));
            }
        }
        if users.is_empty() {
            users = pool("vu")?;
        }
        Ok(users)
    }
}

/// Every dotted key of the fixture truths (`fixtures/expected/*.yaml`), for `near_truth`
/// keys checked before a run. Empty when there are none.
pub fn truth_keys(fixtures_dir: &Path) -> std::collections::BTreeSet<String> {
    fn walk(prefix: &str, value: &Value, keys: &mut std::collections::BTreeSet<String>) {
        if let Value::Object(map) = value {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(&path, inner, keys);
                keys.insert(path);
            }
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    let entries = std::fs::read_dir(fixtures_dir.join("expected"));
    for entry in entries.into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path())
            && let Ok(truth) = serde_saphyr::from_str::<Value>(&text)
        {
            walk("", &truth, &mut keys);
        }
    }
    keys
}

/// `${NAME}` replaced from the environment (unset: left as is; `run` refuses files that
/// name unset variables before it starts, see [`unset_variables`]).
pub(crate) fn interpolate(text: &str) -> String {
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

/// The `${NAME}`s a scenario file names that the environment does not set, each with its
/// line and column (1-based); comment lines are not read.
pub fn unset_variables(source: &str) -> Vec<(String, usize, usize)> {
    let mut unset = Vec::new();
    for (index, line) in source.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut from = 0;
        while let Some(start) = line[from..].find("${").map(|at| from + at) {
            let Some(end) = line[start..].find('}').map(|at| start + at) else {
                break;
            };
            let name = &line[start + 2..end];
            if std::env::var_os(name).is_none() {
                unset.push((
                    name.to_owned(),
                    index + 1,
                    line[..start].chars().count() + 1,
                ));
            }
            from = end + 1;
        }
    }
    unset
}

/// The passwords and tokens a scenario uses, after `${ENV}` interpolation.
fn secrets_of(scenario: &crate::scenario::Scenario) -> Vec<String> {
    use crate::scenario::Step;
    // Passwords written into the file (fixture users' come from the fixtures, not secret).
    let mut secrets: Vec<String> = (scenario.users.iter())
        .filter_map(|u| u.password.as_deref().map(interpolate))
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
    run_scenario_at(file, 0, options).await
}

/// Runs the scenario at `index` in the run's selection under its load (with `--shard`, the
/// index decides which of its virtual users this shard runs).
pub async fn run_scenario_at(
    file: &ScenarioFile,
    index: usize,
    options: &RunOptions,
) -> ScenarioReport {
    if let Some(shard) = options.shard {
        let vus_total = options.vus.unwrap_or(file.scenario.load.vus).max(1);
        if crate::shard::Shard::vus(Some(shard), index, vus_total).is_empty() {
            return ScenarioReport::not_on_shard(file, shard, vus_total);
        }
    }
    let prepared = match Prepared::at(file, index, options).await {
        Ok(prepared) => prepared,
        Err(NotStarted::Skipped(reason)) => return ScenarioReport::skipped(file, reason),
        Err(NotStarted::Unrunnable(class, message)) => return unrunnable(file, class, message),
    };
    let isolation = prepared.isolation().clone();
    let sharded = options
        .shard
        .map(|_| (prepared.local_vus(options), prepared.vus_total(options)));
    let started = Instant::now();
    let cpu_before = crate::metrics::process_cpu_time();
    let outcomes = load::drive(prepared, options).await;
    let cut_short = outcomes.iter().filter(|o| o.cut_short).count() as u64;
    let mut outcomes: Vec<JourneyOutcome> = outcomes.into_iter().filter(|o| !o.cut_short).collect();
    check_seen_runs(&mut outcomes, &isolation);
    let (mut metrics, mut failed) = tally(&outcomes);
    // Cost on the client side: this process's CPU (with `--target bundled` that includes the
    // backend, which runs in-process).
    if let (Some(before), Some(after)) = (cpu_before, crate::metrics::process_cpu_time()) {
        metrics.count(
            "process_cpu_us",
            after.saturating_sub(before).as_micros() as u64,
        );
    }
    if outcomes.is_empty() && cut_short == 0 && options.cutoff.reached().is_none() {
        failed.push(no_journeys());
    }
    let failures_by_class = count_classes(&failed);
    let baseline = (options.baseline.as_deref()).map(|b| b.metrics_for(&file.scenario.name));
    let verdicts = thresholds_of(file, options)
        .iter()
        .map(|t| threshold::evaluate(t, &metrics, baseline))
        .collect();
    ScenarioReport {
        name: file.scenario.name.clone(),
        path: file.path.clone(),
        journeys: outcomes.len() as u64,
        failed,
        failures_by_class,
        metrics,
        verdicts,
        duration: started.elapsed(),
        skipped: None,
        cut_short,
        slowest: (outcomes.iter().filter(|o| o.passed()))
            .max_by_key(|o| o.timings.total)
            .map(JourneyOutcome::timeline),
        shard: sharded.map(|(vus, vus_total)| ScenarioShard {
            vus,
            vus_total,
            ..ledger(&outcomes)
        }),
    }
}

/// A scenario whose load started no journey, as a failed journey.
fn no_journeys() -> FailedJourney {
    FailedJourney {
        email: "-".into(),
        failures: vec![Failure::new(
            FailureClass::NoJourneys,
            "the scenario's load started no journey (check `load`, --iterations and --vus)",
            None,
        )],
        last_frames: Vec::new(),
        close: None,
        timeline: Default::default(),
    }
}

/// How many failures of each class the failed journeys had.
pub(crate) fn count_classes(failed: &[FailedJourney]) -> BTreeMap<String, u64> {
    let mut failures_by_class = BTreeMap::new();
    for failure in failed.iter().flat_map(|f| &f.failures) {
        *failures_by_class
            .entry(failure.class.to_string())
            .or_insert(0) += 1;
    }
    failures_by_class
}

/// The runs of other journeys a journey's frames carried (its [`JourneyOutcome::seen`]):
/// each journey's frames were checked when it ended, against the run ids known then; a run
/// another journey announced only later is found here, so an event routed to the wrong user
/// is a breach whenever its run's owner learnt of it.
fn check_seen_runs(outcomes: &mut [JourneyOutcome], isolation: &crate::verify::Isolation) {
    for outcome in outcomes {
        let own = &outcome.identity.email;
        let mut found = Vec::new();
        for (id, frame) in &outcome.seen {
            for owner in isolation.owners_of(id) {
                let known = (outcome.failures.iter().chain(&found)).any(|f: &Failure| {
                    f.class == FailureClass::IsolationBreach
                        && f.frame == Some(*frame)
                        && f.message.ends_with(&format!(" of {owner}"))
                });
                if !owner.eq_ignore_ascii_case(own) && !known {
                    found.push(Failure::new(
                        FailureClass::IsolationBreach,
                        format!("frame received by {own} carries `{id}` of {owner}"),
                        Some(*frame),
                    ));
                }
            }
        }
        outcome.failures.extend(found);
    }
}

/// The run and thread ids each journey started, and those of other runs its frames carried:
/// what the merge of a sharded run checks across shards (a leaked event carries only its
/// run's ids, which no shard knows in advance).
fn ledger(outcomes: &[JourneyOutcome]) -> ScenarioShard {
    let mut ledger = ScenarioShard::default();
    let mut failed = 0;
    for outcome in outcomes {
        let email = &outcome.identity.email;
        for id in &outcome.identity.runs {
            ledger.runs.insert(id.clone(), email.clone());
        }
        let mut ids: Vec<String> = outcome.seen.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids.dedup();
        let failed_index = (!outcome.passed()).then(|| {
            failed += 1;
            failed - 1
        });
        if !ids.is_empty() {
            ledger.seen.push(SeenRuns {
                email: email.clone(),
                failed: failed_index,
                ids,
            });
        }
    }
    ledger
}

/// The journeys' metrics, and each failed journey with what it last received.
fn tally(outcomes: &[JourneyOutcome]) -> (Metrics, Vec<FailedJourney>) {
    let mut metrics = Metrics::default();
    let mut failed = Vec::new();
    for outcome in outcomes {
        outcome.record(&mut metrics);
        if outcome.passed() {
            continue;
        }
        failed.push(FailedJourney {
            email: outcome.identity.email.clone(),
            failures: outcome.failures.clone(),
            last_frames: outcome.kept_frames.clone(),
            close: outcome.close.clone(),
            timeline: outcome.timeline(),
        });
    }
    (metrics, failed)
}

/// The scenario's thresholds (the stability protocol's defaults when it has none) and the
/// run's own.
fn thresholds_of(file: &ScenarioFile, options: &RunOptions) -> Vec<Threshold> {
    let mut thresholds = if file.thresholds.is_empty() {
        // A scenario that sends no message has no chat to complete, and one that opens no
        // connection meant to succeed has no connection rate.
        use crate::scenario::Step;
        let steps = &file.scenario.steps;
        let sends = (steps.iter()).any(|step| matches!(step, Step::Send(s) if s.content.is_some()));
        let connects = (steps.iter())
            .any(|step| matches!(step, Step::Connect(c) if c.expect_status.is_none()));
        threshold::defaults()
            .into_iter()
            .filter(|t| sends || t.metric != "chat_completion_rate")
            .filter(|t| connects || t.metric != "ws_connect_success_rate")
            .collect()
    } else {
        file.thresholds.clone()
    };
    thresholds.extend(options.thresholds.iter().cloned());
    thresholds
}

/// A scenario that could not start, as one failed journey of `class`: `unreachable` (exit 4)
/// when the target cannot be reached through what the scenario needs, a harness error
/// otherwise.
fn unrunnable(
    file: &ScenarioFile,
    class: FailureClass,
    message: impl std::fmt::Display,
) -> ScenarioReport {
    ScenarioReport {
        name: file.scenario.name.clone(),
        path: file.path.clone(),
        journeys: 1,
        failed: vec![FailedJourney {
            email: "-".into(),
            failures: vec![Failure::new(class.clone(), message.to_string(), None)],
            last_frames: Vec::new(),
            close: None,
            timeline: Default::default(),
        }],
        failures_by_class: BTreeMap::from([(class.to_string(), 1)]),
        metrics: Metrics::default(),
        verdicts: Vec::new(),
        duration: Duration::ZERO,
        skipped: None,
        cut_short: 0,
        slowest: None,
        shard: None,
    }
}

/// The passwords and tokens the scenarios use, to keep out of reports.
pub fn secrets(files: &[ScenarioFile]) -> Vec<String> {
    let mut secrets: Vec<String> = files.iter().flat_map(|f| secrets_of(&f.scenario)).collect();
    secrets.sort();
    secrets.dedup();
    secrets
}

/// Runs every scenario, one after the other; once the run is cut (`--fail-fast`,
/// `--max-duration`) the rest are reported as not run.
pub async fn run(files: &[ScenarioFile], options: &RunOptions) -> RunReport {
    run_reporting(files, options, &mut |_| {}).await
}

/// [`run`], handing each scenario's report to `finished` as soon as it is done (a terminal
/// reporter prints it at once).
pub async fn run_reporting(
    files: &[ScenarioFile],
    options: &RunOptions,
    finished: &mut dyn FnMut(&ScenarioReport),
) -> RunReport {
    let mut report = RunReport {
        secrets: secrets(files),
        seed: Some(options.seed),
        shard: options.shard.map(crate::report::model::RunShard::One),
        ..RunReport::default()
    };
    for (index, file) in files.iter().enumerate() {
        if let Some(cut) = options.cutoff.reached() {
            report.cut = Some(cut);
            let skipped = ScenarioReport::not_run(file, cut);
            finished(&skipped);
            report.scenarios.push(skipped);
            continue;
        }
        let scenario = run_scenario_at(file, index, options).await;
        if !scenario.failed.is_empty() {
            options.cutoff.journey_failed();
        }
        finished(&scenario);
        report.scenarios.push(scenario);
    }
    if report.scenarios.iter().any(|s| s.cut_short > 0) {
        report.cut = report.cut.or(options.cutoff.reached());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_virtual_user_that_panics_is_a_failed_journey_not_nothing() {
        let healthy = tokio::spawn(async { vec![JourneyOutcome::new("a@x.test", "mk-a")] });
        let crashed = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("worker blew up");
            }
            Vec::new()
        });
        let outcomes = load::gather(vec![
            ("a@x.test".into(), "mk-a".into(), healthy),
            ("b@x.test".into(), "mk-b".into(), crashed),
        ])
        .await;
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes[0].passed());
        let classes: Vec<String> = outcomes[1]
            .failures
            .iter()
            .map(|f| f.class.to_string())
            .collect();
        assert_eq!(classes, ["harness_error:worker_crashed"]);
        assert!(outcomes[1].failures[0].message.contains("b@x.test"));
    }

    /// A journey whose frame carried another journey's run before that journey announced
    /// it: it passes when it ends (the run is not known yet), keeps that frame, and fails
    /// at the scenario's end, once; a journey that saw it after the announcement fails
    /// when it ends, and is not blamed twice.
    #[test]
    fn a_run_announced_after_the_journey_that_saw_it_ended_is_still_a_breach() {
        use crate::verify::{Isolation, Transcript};
        let profile = Profile::apex();
        let isolation = Isolation::new([("mk1v0", "a@x.test"), ("mk1v1", "b@x.test")]);
        let leaked = |outcome: &mut JourneyOutcome| {
            let mut transcript = Transcript::default();
            transcript.push(Duration::ZERO, serde_json::json!({ "type": "pong" }));
            transcript.push(
                Duration::from_millis(5),
                serde_json::json!({ "type": "agent_thinking", "run_id": "run-b", "seq": 4 }),
            );
            outcome.transcripts.push(transcript);
        };
        let mut early = JourneyOutcome::new("a@x.test", "mk1v0.0");
        leaked(&mut early);
        early.settle(&profile, &isolation);
        assert!(early.passed(), "{:?}", early.failures);
        assert_eq!(early.seen, [("run-b".to_owned(), 1)]);
        assert_eq!(early.kept_frames.len(), 1, "the frame that carried it");
        assert!(early.transcripts[0].frames.is_empty());
        // The owner announces its run (its `agent_started`), after `early` ended.
        isolation.learn("run-b", "b@x.test");
        let mut owner = JourneyOutcome::new("b@x.test", "mk1v1.0");
        owner.identity.runs.push("run-b".into());
        leaked(&mut owner);
        owner.settle(&profile, &isolation);
        let mut late = JourneyOutcome::new("a@x.test", "mk1v0.1");
        leaked(&mut late);
        late.settle(&profile, &isolation);
        assert_eq!(late.failures.len(), 1, "{:?}", late.failures);
        let mut outcomes = vec![early, owner, late];
        check_seen_runs(&mut outcomes, &isolation);
        for (journey, breaches) in [(0, 1), (1, 0), (2, 1)] {
            let failures = &outcomes[journey].failures;
            assert_eq!(failures.len(), breaches, "{journey}: {failures:?}");
            for failure in failures {
                assert_eq!(failure.class, FailureClass::IsolationBreach);
                assert_eq!(failure.frame, Some(1));
                assert_eq!(
                    failure.message,
                    "frame received by a@x.test carries `run-b` of b@x.test"
                );
            }
        }
        let (_, failed) = tally(&outcomes);
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].last_frames[0].1["run_id"], "run-b");
        assert_eq!(
            failed[1].last_frames.len(),
            2,
            "a failed journey's last frames"
        );
    }

    #[test]
    fn fixture_users_share_their_datasets_truth_and_bring_their_ids() {
        let dir = std::env::temp_dir().join(format!("apex-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("expected")).unwrap();
        std::fs::write(
            dir.join("expected/a.yaml"),
            "total_monthly_cost_usd: 12.5\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("users.yaml"),
            "users:\n  - { id: u-1, email: One@x.test, password: p1, usage: usage/a.jsonl, pool: vu }\n  \
             - { id: 2, email: two@x.test, password: p2, usage: usage/a.jsonl, pool: vu, name: Two }\n  \
             - { email: three@x.test, usage: usage/none.jsonl }\n  - { id: u-4 }\n",
        )
        .unwrap();
        let fixtures = Fixtures::load(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let ids: Vec<_> = fixtures.identities().collect();
        assert_eq!(
            ids,
            [
                ("One@x.test", Some("u-1")),
                ("two@x.test", Some("2")),
                ("three@x.test", None)
            ]
        );
        // One copy of a dataset's truth for all its users; none for a dataset without one.
        let (one, two) = (
            &fixtures.truths["one@x.test"],
            &fixtures.truths["two@x.test"],
        );
        assert!(Arc::ptr_eq(one, two));
        assert_eq!(one["total_monthly_cost_usd"], 12.5);
        assert!(!fixtures.truths.contains_key("three@x.test"));
        let pool = fixtures.users_of(&[]).unwrap();
        assert_eq!(
            pool,
            [
                ("One@x.test".to_owned(), "p1".to_owned()),
                ("two@x.test".to_owned(), "p2".to_owned())
            ]
        );
    }

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
            ..RunReport::default()
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
