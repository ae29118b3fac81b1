//! Every fixture user's answer equals the truth written down from the fixtures' construction.

use crate::support::*;

#[tokio::test]
async fn every_fixture_users_result_equals_the_expected_truth() {
    let server = TestServer::start().await;
    for email in [ALICE, BOB, CAROL, DAVE] {
        let mut client = server.client(email).await;
        let events = client.ask("How can I cut my LLM spend?").await;
        assert_complete_run(&events);
        let payload = &events.last().unwrap()["payload"];
        assert_result_matches_truth(email, &payload["result"]);
        let markdown = payload["final_response"].as_str().unwrap();
        assert!(markdown.contains(email), "{email}: {markdown}");
    }
}

#[tokio::test]
async fn the_answer_is_the_same_every_time() {
    let server = TestServer::start().await;
    let mut client = server.client(BOB).await;
    let first = client.ask("where does my money go?").await;
    let second = client.ask("where does my money go?").await;
    let answer =
        |events: &[serde_json::Value]| events.last().unwrap()["payload"]["final_response"].clone();
    assert_eq!(answer(&first), answer(&second));
}

#[tokio::test]
async fn a_user_without_data_is_told_so() {
    let server = TestServer::start().await;
    let mut client = server.client(DAVE).await;
    let events = client.ask("where am I wasting money?").await;
    let markdown = events.last().unwrap()["payload"]["final_response"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(markdown.contains("no AI usage records"), "{markdown}");
}
