//! Real journeys of concurrent users against the bundled backend, checked by the harness's
//! invariants: no false alarms on a healthy backend, and a real leak is caught.

use std::time::Duration;

use apex_harness::client::{Target, Transport, connect, login};
use apex_harness::profile::Profile;
use apex_harness::verify::{Identity, Transcript, check_connection, check_isolation};
use serde_json::json;

use crate::start_backend;

/// Logs in, sends `runs` marked messages, records everything until the last agent_completed.
async fn journey(
    target: Target,
    email: String,
    marker: String,
    runs: usize,
) -> (Identity, Transcript) {
    let http = target.http_client().unwrap();
    let wait = Duration::from_secs(10);
    let session = login(&http, &target, &email, "correct-horse", wait)
        .await
        .unwrap();
    let mut conn = connect(&http, &target, Some(&session), Transport::Header, wait)
        .await
        .unwrap();
    for i in 0..runs {
        let content = format!("Where am I wasting money? [{marker}-{i}]");
        let frame = json!({ "type": "user_message", "payload": { "content": content } });
        conn.send_json(&frame).await.unwrap();
    }
    let mut completed = 0;
    while completed < runs {
        let frame = conn.next_frame(wait).await.unwrap().unwrap();
        completed += usize::from(frame["type"] == "agent_completed");
    }
    let identity = Identity {
        user_id: session.user_id,
        email,
        marker,
        runs: Vec::new(),
    };
    (identity, conn.close().await)
}

#[tokio::test]
async fn a_healthy_backend_passes_every_invariant_for_concurrent_users() {
    let (target, _stop) = start_backend().await;
    let users = (1..=12).map(|n| format!("vu{n:02}@apex.test"));
    let journeys = users
        .enumerate()
        .map(|(i, email)| tokio::spawn(journey(target.clone(), email, format!("mk{i:04}x"), 3)));
    let mut results = Vec::new();
    for handle in journeys {
        results.push(handle.await.unwrap());
    }
    for (identity, transcript) in &results {
        let failures = check_connection(&Profile::apex(), transcript);
        assert!(failures.is_empty(), "{}: {failures:#?}", identity.email);
        assert_eq!(
            transcript
                .frames
                .iter()
                .filter(|f| f.value.get("seq").is_some())
                .count(),
            33
        );
    }
    let pairs: Vec<_> = results.iter().map(|(i, t)| (i, t)).collect();
    for breaches in check_isolation(&pairs) {
        assert!(breaches.is_empty(), "{breaches:#?}");
    }
}

#[tokio::test]
async fn a_real_frame_that_leaks_into_another_transcript_is_caught() {
    let (addr, _stop) = start_backend().await;
    let (alice, alice_seen) =
        journey(addr.clone(), "alice@apex.test".into(), "mk-alice".into(), 1).await;
    let (bob, mut bob_seen) = journey(addr, "bob@apex.test".into(), "mk-bob".into(), 1).await;
    // What a router that used thread ids as user ids would do: hand Alice's frame to Bob.
    let alice_frame = alice_seen
        .frames
        .iter()
        .find(|f| f.value["type"] == "agent_completed")
        .unwrap()
        .clone();
    bob_seen.frames.push(alice_frame);
    let results = check_isolation(&[(&alice, &alice_seen), (&bob, &bob_seen)]);
    assert!(results[0].is_empty());
    assert!(
        !results[1].is_empty(),
        "the leaked answer names alice@apex.test"
    );
    assert!(
        !check_connection(&Profile::apex(), &bob_seen).is_empty(),
        "and breaks Bob's seq"
    );
}
