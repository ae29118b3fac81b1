//! Journeys against the bundled backend: concurrent virtual users pass with metrics and the
//! default thresholds; a wrong expectation is reported by class.

use std::time::Duration;

use apex_harness::journey::{JourneySpec, run};
use apex_harness::metrics::Metrics;
use apex_harness::threshold::{defaults, evaluate};
use apex_harness::verify::{FailureClass, check_isolation};

use crate::start_backend;

#[tokio::test]
async fn twenty_virtual_users_pass_and_meet_the_default_thresholds() {
    let (target, _stop) = start_backend().await;
    let http = target.http_client().unwrap();
    let tasks = (1..=20).map(|n| {
        let (http, target) = (http.clone(), target.clone());
        tokio::spawn(async move {
            let spec = JourneySpec::golden(&format!("vu{n:02}@apex.test"), "correct-horse");
            let mut outcomes = Vec::new();
            for i in 0..3 {
                outcomes.push(run(&http, &target, &spec, &format!("mk{n:02}i{i}")).await);
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
    for threshold in defaults() {
        let verdict = evaluate(&threshold, &metrics, None);
        assert!(verdict.passed, "{threshold}: {:?}", verdict.observed);
    }
}

#[tokio::test]
async fn a_missing_or_unexpected_event_is_named() {
    let (target, _stop) = start_backend().await;
    let http = target.http_client().unwrap();
    let mut spec = JourneySpec::golden("bob@apex.test", "correct-horse");
    spec.event_timeout = Duration::from_millis(500);
    // Expect an event the backend never sends, between two it does.
    spec.expected_events.insert(1, "agent_planning".into());
    let outcome = run(&http, &target, &spec, "mk-bob").await;
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

    let mut wrong_password = JourneySpec::golden("bob@apex.test", "nope");
    wrong_password.connect_timeout = Duration::from_secs(2);
    let outcome = run(&http, &target, &wrong_password, "mk-bob2").await;
    assert_eq!(outcome.failures[0].class, FailureClass::AuthRejected);
    let mut metrics = Metrics::default();
    outcome.record(&mut metrics);
    assert_eq!(metrics.rates["chat_completion_rate"].value(), Some(0.0));
    assert_eq!(metrics.counters["failures:auth_rejected"], 1);
}
