//! Single journeys through the executor `run` uses ([`Prepared::journey`], also what the
//! benches measure): concurrent virtual users pass with metrics and the default thresholds;
//! a wrong expectation and a wrong password are reported by class.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use apex_harness::metrics::Metrics;
use apex_harness::runner::{Prepared, RunOptions};
use apex_harness::scenario::parse;
use apex_harness::threshold::{defaults, evaluate};
use apex_harness::verify::{FailureClass, check_isolation};

use crate::start_backend;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

async fn prepared(yaml: &str, options: &RunOptions) -> Prepared {
    let file = parse(Path::new("inline.yaml"), yaml).unwrap();
    Prepared::new(&file, options).await.unwrap()
}

const GOLDEN: &str = r#"
name: golden
steps:
  - login: {}
  - connect: { transport: header }
  - send: { content: "Where am I wasting money on LLM calls?" }
  - expect:
      events: [agent_started, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_completed]
  - expect_response: { min_length: 100 }
  - disconnect: {}
"#;

#[tokio::test]
async fn twenty_virtual_users_pass_and_meet_the_default_thresholds() {
    let (target, _stop) = start_backend().await;
    let options = RunOptions::new(target, fixtures());
    let journeys = Arc::new(prepared(GOLDEN, &options).await);
    let tasks = (0..20).map(|vu| {
        let journeys = journeys.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..3 {
                outcomes.push(journeys.journey(vu, i, None).await);
            }
            outcomes
        })
    });
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    let mut metrics = Metrics::default();
    for outcome in &outcomes {
        assert!(
            outcome.passed(),
            "{}: {:#?}",
            outcome.identity.email,
            outcome.failures
        );
        let answer = outcome.answer.as_ref().unwrap();
        assert!(
            answer["final_response"]
                .as_str()
                .unwrap()
                .contains(&outcome.identity.email)
        );
        outcome.record(&mut metrics);
    }
    let pairs: Vec<_> = outcomes
        .iter()
        .flat_map(|o| o.transcripts.iter().map(move |t| (&o.identity, t)))
        .collect();
    assert!(check_isolation(&pairs).iter().all(Vec::is_empty));
    assert_eq!(metrics.counters["journeys_completed"], 60);
    assert_eq!(metrics.rates["content_pass_rate"].value(), Some(1.0));
    for threshold in defaults() {
        let verdict = evaluate(&threshold, &metrics, None);
        assert!(verdict.passed, "{threshold}: {:?}", verdict.observed);
    }
}

#[tokio::test]
async fn a_missing_event_and_a_wrong_password_are_named() {
    let (target, _stop) = start_backend().await;
    let options = RunOptions::new(target, fixtures());
    // An event the backend never sends, between two it does.
    let planning = GOLDEN
        .replace(
            "[agent_started, agent_thinking,",
            "[agent_started, agent_planning, agent_thinking,",
        )
        .replace("name: golden", "name: golden\ntarget: { timeout: 500ms }");
    let outcome = prepared(&planning, &options)
        .await
        .journey(0, 0, None)
        .await;
    let classes: Vec<String> = outcome
        .failures
        .iter()
        .map(|f| f.class.to_string())
        .collect();
    assert_eq!(
        classes,
        ["missing_event:agent_planning"],
        "{:#?}",
        outcome.failures
    );

    let wrong_password = GOLDEN.replace(
        "name: golden",
        "name: golden\nusers: [{ email: bob@apex.test, password: nope }]",
    );
    let outcome = (prepared(&wrong_password, &options).await)
        .journey(0, 0, None)
        .await;
    assert_eq!(outcome.failures[0].class, FailureClass::AuthRejected);
    let mut metrics = Metrics::default();
    outcome.record(&mut metrics);
    assert_eq!(metrics.rates["chat_completion_rate"].value(), Some(0.0));
    assert_eq!(metrics.counters["failures:auth_rejected"], 1);
}
