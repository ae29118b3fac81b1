//! Real journeys of concurrent users against the bundled backend, checked by the harness's
//! invariants: no false alarms on a healthy backend, and a real leak is caught.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apex_backend::{AppState, Config};
use apex_harness::profile::Profile;
use apex_harness::verify::{Identity, Transcript, check_connection, check_isolation};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn start_backend() -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut config = Config::for_tests();
    config.fixtures_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let state = AppState::embedded(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(apex_backend::serve(listener, state, async move {
        let _ = rx.await;
    }));
    (format!("127.0.0.1:{}", addr.port()), tx)
}

/// Logs in, sends `runs` marked messages, records everything until the last agent_completed.
async fn journey(
    addr: String,
    email: String,
    marker: String,
    runs: usize,
) -> (Identity, Transcript) {
    let login: Value = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/login"))
        .json(&json!({ "email": email, "password": "correct-horse" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let bearer = format!("Bearer {}", login["access_token"].as_str().unwrap());
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let started = Instant::now();
    let mut transcript = Transcript::default();
    for i in 0..runs {
        let content = format!("Where am I wasting money? [{marker}-{i}]");
        let frame = json!({ "type": "user_message", "payload": { "content": content } });
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }
    let mut completed = 0;
    while completed < runs {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        completed += usize::from(value["type"] == "agent_completed");
        transcript.push(started.elapsed(), value);
    }
    let identity = Identity {
        user_id: Some(login["user"]["id"].as_str().unwrap().to_owned()),
        email,
        marker,
    };
    (identity, transcript)
}

#[tokio::test]
async fn a_healthy_backend_passes_every_invariant_for_concurrent_users() {
    let (addr, _stop) = start_backend().await;
    let users = (1..=12).map(|n| format!("vu{n:02}@apex.test"));
    let journeys = users
        .enumerate()
        .map(|(i, email)| tokio::spawn(journey(addr.clone(), email, format!("mk{i:04}x"), 3)));
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
