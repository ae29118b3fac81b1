//! Client mistakes get error frames and the connection stays usable; oversized frames close
//! with 1009; nothing closes with 1011.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn expect_error(client: &mut WsClient, code: &str) {
    let frame = client.next().await.expect("an error frame, not a close");
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["payload"]["code"], code, "{frame}");
    assert!(
        frame["payload"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test]
async fn invalid_json_gets_an_error_frame_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut client = server.client(ALICE).await;
    client.send_text("{oops".into()).await;
    expect_error(&mut client, "INVALID_JSON").await;
    client.send(json!({ "type": "teleport" })).await;
    expect_error(&mut client, "UNKNOWN_TYPE").await;
    client
        .send(json!({ "type": "user_message", "payload": { "content": "   " } }))
        .await;
    expect_error(&mut client, "EMPTY_MESSAGE").await;
    client
        .send(
            json!({ "type": "user_message", "payload": { "content": "x".repeat(32 * 1024 + 1) } }),
        )
        .await;
    expect_error(&mut client, "MESSAGE_TOO_LARGE").await;
    client.send(json!({ "type": "ack", "seq": "seven" })).await;
    expect_error(&mut client, "INVALID_FRAME").await;
    client
        .send(json!({ "type": "ping", "payload": { "n": 1 } }))
        .await;
    let pong = client.next().await.unwrap();
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["payload"]["n"], 1);
    let events = client.ask("where am I wasting money?").await;
    assert_complete_run(&events);
}

#[tokio::test]
async fn legacy_message_spellings_start_runs() {
    let server = TestServer::start().await;
    let mut client = server.client(ALICE).await;
    for frame in [
        json!({ "type": "chat_message", "payload": { "text": "what do I spend?" } }),
        json!({ "type": "start_agent", "payload": { "user_request": "what do I spend?" } }),
        json!({ "type": "user_message", "message": "what do I spend?" }),
    ] {
        client.send(frame).await;
        let (events, _) = client.run_events(true).await;
        assert_complete_run(&events);
    }
}

#[tokio::test]
async fn a_frame_over_one_mebibyte_closes_with_1009() {
    let server = TestServer::start().await;
    let mut client = server.client(ALICE).await;
    client
        .send_text(format!(
            r#"{{"type":"ping","payload":"{}"}}"#,
            "x".repeat(1024 * 1024)
        ))
        .await;
    assert_eq!(client.close_code().await, Some(1009));
}

#[tokio::test]
async fn flooding_frames_get_rate_limited_error_frames() {
    let server = TestServer::start_with(|c| c.rate_limit_per_sec = 5).await;
    let mut client = server.client(ALICE).await;
    for _ in 0..30 {
        client.send(json!({ "type": "ping" })).await;
    }
    let mut limited = 0;
    let mut pongs = 0;
    while let Ok(Some(frame)) = client.next_within(Duration::from_millis(500)).await {
        match frame["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if frame["payload"]["code"] == "RATE_LIMITED" => limited += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(pongs + limited, 30);
    assert!(limited >= 15, "pongs {pongs}, limited {limited}");
    assert!(pongs >= 10, "the burst allowance is honoured: {pongs}");
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    use futures_util::StreamExt;
    let server = TestServer::start().await;
    let mut client = server.client(ALICE).await;
    client.stream.close(None).await.unwrap();
    let mut answered = false;
    while let Some(Ok(message)) = tokio::time::timeout(FRAME_TIMEOUT, client.stream.next())
        .await
        .unwrap()
    {
        answered |= message.is_close();
    }
    assert!(answered, "the server echoes the close handshake");
}
