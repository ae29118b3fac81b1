//! `GET /health` (liveness), `GET /ready` (dependencies and service mode), `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "server_id": state.server_id }))
}

/// 200 only when the store and the bus both answer; the body lists each.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.store.ping().await;
    let bus = state.bus.ping().await;
    let dependency = |kind: &str, result: &Result<(), String>| match result {
        Ok(()) => json!({ "kind": kind, "ok": true }),
        Err(e) => json!({ "kind": kind, "ok": false, "error": e }),
    };
    let store = store.map_err(|e| e.to_string());
    let bus = bus.map_err(|e| e.to_string());
    let ok = store.is_ok() && bus.is_ok() && !state.is_draining();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ready" } else if state.is_draining() { "draining" } else { "unavailable" },
        "mode": state.mode,
        "server_id": state.server_id,
        "dependencies": {
            "store": dependency(state.store.kind(), &store),
            "bus": dependency(state.bus.kind(), &bus),
        }
    });
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
