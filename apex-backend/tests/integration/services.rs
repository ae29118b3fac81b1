//! The backend on real Postgres and Redis: durability, several instances, restart, and slow or
//! dead dependencies. Each test has its own schema and key prefix; without service URLs the
//! tests say loudly that they were skipped.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::services_or_skip;
use crate::support::*;
use apex_harness::fault::{Direction, FaultProxy, Toxic};

const SECRET: &str = "apex-test-secret-not-for-production";

/// On Postgres and Redis, `/metrics` times the store's and the bus's operations and counts the
/// usage cache: a user's first run misses it, the next one hits.
#[tokio::test]
async fn metrics_on_services_time_operations_and_count_cache_lookups() {
    let services = services_or_skip!("metrics_on_services_time_operations_and_count_cache_lookups");
    let server = TestServer::start_on(&services, |_| {}).await;
    let mut client = server.client(ALICE).await;
    assert_complete_run(&client.ask("where am I wasting money?").await);
    assert_complete_run(&client.ask("and where else?").await);
    let metrics = server.metrics_text().await;
    let samples = parse_exposition(&metrics);
    let value = |series: &str| samples.get(series).copied().unwrap_or(-1.0);
    for (series, expected) in [
        (
            "apex_runs_total{agent=\"supervisor\",outcome=\"completed\"}",
            2.0,
        ),
        (
            "apex_cache_requests_total{cache=\"usage\",result=\"miss\"}",
            1.0,
        ),
        (
            "apex_cache_requests_total{cache=\"usage\",result=\"hit\"}",
            1.0,
        ),
        // Two runs, each appending its eleven events in four blocks (one round trip each).
        (
            "apex_bus_operation_duration_seconds_count{operation=\"append_all\"}",
            8.0,
        ),
        (
            "apex_store_operation_duration_seconds_count{operation=\"begin_run\"}",
            2.0,
        ),
    ] {
        assert_eq!(value(series), expected, "{series} in\n{metrics}");
    }
    assert!(
        value("apex_store_operation_duration_seconds_sum{operation=\"begin_run\"}") > 0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn golden_path_on_services_is_durable_when_agent_completed_arrives() {
    let services =
        services_or_skip!("golden_path_on_services_is_durable_when_agent_completed_arrives");
    let server = TestServer::start_on(&services, |_| {}).await;
    let (_, ready) = server.get_json("/ready").await;
    assert_eq!(ready["mode"], "external");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["dependencies"]["store"]["kind"], "postgres");
    assert_eq!(ready["dependencies"]["bus"]["kind"], "redis");

    let mut client = server.client(ALICE).await;
    let events = client.ask("Where am I wasting money on LLM calls?").await;
    assert_complete_run(&events);
    assert_result_matches_truth(ALICE, &events.last().unwrap()["payload"]["result"]);

    // Read straight from Postgres, right after agent_completed arrived.
    let pool = services.pool().await;
    let run_id: uuid::Uuid = events[0]["run_id"].as_str().unwrap().parse().unwrap();
    let (status, result): (String, Value) =
        sqlx::query_as("SELECT status, result FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(result["total_calls"], 199);
    let logged: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, type FROM events WHERE run_id = $1 ORDER BY seq")
            .bind(run_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        logged.iter().map(|(s, _)| *s as u64).collect::<Vec<_>>(),
        seqs(&events)
    );
    assert_eq!(
        logged.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        RUN_EVENT_TYPES
    );
    let roles: Vec<(String,)> =
        sqlx::query_as("SELECT role FROM messages WHERE run_id = $1 ORDER BY created_at")
            .bind(run_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(roles, [("user".to_owned(),), ("assistant".to_owned(),)]);
    pool.close().await;
    server.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn resume_on_another_instance_gets_every_event_exactly_once_in_order() {
    let services =
        services_or_skip!("resume_on_another_instance_gets_every_event_exactly_once_in_order");
    let slow = |c: &mut apex_backend::Config| {
        c.think_time_ms = 25;
        c.jwt_secret = Some(SECRET.into());
    };
    let a = TestServer::start_on(&services, slow).await;
    let b = TestServer::start_on(&services, slow).await;
    let token = a.login(BOB).await;
    let mut on_a = WsClient::connect(&a, Transport::Header(token.clone()))
        .await
        .unwrap();
    on_a.message("where does my money go?").await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let frame = on_a.next().await.unwrap();
        if frame.get("seq").is_some() {
            seen.push(frame);
        }
    }
    drop(on_a); // mid-run
    let last_seq = seen.last().unwrap()["seq"].as_u64().unwrap();
    let mut on_b = WsClient::connect(&b, Transport::Header(token))
        .await
        .unwrap();
    assert_ne!(on_b.established["server_id"], a.state.server_id.as_str());
    on_b.send(json!({ "type": "resume", "last_seq": last_seq }))
        .await;
    let (rest, _) = on_b.run_events(true).await;
    let mut all = seen;
    all.extend(rest);
    assert_complete_run(&all);
    assert_result_matches_truth(BOB, &all.last().unwrap()["payload"]["result"]);
    assert!(
        matches!(on_b.next_within(Duration::from_millis(300)).await, Err(())),
        "nothing twice"
    );
    a.stop().await;
    b.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn a_user_on_two_instances_receives_runs_started_on_either() {
    let services = services_or_skip!("a_user_on_two_instances_receives_runs_started_on_either");
    let secret = |c: &mut apex_backend::Config| c.jwt_secret = Some(SECRET.into());
    let a = TestServer::start_on(&services, secret).await;
    let b = TestServer::start_on(&services, secret).await;
    let token = a.login(CAROL).await;
    let mut on_a = WsClient::connect(&a, Transport::Header(token.clone()))
        .await
        .unwrap();
    let mut on_b = WsClient::connect(&b, Transport::Subprotocol(token))
        .await
        .unwrap();
    for client in [&mut on_a, &mut on_b] {
        client.send(json!({ "type": "ping" })).await;
        assert_eq!(client.next().await.unwrap()["type"], "pong");
    }
    let from_a = on_a.ask("what do I spend?").await;
    let (seen_on_b, _) = on_b.run_events(true).await;
    assert_eq!(seqs(&seen_on_b), seqs(&from_a));
    let from_b = on_b.ask("and now?").await;
    let (seen_on_a, _) = on_a.run_events(true).await;
    assert_eq!(seqs(&seen_on_a), seqs(&from_b));
    assert_eq!(
        seqs(&[from_a, from_b].concat()),
        (1..=22).collect::<Vec<u64>>(),
        "one gap-free stream"
    );
    a.stop().await;
    b.stop().await;
    services.cleanup().await;
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Child(std::process::Child);

impl Child {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the real binary on the services; returns the child and its address.
fn spawn_backend(services: &Isolated, server_id: &str) -> (Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_apex-backend"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--server-id",
            server_id,
            "--think-time-ms",
            "150",
        ])
        .args([
            "--argon2-m-cost",
            "8",
            "--argon2-t-cost",
            "1",
            "--require-services",
            "--seed-fixtures",
        ])
        .env("APEX_DATABASE_URL", &services.urls.database)
        .env("APEX_REDIS_URL", &services.urls.redis)
        .env("APEX_DATABASE_SCHEMA", &services.schema)
        .env("APEX_REDIS_PREFIX", &services.prefix)
        .env("APEX_JWT_SECRET", SECRET)
        .env("APEX_FIXTURES_DIR", fixtures_dir())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    (Child(child), addr)
}

#[tokio::test]
async fn the_orphan_sweep_leaves_the_instances_live_runs_alone_on_postgres() {
    let services =
        services_or_skip!("the_orphan_sweep_leaves_the_instances_live_runs_alone_on_postgres");
    let server = TestServer::start_on(&services, frequent_sweeps).await;
    assert_live_runs_survive_sweeps(&server).await;
    server.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn a_killed_instance_leaves_its_run_interrupted_with_partial_results_after_restart() {
    let services = services_or_skip!(
        "a_killed_instance_leaves_its_run_interrupted_with_partial_results_after_restart"
    );
    let (mut child, addr) = spawn_backend(&services, "restart-test");
    let http = http_client();
    let login: Value = http
        .post(format!("http://{addr}/api/auth/login"))
        .json(&json!({ "email": ALICE, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let mut client =
        WsClient::connect_url(&format!("ws://{addr}/ws"), Transport::Header(token.clone()))
            .await
            .unwrap();
    client.message("where am I wasting money?").await;
    let (last_seq, run_id) = loop {
        let frame = client.next().await.unwrap();
        // Kill right after the Data Helper finished: its summary is a partial result.
        if frame["type"] == "tool_completed" {
            break (frame["seq"].as_u64().unwrap(), frame["run_id"].clone());
        }
    };
    child.kill();

    let pool = services.pool().await;
    let run_uuid: uuid::Uuid = run_id.as_str().unwrap().parse().unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(run_uuid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        status, "running",
        "the killed instance could not record anything"
    );

    let (mut restarted, addr) = spawn_backend(&services, "restart-test");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, result) = loop {
        let (status, result): (String, Option<Value>) =
            sqlx::query_as("SELECT status, result FROM runs WHERE id = $1")
                .bind(run_uuid)
                .fetch_one(&pool)
                .await
                .unwrap();
        if status != "running" || Instant::now() > deadline {
            break (status, result);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, "interrupted");
    assert_eq!(
        result.unwrap()["data_helper"]["total_calls"],
        199,
        "partial results kept"
    );

    let url = format!("ws://{addr}/ws?last_seq={last_seq}");
    let mut back = WsClient::connect_url(&url, Transport::Header(token))
        .await
        .unwrap();
    assert!(
        back.established["interrupted_runs"]
            .as_array()
            .unwrap()
            .contains(&run_id),
        "{}",
        back.established
    );
    let told = back.next().await.unwrap();
    assert_eq!(told["type"], "agent_error", "{told}");
    assert_eq!(told["run_id"], run_id);
    assert_eq!(told["payload"]["code"], "RUN_INTERRUPTED");
    assert_eq!(
        told["payload"]["partial_results"]["data_helper"]["total_calls"],
        199
    );
    restarted.kill();
    pool.close().await;
    services.cleanup().await;
}

async fn ready(server: &TestServer) -> Value {
    server.get_json("/ready").await.1
}

async fn wait_for_ready_status(server: &TestServer, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = ready(server).await["status"].clone();
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never became {want}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_answering_in_seven_and_a_half_seconds_degrades_and_recovers() {
    let services =
        services_or_skip!("redis_answering_in_seven_and_a_half_seconds_degrades_and_recovers");
    let (proxy, through) = FaultProxy::in_front_of(&services.urls.redis).await.unwrap();
    let mut via_proxy = services.clone();
    via_proxy.urls.redis = through;
    let server = TestServer::start_on(&via_proxy, |_| {}).await;
    let mut client = server.client(ALICE).await;
    client.ask("warm up").await;

    let slow = Toxic::Latency {
        delay: Duration::from_millis(7500),
        jitter: Duration::ZERO,
    };
    let slow = proxy.add(Direction::Both, slow);
    let started = Instant::now();
    let events = client.ask("where am I wasting money?").await;
    let took = started.elapsed();
    assert_complete_run(&events);
    assert_result_matches_truth(ALICE, &events.last().unwrap()["payload"]["result"]);
    assert!(
        took < Duration::from_secs(3),
        "the golden path completes degraded within the default p99 threshold: {took:?}"
    );
    let status = ready(&server).await;
    assert_eq!(status["status"], "degraded", "{status}");
    let bus = &status["dependencies"]["bus"]["state"];
    assert!(
        ["degraded", "timeout", "unavailable"].contains(&bus.as_str().unwrap()),
        "{status}"
    );
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("apex_bus_degraded 1"), "{metrics}");
    assert!(
        metrics.contains("apex_bus_degradations_total 1"),
        "{metrics}"
    );

    proxy.remove(slow);
    wait_for_ready_status(&server, "ready").await;
    let again = client.ask("and now?").await;
    assert_complete_run(&again);
    assert_eq!(
        again[0]["seq"].as_u64().unwrap(),
        events.last().unwrap()["seq"].as_u64().unwrap() + 1,
        "seq continues gap-free"
    );
    server.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn redis_down_mid_run_loses_no_events_for_connected_clients_and_recovers() {
    let services =
        services_or_skip!("redis_down_mid_run_loses_no_events_for_connected_clients_and_recovers");
    let (proxy, through) = FaultProxy::in_front_of(&services.urls.redis).await.unwrap();
    let mut via_proxy = services.clone();
    via_proxy.urls.redis = through;
    let server = TestServer::start_on(&via_proxy, |c| c.think_time_ms = 40).await;
    let mut client = server.client(BOB).await;
    client.message("where does my money go?").await;
    let first = client.next().await.unwrap();
    assert_eq!(first["type"], "agent_started");
    proxy.add(Direction::Both, Toxic::Down);
    let (mut rest, _) = client.run_events(true).await;
    let mut events = vec![first];
    events.append(&mut rest);
    assert_complete_run(&events);
    assert_eq!(ready(&server).await["status"], "degraded");

    proxy.clear();
    wait_for_ready_status(&server, "ready").await;
    // What was numbered while Redis was down was written back: a new connection can replay it.
    let token = server.login(BOB).await;
    let url = format!("{}?last_seq=0", server.ws_url());
    let mut fresh = WsClient::connect_url(&url, Transport::Header(token))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < events.len() {
        replayed.push(fresh.next().await.unwrap());
    }
    assert_eq!(seqs(&replayed), seqs(&events));
    server.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn postgres_down_fails_fast_with_clear_errors_and_recovers() {
    let services = services_or_skip!("postgres_down_fails_fast_with_clear_errors_and_recovers");
    let (proxy, through) = FaultProxy::in_front_of(&services.urls.database)
        .await
        .unwrap();
    let mut via_proxy = services.clone();
    via_proxy.urls.database = through;
    let server = TestServer::start_on(&via_proxy, |_| {}).await;
    let mut client = server.client(CAROL).await;

    proxy.add(Direction::Both, Toxic::Down);
    let started = Instant::now();
    let (status, body) = server
        .post(
            "/api/auth/login",
            json!({ "email": CAROL, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    client.message("what do I spend?").await;
    let frame = client.next().await.unwrap();
    assert_eq!(frame["payload"]["code"], "SERVICE_UNAVAILABLE", "{frame}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        started.elapsed()
    );
    let response = server.http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    let ready: Value = serde_json::from_str(&body).unwrap();
    let store = &ready["dependencies"]["store"];
    assert_eq!(store["ok"], false, "{body}");
    assert!(
        store["state"] == "timeout" || store["state"] == "unavailable",
        "{body}"
    );
    // Names the state, never the driver's message (addresses, ports).
    assert!(
        !body.contains("127.0.0.1") && !body.contains("error"),
        "{body}"
    );

    proxy.clear();
    wait_for_ready_status(&server, "ready").await;
    let events = client.ask("what do I spend?").await;
    assert_complete_run(&events);
    server.login(CAROL).await;
    server.stop().await;
    services.cleanup().await;
}

#[tokio::test]
async fn instances_starting_together_seed_the_same_users_without_conflict() {
    let services =
        services_or_skip!("instances_starting_together_seed_the_same_users_without_conflict");
    let start = || {
        let mut config = apex_backend::Config::for_tests();
        config.fixtures_dir = fixtures_dir();
        services.configure(&mut config);
        config.seed_fixtures = true;
        apex_backend::AppState::start(config, false)
    };
    let (a, b, c) = tokio::join!(start(), start(), start());
    for state in [a, b, c] {
        let state = state.expect("every instance starts");
        let alice = state.store.user_by_email(ALICE).await.unwrap().unwrap();
        assert_eq!(state.store.usage(alice.id).await.unwrap().len(), 199);
    }
    services.cleanup().await;
}
