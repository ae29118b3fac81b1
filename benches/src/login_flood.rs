//! `login-flood`: floods `POST /api/auth/login` at concurrency C for a while and reports what
//! the backend did with it: its resident memory during and after, the answer times and
//! statuses of the flood, the `/health` route's latency meanwhile, and how many logins of
//! legitimate users (from another client address) succeeded.
//!
//! The flood mixes wrong passwords for known accounts, logins of unknown emails (each new) and
//! right passwords. By default it comes from one address (127.0.0.1); `--flood-sources K`
//! spreads it over K loopback addresses (127.0.1.1 …), as a distributed flood would, so the
//! per-client limit does not stop it and the hashing bound must. Legitimate users log in from
//! 127.0.0.2 every `--legit-interval-ms`, waiting `Retry-After` when refused, as a well-behaved
//! client does; the health probe runs from 127.0.0.3 on its own thread.
//!
//! The release `apex-backend` next to this binary is started as a child with its default
//! settings (real argon2 cost); `--backend-bin` starts another build (for a before/after),
//! `--backend-arg` passes options to it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apex_benches::child::{ChildBackend, rss_mib};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "login-flood",
    about = "Floods login on a child apex-backend: memory, answer times, health, legitimate logins"
)]
struct Args {
    /// Flood requests in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// How long the flood lasts, in seconds (then the requests in flight are awaited).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Loopback addresses the flood comes from (1: 127.0.0.1 only).
    #[arg(long, default_value_t = 1)]
    flood_sources: u8,
    /// Pause between two logins of one legitimate user, in milliseconds.
    #[arg(long, default_value_t = 500)]
    legit_interval_ms: u64,
    /// How long after the flood the resident memory is read again, in seconds.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
    /// The apex-backend binary to start (default: next to this binary).
    #[arg(long)]
    backend_bin: Option<std::path::PathBuf>,
    /// An option for the backend (repeatable), e.g. `--backend-arg=--login-queue=16`.
    #[arg(long, allow_hyphen_values = true)]
    backend_arg: Vec<String>,
}

const PASSWORD: &str = "correct-horse";
/// Legitimate users: fixture accounts the flood does not touch.
const LEGIT: [&str; 4] = [
    "alice@apex.test",
    "bob@apex.test",
    "carol@apex.test",
    "dave@apex.test",
];

fn start_backend(args: &Args) -> ChildBackend {
    ChildBackend::start(args.backend_bin.clone(), |command| {
        command
            .args(&args.backend_arg)
            .env_remove("APEX_DATABASE_URL")
            .env_remove("APEX_REDIS_URL")
            .env_remove("APEX_REQUIRE_SERVICES")
            .env(
                "APEX_JWT_SECRET",
                "login-flood-bench-secret-0123456789abcdef",
            )
            .env("RUST_LOG", "error");
    })
}

fn client(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} ms",
        percentile(&times, 50.0),
        percentile(&times, 90.0),
        percentile(&times, 99.0),
        times.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    )
}

/// What one answer was: an HTTP status, or 0 when the request failed (refused, reset,
/// timed out).
type Answer = (u16, Duration);

async fn login(http: &reqwest::Client, base: &str, email: &str, password: &str) -> (u16, u64) {
    let sent = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            (status, retry_after)
        }
        Err(_) => (0, 0),
    }
}

/// One flood worker: logins back to back until `stop`.
async fn flood_worker(
    http: reqwest::Client,
    base: Arc<str>,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let account = format!("vu{:02}@apex.test", i % 48 + 1);
        let (email, password) = match i % 4 {
            0 => (account, PASSWORD.to_owned()),
            1 => (account, format!("wrong-{i}")),
            _ => (format!("nobody-{i}@flood.test"), format!("wrong-{i}")),
        };
        let started = Instant::now();
        let (status, _) = login(&http, &base, &email, &password).await;
        answers.push((status, started.elapsed()));
    }
    answers
}

/// One legitimate user: a login every `interval`, honouring `Retry-After`. Returns each
/// login's outcome and, for the successful ones, the time from first try to success.
async fn legit_user(
    http: reqwest::Client,
    base: Arc<str>,
    email: &'static str,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> (usize, usize, Vec<Duration>) {
    let (mut tried, mut refusals) = (0, 0);
    let mut served = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tried += 1;
        let started = Instant::now();
        loop {
            let (status, retry_after) = login(&http, &base, email, PASSWORD).await;
            if status == 200 {
                served.push(started.elapsed());
                break;
            }
            refusals += 1;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(retry_after.max(1))).await;
        }
        tokio::time::sleep(interval).await;
    }
    (tried, refusals, served)
}

/// Probes `/health` every 50 ms on its own thread until `stop`.
fn health_probe(base: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Answer>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let http = client([127, 0, 0, 3].into());
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = match http.get(format!("{base}/health")).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                answers.push((status, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    })
}

/// Samples the child's resident memory every 100 ms until `stop`; returns the largest.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    })
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    apex_harness::client::install_crypto_provider();
    let backend = start_backend(&args);
    let pid = backend.pid();
    let base: Arc<str> = backend.base.clone().into();
    // Let start-up (seeding hashes) finish before the first reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = rss_mib(pid);

    let flood_stop = Arc::new(AtomicBool::new(false));
    let probes_stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(pid, probes_stop.clone());
    let health = health_probe(base.to_string(), probes_stop.clone());
    let sources: Vec<reqwest::Client> = if args.flood_sources <= 1 {
        vec![client([127, 0, 0, 1].into())]
    } else {
        (1..=args.flood_sources)
            .map(|k| client([127, 0, 1, k].into()))
            .collect()
    };
    let legit_http = client([127, 0, 0, 2].into());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let flood: Vec<_> = (0..args.concurrency)
        .map(|w| {
            tokio::spawn(flood_worker(
                sources[w % sources.len()].clone(),
                base.clone(),
                next.clone(),
                flood_stop.clone(),
            ))
        })
        .collect();
    let legit: Vec<_> = LEGIT
        .iter()
        .map(|email| {
            tokio::spawn(legit_user(
                legit_http.clone(),
                base.clone(),
                email,
                Duration::from_millis(args.legit_interval_ms),
                flood_stop.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let rss_flood_end = rss_mib(pid);
    flood_stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for worker in flood {
        answers.extend(worker.await.expect("flood worker"));
    }
    let drained = started.elapsed();
    let (mut tried, mut refusals, mut served) = (0, 0, Vec::new());
    for user in legit {
        let (t, r, s) = user.await.expect("legit user");
        tried += t;
        refusals += r;
        served.extend(s);
    }
    probes_stop.store(true, Ordering::Relaxed);
    let rss_peak = sampler.join().expect("sampler");
    let health = health.join().expect("health probe");
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let rss_after = rss_mib(pid);
    let alive = health_after(&base).await;

    println!(
        "login-flood: {} s at concurrency {} from {} address(es) against {base} (apex-backend child{})",
        args.seconds,
        args.concurrency,
        args.flood_sources.max(1),
        if args.backend_arg.is_empty() {
            String::new()
        } else {
            format!(" {}", args.backend_arg.join(" "))
        }
    );
    println!(
        "  flood answers     {} in {:.1} s: 200 {}  401 {}  429 {}  503 {}  failed {}  other {}",
        answers.len(),
        drained.as_secs_f64(),
        count(&answers, 200),
        count(&answers, 401),
        count(&answers, 429),
        count(&answers, 503),
        count(&answers, 0),
        answers
            .iter()
            .filter(|(s, _)| ![0, 200, 401, 429, 503].contains(s))
            .count()
    );
    println!(
        "  flood answer time {}",
        summary(answers.iter().map(|(_, d)| *d).collect())
    );
    println!(
        "  legitimate        {} of {tried} logins served ({refusals} refusals waited out); time to served {}",
        served.len(),
        summary(served)
    );
    println!(
        "  /health           {} probes, {} not 200; {}",
        health.len(),
        health.iter().filter(|(s, _)| *s != 200).count(),
        summary(health.iter().map(|(_, d)| *d).collect())
    );
    println!(
        "  resident memory   start {rss_start:.0} MiB  peak during {rss_peak:.0} MiB  at flood end \
         {rss_flood_end:.0} MiB  {}s after {rss_after:.0} MiB",
        args.settle_seconds
    );
    println!("  after             /health {alive}");
}

/// The health route's status once the flood is over.
async fn health_after(base: &str) -> String {
    match client([127, 0, 0, 3].into())
        .get(format!("{base}/health"))
        .send()
        .await
    {
        Ok(r) => r.status().to_string(),
        Err(e) => format!("failed: {e}"),
    }
}
