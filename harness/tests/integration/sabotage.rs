//! The harness's self-test (docs/failure-modes.md): against the bundled backend broken on
//! purpose in each way the platform really broke (`--sabotage`, test only), the harness must
//! fail the run with exit code 1 and the failure class that names what broke; against the
//! healthy backend, 1,000 journeys must pass with no failure at all.

use std::path::PathBuf;

use apex_backend::sabotage::Sabotage;
use apex_harness::exit_codes;
use apex_harness::runner::{RunOptions, RunReport, run};
use apex_harness::scenario::load;

use crate::start_backend_with;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn run_scenario(
    mode: Option<Sabotage>,
    scenario: &str,
    iterations: Option<u32>,
) -> RunReport {
    let (target, _stop) = start_backend_with(|c| {
        c.sabotage = mode;
        c.allow_sabotage = mode.is_some();
        // Beyond the self-test scenario's 2 s timeout for agent_completed.
        c.sabotage_delay_ms = 2500;
        // Runs long enough that users' runs overlap, as in production.
        c.think_time_ms = 3;
    })
    .await;
    let file = load(&workspace().join(scenario)).unwrap();
    let options = RunOptions {
        iterations,
        ..RunOptions::new(target, workspace().join("fixtures"))
    };
    run(&[file], &options).await
}

/// Runs the scenario against the sabotaged backend and checks the verdict names `class`.
async fn caught(mode: Sabotage, scenario: &str, class: &str) {
    let report = run_scenario(Some(mode), scenario, None).await;
    let classes = &report.scenarios[0].failures_by_class;
    assert!(
        classes.contains_key(class),
        "{mode:?}: expected `{class}`, the harness reported {classes:?}"
    );
    assert_eq!(
        report.exit_code(),
        exit_codes::JOURNEY_FAILED,
        "{mode:?}: {classes:?}"
    );
}

const GOLDEN: &str = "fixtures/scenarios/selftest/golden_short.yaml";
/// 24 users at once: what isolation failures need to show.
const ISOLATION: &str = "scenarios/isolation.yaml";

#[tokio::test]
async fn a_dropped_event_is_a_missing_event() {
    caught(Sabotage::DropEvent, GOLDEN, "missing_event:tool_completed").await;
}

#[tokio::test]
async fn swapped_events_are_an_order_violation() {
    caught(Sabotage::SwapEvents, GOLDEN, "order_violation").await;
}

#[tokio::test]
async fn a_duplicated_event_is_a_duplicate() {
    caught(Sabotage::DuplicateEvent, GOLDEN, "duplicate_event").await;
}

#[tokio::test]
async fn an_event_delivered_to_another_user_is_an_isolation_breach() {
    caught(Sabotage::CrossUser, ISOLATION, "isolation_breach").await;
}

#[tokio::test]
async fn one_identity_for_everyone_is_an_isolation_breach() {
    caught(Sabotage::DemoIdentity, ISOLATION, "isolation_breach").await;
}

#[tokio::test]
async fn a_1011_close_mid_run_is_named() {
    caught(Sabotage::Close1011, GOLDEN, "ws_1011").await;
}

#[tokio::test]
async fn a_hang_after_tool_executing_is_a_missing_tool_completed() {
    caught(
        Sabotage::HangAfterToolExecuting,
        GOLDEN,
        "missing_event:tool_completed",
    )
    .await;
}

#[tokio::test]
async fn an_event_later_than_its_timeout_is_a_timeout() {
    caught(Sabotage::DelayEvent, GOLDEN, "timeout").await;
}

#[tokio::test]
async fn corrupted_numbers_are_a_content_mismatch() {
    caught(Sabotage::CorruptNumbers, GOLDEN, "content_mismatch").await;
}

#[tokio::test]
async fn another_users_text_is_an_isolation_breach() {
    caught(Sabotage::LeakText, ISOLATION, "isolation_breach").await;
}

#[tokio::test]
async fn a_skipped_seq_is_a_gap() {
    caught(Sabotage::SkipSeq, GOLDEN, "seq_gap").await;
}

#[tokio::test]
async fn sabotage_is_refused_without_the_test_only_flag() {
    let mut config = apex_backend::Config::for_tests();
    config.fixtures_dir = workspace().join("fixtures");
    config.sabotage = Some(Sabotage::DropEvent);
    let error = apex_backend::AppState::embedded(config).await.unwrap_err();
    assert!(error.to_string().contains("--allow-sabotage"), "{error}");
}

#[tokio::test]
async fn the_healthy_backend_passes_a_thousand_journeys_without_a_failure() {
    // 25 virtual users × 40 iterations of the load smoke scenario.
    let report = run_scenario(None, "scenarios/load_smoke.yaml", Some(40)).await;
    let s = &report.scenarios[0];
    assert_eq!(s.journeys, 1000);
    assert!(s.failed.is_empty(), "{:?}", s.failures_by_class);
    assert_eq!(report.exit_code(), exit_codes::PASS);
}
