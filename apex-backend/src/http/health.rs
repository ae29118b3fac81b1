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

/// 200 when the instance can serve the golden path: the store answers. A bus that cannot
/// reach its service leaves the instance `degraded` (still 200: it delivers in-process); a
/// failing store or a draining instance is 503. The body lists each dependency and the mode.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (store, bus) = tokio::join!(state.store.ping(), state.bus.ping());
    let store = store.map_err(|e| e.to_string());
    let bus = bus.map_err(|e| e.to_string());
    let dependency = |kind: &str, result: &Result<(), String>| match result {
        Ok(()) => json!({ "kind": kind, "ok": true }),
        Err(e) => json!({ "kind": kind, "ok": false, "error": e }),
    };
    let status = if state.is_draining() {
        "draining"
    } else if store.is_err() {
        "unavailable"
    } else if bus.is_err() || state.bus.is_degraded() {
        "degraded"
    } else {
        "ready"
    };
    let code = match status {
        "ready" | "degraded" => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({
        "status": status,
        "mode": state.mode,
        "server_id": state.server_id,
        "dependencies": {
            "store": dependency(state.store.kind(), &store),
            "bus": dependency(state.bus.kind(), &bus),
        }
    });
    (code, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render() + &bus_metrics(&state),
    )
}

fn bus_metrics(state: &AppState) -> String {
    format!(
        "# HELP apex_bus_degraded 1 while the event bus delivers in-process only (Redis unreachable).\n\
         # TYPE apex_bus_degraded gauge\napex_bus_degraded {}\n\
         # HELP apex_bus_degradations_total Times the event bus entered degraded mode.\n\
         # TYPE apex_bus_degradations_total counter\napex_bus_degradations_total {}\n",
        u8::from(state.bus.is_degraded()),
        state.bus.degradations()
    )
}
