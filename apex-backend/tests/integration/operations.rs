//! Health, readiness, metrics, demo mode and graceful shutdown.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn health_ready_and_metrics_report_the_service() {
    let server = TestServer::start().await;
    let (_, health) = server.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    let response = server.http.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["mode"], "embedded");
    assert_eq!(ready["dependencies"]["store"]["ok"], true);
    assert_eq!(ready["dependencies"]["store"]["state"], "ok");
    assert_eq!(ready["dependencies"]["bus"]["state"], "ok");
    assert_eq!(ready["dependencies"]["bus"]["kind"], "memory");

    let mut client = server.client(ALICE).await;
    client.ask("where am I wasting money?").await;
    let _ = server
        .post(
            "/api/auth/login",
            serde_json::json!({ "email": ALICE, "password": "nope" }),
        )
        .await;
    drop(client);
    let metrics = server.metrics_text().await;
    for line in [
        "apex_runs_total{agent=\"supervisor\",outcome=\"completed\"} 1",
        "apex_events_sent_total 11",
        "apex_logins_total{result=\"ok\"} 1",
        "apex_logins_total{result=\"failed\"} 1",
        "apex_ws_connections_opened_total 1",
        "apex_journey_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
}

/// One journey shows in the business metrics: runs by agent, deliveries confirmed, the
/// store's and bus's operations timed; and the text is OpenMetrics Prometheus accepts.
#[tokio::test]
async fn a_journey_shows_in_the_business_metrics() {
    let server = TestServer::start().await;
    let mut client = server.client(ALICE).await;
    assert_complete_run(&client.ask("where am I wasting money?").await);
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let metrics = server.metrics_once("apex_events_acked_total", 11.0).await;
    assert!(
        !metrics.contains("..\n"),
        "HELP ends in one period: {metrics}"
    );
    let samples = parse_exposition(&metrics);
    let value = |series: &str| samples.get(series).copied().unwrap_or(-1.0);
    for (series, expected) in [
        (
            "apex_runs_total{agent=\"supervisor\",outcome=\"started\"}",
            1.0,
        ),
        (
            "apex_runs_total{agent=\"supervisor\",outcome=\"completed\"}",
            1.0,
        ),
        (
            "apex_runs_total{agent=\"supervisor\",outcome=\"failed\"}",
            0.0,
        ),
        ("apex_events_sent_total", 11.0),
        ("apex_events_acked_total", 11.0),
        ("apex_events_redelivered_total", 0.0),
        ("apex_ws_connections_open", 1.0),
        ("apex_bus_degraded", 0.0),
    ] {
        assert_eq!(value(series), expected, "{series} in\n{metrics}");
    }
    for series in [
        "apex_store_operation_duration_seconds_count{operation=\"begin_run\"}",
        "apex_store_operation_duration_seconds_count{operation=\"usage\"}",
        "apex_store_operation_duration_seconds_count{operation=\"complete_run\"}",
        "apex_bus_operation_duration_seconds_count{operation=\"append_all\"}",
        "apex_bus_operation_duration_seconds_count{operation=\"fan_out\"}",
    ] {
        assert!(value(series) > 0.0, "{series} in\n{metrics}");
    }
    // The in-memory store has no cache to report.
    assert!(!metrics.contains("apex_cache_requests"), "{metrics}");
    drop(client);
}

#[tokio::test]
async fn demo_mode_is_off_by_default_and_gives_each_session_its_own_identity() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/api/auth/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let server = TestServer::start_with(|c| c.demo_mode = true).await;
    let (status, first) = server.post("/api/auth/demo", Value::Null).await;
    assert_eq!(status, 200);
    let (_, second) = server.post("/api/auth/demo", Value::Null).await;
    assert_ne!(first["user"]["id"], second["user"]["id"]);
    let token = first["access_token"].as_str().unwrap().to_owned();
    let mut client = WsClient::connect(&server, Transport::Header(token))
        .await
        .unwrap();
    assert_eq!(client.established["user_id"], first["user"]["id"]);
    let events = client.ask("where am I wasting money?").await;
    assert_complete_run(&events);
}

#[tokio::test]
async fn shutdown_lets_the_run_finish_then_closes_with_1001() {
    let server = TestServer::start_with(|c| c.think_time_ms = 30).await;
    let mut client = server.client(ALICE).await;
    client.message("where am I wasting money?").await;
    let first = client.next().await.unwrap();
    assert_eq!(first["type"], "agent_started");
    let stopping = tokio::spawn(server.stop());
    let (events, _) = client.run_events(true).await;
    assert_eq!(events.last().unwrap()["type"], "agent_completed");
    assert_eq!(client.close_code().await, Some(1001));
    stopping.await.unwrap();
}

/// The orphan sweep runs every `run_stale_secs / 2`; it must never take this instance's own
/// live runs for orphans (it once interrupted every run in flight at each sweep).
#[tokio::test]
async fn the_orphan_sweep_leaves_the_instances_live_runs_alone() {
    let server = TestServer::start_with(frequent_sweeps).await;
    assert_live_runs_survive_sweeps(&server).await;
}

#[tokio::test]
async fn runs_past_the_grace_period_are_marked_interrupted() {
    let server = TestServer::start_with(|c| {
        c.think_time_ms = 400;
        c.shutdown_grace_secs = 0;
    })
    .await;
    let state = server.state.clone();
    let mut client = server.client(ALICE).await;
    client.message("where am I wasting money?").await;
    let started = client.next().await.unwrap();
    let run_id: uuid::Uuid = started["run_id"].as_str().unwrap().parse().unwrap();
    server.stop().await;
    let run = state.store.run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, apex_backend::store::RunStatus::Interrupted);
    let mut kinds = Vec::new();
    while let Ok(Some(frame)) = client.next_within(std::time::Duration::from_secs(2)).await {
        kinds.push(frame["type"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        kinds.contains(&"agent_error".to_owned()),
        "the user is told: {kinds:?}"
    );
}
