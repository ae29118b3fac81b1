//! The minimal server: answers the golden path and does no work — a fixed login answer, and
//! for each `user_message` the eleven events with `seq`, the echoed message id, and a run id
//! and thread id of their own (per connection and run), so that a client's isolation check
//! has nothing to find: whatever it flags is its own mistake.
//! It is the common target for comparing clients (the harness, k6) by their own cost per
//! journey: whatever CPU a client spends is the client's.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::serve::ListenerExt;
use serde_json::{Value, json};

const EVENTS: [(&str, &str, &str); 11] = [
    ("agent_started", "supervisor", ""),
    ("agent_thinking", "data_helper", ""),
    ("tool_executing", "data_helper", "fetch_usage_data"),
    ("tool_completed", "data_helper", "fetch_usage_data"),
    ("agent_thinking", "optimizer", ""),
    ("tool_executing", "optimizer", "analyze_costs"),
    ("tool_completed", "optimizer", "analyze_costs"),
    ("agent_thinking", "report_generator", ""),
    ("tool_executing", "report_generator", "generate_report"),
    ("tool_completed", "report_generator", "generate_report"),
    ("agent_completed", "supervisor", ""),
];

async fn login() -> impl IntoResponse {
    axum::Json(json!({
        "access_token": "minimal-token",
        "refresh_token": "minimal-refresh",
        "token_type": "Bearer",
        "expires_in": 900,
        "user": { "id": "00000000-0000-0000-0000-000000000001", "email": "vu@apex.test" },
    }))
}

async fn ws(upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(session)
}

/// Connections served so far: each one's thread and run ids are its own.
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn session(mut socket: WebSocket) {
    let connection = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let thread_id = format!("thread-{connection}");
    let established = json!({ "type": "connection_established", "connection_id": "c", "user_id": "u", "server_id": "minimal", "last_seq": 0 });
    if socket
        .send(Message::Text(established.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut seq = 0u64;
    let mut runs = 0u64;
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or_default();
        if frame["type"] != "user_message" {
            continue;
        }
        runs += 1;
        let run_id = format!("run-{connection}-{runs}");
        let message_id = frame["payload"]["message_id"].clone();
        for (kind, agent, tool) in EVENTS {
            seq += 1;
            let payload = match kind {
                "agent_started" => json!({ "client_message_id": message_id }),
                "agent_completed" => {
                    json!({ "final_response": "## Done", "result": { "total_calls": 0 } })
                }
                _ => json!({ "tool_name": tool }),
            };
            let event = json!({ "type": kind, "seq": seq, "run_id": run_id, "thread_id": thread_id, "agent_name": agent, "payload": payload });
            if socket
                .send(Message::Text(event.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The minimal server's routes.
pub fn router() -> Router {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/ws", any(ws))
}

/// Serves [`router`] on `listener` (TCP_NODELAY on every connection) until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}
