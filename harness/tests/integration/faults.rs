//! Faults between the harness and the target: for every toxic, the harness must fail the run
//! with the failure class that names it (or, for a slicer, pass: a correct client reassembles
//! any fragmentation). Against the healthy bundled backend, so the fault is the only cause.

use std::path::Path;

use apex_harness::exit_codes;
use apex_harness::runner::{RunOptions, run};
use apex_harness::scenario::parse;

use crate::start_backend;

/// A one-journey golden path for `alice` with `transport`, short timeouts, and `faults` (YAML).
fn scenario(transport: &str, faults: &str) -> String {
    format!(
        r#"
name: fault self-test
users: [{{ email: alice@apex.test, password: correct-horse }}]
target: {{ timeout: 2s }}
faults:
{faults}
steps:
  - login: {{}}
  - connect: {{ transport: {transport} }}
  - send: {{ content: "Where am I wasting money on LLM calls?" }}
  - expect:
      events: [agent_started, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_completed]
      timeout: 4s
  - expect_response:
      near_truth: [{{ path: result.total_monthly_cost_usd, truth: total_monthly_cost_usd }}]
  - disconnect: {{}}
"#
    )
}

/// Run options for `target`, scenarios' own load, with dependency proxies if given.
fn options(
    target: apex_harness::client::Target,
    dependencies: Option<apex_harness::fault::DependencyProxies>,
) -> RunOptions {
    RunOptions {
        dependencies,
        ..RunOptions::new(
            target,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
        )
    }
}

/// Runs the scenario once against a fresh backend: (exit code, failure classes).
async fn outcome(transport: &str, faults: &str) -> (u8, Vec<String>) {
    let (target, _stop) = start_backend().await;
    let source = scenario(transport, faults);
    let file = parse(Path::new("fault.yaml"), &source).unwrap_or_else(|d| panic!("{d:?}"));
    let report = run(&[file], &options(target, None)).await;
    let classes = report.scenarios[0]
        .failures_by_class
        .keys()
        .cloned()
        .collect();
    (report.exit_code(), classes)
}

/// Asserts the exit code and a failure class (`missing_event:*` matches any missing event).
async fn caught(transport: &str, faults: &str, code: u8, class: &str) {
    let (got_code, classes) = outcome(transport, faults).await;
    let matches = |c: &String| match class.strip_suffix('*') {
        Some(prefix) => c.starts_with(prefix),
        None => c == class,
    };
    assert!(
        classes.iter().any(matches),
        "{faults}: expected `{class}`, got {classes:?}"
    );
    assert_eq!(got_code, code, "{faults}: {classes:?}");
}

#[tokio::test]
async fn a_stripped_authorization_header_is_an_auth_rejection() {
    let faults = "  - { toxic: { strip_header: { name: authorization } }, direction: upstream }";
    caught(
        "header",
        faults,
        exit_codes::JOURNEY_FAILED,
        "auth_rejected",
    )
    .await;
}

#[tokio::test]
async fn latency_beyond_the_timeouts_is_named() {
    let faults = "  - { toxic: { latency: { delay: 3s } }, direction: downstream }";
    caught("header", faults, exit_codes::JOURNEY_FAILED, "timeout").await;
}

#[tokio::test]
async fn a_blackhole_is_a_timeout() {
    let faults = "  - { toxic: { timeout: { after: 0ms } } }";
    caught("header", faults, exit_codes::JOURNEY_FAILED, "timeout").await;
}

#[tokio::test]
async fn a_reset_connection_is_named() {
    let faults = "  - { toxic: { reset_peer: { after: 0ms } } }";
    caught("header", faults, exit_codes::INFRASTRUCTURE, "unreachable").await;
}

#[tokio::test]
async fn a_connection_that_stops_mid_run_loses_the_rest_of_the_events() {
    let faults = "  - { toxic: { close_after_frames: { frames: 4 } }, direction: downstream }";
    caught(
        "header",
        faults,
        exit_codes::JOURNEY_FAILED,
        "connection_lost",
    )
    .await;
}

#[tokio::test]
async fn a_data_limit_cuts_the_run() {
    let faults = "  - { toxic: { limit_data: { bytes: 1500 } }, direction: downstream }";
    caught(
        "ticket",
        faults,
        exit_codes::JOURNEY_FAILED,
        "connection_lost",
    )
    .await;
}

#[tokio::test]
async fn a_starved_bandwidth_makes_events_late_or_missing() {
    // Enough for the login answer within its timeout, far too little for a run's events.
    let faults = "  - { toxic: { bandwidth: { bytes_per_sec: 800 } }, direction: downstream }";
    let (code, classes) = outcome("header", faults).await;
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{classes:?}");
    assert!(
        classes
            .iter()
            .any(|c| c == "timeout" || c.starts_with("missing_event:")),
        "{classes:?}"
    );
}

#[tokio::test]
async fn a_target_that_is_down_is_an_infrastructure_failure() {
    let faults = "  - { toxic: down }";
    caught("header", faults, exit_codes::INFRASTRUCTURE, "unreachable").await;
}

#[tokio::test]
async fn sliced_writes_are_reassembled_and_pass() {
    let faults = "  - { toxic: { slicer: { size: 7, variation: 5, delay: 0ms } } }";
    let (code, classes) = outcome("header", faults).await;
    assert_eq!((code, classes), (exit_codes::PASS, Vec::new()));
}
