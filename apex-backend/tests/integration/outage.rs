//! The backend under abuse on real Postgres and Redis: fixture users only when asked for,
//! tickets kept in exactly one place, and two instances on one Redis through an outage of one
//! of them with no event lost.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::services_or_skip;
use crate::support::*;
use apex_harness::fault::{Direction, FaultProxy, Toxic};

const SECRET: &str = "apex-test-secret-not-for-production";

async fn wait_until_ready(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, ready) = server.get_json("/ready").await;
        if ready["status"] == "ready" {
            return;
        }
        assert!(Instant::now() < deadline, "/ready stayed {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fixture_users_are_seeded_on_postgres_only_with_seed_fixtures() {
    let services =
        services_or_skip!("fixture_users_are_seeded_on_postgres_only_with_seed_fixtures");
    let bare = TestServer::start_on(&services, |c| c.seed_fixtures = false).await;
    let (status, body) = bare
        .post(
            "/api/auth/login",
            json!({ "email": ALICE, "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        status, 401,
        "no fixture user without --seed-fixtures: {body}"
    );
    bare.stop().await;

    let seeded = TestServer::start_on(&services, |c| c.seed_fixtures = true).await;
    seeded.login(ALICE).await;
    seeded.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn a_ticket_whose_redis_write_timed_out_is_redeemed_once_only() {
    let services = services_or_skip!("a_ticket_whose_redis_write_timed_out_is_redeemed_once_only");
    let (proxy, through) = FaultProxy::in_front_of(&services.urls.redis).await.unwrap();
    let mut via_proxy = services.clone();
    via_proxy.urls.redis = through;
    let server = TestServer::start_on(&via_proxy, |c| c.redis_timeout_ms = 300).await;
    let token = server.login(ALICE).await;
    let redis = redis::Client::open(services.urls.redis.as_str()).unwrap();
    let mut direct = redis.get_multiplexed_async_connection().await.unwrap();

    // Redis's answers come late: the SETEX lands, its reply misses the timeout.
    let late = proxy.add(
        Direction::Downstream,
        Toxic::Latency {
            delay: Duration::from_millis(1500),
            jitter: Duration::ZERO,
        },
    );
    let ticket = server.ticket(&token).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let landed: Vec<String> = direct
        .keys(format!("{}ticket:*", services.prefix))
        .await
        .unwrap();
    assert_eq!(landed.len(), 1, "the timed-out write landed: {landed:?}");
    assert!(
        !landed[0].ends_with(&ticket),
        "the ticket handed out is not the one that landed in Redis"
    );
    WsClient::connect(&server, Transport::Ticket(ticket.clone()))
        .await
        .expect("redeemed once, while degraded");

    proxy.remove(late);
    wait_until_ready(&server).await;
    let again = WsClient::connect(&server, Transport::Ticket(ticket)).await;
    assert!(again.is_err(), "a ticket is redeemed once only");

    // Healthy again: a ticket lives in Redis only, and is redeemed once.
    let ticket = server.ticket(&token).await;
    let stored: Option<String> = direct
        .get(format!("{}ticket:{ticket}", services.prefix))
        .await
        .unwrap();
    assert!(stored.is_some());
    WsClient::connect(&server, Transport::Ticket(ticket.clone()))
        .await
        .expect("redeemed");
    assert!(
        WsClient::connect(&server, Transport::Ticket(ticket))
            .await
            .is_err()
    );
    server.stop().await;
    services.cleanup().await;
}

/// What one connection holds of its user's stream: `seq` → (run id, type), with the events a
/// `resync` voided removed.
#[derive(Default)]
struct View {
    events: BTreeMap<u64, (String, String)>,
    resyncs: usize,
    /// `client_message_id` → run id, for the runs this connection started.
    started: HashMap<String, String>,
}

impl View {
    /// Takes one frame; a duplicate first delivery of a `seq` fails the test.
    fn take(&mut self, frame: &Value) {
        if frame["type"] == "resync" {
            let from = frame["from_seq"].as_u64().unwrap();
            self.events.retain(|seq, _| *seq <= from);
            self.resyncs += 1;
            return;
        }
        let Some(seq) = frame["seq"].as_u64() else {
            return;
        };
        let event = (
            frame["run_id"].as_str().unwrap().to_owned(),
            frame["type"].as_str().unwrap().to_owned(),
        );
        if frame["type"] == "agent_started"
            && let Some(id) = frame["payload"]["client_message_id"].as_str()
        {
            self.started.insert(id.to_owned(), event.0.clone());
        }
        match self.events.get(&seq) {
            Some(held) if frame["redelivery"] == true => assert_eq!(held, &event, "seq {seq}"),
            Some(held) => panic!("seq {seq} delivered twice: {held:?} then {frame}"),
            None => {
                self.events.insert(seq, event);
            }
        }
    }
}

/// Runs journeys back to back on one connection until `until`, then reads until quiet.
async fn journeys(mut client: WsClient, name: String, until: Instant) -> View {
    let mut view = View::default();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let id = format!("{name}-{n}");
        client
            .send(json!({ "type": "user_message", "payload": { "content": "where does my money go?", "client_message_id": id } }))
            .await;
        loop {
            let frame = client.next().await.expect("the connection stays open");
            view.take(&frame);
            if let Some(seq) = frame["seq"].as_u64() {
                client.send(json!({ "type": "ack", "seq": seq })).await;
            }
            let mine = view
                .started
                .get(&id)
                .is_some_and(|run| frame["run_id"] == **run);
            if mine && frame["type"] == "agent_completed" {
                break;
            }
        }
    }
    while let Ok(Some(frame)) = client.next_within(Duration::from_millis(1500)).await {
        view.take(&frame);
        if let Some(seq) = frame["seq"].as_u64() {
            client.send(json!({ "type": "ack", "seq": seq })).await;
        }
    }
    view
}

/// The user's stream as Redis holds it, read by a fresh connection replaying from 0.
async fn authoritative(server: &TestServer, email: &str) -> BTreeMap<u64, (String, String)> {
    let token = server.login(email).await;
    let url = format!("{}?last_seq=0", server.ws_url());
    let mut client = WsClient::connect_url(&url, Transport::Header(token))
        .await
        .unwrap();
    let head = client.established["last_seq"].as_u64().unwrap();
    let mut view = View::default();
    while view.events.len() < head as usize {
        view.take(&client.next().await.unwrap());
    }
    view.events
}

/// The documented weakness, fixed: two instances on one Redis, one of them cut off from it for
/// 5 s while every user runs journeys on both. The cut-off instance numbers its events
/// in-process and, back on Redis, finds the other instance's events in the same `seq` range:
/// its events are renumbered after them and its connections get a `resync`. Afterwards every
/// connection holds its user's whole stream, every run in it exactly once and complete.
#[tokio::test]
async fn two_instances_through_a_redis_outage_of_one_lose_no_event() {
    let services = services_or_skip!("two_instances_through_a_redis_outage_of_one_lose_no_event");
    let (proxy, through) = FaultProxy::in_front_of(&services.urls.redis).await.unwrap();
    let mut via_proxy = services.clone();
    via_proxy.urls.redis = through;
    let paced = |c: &mut apex_backend::Config| {
        c.think_time_ms = 40;
        c.jwt_secret = Some(SECRET.into());
    };
    let cut_off = TestServer::start_on(&via_proxy, paced).await;
    let healthy = TestServer::start_on(&services, paced).await;
    let users = [ALICE, BOB, CAROL, DAVE];
    let until = Instant::now() + Duration::from_secs(8);
    let mut clients = Vec::new();
    for email in users {
        for (server, side) in [(&cut_off, "a"), (&healthy, "b")] {
            clients.push((server.client(email).await, format!("{email}-{side}")));
        }
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(client, name)| tokio::spawn(journeys(client, name, until)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.add(Direction::Both, Toxic::Down);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.clear();
    let mut views = Vec::new();
    for task in tasks {
        views.push(task.await.unwrap());
    }
    wait_until_ready(&cut_off).await;
    assert!(
        views.iter().any(|v| v.resyncs > 0),
        "the cut-off instance's events were renumbered and its connections resynced"
    );
    for (i, email) in users.iter().enumerate() {
        let stream = authoritative(&healthy, email).await;
        let head = *stream.keys().last().unwrap();
        assert_eq!(
            stream.keys().copied().collect::<Vec<_>>(),
            (1..=head).collect::<Vec<_>>(),
            "{email}: gap-free"
        );
        let mut runs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (run, kind) in stream.values() {
            runs.entry(run).or_default().push(kind);
        }
        for (run, kinds) in &runs {
            assert_eq!(kinds, &RUN_EVENT_TYPES, "{email}: run {run} once, complete");
        }
        for view in &views[2 * i..2 * i + 2] {
            assert_eq!(
                view.events, stream,
                "{email}: a connection holds the whole stream"
            );
            assert_eq!(view.events.len(), head as usize);
            for run in view.started.values() {
                assert!(runs.contains_key(run.as_str()), "{email}: run {run} kept");
            }
        }
    }
    cut_off.stop().await;
    healthy.stop().await;
    services.cleanup().await;
}
