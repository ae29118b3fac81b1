//! The shipped `scenarios/netra/` files against a stand-in of the real Netra platform, built
//! from what the platform was observed to do (docs/scenarios.md, "Testing another
//! platform"): its routes and answers, `/ws` as committed (an `error_message`, then close
//! 1011) and with its first crash fixed (a welcome, then close 1000 "main cleanup" on the
//! first client frame), the legacy echo, and the demo socket's stream of flat frames with
//! nested sub-agent runs and no `tool_completed`. Each verdict the page asks for is asserted
//! on the real `apex-harness` binary.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use apex_harness::exit_codes;

/// Which `/ws` the platform serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// As committed: every `/ws` connection fails with `RecursionError` and 1011.
    Committed,
    /// Its first crash fixed: a welcome, then 1000 "main cleanup" on the first client frame.
    FirstCrashFixed,
}

fn start(stage: Stage) -> String {
    crate::double::serve(
        Router::new()
            .route("/auth/login", post(login))
            .route("/api/v1/auth/login", post(login))
            .route("/api/websocket/ticket", post(ticket))
            .route(
                "/health",
                get(|| async { axum::Json(json!({ "status": "ok" })) }),
            )
            .route("/ws/health", get(ws_health))
            .route("/ws", get(main_socket))
            .route("/api/v1/websocket", get(main_socket))
            .route("/api/demo/ws", get(demo_socket))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({ "detail": "Not Found" })),
                )
            })
            .with_state(stage),
    )
}

async fn login(axum::Json(body): axum::Json<Value>) -> Response {
    if body["email"] != "dev@example.com" || body["password"] != "dev" {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "detail": "Invalid credentials" })),
        )
            .into_response();
    }
    axum::Json(json!({
        "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXYtdXNlci0wMDEifQ.c2lnbmF0dXJl",
        "refresh_token": "refresh", "token_type": "bearer", "expires_in": 900,
        "user": { "id": "dev-user-001", "email": "dev@example.com" },
    }))
    .into_response()
}

async fn ticket() -> impl IntoResponse {
    axum::Json(json!({
        "ticket_id": "tk-0001", "ttl_seconds": 300, "single_use": true,
        "websocket_url": "wss://example.invalid/ws?ticket=tk-0001",
    }))
}

async fn ws_health() -> impl IntoResponse {
    axum::Json(json!({
        "status": "unhealthy",
        "error": "maximum recursion depth exceeded in comparison",
    }))
}

fn text(frame: Value) -> Message {
    Message::Text(frame.to_string().into())
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn main_socket(
    State(stage): State<Stage>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    match query.get("mode").map(String::as_str) {
        Some("factory") => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some("legacy") => return ws.on_upgrade(legacy),
        _ => {}
    }
    ws.on_upgrade(move |socket| async move {
        match stage {
            Stage::Committed => committed(socket).await,
            Stage::FirstCrashFixed => first_crash_fixed(socket).await,
        }
    })
}

async fn committed(mut socket: WebSocket) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    let error = json!({
        "type": "error_message",
        "data": {
            "error_code": "CONNECTION_ERROR",
            "error_message": "Connection error in main mode",
            "details": { "error_type": "RecursionError", "mode": "main" },
            "timestamp": "2026-11-30T10:00:00Z",
        },
        "timestamp": 1795687584.5, "server_id": null, "correlation_id": null,
    });
    let _ = socket.send(text(error)).await;
    close(&mut socket, 1011, "main mode error").await;
}

async fn first_crash_fixed(mut socket: WebSocket) {
    let welcome = json!({
        "type": "connection_established",
        "data": { "mode": "main", "user_id": "dev-user-001", "connection_id": "conn-1",
                  "golden_path_events": ["agent_started", "agent_thinking", "tool_executing",
                                         "tool_completed", "agent_completed"] },
        "timestamp": 1795687584.5,
    });
    if socket.send(text(welcome)).await.is_err() {
        return;
    }
    // Any first client frame ends the connection 2–5 ms later, with nothing else sent.
    if let Some(Ok(_)) = socket.recv().await {
        tokio::time::sleep(Duration::from_millis(3)).await;
        close(&mut socket, 1000, "main cleanup").await;
    }
}

async fn legacy(mut socket: WebSocket) {
    let welcome = json!({ "type": "connection_established", "data": { "mode": "legacy" } });
    let _ = socket.send(text(welcome)).await;
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(_) = message {
            let echo = json!({ "type": "agent_response", "data": { "message": "Legacy processing: user_message" } });
            let _ = socket.send(text(echo)).await;
        }
    }
}

async fn demo_socket(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(demo)
}

/// The demo stream as observed: flat frames, the supervisor's run id and the thread id
/// (`session_…`) as a sub-agent's run id, no `tool_completed`, a Python repr as the answer.
async fn demo(mut socket: WebSocket) {
    let welcome = json!({
        "type": "connection_established", "connection_id": "demo-1",
        "message": "Welcome to Netra AI Demo! Ask about your AI spend.",
    });
    if socket.send(text(welcome)).await.is_err() {
        return;
    }
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) if t.contains("\"chat\"") => break,
            Some(Ok(_)) => continue,
            _ => return,
        }
    }
    let (run, thread) = ("run_session_7f3a", "session_7f3a");
    let frame = |n: u32, kind: &str, agent: &str, run_id: &str| {
        json!({ "type": kind, "timestamp": format!("2026-11-30T10:00:{n:02}Z"), "agent": agent,
                "run_id": run_id, "message": format!("{agent} step {n}") })
    };
    let mut frames = vec![
        frame(1, "agent_started", "Supervisor", run),
        frame(2, "agent_thinking", "Supervisor", run),
        frame(3, "agent_started", "triage", thread),
        frame(4, "agent_thinking", "triage", thread),
        frame(5, "agent_started", "triage", run),
    ];
    frames.extend((6..=9).map(|n| frame(n, "agent_thinking", "triage", run)));
    frames.push(frame(10, "agent_thinking", "triage", thread));
    let mut tool = frame(11, "tool_executing", "triage", thread);
    tool["tool"] = json!("execution_tools");
    frames.push(tool);
    frames.extend((12..=13).map(|n| frame(n, "agent_thinking", "triage", thread)));
    frames.push(frame(14, "agent_completed", "triage", thread));
    frames.push(frame(15, "agent_completed", "triage", run));
    let mut last = frame(16, "agent_completed", "Supervisor", run);
    last["message"] = json!(
        "{'workflow_completed': True, 'triage': AgentExecutionResult(success=False, \
         error='No request found in state'), 'data': AgentExecutionResult(success=False, \
         error=\"cannot pickle '_contextvars.ContextVar' object\")}"
    );
    frames.push(last);
    tokio::time::sleep(Duration::from_millis(80)).await;
    for frame in frames {
        if socket.send(text(frame)).await.is_err() {
            return;
        }
    }
    // Then silence; the client's close is answered.
    while let Some(Ok(_)) = socket.recv().await {}
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `apex-harness run FILES --target URL`, as a QA engineer would run it, with the
/// platform's dev credentials in the environment.
fn run(url: &str, files: &[&str], extra: &[&str]) -> (u8, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_apex-harness"))
        .current_dir(workspace())
        .arg("run")
        .args(files)
        .args(["--target", url])
        .args(extra)
        .env("NETRA_EMAIL", "dev@example.com")
        .env("NETRA_PASSWORD", "dev")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1) as u8, text)
}

#[test]
fn the_committed_main_socket_is_a_1011_with_the_servers_error_shown() {
    let url = start(Stage::Committed);
    for file in [
        "scenarios/netra/golden_path.yaml",
        "scenarios/netra/golden_path_ticket.yaml",
    ] {
        let (code, out) = run(&url, &[file], &[]);
        assert_eq!(code, exit_codes::JOURNEY_FAILED, "{file}: {out}");
        assert!(out.contains("ws_1011"), "{file}: {out}");
        assert!(out.contains("1011 \"main mode error\""), "{file}: {out}");
        assert!(out.contains("RecursionError"), "{file}: {out}");
        assert!(
            !out.contains("handshake_failed") && !out.contains("no ticket"),
            "{file}: {out}"
        );
    }
}

#[test]
fn the_fixed_main_socket_names_the_close_after_the_message() {
    let url = start(Stage::FirstCrashFixed);
    let (code, out) = run(&url, &["scenarios/netra/golden_path.yaml"], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("connection_closed"), "{out}");
    assert!(
        out.contains("closed with 1000 \"main cleanup\" before `agent_started`"),
        "{out}"
    );
}

#[test]
fn the_legacy_echo_is_named_where_agent_started_was_due() {
    // `/ws?mode=legacy` echoes the message and streams no event.
    let url = start(Stage::Committed);
    let (code, out) = run(
        &url,
        &["scenarios/netra/golden_path.yaml"],
        &["--target-setting", "ws.query=mode=legacy"],
    );
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(
        out.contains("expected `agent_started`, received `agent_response`"),
        "{out}"
    );
    assert!(out.contains("Legacy processing: user_message"), "{out}");
}

#[test]
fn the_demo_socket_misses_tool_completed_and_leaks_a_python_repr() {
    let url = start(Stage::Committed);
    let (code, out) = run(&url, &["scenarios/netra/demo.yaml"], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(
        out.contains("unpaired_tool") && out.contains("execution_tools"),
        "{out}"
    );
    assert!(out.contains("leaks internals: a Python"), "{out}");
    for arrived in [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "agent_completed",
    ] {
        assert!(
            !out.contains(&format!("missing_event:{arrived}")),
            "{arrived}: {out}"
        );
    }
    // The same socket named by the target URL itself.
    let ws_url = format!("{}/api/demo/ws", url.replace("http://", "ws://"));
    let (code, out) = run(&ws_url, &["scenarios/netra/demo.yaml"], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("unpaired_tool"), "{out}");
}

#[test]
fn the_health_truths_show_the_unhealthy_body() {
    let url = start(Stage::Committed);
    let (code, out) = run(&url, &["scenarios/netra/health.yaml"], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("\"unhealthy\""), "{out}");
}

#[test]
fn a_404_on_the_login_route_is_a_journey_failure_not_infrastructure() {
    // The apex contract's login route does not exist on the platform.
    let url = start(Stage::Committed);
    let (code, out) = run(
        &url,
        &["scenarios/netra/golden_path.yaml"],
        &["--target-setting", "login.path=/api/auth/login"],
    );
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("http_error"), "{out}");
    assert!(
        out.contains("/api/auth/login answered 404 Not Found: {\"detail\":\"Not Found\"}"),
        "{out}"
    );
}

#[test]
fn unset_credentials_are_refused_before_the_run() {
    let url = start(Stage::Committed);
    let output = Command::new(env!("CARGO_BIN_EXE_apex-harness"))
        .current_dir(workspace())
        .args(["run", "scenarios/netra/golden_path.yaml", "--target", &url])
        .env_remove("NETRA_EMAIL")
        .env_remove("NETRA_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(exit_codes::USAGE)),
        "{err}"
    );
    assert!(err.contains("`${NETRA_EMAIL}` is not set"), "{err}");
    assert!(
        err.contains("scenarios/netra/golden_path.yaml:13:"),
        "{err}"
    );
}

/// Profiles as data: a profile file applies over its base, and its mistakes point into it.
#[test]
fn profile_files_apply_over_their_base_and_point_at_their_mistakes() {
    let profiles = workspace().join("fixtures/profiles");
    let demo = apex_harness::scenario::load_profile(&profiles.join("demo-socket.yaml")).unwrap();
    assert_eq!(demo.name, "netra-demo");
    assert_eq!(demo.target.ws_path(), "/api/demo/ws");
    assert_eq!(demo.target.login_path(), "/auth/login");
    assert_eq!(demo.target.ticket_field(), "ticket_id");
    assert!(demo.is_ignored("keepalive") && demo.is_ignored("heartbeat"));

    let broken =
        apex_harness::scenario::load_profile(&profiles.join("invalid-key.yaml")).unwrap_err();
    let text = broken[0].to_string();
    assert!(text.contains("unknown field `route`"), "{text}");
    assert!(text.contains("invalid-key.yaml:4:"), "{text}");

    // The demo scenario with its target settings given by the profile file instead.
    let url = start(Stage::Committed);
    let dir = std::env::temp_dir().join(format!("apex-netra-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = std::fs::read_to_string(workspace().join("scenarios/netra/demo.yaml"))
        .unwrap()
        .replace("  ws: { path: /api/demo/ws }\n", "")
        .replace("  message: { type: chat, message: \"{content}\" }\n", "");
    let file = dir.join("demo.yaml");
    std::fs::write(&file, scenario).unwrap();
    let profile = profiles.join("demo-socket.yaml");
    let (code, out) = run(
        &url,
        &[file.to_str().unwrap()],
        &["--profile", profile.to_str().unwrap()],
    );
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("unpaired_tool"), "{out}");
    assert!(
        out.contains("--profile netra-demo replaces its `profile: netra`"),
        "{out}"
    );
}
