//! The harness against the real bundled backend: a healthy backend must pass its checks, and
//! real failures must come back with the right class.

mod canary;
mod client;
mod double;
mod faults;
mod invariants;
mod journey;
mod monitor;
mod netra;
mod resync;
mod run;
mod sabotage;
mod scenarios;
mod shard;
mod snapshots;
mod tls;
mod verdicts;

use std::path::PathBuf;

use apex_backend::{AppState, Config};
use apex_harness::client::Target;

/// Starts the bundled backend on a free port; it stops when the guard is dropped.
pub async fn start_backend() -> (Target, apex_backend::InProcess) {
    start_backend_with(|_| {}).await
}

/// [`start_backend`] with a configuration change.
pub async fn start_backend_with(
    configure: impl FnOnce(&mut Config),
) -> (Target, apex_backend::InProcess) {
    let mut config = Config::for_tests();
    config.fixtures_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    configure(&mut config);
    let state = AppState::embedded(config).await.unwrap();
    let server = apex_backend::InProcess::serve(state).await.unwrap();
    (Target::parse(&server.base_url()).unwrap(), server)
}

/// Runs `apex-harness run ARGS...` through the library; returns the exit code, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (u8, String, String) {
    use clap::Parser;
    let mut argv = vec!["apex-harness", "run"];
    argv.extend_from_slice(args);
    let cli = apex_harness::cli::Cli::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = apex_harness::cli::execute(cli, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}
