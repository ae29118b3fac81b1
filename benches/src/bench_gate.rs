//! `bench-gate`: the performance gate CI runs, built to survive a noisy, shared two-core
//! machine.
//!
//! - `bench-gate ir`: instruction counts (valgrind's callgrind) of the CPU workloads in
//!   [`apex_benches::workloads`] and of whole verified journeys against the embedded backend
//!   (harness and backend on one thread, so both are counted), compared with
//!   `benches/baselines/ir.json`. Counts repeat within 0.1 % whatever else the machine does
//!   and wherever the checkout lives, so the limit is tight (default 3 %): this is the half
//!   that catches a 10 % slowdown, of a hot path or of the journey's own work. A workload
//!   without a baseline fails; so does a run on another rustc than the baseline's (counts
//!   differ between compilers: refresh the baseline in the commit that changes the toolchain).
//! - `bench-gate journey`: golden-journey wall-clock latency against the embedded backend as
//!   a ratio to the same journey against the minimal server, measured interleaved in the same
//!   run, so the machine's speed cancels out; compared with `benches/baselines/journey.json`.
//!   The ratio drifts with the host and its neighbours (1.70, then 1.96 to 2.24 hours later,
//!   then 1.70 to 1.80, for the same code: CPU against loopback costs move), so this half is
//!   a tripwire: default
//!   limit 50 %, measured once more before it fails. It catches what instruction counts
//!   cannot see: waiting (a sleep, a lock held across I/O, a lost wake-up) that doubles the
//!   journey.
//! - `--update` rewrites the baseline instead (the one documented refresh command:
//!   `ci/bench-gate.sh --update`). `--slowdown PCT` injects a deliberate slowdown (PCT % more
//!   work per measured call, or a pause of PCT % of a journey), to prove the gate fails.
//!
//! Exit codes: 0 within limits, 1 regression or missing baseline, 2 usage or setup error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apex_benches::{journeys, workloads};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "bench-gate",
    about = "Instruction-count and journey-ratio performance gate"
)]
struct Args {
    #[command(subcommand)]
    command: Gate,
}

#[derive(Debug, Subcommand)]
enum Gate {
    /// Instruction counts of the CPU workloads under callgrind.
    Ir {
        /// Rewrite benches/baselines/ir.json instead of comparing.
        #[arg(long)]
        update: bool,
        /// Allowed growth in percent.
        #[arg(long, default_value_t = 3.0)]
        limit: f64,
        /// Deliberate slowdown: this many percent more iterations in the measured loop.
        #[arg(long, default_value_t = 0)]
        slowdown: u32,
    },
    /// Journey latency of the embedded backend as a ratio to the minimal server.
    Journey {
        #[arg(long)]
        update: bool,
        /// Allowed growth in percent: a tripwire, as the ratio itself drifts by up to a third
        /// with the host.
        #[arg(long, default_value_t = 50.0)]
        limit: f64,
        /// Rounds; each measures both targets, alternating which goes first.
        #[arg(long, default_value_t = 11)]
        rounds: usize,
        /// Journeys per target per round.
        #[arg(long, default_value_t = 60)]
        journeys: usize,
        /// Deliberate slowdown: a pause of this many percent of the backend's journey time.
        #[arg(long, default_value_t = 0)]
        slowdown: u32,
    },
    /// (Internal) runs one workload's measured loop; what `ir` runs under valgrind.
    Probe {
        name: String,
        #[arg(long, default_value_t = 0)]
        slowdown: u32,
    },
}

/// Iterations of the measured loop.
const ITERATIONS: u32 = 100;

/// The end-to-end workload: whole verified golden journeys (login, upgrade, message, the
/// eleven events, the answer's checks) against the embedded backend, counted like the others.
const JOURNEY: &str = "journey";
/// Journeys in its measured loop (under callgrind a journey takes about 0.1 s).
const JOURNEY_ITERATIONS: u32 = 20;

/// Every workload `ir` counts.
fn counted() -> impl Iterator<Item = &'static str> {
    workloads::NAMES.into_iter().chain([JOURNEY])
}

fn baselines() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baselines")
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The measured loop: callgrind collects only inside this function (`--toggle-collect`).
#[inline(never)]
fn measure_loop(iterations: u32, mut once: impl FnMut() -> u64) -> u64 {
    let mut sink = 0u64;
    for _ in 0..iterations {
        sink = sink.wrapping_add(once());
    }
    sink
}

fn probe(name: &str, slowdown: u32) -> u8 {
    let scaled = |iterations: u32| iterations * (100 + slowdown) / 100;
    let sink = if name == JOURNEY {
        // Run from the workspace root (see `instructions`).
        let mut journeys = journeys::SameThreadJourneys::start(Path::new("."));
        // Warm up: the first journeys fill connection pools and lazily built tables.
        for _ in 0..3 {
            journeys.run();
        }
        measure_loop(scaled(JOURNEY_ITERATIONS), || journeys.run())
    } else if workloads::NAMES.contains(&name) {
        let inputs = workloads::inputs();
        measure_loop(scaled(ITERATIONS), || {
            workloads::run(name, &inputs).expect("known workload")
        })
    } else {
        eprintln!(
            "unknown workload {name}; known: {:?}",
            counted().collect::<Vec<_>>()
        );
        return 2;
    };
    println!("{sink}");
    0
}

/// Runs `probe NAME` under callgrind; the instructions executed inside the measured loop.
///
/// The probe process is the same wherever the checkout lives: no environment, started from
/// the workspace root with the executable and the fixtures named relative to it. Paths and
/// environment sizes shift the stack and the allocator's first moves, and that shows in the
/// counts (a clone with a longer path measured `event_codec` 3 % higher when the scenario was
/// still read by an absolute path).
fn instructions(name: &str, slowdown: u32) -> Result<u64, String> {
    let out = std::env::temp_dir().join(format!("apex-ir-{}-{name}.out", std::process::id()));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let program = exe.strip_prefix(&root).map_or(exe.clone(), Path::to_owned);
    let valgrind = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("valgrind"))
        .find(|p| p.is_file())
        .ok_or("valgrind is not on PATH (apt-get install valgrind)")?;
    let status = Command::new(valgrind)
        .env_clear()
        .current_dir(&root)
        .args([
            "--tool=callgrind",
            "--toggle-collect=*measure_loop*",
            &format!("--callgrind-out-file={}", out.display()),
        ])
        .arg(&program)
        .args(["probe", name, "--slowdown", &slowdown.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if !status.status.success() {
        return Err(format!(
            "valgrind probe {name} failed: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .filter(|ir| *ir > 0)
        .ok_or_else(|| format!("no instruction count for {name}: did --toggle-collect match?"))
}

fn read_baseline(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|_| {
        format!(
            "no baseline {}: create it with `ci/bench-gate.sh --update` and commit it",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_baseline(path: &Path, value: &Value) -> u8 {
    match std::fs::write(path, format!("{value:#}\n")) {
        Ok(()) => {
            println!("wrote {}", path.display());
            0
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            2
        }
    }
}

fn ir(update: bool, limit: f64, slowdown: u32) -> u8 {
    let path = baselines().join("ir.json");
    let rustc = rustc_version();
    let mut counts = serde_json::Map::new();
    for name in counted() {
        match instructions(name, slowdown) {
            Ok(n) => {
                counts.insert(name.to_owned(), json!(n));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    }
    if update {
        let value = json!({
            "rustc": rustc,
            "iterations": ITERATIONS,
            "journey_iterations": JOURNEY_ITERATIONS,
            "instructions": counts,
        });
        return write_baseline(&path, &value);
    }
    let baseline = match read_baseline(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("FAIL: {e}");
            return 1;
        }
    };
    if baseline["rustc"] != rustc.as_str() {
        eprintln!(
            "FAIL: the baseline was recorded with `{}`, this is `{rustc}`: instruction counts differ \
             between compilers; refresh it with `ci/bench-gate.sh --update` in the toolchain change",
            baseline["rustc"].as_str().unwrap_or("?")
        );
        return 1;
    }
    let mut failed = false;
    println!(
        "{:<20} {:>14} {:>14} {:>9}  (limit +{limit}%)",
        "workload", "baseline Ir", "Ir", "change"
    );
    for (name, n) in &counts {
        let now = n.as_u64().unwrap_or(0);
        let Some(base) = baseline["instructions"][name].as_u64() else {
            println!(
                "{name:<20} {:>14} {now:>14}  FAIL: no baseline for this workload",
                "-"
            );
            failed = true;
            continue;
        };
        let change = (now as f64 / base as f64 - 1.0) * 100.0;
        let verdict = if change > limit {
            failed = true;
            "FAIL: regressed"
        } else if change < -limit {
            "improved (refresh the baseline to keep the gain)"
        } else {
            "ok"
        };
        println!("{name:<20} {base:>14} {now:>14} {change:>+8.2}%  {verdict}");
    }
    u8::from(failed)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn journey_ratio(rounds: usize, per_round: usize, slowdown: u32) -> (f64, Vec<f64>) {
    apex_harness::client::install_crypto_provider();
    let backend = journeys::embedded_backend().await;
    let minimal = journeys::minimal().await;
    let mut id = 0;
    let mut measure = async |target: &journeys::InProcess, pause: f64| {
        let mut times = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            id += 1;
            let latency = target.journey(id).await;
            let extra = Duration::from_secs_f64(latency.as_secs_f64() * pause);
            tokio::time::sleep(extra).await;
            times.push((latency + extra).as_secs_f64());
        }
        median(&mut times)
    };
    // Warm both up (connections, allocations, the backend's caches).
    measure(&backend, 0.0).await;
    measure(&minimal, 0.0).await;
    let pause = f64::from(slowdown) / 100.0;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (b, m) = if round % 2 == 0 {
            let b = measure(&backend, pause).await;
            (b, measure(&minimal, 0.0).await)
        } else {
            let m = measure(&minimal, 0.0).await;
            (measure(&backend, pause).await, m)
        };
        ratios.push(b / m);
    }
    let mut sorted = ratios.clone();
    (median(&mut sorted), ratios)
}

fn journey(update: bool, limit: f64, rounds: usize, per_round: usize, slowdown: u32) -> u8 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let measure = || {
        let (ratio, ratios) = runtime.block_on(journey_ratio(rounds, per_round, slowdown));
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "journey ratio (embedded backend / minimal server, median of rounds): {ratio:.3}  rounds: [{}]",
            shown.join(", ")
        );
        ratio
    };
    let mut ratio = measure();
    let path = baselines().join("journey.json");
    if update {
        return write_baseline(
            &path,
            &json!({ "ratio": ratio, "rounds": rounds, "journeys_per_round": per_round }),
        );
    }
    let baseline = match read_baseline(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("FAIL: {e}");
            return 1;
        }
    };
    let Some(base) = baseline["ratio"].as_f64() else {
        eprintln!("FAIL: {} has no `ratio`", path.display());
        return 1;
    };
    let change = |ratio: f64| (ratio / base - 1.0) * 100.0;
    if change(ratio) > limit {
        println!(
            "journey ratio {ratio:.3} is {:+.1}% against the baseline {base:.3}; measuring once more",
            change(ratio)
        );
        ratio = ratio.min(measure());
    }
    let verdict = if change(ratio) > limit { "FAIL" } else { "ok" };
    println!(
        "{verdict}: journey ratio {ratio:.3} is {:+.1}% against the baseline {base:.3} (limit +{limit}%)",
        change(ratio)
    );
    u8::from(verdict == "FAIL")
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let code = match args.command {
        Gate::Ir {
            update,
            limit,
            slowdown,
        } => ir(update, limit, slowdown),
        Gate::Journey {
            update,
            limit,
            rounds,
            journeys,
            slowdown,
        } => journey(update, limit, rounds, journeys, slowdown),
        Gate::Probe { name, slowdown } => probe(&name, slowdown),
    };
    std::process::ExitCode::from(code)
}
