//! `canary` and `run --baseline` against real backends: a slower candidate and an
//! unreachable one are rolled back by the rule that fits; a baseline report resolves relative
//! thresholds and flags a regression.

use std::path::PathBuf;

use apex_harness::canary;
use apex_harness::compare::{Change, Tolerance};
use apex_harness::runner::RunOptions;
use apex_harness::scenario::load;

use crate::{run_cli, start_backend, start_backend_with};

fn options(target: apex_harness::client::Target) -> RunOptions {
    RunOptions {
        target,
        profile: None,
        target_settings: Default::default(),
        vus: Some(2),
        iterations: Some(10),
        thresholds: Vec::new(),
        fixtures_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
        progress: false,
        baseline: None,
        dependencies: None,
        cutoff: Default::default(),
    }
}

fn golden() -> Vec<apex_harness::scenario::ScenarioFile> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/golden_path.yaml");
    vec![load(&path).unwrap()]
}

#[tokio::test]
async fn a_slower_candidate_is_rolled_back_for_its_latency_regression() {
    let (baseline, _b) = start_backend().await;
    // 25 ms between pipeline events: about 250 ms more per journey.
    let (candidate, _c) = start_backend_with(|c| c.think_time_ms = 25).await;
    let report = canary::run(
        &golden(),
        &options(baseline.clone()),
        &baseline,
        &candidate,
        2,
        Tolerance::default(),
    )
    .await;
    let text = canary::text(&report);
    assert!(report.rollback(), "{text}");
    let fired = report.fired();
    assert_eq!(fired, ["regression against the baseline"], "{text}");
    let p95 = report
        .comparison
        .deltas
        .iter()
        .find(|d| d.name == "latency p95")
        .unwrap();
    assert_eq!(p95.verdict, Change::Regressed, "{text}");
    assert_eq!(report.baseline.journeys, 40);
    assert_eq!(report.candidate.journeys, 40);
    assert!(
        text.contains("ROLLBACK: regression against the baseline"),
        "{text}"
    );
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
        Tolerance::default(),
    )
    .await;
    let text = canary::text(&report);
    let fired = report.fired();
    assert!(fired.contains(&"error rate > 5 %"), "{text}");
    assert!(fired.contains(&"p99 > 3 s"), "{text}");
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
    ]);
    assert!(out.contains("against the baseline:"), "{out}");
    // Both relative thresholds were resolved from the baseline's numbers and held; the run
    // may still exit 5 if the inline comparison calls a one-journey delta a regression.
    assert!(
        out.contains("threshold ok   journey_duration: p(95) < baseline * 1000")
            && out.contains("threshold ok   chat_completion_rate: rate >= baseline"),
        "{out}"
    );
    assert_eq!(out.matches("from the baseline)").count(), 2, "{out}");
    assert!(code == 0 || code == 5, "{out}");
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
