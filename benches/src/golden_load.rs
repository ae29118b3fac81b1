//! `golden-load`: runs N golden-path journeys at concurrency C against apex-backend and prints
//! journeys/s, journey latency percentiles and the server's CPU-seconds per 1,000 journeys.
//!
//! A journey is `benches/scenarios/journey.yaml` run by the harness's scenario executor
//! (`apex_harness::runner::Prepared::journey`, what `apex-harness run` runs): HTTP login →
//! WebSocket (bearer header) → `user_message` → the eleven events in order, each within its
//! timeout → the answer checked → every invariant checked → close. Virtual user `i` is the
//! fixtures' `vu` pool member `i % 48`. By default the release `apex-backend` next to this binary is started as a
//! child process (embedded mode, cheapest argon2 parameters so the login hash does not drown
//! the measurement), and its CPU time is read from `/proc/<pid>/stat`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apex_benches::child::{ChildBackend, cpu_seconds};
use apex_harness::client::Target;
use apex_harness::runner::Prepared;
use clap::Parser;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(
    name = "golden-load",
    about = "Golden-path journeys against apex-backend: throughput, latency, server CPU"
)]
struct Args {
    /// Journeys to measure (after the warm-up).
    #[arg(long, default_value_t = 2000)]
    journeys: usize,
    /// Journeys in flight at once.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// Unmeasured journeys first.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// A running server (`http://HOST:PORT`) instead of starting one; no server CPU figure then.
    #[arg(long)]
    target: Option<String>,
    /// The apex-backend binary to start (default: next to this binary).
    #[arg(long)]
    backend_bin: Option<std::path::PathBuf>,
    /// Think time the started backend puts between events.
    #[arg(long, default_value_t = 0)]
    think_time_ms: u64,
}

fn start_backend(args: &Args) -> ChildBackend {
    ChildBackend::start(args.backend_bin.clone(), |command| {
        command
            .args(["--argon2-m-cost", "8", "--argon2-t-cost", "1"])
            .args(["--think-time-ms", &args.think_time_ms.to_string()])
            .args(["--rate-limit-per-sec", "1000"])
            // Its journeys log the fixture users in, on Postgres too.
            .arg("--seed-fixtures")
            // Every journey logs in from 127.0.0.1, up to thousands a second: far beyond the
            // per-client login allowance meant for one real client.
            .args([
                "--login-ip-per-sec",
                "1000000",
                "--login-ip-burst",
                "1000000",
            ])
            // Up to `--concurrency` logins wait for a hashing slot at once: beyond the default
            // queue (64) the surplus got `503 BUSY` and counted as failed journeys at 100.
            .args(["--login-queue", &args.concurrency.max(64).to_string()])
            .env("APEX_JWT_SECRET", "golden-load-secret-0123456789abcdef")
            .env("RUST_LOG", "warn");
    })
}

/// One journey with the harness's full verification. Returns its latency (login to
/// `agent_completed`).
async fn journey(journeys: &Prepared, id: usize) -> Result<Duration, String> {
    let outcome = journeys.journey(id as u32, 0, None).await;
    match (outcome.failures.first(), outcome.timings.agent_completed) {
        (None, Some(latency)) => Ok(latency),
        (Some(failure), _) => Err(format!("{}: {}", failure.class, failure.message)),
        (None, None) => Err("no agent_completed".into()),
    }
}

async fn run(
    journeys: Arc<Prepared>,
    count: usize,
    concurrency: usize,
) -> (Vec<Duration>, Vec<String>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (journeys, next) = (journeys.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return (latencies, failures);
                    }
                    match journey(&journeys, i).await {
                        Ok(latency) => latencies.push(latency),
                        Err(e) => failures.push(e),
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for worker in workers {
        let (l, f) = worker.await.expect("worker does not panic");
        latencies.extend(l);
        failures.extend(f);
    }
    (latencies, failures, started.elapsed())
}

/// The service mode the server reports on `/ready`.
async fn server_mode(base: &str) -> String {
    let Ok(Ok(http)) = Target::parse(base).map(|t| t.http_client()) else {
        return "?".into();
    };
    let Ok(response) = http.get(format!("{base}/ready")).send().await else {
        return "?".into();
    };
    let ready: Value = response.json().await.unwrap_or_default();
    ready["mode"].as_str().unwrap_or("?").to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let backend = args.target.is_none().then(|| start_backend(&args));
    let base: Arc<str> = match (&backend, &args.target) {
        (Some(b), _) => b.base.clone().into(),
        (None, Some(t)) => t.trim_end_matches('/').into(),
        (None, None) => unreachable!(),
    };
    apex_harness::client::install_crypto_provider();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = Target::parse(&base).expect("the backend's URL");
    let journeys = Arc::new(apex_benches::journeys::prepare(&root, &target).await);
    let pid = backend.as_ref().map(|b| b.pid());

    let (_, warm_failures, _) = run(journeys.clone(), args.warmup, args.concurrency).await;
    if let Some(e) = warm_failures.first() {
        eprintln!("warm-up failure: {e}");
    }
    let server_cpu_before = pid.map(cpu_seconds);
    let own_cpu_before = cpu_seconds(std::process::id());
    let (mut latencies, failures, wall) = run(journeys, args.journeys, args.concurrency).await;
    let own_cpu = cpu_seconds(std::process::id()) - own_cpu_before;
    let server_cpu = pid
        .map(cpu_seconds)
        .zip(server_cpu_before)
        .map(|(after, before)| after - before);
    latencies.sort();

    let completed = latencies.len();
    let mode = format!(
        " ({}, mode {})",
        if backend.is_some() {
            "apex-backend child"
        } else {
            "running server"
        },
        server_mode(&base).await
    );
    println!(
        "golden-load: {} journeys at concurrency {} against {base}{mode}",
        args.journeys, args.concurrency
    );
    println!("  completed         {completed}  failed {}", failures.len());
    println!(
        "  journeys/s        {:.0}",
        completed as f64 / wall.as_secs_f64()
    );
    println!(
        "  latency ms        p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
    if let Some(cpu) = server_cpu {
        println!(
            "  server CPU        {cpu:.2} s  ({:.3} s per 1,000 journeys)",
            cpu * 1000.0 / completed.max(1) as f64
        );
    }
    println!(
        "  client CPU        {own_cpu:.2} s  ({:.3} s per 1,000 journeys)",
        own_cpu * 1000.0 / completed.max(1) as f64
    );
    for failure in failures.iter().take(5) {
        println!("  failure: {failure}");
    }
    drop(backend);
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
