//! The command line: clap types here, turned into plain library calls, so nothing else
//! imports clap.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit_codes;
use crate::scenario::{ScenarioError, ScenarioFile, discover, load};

/// Golden-path verification for WebSocket + AI-agent chat products.
#[derive(Debug, Parser)]
#[command(name = "apex-harness", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios and give a verdict (exit code, summary, reports).
    Run(Box<RunArgs>),
    /// Compare two JSON reports: per-metric deltas with 95 % confidence intervals and the
    /// cost/quality/latency/throughput trade-offs. One pair of runs cannot show the variation
    /// between runs, so this reports; with --strict, exit 5 on a regression beyond tolerance.
    Compare(CompareArgs),
    /// Run the same scenarios against a baseline and a candidate target in paired rounds and
    /// recommend a rollback (exit 6) when a rollback rule fires for the candidate.
    Canary(Box<CanaryArgs>),
    /// Merge the JSON reports of every shard of a sharded run (`run --shard K/N`) into one
    /// run's report: journeys, failures, histograms bucket by bucket, rates and counters
    /// added, thresholds evaluated again on the totals; exit with the merged verdict's code.
    /// Reports of different runs (seed, shard count, scenarios, schema) are refused (exit 2).
    Merge(MergeArgs),
    /// Run scenarios against a target every --every, forever or for --rounds, and serve
    /// Prometheus /metrics, /api/status and a live dashboard on --listen.
    Monitor(Box<MonitorArgs>),
    /// Check scenario files without running them (no network). Exit 2 on any error.
    Validate {
        /// Scenario files or folders (searched for *.yaml / *.yml).
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Fixtures folder: `near_truth` keys must exist in its `expected/*.yaml`.
        #[arg(long, default_value = "fixtures")]
        fixtures: PathBuf,
    },
    /// List scenarios with their tags and step counts.
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Only scenarios with this tag (repeatable: any of them).
        #[arg(long)]
        tag: Vec<String>,
    },
}

/// Tolerances of a comparison.
#[derive(Debug, Clone, clap::Args)]
pub struct ToleranceArgs {
    /// Relative change (percent) of latency, throughput and cost that counts as a regression
    /// or an improvement: the minimum effect (the intervals or the rounds must also agree).
    /// Default 10 for compare and run --baseline; 50 for canary, where it decides a rollback
    /// and two processes of one build differ by up to that much for seconds at a time.
    #[arg(long, value_name = "PERCENT")]
    pub tolerance: Option<f64>,
    /// Change of quality (pass rates) in percentage points that counts.
    #[arg(long, default_value_t = 1.0, value_name = "POINTS")]
    pub quality_tolerance: f64,
}

impl ToleranceArgs {
    /// The tolerances, with `default_percent` when `--tolerance` is not given.
    fn tolerance(&self, default_percent: f64) -> crate::compare::Tolerance {
        crate::compare::Tolerance {
            relative: self.tolerance.unwrap_or(default_percent) / 100.0,
            quality_points: self.quality_tolerance / 100.0,
        }
    }
}

/// Options of `compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The baseline JSON report (`run --json`).
    pub base: PathBuf,
    /// The new JSON report.
    pub new: PathBuf,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// Exit 5 when a metric regressed. Without it the comparison only reports: one pair of
    /// runs cannot tell a regression from a busier machine.
    #[arg(long)]
    pub strict: bool,
    /// Also write the comparison as Markdown here (for a pull-request comment).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// Options of `canary`.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// Scenario files or folders.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// The deployment in service: a URL, or `bundled`.
    #[arg(long)]
    pub baseline: String,
    /// The deployment to judge: a URL, or `bundled`.
    #[arg(long)]
    pub candidate: String,
    /// Paired rounds; each runs every scenario against both targets back to back,
    /// alternating which goes first. Fewer than 3 cannot judge against the baseline.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    #[command(flatten)]
    pub select: Selection,
    /// Write the canary report as Markdown here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// Which scenarios, and how to run them (shared by `run` and `canary`).
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Protocol profile for every scenario: `apex`, `netra` or a profile file; the scenario's
    /// own `fields:` and `target:` still apply over it.
    #[arg(long)]
    pub profile: Option<String>,
    /// A target setting over every scenario's, `KEY=VALUE` (repeatable):
    /// `login.path=/auth/login`, `ticket.field=ticket_id`, `ws.path=/api/v1/websocket`,
    /// `welcome=none`, `message={"type":"chat","message":"{content}"}`, … (docs/scenarios.md).
    #[arg(long = "target-setting", value_name = "KEY=VALUE")]
    pub target_settings: Vec<String>,
    /// Only scenarios with this tag (repeatable: any of them).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only scenarios whose name contains this text.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Virtual users, overriding each scenario's `load.vus`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub vus: Option<u32>,
    /// Journeys per virtual user, overriding `load.iterations`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,
    /// An extra threshold, `metric: expression` (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Also trust the CA certificates in this PEM file for https:// / wss:// targets.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Fixtures folder (users, expected truths).
    #[arg(long, default_value = "fixtures")]
    pub fixtures: PathBuf,
}

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files or folders.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// `bundled` (the reference backend in-process) or a URL: `http(s)://host[:port][/prefix]`
    /// (the prefix goes before every route) or `ws(s)://host[:port]/path` (the WebSocket).
    #[arg(long, default_value = "bundled")]
    pub target: String,
    #[command(flatten)]
    pub select: Selection,
    /// Compare the run with this JSON report (`run --json` of an earlier run): print the
    /// deltas and resolve `baseline * F` thresholds.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// With --baseline: exit 5 when a metric regressed (otherwise the deltas only report).
    #[arg(long)]
    pub strict: bool,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report here (a test case per scenario).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a Markdown report here (for CI step summaries).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write one self-contained HTML page here: the verdict, latency histograms and
    /// percentiles, the waterfall of the slowest and of each failed journey, the failures
    /// with their last frames (readable offline).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Show each scenario's latencies, rates and every threshold, and a table of all of them
    /// (by default: a line per scenario, breached thresholds and failures in full).
    #[arg(short, long)]
    pub verbose: bool,
    /// Stop at the first failed journey: journeys still running are cut short, scenarios
    /// not yet started are not run (the summary says which); exit 1.
    #[arg(long)]
    pub fail_fast: bool,
    /// Bound the whole run (`90s`, `5m`): when it runs out, journeys still waiting fail as
    /// `timeout` with what they waited for, and scenarios not yet started are not run.
    #[arg(long, value_name = "DURATION", value_parser = max_duration)]
    pub max_duration: Option<std::time::Duration>,
    /// Run shard K of N (`2/4`): only this shard's virtual users of every scenario (user g of
    /// the scenario at index s goes to shard ((g + s) mod N) + 1), arrival rates divided to
    /// match; frames are checked against every shard's users. Needs --seed, the same on every
    /// shard; merge the shards' --json reports with `merge`.
    #[arg(long, value_name = "K/N", requires = "seed")]
    pub shard: Option<crate::shard::Shard>,
    /// The seed every journey's marker derives from (default: a random one, printed at the
    /// start and written in the JSON report).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Options of `merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shards' JSON reports (`run --shard K/N --json PATH`), one per shard.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Write the merged JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the merged JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write the merged Markdown report here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write the merged run as one self-contained HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// The report `baseline * F` thresholds are relative to.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Show each scenario's latencies, rates and every threshold.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of `monitor`.
#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// Scenario files or folders.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// `bundled` or a URL, as for `run`.
    #[arg(long, default_value = "bundled")]
    pub target: String,
    #[command(flatten)]
    pub select: Selection,
    /// Time between the starts of two rounds (`30s`, `5m`).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = max_duration)]
    pub every: std::time::Duration,
    /// Stop after this many rounds (default: run until interrupted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: Option<u64>,
    /// Where to serve the dashboard (/), /metrics and /api/status; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Also append each round's results here, one JSON object per scenario and round.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Rounds of history kept in memory for the dashboard's charts.
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_rounds: u64,
}

fn max_duration(text: &str) -> Result<std::time::Duration, ScenarioError> {
    match crate::scenario::parse_duration(text)? {
        d if d.is_zero() => Err(ScenarioError::ZeroDuration),
        d => Ok(d),
    }
}

/// Loads every scenario under `paths`, printing diagnostics; `None` if any failed. With
/// `fixtures`, `near_truth` keys are checked against its truths too.
fn load_all(
    paths: &[PathBuf],
    fixtures: Option<&std::path::Path>,
    err: &mut impl Write,
) -> Option<Vec<ScenarioFile>> {
    let files = match discover(paths) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            let _ = writeln!(err, "error: no scenario files (*.yaml) under {paths:?}");
            return None;
        }
        Err(e) => {
            let _ = writeln!(err, "error: cannot read {paths:?}: {e}");
            return None;
        }
    };
    let mut loaded = Vec::new();
    let mut failed = false;
    let truths = fixtures.map(crate::runner::truth_keys);
    for file in files {
        let checked = load(&file).and_then(|scenario| match &truths {
            Some(keys) => {
                let source = std::fs::read_to_string(&file).unwrap_or_default();
                let unknown = crate::scenario::unknown_truths(&scenario, &source, keys);
                if unknown.is_empty() {
                    Ok(scenario)
                } else {
                    Err(unknown)
                }
            }
            None => Ok(scenario),
        });
        match checked {
            Ok(scenario) => loaded.push(scenario),
            Err(diagnostics) => {
                failed = true;
                for diagnostic in diagnostics {
                    let _ = writeln!(err, "{diagnostic}\n");
                }
            }
        }
    }
    (!failed).then_some(loaded)
}

/// What `run` and `canary` share once the arguments are checked.
struct Prepared {
    scenarios: Vec<ScenarioFile>,
    options: crate::runner::RunOptions,
    runtime: tokio::runtime::Runtime,
}

/// `--target-setting KEY=VALUE`s as target settings: each dotted key becomes a nested map,
/// each value is read as YAML (`false`, `{"type":"chat"}`) or taken as text.
pub fn target_settings(specs: &[String]) -> Result<crate::profile::TargetSettings, ScenarioError> {
    let mut root = serde_json::Map::new();
    for spec in specs {
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| ScenarioError::SettingNotKeyValue { spec: spec.clone() })?;
        let value = serde_saphyr::from_str::<serde_json::Value>(value)
            .ok()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| serde_json::Value::String(value.to_owned()));
        let mut map = &mut root;
        let parts: Vec<&str> = key.trim().split('.').collect();
        for part in &parts[..parts.len() - 1] {
            map = map
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
                .ok_or_else(|| ScenarioError::SettingNotSection {
                    spec: spec.clone(),
                    part: (*part).to_owned(),
                })?;
        }
        map.insert(parts[parts.len() - 1].to_owned(), value);
    }
    serde_json::from_value(serde_json::Value::Object(root)).map_err(ScenarioError::InvalidSettings)
}

/// A `--profile`: a built-in name or a profile file.
fn profile_option(name: &str, err: &mut impl Write) -> Result<crate::profile::Profile, u8> {
    if let Some(profile) = crate::profile::Profile::by_name(name) {
        return Ok(profile);
    }
    crate::scenario::load_profile(std::path::Path::new(name)).map_err(|diagnostics| {
        for diagnostic in diagnostics {
            let _ = writeln!(err, "{diagnostic}\n");
        }
        let _ = writeln!(
            err,
            "error: --profile `{name}`: use apex, netra or a profile file"
        );
        exit_codes::USAGE
    })
}

/// The `${NAME}`s the scenarios name and the environment does not set, as diagnostics.
fn check_variables(files: &[ScenarioFile], err: &mut impl Write) -> Result<(), u8> {
    let mut unset = false;
    for file in files {
        let source = std::fs::read_to_string(&file.path).unwrap_or_default();
        for (name, line, column) in crate::runner::unset_variables(&source) {
            unset = true;
            let text = source.lines().nth(line - 1).unwrap_or_default();
            let _ = writeln!(
                err,
                "error: `${{{name}}}` is not set in the environment\n --> {}:{line}:{column}\n  |\n  | {text}\n  = hint: export {name}=… before the run (secrets stay out of scenario files)\n",
                file.path.display()
            );
        }
    }
    if unset {
        Err(exit_codes::USAGE)
    } else {
        Ok(())
    }
}

/// Loads and filters the scenarios, checks profile and thresholds, builds the runtime.
/// Against the bundled backend, scenarios written for another platform (`bundled: false`)
/// are left out, in one line.
fn prepare(
    paths: &[PathBuf],
    select: &Selection,
    bundled: bool,
    err: &mut impl Write,
) -> Result<Prepared, u8> {
    let scenarios = load_all(paths, Some(&select.fixtures), err).ok_or(exit_codes::USAGE)?;
    let scenarios = for_this_platform(scenarios, bundled, err);
    let selected = selected(scenarios, select, err)?;
    check_variables(&selected, err)?;
    let profile = match select.profile.as_deref() {
        None => None,
        Some(name) => Some(profile_option(name, err)?),
    };
    if let Some(profile) = &profile {
        note_replaced_profiles(&selected, profile, err);
    }
    let target_settings = target_settings(&select.target_settings).map_err(|e| {
        let _ = writeln!(err, "error: {e}");
        exit_codes::USAGE
    })?;
    let thresholds = threshold_options(&select.thresholds, err)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            let _ = writeln!(err, "error: cannot start the async runtime: {e}");
            exit_codes::INFRASTRUCTURE
        })?;
    let options = crate::runner::RunOptions {
        profile,
        target_settings,
        vus: select.vus,
        iterations: select.iterations,
        thresholds,
        progress: true,
        ..crate::runner::RunOptions::new(Default::default(), select.fixtures.clone())
    };
    Ok(Prepared {
        scenarios: selected,
        options,
        runtime,
    })
}

/// Against the bundled backend, the scenarios written for it; the others are named in one
/// note, since they would fail for reasons that are not the backend's.
fn for_this_platform(
    scenarios: Vec<ScenarioFile>,
    bundled: bool,
    err: &mut impl Write,
) -> Vec<ScenarioFile> {
    let (scenarios, elsewhere): (Vec<_>, Vec<_>) = scenarios
        .into_iter()
        .partition(|f| f.scenario.bundled || !bundled);
    if !elsewhere.is_empty() {
        let names: Vec<String> = elsewhere
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        let _ = writeln!(
            err,
            "note: {} scenarios written for another platform are left out against the bundled \
             backend (run them with --target URL): {}",
            elsewhere.len(),
            names.join(", ")
        );
    }
    scenarios
}

/// The scenarios `--tag` and `--scenario` select; none is bad usage.
fn selected(
    scenarios: Vec<ScenarioFile>,
    select: &Selection,
    err: &mut impl Write,
) -> Result<Vec<ScenarioFile>, u8> {
    let selected: Vec<_> = scenarios
        .into_iter()
        .filter(|f| select.tag.is_empty() || f.scenario.tags.iter().any(|t| select.tag.contains(t)))
        .filter(|f| {
            select
                .scenario
                .as_ref()
                .is_none_or(|n| f.scenario.name.contains(n.as_str()))
        })
        .collect();
    if selected.is_empty() {
        let _ = writeln!(
            err,
            "error: no scenario matches the --tag / --scenario filters"
        );
        return Err(exit_codes::USAGE);
    }
    Ok(selected)
}

/// Names the scenarios whose own `profile:` `--profile` replaces, so a surprising result
/// can be traced to it.
fn note_replaced_profiles(
    selected: &[ScenarioFile],
    profile: &crate::profile::Profile,
    err: &mut impl Write,
) {
    for file in selected.iter().filter(|f| f.scenario.profile.is_some()) {
        if file.profile.name != profile.name {
            let _ = writeln!(
                err,
                "note: {}: --profile {} replaces its `profile: {}`; its own `fields:` and \
                 `target:` still apply over it",
                file.path.display(),
                profile.name,
                file.profile.name
            );
        }
    }
}

/// `--threshold`s; the first that does not parse is bad usage, shown with its column.
fn threshold_options(
    specs: &[String],
    err: &mut impl Write,
) -> Result<Vec<crate::threshold::Threshold>, u8> {
    let mut thresholds = Vec::new();
    for spec in specs {
        match crate::threshold::parse_spec(spec) {
            Ok(t) => thresholds.push(t),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "error: --threshold '{spec}': {e} (column {})\n  hint: {}",
                    e.column, e.hint
                );
                return Err(exit_codes::USAGE);
            }
        }
    }
    Ok(thresholds)
}

/// A resolved target: where journeys go, the bundled backend's guard (keep it alive), and
/// its dependency proxies when a scenario puts faults there.
type Resolved = (
    crate::client::Target,
    Option<crate::bundled::Bundled>,
    Option<crate::fault::DependencyProxies>,
);

/// `bundled` (started here, with `instances` instances when its services allow) or a URL;
/// `proxied` puts fault proxies in front of the bundled backend's Redis and Postgres.
async fn resolve_target(
    spec: &str,
    select: &Selection,
    (proxied, instances): (bool, u32),
    err: &mut impl Write,
) -> Result<Resolved, u8> {
    if spec == "bundled" {
        return match crate::bundled::start_instances(&select.fixtures, proxied, instances).await {
            Ok((bundled, proxies)) => {
                let more: Vec<&str> = (bundled.more.iter())
                    .map(|i| i.target.authority.as_str())
                    .collect();
                let _ = writeln!(
                    err,
                    "target: bundled apex-backend on {} (services: {}{}){}",
                    bundled.target.authority,
                    bundled.mode,
                    if proxies.is_some() {
                        ", through fault proxies"
                    } else {
                        ""
                    },
                    if more.is_empty() {
                        String::new()
                    } else {
                        format!(", more instances on {}", more.join(", "))
                    }
                );
                Ok((bundled.target.clone(), Some(bundled), proxies))
            }
            // A harness built without the backend was asked for it: bad usage, not infrastructure.
            Err(e @ crate::bundled::BundledError::NotBuilt) => {
                let _ = writeln!(err, "error: {e}");
                Err(exit_codes::USAGE)
            }
            Err(e) => {
                let _ = writeln!(err, "error: the bundled backend could not start: {e}");
                Err(exit_codes::INFRASTRUCTURE)
            }
        };
    }
    let parsed = crate::client::Target::parse(spec).and_then(|target| match &select.ca_cert {
        Some(pem) => target.trust_ca(pem),
        None => Ok(target),
    });
    parsed.map(|t| (t, None, None)).map_err(|e| {
        let _ = writeln!(err, "error: target `{spec}`: {e}");
        exit_codes::USAGE
    })
}

/// Resolves `spec` into `options` (its target, and the dependency proxies a scenario's faults
/// need); returns the bundled backend's guard, to keep alive for the run.
async fn aim(
    options: &mut crate::runner::RunOptions,
    spec: &str,
    select: &Selection,
    scenarios: &[ScenarioFile],
    err: &mut impl Write,
) -> Result<Option<crate::bundled::Bundled>, u8> {
    let needs = (needs_proxies(scenarios), instances_needed(scenarios));
    let (target, bundled, dependencies) = resolve_target(spec, select, needs, err).await?;
    options.target = target;
    options.dependencies = dependencies;
    options.more_instances = (bundled.as_ref()).map_or_else(Vec::new, |b| b.more.clone());
    Ok(bundled)
}

/// The most bundled instances a scenario asks for (`instances`).
fn instances_needed(scenarios: &[ScenarioFile]) -> u32 {
    (scenarios.iter())
        .map(|f| f.scenario.instances)
        .max()
        .unwrap_or(1)
}

/// Whether a scenario puts faults between the backend and its Redis or Postgres.
fn needs_proxies(scenarios: &[ScenarioFile]) -> bool {
    scenarios.iter().any(|f| {
        f.scenario
            .faults
            .iter()
            .any(|x| x.between != crate::scenario::FaultPlace::Target)
    })
}

fn write_file(path: &Option<PathBuf>, content: &str, err: &mut impl Write) {
    if let Some(path) = path
        && let Err(error) = std::fs::write(path, content)
    {
        let error = crate::report::ReportError::Write {
            path: path.clone(),
            error,
        };
        let _ = writeln!(err, "error: {error}");
    }
}

fn run(args: RunArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let baseline = match baseline_option(args.baseline.as_deref(), err) {
        Ok(baseline) => baseline,
        Err(code) => return code,
    };
    let Prepared {
        scenarios,
        mut options,
        runtime,
    } = match prepare(&args.paths, &args.select, args.target == "bundled", err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    options.baseline = baseline.clone();
    options.seed = args.seed.unwrap_or_else(crate::shard::random_seed);
    options.shard = args.shard;
    let _ = match args.shard {
        Some(shard) => writeln!(err, "seed: {} · shard {shard}", options.seed),
        None => writeln!(err, "seed: {} (--seed {0} repeats it)", options.seed),
    };
    runtime.block_on(async {
        let _bundled = match aim(&mut options, &args.target, &args.select, &scenarios, err).await {
            Ok(bundled) => bundled,
            Err(code) => return code,
        };
        let target = options.target.clone();
        options.cutoff = crate::runner::Cutoff::start(args.max_duration, args.fail_fast);
        let report = run_printing(&scenarios, &options, args.verbose, out).await;
        write_reports(&args, &report, &target.authority, err);
        let mut code = report.exit_code();
        if let Some(baseline) = &baseline
            && against_baseline(&args, baseline, &report, out)
            && code == exit_codes::PASS
        {
            code = exit_codes::REGRESSION;
        }
        let _ = writeln!(out, "exit {code}");
        code
    })
}

/// `--baseline`: the report `baseline * F` thresholds and the comparison read; one that
/// cannot be read is bad usage.
fn baseline_option(
    path: Option<&std::path::Path>,
    err: &mut impl Write,
) -> Result<Option<std::sync::Arc<crate::compare::Baseline>>, u8> {
    let Some(path) = path else {
        return Ok(None);
    };
    match crate::compare::Baseline::load(path) {
        Ok(b) => Ok(Some(std::sync::Arc::new(b))),
        Err(e) => {
            let _ = writeln!(err, "error: --baseline {e}");
            Err(exit_codes::USAGE)
        }
    }
}

/// Runs the scenarios, printing each one's lines as it finishes (flushed, so a piped log
/// shows progress) and the summary's end after the last.
async fn run_printing(
    scenarios: &[ScenarioFile],
    options: &crate::runner::RunOptions,
    verbose: bool,
    out: &mut impl Write,
) -> crate::report::RunReport {
    let secrets = crate::runner::secrets(scenarios);
    let mut finished = |scenario: &crate::report::ScenarioReport| {
        let block = crate::report::scenario_block(scenario, verbose);
        let _ = write!(out, "{}", crate::report::model::redact(&secrets, &block));
        let _ = out.flush();
    };
    let report = crate::runner::run_reporting(scenarios, options, &mut finished).await;
    let end = crate::report::summary_end(&report, verbose);
    let _ = write!(out, "{}", report.redact(&end));
    report
}

/// The `--json`, `--junit`, `--markdown` and `--html` reports asked for, secrets redacted.
fn write_reports(
    args: &RunArgs,
    report: &crate::report::RunReport,
    target: &str,
    err: &mut impl Write,
) {
    let paths = [&args.json, &args.junit, &args.markdown, &args.html];
    write_report_files(paths, report, target, err);
}

/// Each rendering of the report to its path (JSON, JUnit, Markdown, HTML), when given.
fn write_report_files(
    [json, junit, markdown, html]: [&Option<PathBuf>; 4],
    report: &crate::report::RunReport,
    target: &str,
    err: &mut impl Write,
) {
    let reports = [
        (json, format!("{:#}\n", crate::report::json(report, target))),
        (junit, crate::report::junit(report)),
        (markdown, crate::report::markdown(report)),
        (html, crate::report::html(report, target)),
    ];
    for (path, content) in reports {
        write_file(path, &report.redact(&content), err);
    }
}

/// Prints the run compared with `--baseline`; `true` when `--strict` makes a regression
/// fail the run.
fn against_baseline(
    args: &RunArgs,
    baseline: &crate::compare::Baseline,
    report: &crate::report::RunReport,
    out: &mut impl Write,
) -> bool {
    let comparison = crate::compare::compare_reports(
        baseline,
        &crate::compare::Baseline::from_report(report),
        args.tolerance.tolerance(crate::compare::REPORT_TOLERANCE),
    );
    let _ = write!(
        out,
        "\nagainst the baseline:\n{}",
        crate::compare::text(&comparison)
    );
    args.strict && comparison.regressed()
}

fn compare(args: &CompareArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let (base, new) = match (
        crate::compare::Baseline::load(&args.base),
        crate::compare::Baseline::load(&args.new),
    ) {
        (Ok(base), Ok(new)) => (base, new),
        (Err(e), _) | (_, Err(e)) => {
            let _ = writeln!(err, "error: {e}");
            return exit_codes::USAGE;
        }
    };
    let comparison = crate::compare::compare_reports(
        &base,
        &new,
        args.tolerance.tolerance(crate::compare::REPORT_TOLERANCE),
    );
    let _ = write!(out, "{}", crate::compare::text(&comparison));
    write_file(&args.markdown, &crate::compare::markdown(&comparison), err);
    if args.strict && comparison.regressed() {
        exit_codes::REGRESSION
    } else {
        exit_codes::PASS
    }
}

fn merge(args: &MergeArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let baseline = match baseline_option(args.baseline.as_deref(), err) {
        Ok(baseline) => baseline,
        Err(code) => return code,
    };
    let merged = (args.reports.iter())
        .map(|path| crate::merge::read(path))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|reports| crate::merge::merge(&reports, baseline.as_deref()));
    let (report, target) = match merged {
        Ok(merged) => merged,
        Err(e) => {
            let _ = writeln!(err, "error: merge refused: {e}");
            return exit_codes::USAGE;
        }
    };
    let _ = write!(out, "{}", crate::report::summary(&report, args.verbose));
    let paths = [&args.json, &args.junit, &args.markdown, &args.html];
    write_report_files(paths, &report, &target, err);
    let code = report.exit_code();
    let _ = writeln!(out, "exit {code}");
    code
}

fn canary(args: CanaryArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let Prepared {
        scenarios,
        options,
        runtime,
    } = match prepare(
        &args.paths,
        &args.select,
        args.baseline == "bundled" || args.candidate == "bundled",
        err,
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let (baseline, _b, _) =
            match resolve_target(&args.baseline, &args.select, (false, 1), err).await {
                Ok(t) => t,
                Err(code) => return code,
            };
        let (candidate, _c, _) =
            match resolve_target(&args.candidate, &args.select, (false, 1), err).await {
                Ok(t) => t,
                Err(code) => return code,
            };
        let report = crate::canary::run(
            &scenarios,
            &options,
            &baseline,
            &candidate,
            args.rounds,
            args.tolerance.tolerance(crate::canary::TOLERANCE),
        )
        .await;
        let _ = write!(out, "{}", crate::canary::text(&report));
        write_file(&args.markdown, &crate::canary::markdown(&report), err);
        if report.baseline_unusable {
            let _ = writeln!(
                err,
                "error: no journey completed against the baseline target: nothing to compare with"
            );
            return exit_codes::INFRASTRUCTURE;
        }
        if report.rollback() {
            exit_codes::ROLLBACK
        } else {
            exit_codes::PASS
        }
    })
}

fn monitor(args: MonitorArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let Prepared {
        scenarios,
        mut options,
        runtime,
    } = match prepare(&args.paths, &args.select, args.target == "bundled", err) {
        Ok(p) => p,
        Err(code) => return code,
    };
    options.progress = false;
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                let _ = writeln!(err, "error: --listen {}: {e}", args.listen);
                return exit_codes::USAGE;
            }
        };
        let _bundled = match aim(&mut options, &args.target, &args.select, &scenarios, err).await {
            Ok(bundled) => bundled,
            Err(code) => return code,
        };
        let monitor = crate::monitor::MonitorOptions {
            every: args.every,
            rounds: args.rounds,
            history_file: args.history.clone(),
            history_rounds: args.history_rounds as usize,
        };
        let listening = listener
            .local_addr()
            .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
        let _ = writeln!(
            out,
            "monitor: dashboard http://{listening}/ · metrics http://{listening}/metrics · \
             a round every {:?} against {}",
            args.every, options.target.authority
        );
        let _ = out.flush();
        crate::monitor::run(&scenarios, &options, &monitor, listener, out).await
    })
}

/// Runs a command; returns the process exit code.
pub fn execute(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> u8 {
    match cli.command {
        Command::Run(args) => run(*args, out, err),
        Command::Compare(args) => compare(&args, out, err),
        Command::Canary(args) => canary(*args, out, err),
        Command::Merge(args) => merge(&args, out, err),
        Command::Monitor(args) => monitor(*args, out, err),
        Command::Validate { paths, fixtures } => match load_all(&paths, Some(&fixtures), err) {
            Some(scenarios) => {
                for file in &scenarios {
                    let _ = writeln!(
                        out,
                        "ok  {}  ({}, {} steps)",
                        file.path.display(),
                        file.scenario.name,
                        file.scenario.steps.len()
                    );
                }
                exit_codes::PASS
            }
            None => exit_codes::USAGE,
        },
        Command::List { paths, tag } => match load_all(&paths, None, err) {
            Some(scenarios) => {
                for file in scenarios
                    .iter()
                    .filter(|f| tag.is_empty() || f.scenario.tags.iter().any(|t| tag.contains(t)))
                {
                    let _ = writeln!(
                        out,
                        "{}\t[{}]\t{} steps\t{}",
                        file.scenario.name,
                        file.scenario.tags.join(", "),
                        file.scenario.steps.len(),
                        file.path.display()
                    );
                }
                exit_codes::PASS
            }
            None => exit_codes::USAGE,
        },
    }
}
