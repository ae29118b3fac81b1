//! `GET /health` (liveness), `GET /ready` (dependencies and service mode), `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::bus::BusError;
use crate::state::AppState;
use crate::store::StoreError;

pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "server_id": state.server_id }))
}

/// The state of a dependency that did not answer, as `/ready` names it. The error's text
/// (addresses, driver messages) goes to the log, not to whoever asks.
fn failed(dependency: &str, timed_out: bool, cause: &dyn std::fmt::Display) -> &'static str {
    tracing::warn!(dependency, %cause, "readiness check failed");
    if timed_out { "timeout" } else { "unavailable" }
}

/// 200 when the instance can serve the golden path: the store answers. A bus that cannot
/// reach its service leaves the instance `degraded` (still 200: it delivers in-process); a
/// failing store or a draining instance is 503. The body lists each dependency with its
/// `state` (`ok`, `timeout` or `unavailable`; the bus also `degraded` while it delivers
/// in-process) and the mode.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (store, bus) = tokio::join!(state.store.ping(), state.bus.ping());
    let store = store.map_err(|e| failed("store", matches!(e, StoreError::Timeout), &e));
    let bus = bus.map_err(|e| failed("bus", matches!(e, BusError::Timeout), &e));
    let dependency = |kind: &str, result: &Result<(), &str>, degraded: bool| match result {
        Ok(()) if degraded => json!({ "kind": kind, "ok": true, "state": "degraded" }),
        Ok(()) => json!({ "kind": kind, "ok": true, "state": "ok" }),
        Err(e) => json!({ "kind": kind, "ok": false, "state": e }),
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
            "store": dependency(state.store.kind(), &store, false),
            "bus": dependency(state.bus.kind(), &bus, state.bus.is_degraded()),
        }
    });
    (code, Json(body))
}

/// The instance's metrics, in the OpenMetrics text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}
