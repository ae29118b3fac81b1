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

/// Runs a command; returns the process exit code.
pub fn execute(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> u8 {
    match cli.command {
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
