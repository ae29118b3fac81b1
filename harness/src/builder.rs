//! The runner from Rust tests: a small builder over scenario files and run options.
//!
//! ```no_run
//! # async fn example() -> Result<(), apex_harness::runner::RunError> {
//! let report = apex_harness::builder::Harness::bundled()
//!     .scenario("scenarios/golden_path.yaml")?
//!     .vus(5)
//!     .iterations(2)
//!     .threshold("journey_duration: p(99) < 500")?
//!     .run()
//!     .await?;
//! assert_eq!(report.exit_code(), apex_harness::exit_codes::PASS);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use crate::client::Target;
use crate::profile::Profile;
use crate::report::RunReport;
use crate::runner::{RunError, RunOptions};
use crate::scenario::{ScenarioError, ScenarioFile, load};
use crate::threshold::parse_spec;

/// Where the journeys go.
#[derive(Debug, Clone)]
enum Destination {
    Bundled,
    Url(Target),
}

/// Collects scenarios and options, then runs them.
#[derive(Debug, Clone)]
pub struct Harness {
    destination: Destination,
    files: Vec<ScenarioFile>,
    options: RunOptions,
}

impl Harness {
    fn new(destination: Destination) -> Self {
        let fixtures_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        Self {
            destination,
            files: Vec::new(),
            options: RunOptions::new(Target::default(), fixtures_dir),
        }
    }

    /// Against the reference backend started in-process for the run.
    pub fn bundled() -> Self {
        Self::new(Destination::Bundled)
    }

    /// Against a running server (`http://host:port`).
    pub fn against(url: &str) -> Result<Self, RunError> {
        Ok(Self::new(Destination::Url(Target::parse(url)?)))
    }

    /// Adds a scenario file; its diagnostics, rendered, on error.
    pub fn scenario(mut self, path: impl AsRef<Path>) -> Result<Self, RunError> {
        let file = load(path.as_ref()).map_err(ScenarioError::Invalid)?;
        self.files.push(file);
        Ok(self)
    }

    pub fn vus(mut self, vus: u32) -> Self {
        self.options.vus = Some(vus);
        self
    }

    pub fn iterations(mut self, iterations: u32) -> Self {
        self.options.iterations = Some(iterations);
        self
    }

    pub fn profile(mut self, profile: Profile) -> Self {
        self.options.profile = Some(profile);
        self
    }

    /// Adds a threshold, `metric: expression`.
    pub fn threshold(mut self, spec: &str) -> Result<Self, RunError> {
        self.options.thresholds.push(parse_spec(spec)?);
        Ok(self)
    }

    /// Where `users.yaml` and `expected/` live (default: the workspace's `fixtures/`).
    pub fn fixtures(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.fixtures_dir = dir.into();
        self
    }

    /// Runs every scenario; an error only when the bundled backend cannot start.
    pub async fn run(mut self) -> Result<RunReport, RunError> {
        let _bundled = match &self.destination {
            Destination::Bundled => {
                let bundled = crate::bundled::start(&self.options.fixtures_dir)
                    .await
                    .map_err(RunError::Bundled)?;
                self.options.target = bundled.target.clone();
                Some(bundled)
            }
            Destination::Url(target) => {
                self.options.target = target.clone();
                None
            }
        };
        Ok(crate::runner::run(&self.files, &self.options).await)
    }
}
