//! Login, refresh and token verification at the HTTP API and the WebSocket handshake.

use apex_backend::auth::{Claims, TokenKeys, TokenType, unix_now};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::support::*;

/// The HTTP status of a refused handshake, and its JSON body.
async fn refused(server: &TestServer, transport: Transport) -> (u16, serde_json::Value) {
    match WsClient::connect(server, transport).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(client) => panic!("handshake should fail, got {}", client.established),
    }
}

fn claims_for(server: &TestServer, token: &str) -> Claims {
    server
        .state
        .tokens
        .verify(token, TokenType::Access)
        .unwrap()
}

#[tokio::test]
async fn bad_password_and_unknown_user_get_401_with_a_json_reason() {
    let server = TestServer::start().await;
    for body in [
        json!({ "email": ALICE, "password": "wrong" }),
        json!({ "email": "nobody@apex.test", "password": PASSWORD }),
    ] {
        let (status, reply) = server.post("/api/auth/login", body).await;
        assert_eq!(status, 401);
        assert_eq!(reply["error"]["code"], "INVALID_CREDENTIALS");
    }
}

#[tokio::test]
async fn malformed_login_bodies_get_422_never_500() {
    let server = TestServer::start().await;
    for body in [
        "{not json",
        "[]",
        r#"{"email":"a@apex.test"}"#,
        r#"{"email":5,"password":"x"}"#,
        "",
    ] {
        let response = server
            .http
            .post(server.url("/api/auth/login"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "body {body:?}");
        let reply: serde_json::Value = response.json().await.unwrap();
        assert_eq!(reply["error"]["code"], "INVALID_BODY", "body {body:?}");
    }
}

#[tokio::test]
async fn tokens_carry_the_documented_claims_and_refresh_works() {
    let server = TestServer::start().await;
    let login = server.login_response(ALICE).await;
    let claims = claims_for(&server, login["access_token"].as_str().unwrap());
    assert_eq!(claims.email, ALICE);
    assert_eq!(claims.iss, "netra-apex");
    assert_eq!(claims.token_type, TokenType::Access);
    assert!(claims.exp > claims.iat);

    let (status, refreshed) = server
        .post(
            "/api/auth/refresh",
            json!({ "refresh_token": login["refresh_token"] }),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["access_token"], login["access_token"]);
    // An access token is not a refresh token.
    let (status, reply) = server
        .post(
            "/api/auth/refresh",
            json!({ "refresh_token": login["access_token"] }),
        )
        .await;
    assert_eq!(status, 401, "{reply}");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let server = TestServer::start().await;
    let login = server.login_response(ALICE).await;
    let refresh = |token: &Value| {
        let token = token.clone();
        let server = &server;
        async move {
            server
                .post("/api/auth/refresh", json!({ "refresh_token": token }))
                .await
        }
    };
    let (status, second) = refresh(&login["refresh_token"]).await;
    assert_eq!(status, 200, "{second}");
    let (status, third) = refresh(&second["refresh_token"]).await;
    assert_eq!(status, 200, "{third}");
    // Another login is another family, untouched by what follows.
    let other = server.login_response(ALICE).await;

    // The first token was spent: presenting it again revokes the family, whose newest token
    // then fails too.
    let (status, reply) = refresh(&login["refresh_token"]).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"]["code"], "INVALID_TOKEN");
    let (status, reply) = refresh(&third["refresh_token"]).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(
        reply["error"]["message"],
        "refresh token is unknown, already used or revoked"
    );
    let (status, reply) = refresh(&other["refresh_token"]).await;
    assert_eq!(status, 200, "{reply}");
    // Access tokens are not refresh tokens and are not revoked with them.
    let (status, _) = refresh(&third["access_token"]).await;
    assert_eq!(status, 401);
    server.ticket(third["access_token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_refresh_token_never_stored_is_refused() {
    let server = TestServer::start().await;
    let user = server.login_response(ALICE).await["user"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let minted = server
        .state
        .tokens
        .issue(user, ALICE, TokenType::Refresh, 600);
    let (status, reply) = server
        .post("/api/auth/refresh", json!({ "refresh_token": minted }))
        .await;
    assert_eq!(status, 401, "{reply}");
}

#[tokio::test]
async fn a_jwt_secret_under_32_bytes_is_refused_at_start() {
    let mut config = apex_backend::Config::for_tests();
    config.fixtures_dir = fixtures_dir();
    config.jwt_secret = Some("x".repeat(31));
    let err = apex_backend::AppState::embedded(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("APEX_JWT_SECRET") && err.contains("31 bytes"),
        "{err}"
    );
    config.jwt_secret = Some("x".repeat(32));
    assert!(apex_backend::AppState::embedded(config).await.is_ok());
}

#[tokio::test]
async fn handshakes_without_or_with_bad_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let good = server.login(ALICE).await;
    let claims = claims_for(&server, &good);
    let sign = |claims: &Claims, secret: &[u8]| {
        TokenKeys::new(secret, &claims.iss, &claims.aud).sign(claims)
    };
    let expired = sign(
        &Claims {
            iat: unix_now() - 3600,
            exp: unix_now() - 600,
            ..claims.clone()
        },
        b"apex-test-secret-not-for-production",
    );
    let forged = sign(&claims, b"someone-elses-secret");
    let refresh = server.login_response(ALICE).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let alg_none = {
        let mut parts = good.split('.');
        let _header = parts.next();
        // {"alg":"none","typ":"JWT"}
        format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            parts.next().unwrap()
        )
    };

    let (status, body) = refused(&server, Transport::None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("MISSING_TOKEN"))
    );
    for (name, token) in [
        ("expired", expired),
        ("forged", forged),
        ("alg none", alg_none),
        ("refresh", refresh),
        ("garbage", "x.y.z".into()),
    ] {
        for transport in [
            Transport::Header(token.clone()),
            Transport::Subprotocol(token.clone()),
            Transport::LbPreserved(token.clone()),
        ] {
            let (status, body) = refused(&server, transport.clone()).await;
            assert_eq!(status, 401, "{name} via {transport:?}");
            assert_eq!(body["error"]["code"], "INVALID_TOKEN", "{name}: {body}");
        }
    }
    let (status, body) = refused(&server, Transport::Ticket("not-a-ticket".into())).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("INVALID_TICKET"))
    );

    let metrics = server.metrics_text().await;
    assert!(!metrics.contains("code=\"1011\""), "{metrics}");
}

#[tokio::test]
async fn tickets_need_a_valid_bearer_token() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/api/websocket/ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = server
        .http
        .post(server.url("/api/websocket/ticket"))
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let token = server.login(ALICE).await;
    let response = server
        .http
        .post(server.url("/api/websocket/ticket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["expires_in"].as_u64().unwrap() <= 300);
}

#[tokio::test]
async fn a_present_non_bearer_authorization_header_is_not_skipped() {
    let server = TestServer::start().await;
    let token = server.login(ALICE).await;
    let response = server
        .http
        .post(server.url("/api/websocket/ticket"))
        .header("authorization", "Basic YWxpY2U6eA==")
        .header("x-original-authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = server
        .http
        .post(server.url("/api/websocket/ticket"))
        .header("x-original-authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
