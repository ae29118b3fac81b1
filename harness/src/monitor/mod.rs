//! `monitor`: the selected scenarios run against a target once per round, forever or for
//! `--rounds`, while `/metrics` (Prometheus), `/api/status` (JSON) and `/` (a live dashboard,
//! one self-contained page) show how the golden path is doing. A round is exactly a `run`
//! of the same scenarios ([`crate::runner::run`]): the same journeys, checks and verdicts.
//!
//! The metric names, the status document and the alert rules that read them are in
//! `docs/monitoring.md`.

pub mod state;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::exit_codes;
use crate::report::RunReport;
use crate::runner::RunOptions;
use crate::scenario::ScenarioFile;
pub use state::MonitorState;

/// The dashboard: HTML, CSS and script in one file, no external resources; it polls
/// `api/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// How the monitor runs, besides what every run takes ([`RunOptions`]).
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Time from one round's start to the next's; a round that takes longer is followed at
    /// once by the next.
    pub every: Duration,
    /// Stop after this many rounds; `None` runs until interrupted.
    pub rounds: Option<u64>,
    /// Also append each round's per-scenario history entries here, one JSON object a line.
    pub history_file: Option<PathBuf>,
    /// Rounds of history the dashboard keeps in memory.
    pub history_rounds: usize,
}

type Shared = Arc<Mutex<MonitorState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, MonitorState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The monitor's HTTP routes over its state.
pub fn app(state: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let text = lock(&state).encode_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn status(State(state): State<Shared>) -> axum::Json<Value> {
    axum::Json(lock(&state).status())
}

/// Runs rounds of `scenarios` against `options.target`, serving on `listener`, until
/// `monitor.rounds` are done or the process is interrupted. Returns the exit code: 0 when
/// every round passed, otherwise the code of the last round that did not.
pub async fn run(
    scenarios: &[ScenarioFile],
    options: &RunOptions,
    monitor: &MonitorOptions,
    listener: TcpListener,
    out: &mut impl Write,
) -> u8 {
    let names: Vec<String> = scenarios.iter().map(|f| f.scenario.name.clone()).collect();
    let state: Shared = Arc::new(Mutex::new(MonitorState::new(
        &options.target.authority,
        &names,
        monitor.every,
        monitor.history_rounds,
    )));
    let server = axum::serve(listener, app(state.clone()));
    let server = tokio::spawn(async move { server.await });
    let mut history = match open_history(monitor.history_file.as_ref()) {
        Ok(file) => file,
        Err(message) => {
            let _ = writeln!(out, "error: {message}");
            server.abort();
            return exit_codes::USAGE;
        }
    };
    let mut ticker = tokio::time::interval(monitor.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut code = exit_codes::PASS;
    let mut round = 0;
    let stop = stopped();
    tokio::pin!(stop);
    while monitor.rounds.is_none_or(|n| round < n) {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
        }
        round += 1;
        let report = crate::runner::run(scenarios, options).await;
        let at = state::unix_now();
        let added = lock(&state).record_round(&report, at);
        if let Some(file) = history.as_mut() {
            for entry in added {
                let _ = writeln!(file, "{entry}");
            }
        }
        let _ = writeln!(out, "{}", round_line(round, &report));
        let _ = out.flush();
        if report.exit_code() != exit_codes::PASS {
            code = report.exit_code();
        }
    }
    server.abort();
    let _ = writeln!(out, "stopped after {round} rounds; exit {code}");
    code
}

/// Ctrl-C, or SIGTERM (a container being stopped): the monitor stops between rounds.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn open_history(path: Option<&PathBuf>) -> Result<Option<std::fs::File>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Some)
        .map_err(|e| format!("--history {}: {e}", path.display()))
}

/// One line per round: each scenario's status, passed journeys out of all, and why it failed.
fn round_line(round: u64, report: &RunReport) -> String {
    let parts: Vec<String> = report
        .scenarios
        .iter()
        .map(|s| {
            let failed = s.failed.len() as u64;
            let word = match state::standing(s) {
                "passing" => "ok",
                "failing" => "FAILING",
                other => other,
            };
            let mut part = format!(
                "{} {word} {}/{}",
                s.name,
                s.journeys.saturating_sub(failed),
                s.journeys
            );
            if let Some(failure) = s.failed.iter().flat_map(|j| &j.failures).next() {
                part.push_str(&format!(" ({})", failure.class));
            }
            part
        })
        .collect();
    report.redact(&format!("round {round}: {}", parts.join("; ")))
}
