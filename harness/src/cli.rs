//! The command line: clap types here, turned into plain library calls, so nothing else
//! imports clap.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit_codes;
use crate::scenario::{ScenarioFile, discover, load};

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
    /// Check scenario files without running them (no network). Exit 2 on any error.
    Validate {
        /// Scenario files or folders (searched for *.yaml / *.yml).
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
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

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files or folders.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// `bundled` (the reference backend in-process) or a URL (`http://host:port`).
    #[arg(long, default_value = "bundled")]
    pub target: String,
    /// Protocol profile for every scenario: `apex` or `netra`.
    #[arg(long)]
    pub profile: Option<String>,
    /// Only scenarios with this tag (repeatable: any of them).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only scenarios whose name contains this text.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Virtual users, overriding each scenario's `load.vus`.
    #[arg(long)]
    pub vus: Option<u32>,
    /// Journeys per virtual user, overriding `load.iterations`.
    #[arg(long)]
    pub iterations: Option<u32>,
    /// An extra threshold, `metric: expression` (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report here (a test case per scenario).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a Markdown report here (for CI step summaries).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also trust the CA certificates in this PEM file for https:// / wss:// targets.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Fixtures folder (users, expected truths).
    #[arg(long, default_value = "fixtures")]
    pub fixtures: PathBuf,
}

/// Loads every scenario under `paths`, printing diagnostics; `None` if any failed.
fn load_all(paths: &[PathBuf], err: &mut impl Write) -> Option<Vec<ScenarioFile>> {
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
    for file in files {
        match load(&file) {
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

fn run(args: RunArgs, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let Some(scenarios) = load_all(&args.paths, err) else {
        return exit_codes::USAGE;
    };
    let selected: Vec<_> = scenarios
        .into_iter()
        .filter(|f| args.tag.is_empty() || f.scenario.tags.iter().any(|t| args.tag.contains(t)))
        .filter(|f| {
            args.scenario
                .as_ref()
                .is_none_or(|n| f.scenario.name.contains(n.as_str()))
        })
        .collect();
    if selected.is_empty() {
        let _ = writeln!(
            err,
            "error: no scenario matches the --tag / --scenario filters"
        );
        return exit_codes::USAGE;
    }
    let profile = match args
        .profile
        .as_deref()
        .map(|p| (p, crate::profile::Profile::by_name(p)))
    {
        None => None,
        Some((_, Some(profile))) => Some(profile),
        Some((name, None)) => {
            let _ = writeln!(err, "error: unknown profile `{name}` (use apex or netra)");
            return exit_codes::USAGE;
        }
    };
    let mut thresholds = Vec::new();
    for spec in &args.thresholds {
        match crate::threshold::parse_spec(spec) {
            Ok(t) => thresholds.push(t),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "error: --threshold '{spec}': {e} (column {})\n  hint: {}",
                    e.column, e.hint
                );
                return exit_codes::USAGE;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the async runtime: {e}");
            return exit_codes::INFRASTRUCTURE;
        }
    };
    runtime.block_on(async {
        let (target, _bundled) = if args.target == "bundled" {
            match crate::bundled::start(&args.fixtures).await {
                Ok(bundled) => {
                    let _ = writeln!(
                        err,
                        "target: bundled apex-backend on {} (services: {})",
                        bundled.target.authority, bundled.mode
                    );
                    (bundled.target.clone(), Some(bundled))
                }
                Err(e) => {
                    let _ = writeln!(err, "error: the bundled backend could not start: {e}");
                    return exit_codes::INFRASTRUCTURE;
                }
            }
        } else {
            let parsed =
                crate::client::Target::parse(&args.target).and_then(|target| match &args.ca_cert {
                    Some(pem) => target.trust_ca(pem),
                    None => Ok(target),
                });
            match parsed {
                Ok(target) => (target, None),
                Err(e) => {
                    let _ = writeln!(err, "error: --target: {e}");
                    return exit_codes::USAGE;
                }
            }
        };
        let options = crate::runner::RunOptions {
            target: target.clone(),
            profile,
            vus: args.vus,
            iterations: args.iterations,
            thresholds,
            fixtures_dir: args.fixtures.clone(),
            progress: true,
        };
        let report = crate::runner::run(&selected, &options).await;
        let _ = write!(out, "{}", report.redact(&crate::report::summary(&report)));
        let reports = [
            (
                &args.json,
                format!("{:#}\n", crate::report::json(&report, &target.authority)),
            ),
            (&args.junit, crate::report::junit(&report)),
            (&args.markdown, crate::report::markdown(&report)),
        ];
        for (path, content) in reports {
            if let Some(path) = path
                && let Err(e) = std::fs::write(path, report.redact(&content))
            {
                let _ = writeln!(err, "error: cannot write {}: {e}", path.display());
            }
        }
        let code = report.exit_code();
        let _ = writeln!(out, "exit {code}");
        code
    })
}

/// Runs a command; returns the process exit code.
pub fn execute(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> u8 {
    match cli.command {
        Command::Run(args) => run(*args, out, err),
        Command::Validate { paths } => match load_all(&paths, err) {
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
        Command::List { paths, tag } => match load_all(&paths, err) {
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
