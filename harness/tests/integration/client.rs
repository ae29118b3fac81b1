//! Each transport against the bundled backend, and each client failure's class.

use std::time::Duration;

use apex_harness::client::{Target, Transport, connect, login};
use apex_harness::verify::FailureClass;
use serde_json::json;

use crate::start_backend;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_transport_reaches_a_complete_run() {
    let (target, _stop) = start_backend().await;
    let http = target.http_client().unwrap();
    let session = login(&http, &target, "carol@apex.test", "correct-horse", WAIT)
        .await
        .unwrap();
    assert!(session.user_id.is_some());
    for transport in [
        Transport::Header,
        Transport::Subprotocol,
        Transport::Ticket,
        Transport::LbPreserved,
    ] {
        let mut conn = connect(&http, &target, Some(&session), transport, WAIT)
            .await
            .unwrap();
        let established = conn.next_frame(WAIT).await.unwrap().unwrap();
        assert_eq!(
            established["type"], "connection_established",
            "{transport:?}"
        );
        assert_eq!(established["user_id"].as_str(), session.user_id.as_deref());
        if transport == Transport::Subprotocol {
            assert_eq!(conn.protocol.as_deref(), Some("jwt-auth"));
        }
        conn.send_json(
            &json!({ "type": "user_message", "payload": { "content": "what do I spend?" } }),
        )
        .await
        .unwrap();
        while conn.next_frame(WAIT).await.unwrap().unwrap()["type"] != "agent_completed" {}
        let transcript = conn.close().await;
        let events = transcript
            .frames
            .iter()
            .filter(|f| f.value.get("seq").is_some())
            .count();
        assert_eq!(events, 11, "{transport:?}");
    }
}

#[tokio::test]
async fn failures_come_back_classified() {
    let (target, _stop) = start_backend().await;
    let http = target.http_client().unwrap();
    let refused = login(&http, &target, "carol@apex.test", "wrong", WAIT)
        .await
        .unwrap_err();
    assert_eq!(refused.class, FailureClass::AuthRejected, "{refused}");

    let no_token = connect(&http, &target, None, Transport::None, WAIT)
        .await
        .unwrap_err();
    assert_eq!(no_token.class, FailureClass::AuthRejected, "{no_token}");
    assert!(no_token.message.contains("MISSING_TOKEN"), "{no_token}");

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = Target::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let unreachable = connect(&http, &dead, None, Transport::None, WAIT)
        .await
        .unwrap_err();
    assert_eq!(
        unreachable.class,
        FailureClass::Unreachable,
        "{unreachable}"
    );

    // Accepts the connection, never answers the upgrade: a cold start that hangs.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = Target::parse(&format!("http://{}", hanging.local_addr().unwrap())).unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let hung = connect(
        &http,
        &silent,
        None,
        Transport::None,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!(hung.class, FailureClass::Timeout, "{hung}");

    let session = login(&http, &target, "dave@apex.test", "correct-horse", WAIT)
        .await
        .unwrap();
    let mut conn = connect(&http, &target, Some(&session), Transport::Header, WAIT)
        .await
        .unwrap();
    conn.next_frame(WAIT).await.unwrap();
    let quiet = conn
        .next_frame(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(quiet.class, FailureClass::Timeout);
}
