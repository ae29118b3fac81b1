//! The golden path through each auth transport.

use crate::support::*;

async fn golden_path(server: &TestServer, transport: Transport) -> WsClient {
    let mut client = WsClient::connect(server, transport)
        .await
        .expect("handshake succeeds");
    let alice_id = server.login_response(ALICE).await["user"]["id"].clone();
    assert_eq!(client.established["user_id"], alice_id);
    assert!(client.established["connection_id"].is_string());
    assert_eq!(
        client.established["server_id"],
        server.state.server_id.as_str()
    );
    let events = client.ask("Where am I wasting money on LLM calls?").await;
    assert_complete_run(&events);
    let completed = events.last().unwrap();
    let markdown = completed["payload"]["final_response"].as_str().unwrap();
    assert!(markdown.contains("gpt-4o-mini"), "{markdown}");
    assert_result_matches_truth(ALICE, &completed["payload"]["result"]);
    assert_eq!(completed["payload"]["usage"]["steps"], 3);
    client
}

#[tokio::test]
async fn golden_path_with_authorization_header() {
    let server = TestServer::start().await;
    let token = server.login(ALICE).await;
    golden_path(&server, Transport::Header(token)).await;
}

#[tokio::test]
async fn golden_path_with_jwt_subprotocol_echoes_the_chosen_protocol() {
    let server = TestServer::start().await;
    let token = server.login(ALICE).await;
    let client = golden_path(&server, Transport::Subprotocol(token)).await;
    assert_eq!(client.protocol.as_deref(), Some("jwt-auth"));
}

#[tokio::test]
async fn golden_path_with_only_the_load_balancer_preserved_header() {
    let server = TestServer::start().await;
    let token = server.login(ALICE).await;
    golden_path(&server, Transport::LbPreserved(token)).await;
}

#[tokio::test]
async fn golden_path_with_a_ticket_which_works_only_once() {
    let server = TestServer::start().await;
    let token = server.login(ALICE).await;
    let ticket = server.ticket(&token).await;
    golden_path(&server, Transport::Ticket(ticket.clone())).await;
    match WsClient::connect(&server, Transport::Ticket(ticket)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!(
            "a reused ticket must be refused, got {:?}",
            other.map(|c| c.established)
        ),
    }
}

#[tokio::test]
async fn the_auth_login_alias_works() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/auth/login",
            serde_json::json!({ "email": BOB, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["email"], BOB);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn a_question_that_is_not_about_spend_gets_a_useful_answer() {
    let server = TestServer::start().await;
    let mut client = server.client(CAROL).await;
    let events = client.ask("hello, who are you?").await;
    assert_complete_run(&events);
    let payload = &events.last().unwrap()["payload"];
    assert_eq!(payload["result"]["intent"], "general");
    let markdown = payload["final_response"].as_str().unwrap();
    assert!(markdown.contains("AI-spend optimizer"), "{markdown}");
    assert!(markdown.contains("120 calls"), "{markdown}");
}

#[tokio::test]
async fn compute_is_the_agents_cpu_not_their_think_time() {
    let server = TestServer::start_with(|c| c.think_time_ms = 60).await;
    let mut client = server.client(ALICE).await;
    let events = client.ask("Where am I wasting money on LLM calls?").await;
    assert_complete_run(&events);
    let payload = &events.last().unwrap()["payload"];
    let compute = payload["usage"]["compute_ms"].as_f64().unwrap();
    let duration = payload["duration_ms"].as_f64().unwrap();
    // Nine 60 ms pauses lie inside the run before agent_completed; none of them is compute,
    // and the agents' own work is a fraction of one pause even in a debug build.
    assert!(duration >= 540.0, "duration_ms {duration}");
    assert!(compute > 0.0 && compute < 60.0, "compute_ms {compute}");
}
