//! A scenario prepared once and driven under its load: what every journey shares (profile,
//! users, HTTP client, faults) is set up by [`Prepared::new`], one journey is
//! [`Prepared::journey`], and [`drive`] runs the virtual users. The benches and the bench gate
//! run journeys through [`Prepared::journey`] too, so they measure the code `run` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::steps::{JourneyContext, VuSession, run_journey_with};
use super::{Fixtures, JourneyOutcome, RunError, RunOptions, interpolate};
use crate::client::Target;
use crate::fault::{PlaceError, ScenarioFaults};
use crate::profile::Profile;
use crate::scenario::{FaultPlace, LoginMode, ScenarioFile};
use crate::verify::{Failure, FailureClass, Isolation};

/// Why a scenario did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// It needs what this target does not have (a fault between the backend and its
    /// services): skipped, neither passed nor failed.
    Skipped(String),
    /// It could not start: one failed journey of this class.
    Unrunnable(FailureClass, RunError),
}

/// A scenario ready to run: everything its journeys share.
pub struct Prepared {
    file: ScenarioFile,
    profile: Profile,
    fixtures: Fixtures,
    /// (email, password) of each user; virtual user `vu` is `users[vu % len]`.
    users: Vec<(String, String)>,
    http: reqwest::Client,
    timeout: Duration,
    /// The target as given, and the one journeys through the fault proxy use.
    target: Target,
    proxied_target: Target,
    /// The further bundled instances' targets (1, 2, …) the scenario's `instances` use.
    more_targets: Vec<Target>,
    /// Removed when the last journey is done (this is dropped).
    faults: Option<ScenarioFaults>,
    /// Part of every marker, from the run's seed and the scenario's path: markers differ
    /// between scenarios and runs, and every shard of a run computes the same ones.
    tag: u32,
    /// The scenario's index in the run's selection (for the shard partition).
    index: usize,
    shard: Option<crate::shard::Shard>,
    cutoff: super::Cutoff,
    /// Every user's identities no other user's frame may carry: all virtual users' markers
    /// and emails (every shard's), every fixture user's email and id, and the user and run
    /// ids journeys learn.
    isolation: Arc<Isolation>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("scenario", &self.file.scenario.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Resolves the scenario's profile and users, builds the HTTP client and places the
    /// faults.
    pub async fn new(file: &ScenarioFile, options: &RunOptions) -> Result<Self, NotStarted> {
        Self::at(file, 0, options).await
    }

    /// [`Prepared::new`] for the scenario at `index` in the run's selection, which decides
    /// which of its virtual users a shard runs.
    pub async fn at(
        file: &ScenarioFile,
        index: usize,
        options: &RunOptions,
    ) -> Result<Self, NotStarted> {
        let mut profile = match &options.profile {
            Some(base) => file.profile_over(base.clone()),
            None => file.profile.clone(),
        };
        profile.target = profile
            .target
            .over(&options.target_settings)
            .interpolated(&interpolate);
        let fixtures = Fixtures::load(&options.fixtures_dir);
        let users = fixtures
            .users_of(&file.scenario.users)
            .map_err(|e| NotStarted::Unrunnable(FailureClass::Harness("users".into()), e))?;
        let http = (options.target.http_client())
            .map_err(|e| NotStarted::Unrunnable(FailureClass::Unreachable, e.into()))?;
        let more_targets = instance_targets(file, options)?;
        let (faults, proxied_target) = place_faults(file, options).await?;
        let tag = crate::shard::tag(options.seed, &file.path.to_string_lossy());
        let vus_total = options.vus.unwrap_or(file.scenario.load.vus).max(1);
        let isolation = Arc::new(isolation_of(&users, &fixtures, tag, vus_total));
        Ok(Self {
            timeout: profile.target.timeout.unwrap_or(Duration::from_secs(10)),
            file: file.clone(),
            profile,
            fixtures,
            users,
            http,
            target: options.target.clone(),
            proxied_target,
            more_targets,
            faults,
            tag,
            index,
            shard: options.shard,
            cutoff: options.cutoff.clone(),
            isolation,
        })
    }

    /// The (email, password) virtual user `vu` logs in with.
    pub fn user(&self, vu: u32) -> &(String, String) {
        &self.users[vu as usize % self.users.len()]
    }

    /// The instance virtual user `vu` uses, with several `instances`: the virtual users of one
    /// user spread over them (the first round of users on instance 0, the next on 1, …).
    pub fn instance(&self, vu: u32) -> u32 {
        (vu / self.users.len() as u32) % self.file.scenario.instances.max(1)
    }

    /// The marker of a journey of virtual user `vu` (its global index): unique in the run,
    /// carried in its message, the same on every shard of the run.
    pub fn marker(&self, vu: u32, iteration: u32) -> String {
        format!("{}.{iteration}", self.marker_prefix(vu))
    }

    /// What every marker of virtual user `vu` starts with; the `.` after it ends it as a
    /// token, so the isolation check finds any of its iterations' markers by it alone.
    pub fn marker_prefix(&self, vu: u32) -> String {
        marker_prefix(self.tag, vu)
    }

    /// The virtual users of the scenario (`--vus` or its `load.vus`), all shards together.
    pub fn vus_total(&self, options: &RunOptions) -> u32 {
        options.vus.unwrap_or(self.file.scenario.load.vus).max(1)
    }

    /// The global indices of the virtual users this process runs (all without `--shard`).
    pub fn local_vus(&self, options: &RunOptions) -> Vec<u32> {
        crate::shard::Shard::vus(self.shard, self.index, self.vus_total(options))
    }

    /// The run's isolation check (journeys add the ids they learn to it).
    pub fn isolation(&self) -> &Arc<Isolation> {
        &self.isolation
    }

    /// The profile the journeys read frames with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// One journey of virtual user `vu`, judged on its own connections (isolation across
    /// journeys is checked over all of them, in [`super::run_scenario`]).
    pub async fn journey(
        &self,
        vu: u32,
        iteration: u32,
        session: Option<&mut VuSession>,
    ) -> JourneyOutcome {
        let (email, password) = self.user(vu);
        // A virtual user bypasses the fault proxy when every target fault names other VUs.
        let through_proxy = (self.file.scenario.faults.iter())
            .filter(|f| f.between == FaultPlace::Target)
            .any(|f| f.vus.is_empty() || f.vus.contains(&vu));
        let instance = self.instance(vu) as usize;
        let ctx = JourneyContext {
            http: &self.http,
            target: if instance > 0 {
                &self.more_targets[instance - 1]
            } else if through_proxy {
                &self.proxied_target
            } else {
                &self.target
            },
            profile: &self.profile,
            timeout: self.timeout,
            truth: (self.fixtures.truths.get(&email.to_lowercase())).map(|t| &**t),
            faults: self.faults.as_ref(),
            cutoff: &self.cutoff,
            isolation: Some(&self.isolation),
        };
        let marker = self.marker(vu, iteration);
        run_journey_with(
            &ctx,
            &self.file.scenario.steps,
            email,
            password,
            &marker,
            session,
        )
        .await
    }
}

/// The targets of the bundled instances after the first that the scenario's `instances`
/// ask for; a target without that many is skipped.
fn instance_targets(file: &ScenarioFile, options: &RunOptions) -> Result<Vec<Target>, NotStarted> {
    let wanted = file.scenario.instances.max(1) as usize;
    let have = 1 + options.more_instances.len();
    if wanted > have {
        return Err(NotStarted::Skipped(format!(
            "`instances: {wanted}` needs {wanted} bundled backends on the same Postgres and \
             Redis (--target bundled with APEX_DATABASE_URL and APEX_REDIS_URL set); this \
             target has {have}"
        )));
    }
    Ok((options.more_instances.iter())
        .take(wanted - 1)
        .map(|i| i.target.clone())
        .collect())
}

fn marker_prefix(tag: u32, vu: u32) -> String {
    format!("mk{tag:08x}v{vu}")
}

/// The identities known before the scenario runs, each with its user's email: every
/// virtual user's marker and email on every shard (virtual user `vu` is `users[vu % len]`),
/// and every fixture user's email and id, which the reference backend gives its users. A
/// shard thus catches a leak from a user on another shard by its marker, email or user id.
fn isolation_of(
    users: &[(String, String)],
    fixtures: &Fixtures,
    tag: u32,
    vus_total: u32,
) -> Isolation {
    let markers: Vec<(String, &str)> = (0..vus_total)
        .map(|vu| {
            (
                marker_prefix(tag, vu),
                users[vu as usize % users.len()].0.as_str(),
            )
        })
        .collect();
    let known = (markers.iter().map(|(m, email)| (m.as_str(), *email)))
        .chain(
            users
                .iter()
                .map(|(email, _)| (email.as_str(), email.as_str())),
        )
        .chain(fixtures.identities().flat_map(|(email, id)| {
            [Some(email), id]
                .into_iter()
                .flatten()
                .map(move |n| (n, email))
        }));
    Isolation::new(known)
}

/// The scenario's faults placed, and the target journeys through them use.
async fn place_faults(
    file: &ScenarioFile,
    options: &RunOptions,
) -> Result<(Option<ScenarioFaults>, Target), NotStarted> {
    if file.scenario.faults.is_empty() {
        return Ok((None, options.target.clone()));
    }
    // Each instance's dependency proxies, instance 0 first.
    let dependencies: Vec<Option<&crate::fault::DependencyProxies>> =
        std::iter::once(options.dependencies.as_ref())
            .chain(
                options
                    .more_instances
                    .iter()
                    .map(|i| i.dependencies.as_ref()),
            )
            .collect();
    match ScenarioFaults::start(&file.scenario.faults, &options.target, &dependencies).await {
        Ok((faults, target)) => Ok((Some(faults), target)),
        Err(PlaceError::NeedsServices(reason)) => Err(NotStarted::Skipped(reason)),
        Err(PlaceError::Failed(e)) => Err(NotStarted::Unrunnable(
            FailureClass::Unreachable,
            RunError::Faults(e),
        )),
    }
}

/// How many journeys each virtual user runs, and until when.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Virtual users of the scenario, all shards together (the ramp-up spreads them).
    vus: u32,
    per_vu: u32,
    until: Option<Instant>,
    /// Time between journey starts across this process's users (`arrival_rate` times this
    /// shard's share of the virtual users).
    pace: Option<Duration>,
    ramp_up: Duration,
    /// Journeys in all, when known (for the progress bar).
    total: Option<u64>,
}

impl Schedule {
    /// The schedule of a process that runs `local` of the scenario's virtual users.
    fn of(file: &ScenarioFile, options: &RunOptions, local: u32) -> Self {
        let load = &file.scenario.load;
        let vus = options.vus.unwrap_or(load.vus).max(1);
        let iterations = options.iterations.or(load.iterations);
        let until = match (iterations, load.duration) {
            (None, Some(duration)) => Some(Instant::now() + duration),
            _ => None,
        };
        let share = f64::from(local) / f64::from(vus);
        Self {
            vus,
            per_vu: iterations.unwrap_or(if until.is_some() { u32::MAX } else { 1 }),
            until,
            pace: (load.arrival_rate.map(|r| r * share).filter(|r| *r > 0.0))
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            ramp_up: load.ramp_up.unwrap_or_default(),
            total: match (iterations, until) {
                (Some(n), _) => Some(u64::from(n) * u64::from(local)),
                (None, Some(_)) => None,
                (None, None) => Some(u64::from(local)),
            },
        }
    }
}

/// A progress bar on stderr when asked for (it draws only on a terminal, so CI logs stay
/// clean), hidden otherwise.
fn progress_bar(name: &str, total: Option<u64>, shown: bool) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(name.to_owned());
    bar
}

/// Runs the virtual users of a prepared scenario under its load; every journey's outcome,
/// those cut short by `--fail-fast` included.
pub async fn drive(prepared: Prepared, options: &RunOptions) -> Vec<JourneyOutcome> {
    let local = prepared.local_vus(options);
    let schedule = Schedule::of(&prepared.file, options, local.len() as u32);
    let prepared = Arc::new(prepared);
    let bar = progress_bar(
        &prepared.file.scenario.name,
        schedule.total,
        options.progress,
    );
    let ticker = Arc::new(tokio::sync::Mutex::new(
        schedule.pace.map(tokio::time::interval),
    ));
    let failed_so_far = Arc::new(AtomicU64::new(0));
    let once_per_vu = prepared.file.scenario.load.login == LoginMode::OncePerVu;
    let tasks = local.into_iter().map(|vu| {
        let (prepared, ticker, bar, failed_so_far) = (
            prepared.clone(),
            ticker.clone(),
            bar.clone(),
            failed_so_far.clone(),
        );
        let delay = schedule
            .ramp_up
            .mul_f64(f64::from(vu) / f64::from(schedule.vus));
        let email = prepared.user(vu).0.clone();
        let marker = prepared.marker(vu, 0);
        let task = tokio::spawn(async move {
            let cutoff = &prepared.cutoff;
            let mut session = once_per_vu.then(VuSession::default);
            let mut outcomes = Vec::new();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = cutoff.wait() => return outcomes,
            }
            for iteration in 0..schedule.per_vu {
                if schedule.until.is_some_and(|u| Instant::now() >= u) || cutoff.reached().is_some()
                {
                    break;
                }
                if let Some(interval) = ticker.lock().await.as_mut() {
                    tokio::select! {
                        _ = interval.tick() => {}
                        _ = cutoff.wait() => break,
                    }
                }
                let mut outcome = prepared.journey(vu, iteration, session.as_mut()).await;
                outcome.settle(&prepared.profile, &prepared.isolation);
                if !outcome.passed() && !outcome.cut_short {
                    cutoff.journey_failed();
                    let failed = failed_so_far.fetch_add(1, Ordering::Relaxed) + 1;
                    bar.set_message(format!("{failed} failed"));
                }
                bar.inc(1);
                outcomes.push(outcome);
            }
            outcomes
        });
        (email, marker, task)
    });
    let outcomes = gather(tasks.collect()).await;
    bar.finish_and_clear();
    outcomes
}

/// Every virtual user's journeys. A virtual user whose task panicked (or was cancelled)
/// lost its journeys: it counts as one failed journey, `harness_error:worker_crashed`, never
/// as nothing.
pub(super) async fn gather(
    tasks: Vec<(String, String, tokio::task::JoinHandle<Vec<JourneyOutcome>>)>,
) -> Vec<JourneyOutcome> {
    let mut outcomes = Vec::new();
    for (email, marker, task) in tasks {
        match task.await {
            Ok(journeys) => outcomes.extend(journeys),
            Err(e) => {
                let mut crashed = JourneyOutcome::new(&email, &marker);
                crashed.failures.push(Failure::new(
                    FailureClass::Harness("worker_crashed".into()),
                    format!("the virtual user of {email} crashed and its journeys were lost: {e}"),
                    None,
                ));
                outcomes.push(crashed);
            }
        }
    }
    outcomes
}
