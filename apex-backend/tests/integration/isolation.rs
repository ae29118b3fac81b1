//! Runs emit only to their own user's stream; per-user limits.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn concurrent_users_each_receive_only_their_own_events_and_numbers() {
    let server = TestServer::start_with(|c| c.think_time_ms = 5).await;
    let users = [ALICE, BOB, CAROL, DAVE];
    let mut tasks = Vec::new();
    for email in users {
        let token = server.login(email).await;
        let ws = server.ws_url();
        tasks.push(tokio::spawn(async move {
            let url = ws;
            let mut client = WsClient::connect_url(&url, Transport::Header(token))
                .await
                .unwrap();
            let mut runs = Vec::new();
            for _ in 0..3 {
                runs.push(client.ask("where am I wasting money?").await);
            }
            // Anything else arriving now would be someone else's.
            let extra = client.next_within(Duration::from_millis(200)).await;
            (client.established["user_id"].clone(), runs, extra)
        }));
    }
    let mut all_run_ids: HashSet<String> = HashSet::new();
    for (email, task) in users.into_iter().zip(tasks) {
        let (user_id, runs, extra) = task.await.unwrap();
        assert!(
            matches!(extra, Err(())),
            "{email} got an extra frame: {extra:?}"
        );
        let events: Vec<Value> = runs.concat();
        assert_eq!(
            seqs(&events),
            (1..=33).collect::<Vec<u64>>(),
            "{email}: own gap-free stream"
        );
        for run in &runs {
            assert_complete_run(run);
            assert_result_matches_truth(email, &run.last().unwrap()["payload"]["result"]);
            assert!(
                all_run_ids.insert(run[0]["run_id"].as_str().unwrap().to_owned()),
                "run ids are unique"
            );
        }
        let text = serde_json::to_string(&events).unwrap();
        for other in [ALICE, BOB, CAROL, DAVE]
            .into_iter()
            .filter(|o| *o != email)
        {
            assert!(!text.contains(other), "{email}'s frames mention {other}");
        }
        assert!(user_id.is_string());
    }
}

#[tokio::test]
async fn two_connections_of_one_user_both_receive_the_users_events() {
    let server = TestServer::start().await;
    let token = server.login(ALICE).await;
    let mut sender = WsClient::connect(&server, Transport::Header(token.clone()))
        .await
        .unwrap();
    let mut watcher = WsClient::connect(&server, Transport::Subprotocol(token))
        .await
        .unwrap();
    // The watcher's first frame arms live delivery at once.
    watcher.send(serde_json::json!({ "type": "ping" })).await;
    assert_eq!(watcher.next().await.unwrap()["type"], "pong");
    let sent = sender.ask("where am I wasting money?").await;
    let (watched, _) = watcher.run_events(true).await;
    assert_eq!(sent, watched);
    // Bob sees none of it.
    let mut bob = server.client(BOB).await;
    assert!(matches!(
        bob.next_within(Duration::from_millis(200)).await,
        Err(())
    ));
}

#[tokio::test]
async fn the_sixth_concurrent_run_of_a_user_is_refused() {
    let server = TestServer::start_with(|c| c.think_time_ms = 40).await;
    let mut client = server.client(ALICE).await;
    for _ in 0..6 {
        client.message("where am I wasting money?").await;
    }
    let mut refused = 0;
    let mut completed = 0;
    while completed < 5 {
        let frame = client.next().await.unwrap();
        match frame["type"].as_str().unwrap() {
            "error" => {
                assert_eq!(frame["payload"]["code"], "TOO_MANY_RUNS");
                refused += 1;
            }
            "agent_completed" => completed += 1,
            _ => {}
        }
    }
    assert_eq!(refused, 1);
    // Slots free up once runs end.
    let events = client.ask("and again?").await;
    assert_complete_run(&events);
}

#[tokio::test]
async fn a_thread_of_another_user_cannot_be_continued() {
    let server = TestServer::start().await;
    let mut alice = server.client(ALICE).await;
    let events = alice.ask("where am I wasting money?").await;
    let thread_id = events[0]["thread_id"].clone();
    let mut bob = server.client(BOB).await;
    bob.send(serde_json::json!({ "type": "user_message", "payload": { "content": "hi", "thread_id": thread_id } })).await;
    let frame = bob.next().await.unwrap();
    assert_eq!(frame["payload"]["code"], "THREAD_NOT_FOUND", "{frame}");
    // Alice can continue her own thread.
    alice.send(serde_json::json!({ "type": "user_message", "payload": { "content": "more", "thread_id": thread_id } })).await;
    let (events, _) = alice.run_events(true).await;
    assert_eq!(events[0]["thread_id"], thread_id);
}
