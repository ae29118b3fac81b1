//! `canary` and `run --baseline` against real backends: a slower candidate, one with wrong
//! answers and an unreachable one are rolled back by the rule that fits, too few rounds are
//! inconclusive; a baseline report resolves relative thresholds, and a comparison of one pair
//! of runs reports without failing unless `--strict`.

use std::path::PathBuf;

use apex_harness::canary;
use apex_harness::compare::{Change, Tolerance};
use apex_harness::runner::RunOptions;
use apex_harness::scenario::load;

use crate::{run_cli, start_backend, start_backend_with};

fn options(target: apex_harness::client::Target) -> RunOptions {
    RunOptions {
        vus: Some(2),
        iterations: Some(10),
        ..RunOptions::new(
            target,
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
        )
    }
}

fn golden() -> Vec<apex_harness::scenario::ScenarioFile> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/golden_path.yaml");
    vec![load(&path).unwrap()]
}

/// What `canary` judges with by default: 50 % for timing and cost, 1 point for quality.
fn canary_tolerance() -> Tolerance {
    Tolerance {
        relative: canary::TOLERANCE / 100.0,
        ..Tolerance::default()
    }
}

/// The canary's own scenarios: a golden path with content checks and a load without.
fn canary_scenarios() -> Vec<apex_harness::scenario::ScenarioFile> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios/canary");
    ["golden.yaml", "load.yaml"]
        .iter()
        .map(|f| load(&dir.join(f)).unwrap())
        .collect()
}

#[tokio::test]
async fn a_slower_candidate_is_rolled_back_for_its_latency_regression() {
    let (baseline, _b) = start_backend().await;
    // 25 ms between pipeline events: about 250 ms more per journey.
    let (candidate, _c) = start_backend_with(|c| c.think_time_ms = 25).await;
    let mut opts = options(baseline.clone());
    opts.iterations = Some(5);
    let report = canary::run(
        &golden(),
        &opts,
        &baseline,
        &candidate,
        4,
        canary_tolerance(),
    )
    .await;
    let text = canary::text(&report);
    assert!(report.rollback(), "{text}");
    let fired = report.fired();
    assert_eq!(fired, [canary::RULE_REGRESSION], "{text}");
    let delta = |name: &str| {
        (report.comparison.deltas.iter())
            .find(|d| d.name == name)
            .unwrap()
    };
    let median = delta("latency p50");
    assert_eq!(median.verdict, Change::Regressed, "{text}");
    assert_eq!(median.rounds.len(), 4, "{text}");
    // Throughput fell with it, and is shown, but does not decide.
    let throughput = delta("throughput");
    assert!(!throughput.decisive && throughput.change < -0.5, "{text}");
    // Ten journeys a round put p95 on a single journey: shown, worse in every round, but it
    // does not decide.
    let p95 = delta("latency p95");
    assert!(
        !p95.decisive && p95.rounds.iter().all(|c| *c > 0.5),
        "{text}"
    );
    // The pauses are not compute: counted as compute they would multiply it (250 ms of
    // sleep on well under 1 ms of work). CPU itself wobbles by tens of percent between rounds
    // on a busy machine, so the bound is "not doubled", not "unchanged".
    assert!(
        delta("cost per journey (backend CPU)").change < 1.0,
        "{text}"
    );
    assert_eq!(report.baseline.journeys, 40);
    assert_eq!(report.candidate.journeys, 40);
    assert!(
        text.contains("ROLLBACK: regression against the baseline (latency p50 +"),
        "{text}"
    );
}

#[tokio::test]
async fn two_rounds_are_inconclusive_never_a_rollback() {
    let (baseline, _b) = start_backend().await;
    let (candidate, _c) = start_backend_with(|c| c.think_time_ms = 25).await;
    let mut opts = options(baseline.clone());
    opts.iterations = Some(3);
    let report = canary::run(
        &golden(),
        &opts,
        &baseline,
        &candidate,
        2,
        canary_tolerance(),
    )
    .await;
    let text = canary::text(&report);
    assert!(!report.rollback(), "{text}");
    let median = report
        .comparison
        .deltas
        .iter()
        .find(|d| d.name == "latency p50")
        .unwrap();
    assert_eq!(median.verdict, Change::Inconclusive, "{text}");
    assert!(text.contains("INCONCLUSIVE"), "{text}");
    assert!(
        text.contains("PROMOTE: the stability rules held; against the baseline inconclusive"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_answers_in_one_scenario_are_rolled_back_for_quality() {
    let (baseline, _b) = start_backend().await;
    let (candidate, _c) = start_backend_with(|c| {
        c.sabotage = Some(apex_backend::sabotage::Sabotage::CorruptNumbers);
        c.allow_sabotage = true;
    })
    .await;
    let mut opts = options(baseline.clone());
    (opts.vus, opts.iterations) = (None, None);
    let report = canary::run(
        &canary_scenarios(),
        &opts,
        &baseline,
        &candidate,
        3,
        canary_tolerance(),
    )
    .await;
    let text = canary::text(&report);
    // 8 wrong answers a round among 168 journeys: the error rate stays under 5 %, and the
    // load's 160 journeys without content checks do not dilute the golden path's drop.
    assert_eq!(report.fired(), [canary::RULE_QUALITY], "{text}");
    let quality = report
        .comparison
        .regressions()
        .find(|d| d.scenario.as_deref() == Some("Canary golden"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        (quality.base.value, quality.new.value),
        (1.0, 0.0),
        "{text}"
    );
    assert!(
        !report
            .comparison
            .deltas
            .iter()
            .any(|d| d.scenario.as_deref() == Some("Canary load")),
        "{text}"
    );
    assert!(
        text.contains("ROLLBACK: quality drop in a scenario (quality of Canary golden"),
        "{text}"
    );
    assert!(text.contains("100.0 % → 0.0 %"), "{text}");
}

#[tokio::test]
async fn an_identical_candidate_is_promoted() {
    let (baseline, _b) = start_backend().await;
    let (candidate, _c) = start_backend().await;
    let mut opts = options(baseline.clone());
    (opts.vus, opts.iterations) = (None, None);
    let report = canary::run(
        &canary_scenarios(),
        &opts,
        &baseline,
        &candidate,
        4,
        canary_tolerance(),
    )
    .await;
    let text = canary::text(&report);
    assert!(!report.rollback(), "{text}");
    assert!(text.contains("PROMOTE: no rollback rule fired"), "{text}");
}

#[tokio::test]
async fn an_unreachable_candidate_is_rolled_back_for_its_error_rate() {
    let (baseline, _b) = start_backend().await;
    let candidate = apex_harness::client::Target::parse("http://127.0.0.1:9").unwrap();
    let mut opts = options(baseline.clone());
    opts.iterations = Some(2);
    let report = canary::run(
        &golden(),
        &opts,
        &baseline,
        &candidate,
        1,
        canary_tolerance(),
    )
    .await;
    let text = canary::text(&report);
    let fired = report.fired();
    assert!(fired.contains(&canary::RULE_ERROR_RATE), "{text}");
    assert!(fired.contains(&canary::RULE_P99), "{text}");
    assert!(!report.baseline_unusable);
}

#[test]
fn run_with_a_baseline_resolves_relative_thresholds_and_reports_deltas() {
    let dir = std::env::temp_dir().join(format!("apex-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.json");
    let scenario = "../scenarios/golden_path.yaml";
    let (code, _, err) = run_cli(&[
        scenario,
        "--fixtures",
        "../fixtures",
        "--json",
        base.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // Against itself: p(95) within 1000 × the baseline holds; `< baseline * 0` cannot.
    let (code, out, _) = run_cli(&[
        scenario,
        "--fixtures",
        "../fixtures",
        "--baseline",
        base.to_str().unwrap(),
        "--threshold",
        "journey_duration: p(95) < baseline * 1000",
        "--threshold",
        "chat_completion_rate: rate >= baseline",
        "-v",
    ]);
    assert!(out.contains("against the baseline:"), "{out}");
    // Both relative thresholds were resolved from the baseline's numbers and held, and one
    // pair of runs only reports its deltas.
    assert!(
        out.contains("threshold ok   journey_duration: p(95) < baseline * 1000")
            && out.contains("threshold ok   chat_completion_rate: rate >= baseline"),
        "{out}"
    );
    assert_eq!(out.matches("from the baseline)").count(), 2, "{out}");
    assert!(out.contains("note: one pair of runs"), "{out}");
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run_cli(&[
        scenario,
        "--fixtures",
        "../fixtures",
        "--baseline",
        base.to_str().unwrap(),
        "--threshold",
        "journey_duration: p(95) < baseline * 0",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("from the baseline"), "{out}");
    // Without a baseline, a relative threshold cannot pass.
    let (code, out, _) = run_cli(&[
        scenario,
        "--fixtures",
        "../fixtures",
        "--threshold",
        "journey_duration: p(95) < baseline",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("pass --baseline"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `apex-harness ARGS...` through the library; returns the exit code and stdout.
fn harness(args: &[&str]) -> (u8, String) {
    use clap::Parser;
    let mut argv = vec!["apex-harness"];
    argv.extend_from_slice(args);
    let cli = apex_harness::cli::Cli::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = apex_harness::cli::execute(cli, &mut out, &mut err);
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    (code, format!("{out}{err}"))
}

#[test]
fn compare_reports_one_pair_and_fails_only_when_strict() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (healthy, _h) = runtime.block_on(start_backend());
    let (wrong, _w) = runtime.block_on(start_backend_with(|c| {
        c.sabotage = Some(apex_backend::sabotage::Sabotage::CorruptNumbers);
        c.allow_sabotage = true;
    }));
    let dir = std::env::temp_dir().join(format!("apex-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = "../fixtures/scenarios/canary/golden.yaml";
    let report = |target: &apex_harness::client::Target, name: &str| {
        let path = dir.join(name);
        let url = format!("http://{}", target.authority);
        let (code, out) = harness(&[
            "run",
            scenario,
            "--fixtures",
            "../fixtures",
            "--target",
            &url,
            "--json",
            path.to_str().unwrap(),
        ]);
        (code, out, path.to_str().unwrap().to_owned())
    };
    let (code, out, base) = report(&healthy, "base.json");
    assert_eq!(code, 0, "{out}");
    let (_, _, again) = report(&healthy, "again.json");
    let (code, out, bad) = report(&wrong, "wrong.json");
    assert_eq!(code, 1, "{out}");

    // The same build twice: nothing decides, whatever the timings did.
    let (code, out) = harness(&["compare", "--strict", &base, &again]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("note: one pair of runs"), "{out}");
    // Every answer wrong: a quality regression, reported; exit 5 only with --strict.
    let (code, out) = harness(&["compare", &base, &bad]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "REGRESSION: quality of Canary golden (answers passing content checks) −100.0 pp"
        ),
        "{out}"
    );
    let (code, out) = harness(&["compare", "--strict", &base, &bad]);
    assert_eq!(code, apex_harness::exit_codes::REGRESSION, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
