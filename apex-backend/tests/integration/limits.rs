//! The login abuse bounds at the HTTP API: beyond each, `429` or `503` with `Retry-After`, and
//! legitimate logins served again after.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Status, `Retry-After` in seconds (if any) and body of a login.
async fn login_raw(server: &TestServer, email: &str, password: &str) -> (u16, Option<u64>, Value) {
    let response = server
        .http
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        status,
        retry_after,
        response.json().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn beyond_the_hashing_queue_logins_get_503_with_retry_after_then_succeed_again() {
    // One slot, no queue, and a hash slow enough (about 10 ms) that concurrent logins meet.
    let server = TestServer::start_with(|c| {
        c.login_concurrency = 1;
        c.login_queue = 0;
        c.argon2_t_cost = 2000;
    })
    .await;
    let flood = (0..40).map(|_| login_raw(&server, ALICE, "wrong-password"));
    let answers = futures_util::future::join_all(flood).await;
    let busy: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    assert!(!busy.is_empty(), "no login was refused: {answers:?}");
    for (_, retry_after, body) in &busy {
        assert!(retry_after.is_some_and(|s| s >= 1), "{answers:?}");
        assert_eq!(body["error"]["code"], "BUSY");
    }
    assert!(
        answers
            .iter()
            .all(|(status, ..)| *status == 503 || *status == 401),
        "{answers:?}"
    );
    let (status, _, body) = login_raw(&server, ALICE, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        server
            .metrics_text()
            .await
            .contains("apex_logins_total{result=\"busy\"}")
    );
}

#[tokio::test]
async fn beyond_the_per_client_allowance_logins_get_429_until_it_refills() {
    let server = TestServer::start_with(|c| {
        c.login_ip_per_sec = 1.0;
        c.login_ip_burst = 3;
    })
    .await;
    for _ in 0..3 {
        let (status, ..) = login_raw(&server, BOB, "wrong-password").await;
        assert_eq!(status, 401);
    }
    let (status, retry_after, body) = login_raw(&server, ALICE, PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let wait = retry_after.expect("Retry-After");
    assert!((1..=2).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, body) = login_raw(&server, ALICE, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn failed_logins_lock_only_their_account_for_a_while() {
    let server = TestServer::start_with(|c| {
        c.login_account_failures_per_min = 60.0;
        c.login_account_failure_burst = 2;
    })
    .await;
    for _ in 0..2 {
        let (status, ..) = login_raw(&server, ALICE, "wrong-password").await;
        assert_eq!(status, 401);
    }
    // The account is out of failures: even the right password waits.
    let (status, retry_after, _) = login_raw(&server, "ALICE@apex.test ", PASSWORD).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after, Some(1));
    // Other accounts are untouched, and successful logins cost nothing.
    for _ in 0..5 {
        let (status, ..) = login_raw(&server, BOB, PASSWORD).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = login_raw(&server, ALICE, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn demo_users_are_capped_and_expire_with_their_tokens() {
    let server = TestServer::start_with(|c| {
        c.demo_mode = true;
        c.demo_max_users = 2;
        c.demo_ttl_secs = 1;
    })
    .await;
    let demo = || async {
        let response = server
            .http
            .post(server.url("/api/auth/demo"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.unwrap();
        (status, retry_after, body)
    };
    let (status, _, first) = demo().await;
    assert_eq!(status, 200);
    assert_eq!(first["expires_in"], 1, "the token ends with the user");
    assert_eq!(demo().await.0, 200);
    let (status, retry_after, body) = demo().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "BUSY");
    assert!(retry_after.is_some());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(demo().await.0, 200, "expired demo users make room");
    let token = first["access_token"].as_str().unwrap();
    let refused = server
        .http
        .post(server.url("/api/websocket/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the expired demo user is gone");
}
