//! A scripted server for the verdict tests: a login route and a WebSocket that answers the
//! first client message with frames the test gives, then hangs, closes, or waits for the
//! client's close. It plays the broken servers the bundled backend cannot be made into (a
//! late duplicate, a refusal with a misleading body, a hang after `tool_executing`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the server does once its scripted frames are sent.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Sends nothing more and never closes.
    Hang,
    /// Answers the client's close, and nothing else.
    AwaitClose,
}

/// The server's behaviour.
#[derive(Debug, Clone)]
pub struct Script {
    /// Sent after the first client message.
    pub frames: Vec<Value>,
    pub then: Then,
    /// `/ws` refuses the upgrade with this status and body instead.
    pub refuse: Option<(u16, &'static str)>,
}

impl Script {
    pub fn replying(frames: Vec<Value>) -> Self {
        Self {
            frames,
            then: Then::AwaitClose,
            refuse: None,
        }
    }
}

/// A well-formed run of the apex contract: five events, `seq` 1–5, one tool.
pub fn run_of_five(final_response: Option<&str>) -> Vec<Value> {
    let event = |seq: u64, kind: &str, payload: Value| json!({ "type": kind, "seq": seq, "run_id": "run-1", "thread_id": "thread-1", "payload": payload });
    let answer = match final_response {
        Some(text) => json!({ "final_response": text }),
        None => json!({ "result": {} }),
    };
    vec![
        event(1, "agent_started", json!({})),
        event(2, "agent_thinking", json!({})),
        event(3, "tool_executing", json!({ "tool_name": "t" })),
        event(4, "tool_completed", json!({ "tool_name": "t" })),
        event(5, "agent_completed", answer),
    ]
}

/// Starts the server on its own thread and runtime (the CLI under test runs its own);
/// returns its `http://` URL. It lives until the test process ends.
pub fn start(script: Script) -> String {
    serve(
        Router::new()
            .route("/api/auth/login", post(login))
            .route("/ws", get(upgrade))
            .route(
                "/status",
                get(|| async { axum::Json(json!({ "status": "ok" })) }),
            )
            .with_state(Arc::new(script)),
    )
}

/// Serves `app` on `127.0.0.1:0` from a thread and runtime of its own; returns its URL.
pub fn serve(app: Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr: SocketAddr = rx.recv().unwrap();
    format!("http://{addr}")
}

async fn login() -> impl IntoResponse {
    axum::Json(json!({
        "access_token": "double-token",
        "token_type": "Bearer",
        "user": { "id": "double-user" },
    }))
}

async fn upgrade(State(script): State<Arc<Script>>, ws: WebSocketUpgrade) -> Response {
    if let Some((status, body)) = script.refuse {
        return (StatusCode::from_u16(status).unwrap(), body).into_response();
    }
    ws.on_upgrade(move |socket| play(socket, script))
}

async fn play(mut socket: WebSocket, script: Arc<Script>) {
    let welcome = json!({
        "type": "connection_established", "connection_id": "c1", "user_id": "double-user",
        "server_id": "double", "last_seq": 0,
    });
    if socket
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    // The first client message starts the script.
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(_))) => break,
            Some(Ok(_)) => continue,
            _ => return,
        }
    }
    for frame in &script.frames {
        if socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    match script.then {
        Then::Hang => std::future::pending::<()>().await,
        Then::AwaitClose => {
            while let Some(Ok(message)) = socket.recv().await {
                if let Message::Close(_) = message {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1000,
                            reason: "bye".into(),
                        })))
                        .await;
                    return;
                }
            }
        }
    }
}
