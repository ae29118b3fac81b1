//! `GET /ws`: the authenticated upgrade and the per-connection event delivery.

mod auth;
mod connection;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::protocol::MAX_FRAME_BYTES;
use crate::state::AppState;

/// Query parameters of `/ws`.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    /// A single-use ticket from `POST /api/websocket/ticket`.
    pub ticket: Option<String>,
    /// Resume at connect time: replay every retained event after this `seq` before any live
    /// event (race-free alternative to a `resume` frame).
    pub last_seq: Option<u64>,
}

/// Largest message the WebSocket layer buffers; anything above [`MAX_FRAME_BYTES`] and up to
/// this gets a clean close 1009 from the connection itself.
const WS_BUFFER_LIMIT: usize = 16 * MAX_FRAME_BYTES;

/// Initial read buffer of a connection. tungstenite's default (128 KiB) is zero-filled on the
/// first read: 1.4 GB resident for 10,000 idle connections (`idle-scale`). Client frames are
/// small; the buffer grows for a larger one.
const WS_READ_BUFFER: usize = 1024;

pub async fn handler(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let mut upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let offered: Vec<String> = upgrade
        .requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let connecting =
        match auth::authenticate(&state, &headers, query.ticket.as_deref(), &offered).await {
            Ok(connecting) => connecting,
            Err(e) => {
                state.metrics.handshakes_rejected.inc();
                tracing::info!(reason = %e, "websocket handshake refused");
                return e.into_response();
            }
        };
    if let Some(protocol) = auth::select_protocol(&offered)
        && let Ok(value) = protocol.parse()
    {
        upgrade.set_selected_protocol(value);
    }
    upgrade
        .max_message_size(WS_BUFFER_LIMIT)
        .max_frame_size(WS_BUFFER_LIMIT)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            let tracker = state.connections.clone();
            tracker.track_future(connection::serve(socket, state, connecting, query.last_seq))
        })
}
