//! Acknowledgement, redelivery and resume.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn unacknowledged_events_are_redelivered_three_times_then_given_up() {
    let server = TestServer::start_with(|c| c.redelivery_timeout_ms = 150).await;
    let mut client = server.client(ALICE).await;
    client.message("where am I wasting money?").await;
    let (events, _) = client.run_events(false).await;
    assert_complete_run(&events);
    let first = seqs(&events);

    let mut redelivered: std::collections::BTreeMap<u64, u32> = Default::default();
    while let Ok(Some(frame)) = client.next_within(Duration::from_millis(600)).await {
        assert_eq!(
            frame["redelivery"], true,
            "only redeliveries may follow: {frame}"
        );
        *redelivered
            .entry(frame["seq"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(redelivered.keys().copied().collect::<Vec<_>>(), first);
    assert!(redelivered.values().all(|&n| n == 3), "{redelivered:?}");
}

#[tokio::test]
async fn a_cumulative_ack_stops_redelivery() {
    let server = TestServer::start_with(|c| c.redelivery_timeout_ms = 150).await;
    let mut client = server.client(ALICE).await;
    client.message("where am I wasting money?").await;
    let (events, _) = client.run_events(false).await;
    let last = events.last().unwrap()["seq"].as_u64().unwrap();
    // Acknowledge only the 8th: everything up to it is covered, 9..=11 are redelivered.
    client.send(json!({ "type": "ack", "seq": last - 3 })).await;
    let mut seen = std::collections::BTreeSet::new();
    while let Ok(Some(frame)) = client.next_within(Duration::from_millis(400)).await {
        if frame["redelivery"] == true {
            seen.insert(frame["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![last - 2, last - 1, last]
    );
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_events_in_order() {
    let server = TestServer::start_with(|c| c.think_time_ms = 15).await;
    let token = server.login(ALICE).await;
    let mut first = WsClient::connect(&server, Transport::Header(token.clone()))
        .await
        .unwrap();
    first.message("where am I wasting money?").await;
    // Read three events, then drop the connection mid-run.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = first.next().await.unwrap();
        if frame.get("seq").is_some() {
            seen.push(frame);
        }
    }
    drop(first);
    let last_seq = seen.last().unwrap()["seq"].as_u64().unwrap();

    let mut second = WsClient::connect(&server, Transport::Header(token))
        .await
        .unwrap();
    second
        .send(json!({ "type": "resume", "last_seq": last_seq }))
        .await;
    let (rest, others) = second.run_events(true).await;
    assert!(others.is_empty(), "{others:?}");
    let mut all = seen;
    all.extend(rest);
    assert_complete_run(&all);
    // Nothing more, and nothing twice.
    assert!(matches!(
        second.next_within(Duration::from_millis(300)).await,
        Err(())
    ));
}

#[tokio::test]
async fn resume_at_connect_replays_runs_that_finished_while_away() {
    let server = TestServer::start().await;
    let token = server.login(BOB).await;
    let mut first = WsClient::connect(&server, Transport::Header(token.clone()))
        .await
        .unwrap();
    let before = first.ask("what do I spend?").await;
    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    drop(first);

    // Another connection of Bob's runs two more messages while the first is away.
    let mut other = WsClient::connect(&server, Transport::Header(token.clone()))
        .await
        .unwrap();
    let missed: Vec<_> = [
        other.ask("what do I spend?").await,
        other.ask("and now?").await,
    ]
    .concat();

    let url = format!("{}?last_seq={last_seq}", server.ws_url());
    let mut back = WsClient::connect_url(&url, Transport::Header(token))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < missed.len() {
        replayed.push(back.next().await.unwrap());
    }
    assert_eq!(seqs(&replayed), seqs(&missed));
    assert_eq!(types(&replayed), types(&missed));
    assert!(matches!(
        back.next_within(Duration::from_millis(300)).await,
        Err(())
    ));
}

#[tokio::test]
async fn resume_beyond_the_stream_head_is_an_error_frame() {
    let server = TestServer::start().await;
    let mut client = server.client(CAROL).await;
    client
        .send(json!({ "type": "resume", "last_seq": 999 }))
        .await;
    let frame = client.next().await.unwrap();
    assert_eq!(frame["payload"]["code"], "INVALID_SEQ", "{frame}");
}

#[tokio::test]
async fn resume_past_retention_says_what_was_lost() {
    let server = TestServer::start_with(|c| c.retain_events = 5).await;
    let mut client = server.client(CAROL).await;
    client.ask("what do I spend?").await;
    client
        .send(json!({ "type": "resume", "last_seq": 0 }))
        .await;
    let warning = client.next().await.unwrap();
    assert_eq!(warning["payload"]["code"], "REPLAY_TRUNCATED", "{warning}");
    assert_eq!(warning["payload"]["details"]["oldest_seq"], 7);
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(client.next().await.unwrap());
    }
    assert_eq!(seqs(&replayed), [7, 8, 9, 10, 11]);
    assert!(
        replayed.iter().all(|e| e["redelivery"] == true),
        "already sent here: marked"
    );
}

#[tokio::test]
async fn a_late_resume_marks_only_what_this_connection_already_sent() {
    let server = TestServer::start().await;
    let token = server.login(CAROL).await;
    let mut earlier = WsClient::connect(&server, Transport::Header(token.clone()))
        .await
        .unwrap();
    let before = earlier.ask("what do I spend?").await;
    assert_eq!(seqs(&before), (1..=11).collect::<Vec<_>>());

    let mut client = WsClient::connect(&server, Transport::Header(token))
        .await
        .unwrap();
    assert_eq!(client.established["last_seq"], 11);
    let here = client.ask("and now?").await;
    assert_eq!(seqs(&here), (12..=22).collect::<Vec<_>>());
    client
        .send(json!({ "type": "resume", "last_seq": 5 }))
        .await;
    let mut replayed = Vec::new();
    for _ in 6..=22 {
        replayed.push(client.next().await.unwrap());
    }
    assert_eq!(seqs(&replayed), (6..=22).collect::<Vec<_>>());
    for event in &replayed {
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(
            event.get("redelivery").is_some(),
            seq >= 12,
            "seq {seq}: {event}"
        );
    }
}
