//! One WebSocket connection: delivers the user's stream in `seq` order, tracks
//! acknowledgements and re-sends, answers client frames, and closes with the right code.
//!
//! Delivery keeps a cursor, the highest `seq` first-sent on this connection. A live event at
//! the cursor or below is skipped, one beyond the next is preceded by a replay of the gap
//! (a lagging connection recovers from the bus instead of losing events).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Duration, Instant, sleep_until};
use tracing::Instrument;
use uuid::Uuid;

use crate::protocol::{
    ClientFrame, ErrorCode, Event, MAX_FRAME_BYTES, close, error_frame, now_rfc3339,
    parse_client_frame,
};

use crate::bus::{Delivery, Replay};
use crate::protocol::EventType;
use crate::sabotage::Sabotage;
use crate::state::AppState;
use crate::store::UserRecord;
use crate::ws::auth::Connecting;

/// The socket is gone or unusable; the connection ends.
#[derive(Debug)]
struct Closed;

struct Pending {
    event: Arc<Event>,
    due: Instant,
    resends: u32,
}

/// Token bucket over client frames: `rate` per second, bursts of twice that.
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: 2.0 * rate,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(2.0 * self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Connection {
    socket: WebSocket,
    state: AppState,
    user: UserRecord,
    /// Highest `seq` first-sent on this connection.
    cursor: u64,
    /// Lowest `seq` sent on this connection; with `cursor` it bounds what was sent here
    /// (sends are in order, so the range is contiguous).
    sent_lo: Option<u64>,
    /// Live delivery starts with the first client frame or after the resume window.
    armed: bool,
    pending: BTreeMap<u64, Pending>,
    limiter: RateLimiter,
    /// Added to every `seq` written (only under `skip-seq` sabotage).
    seq_offset: u64,
    /// The user's resync generation this connection has followed (docs/protocol.md, `resync`).
    resyncs_seen: u64,
}

pub async fn serve(
    socket: WebSocket,
    state: AppState,
    connecting: Connecting,
    last_seq: Option<u64>,
) {
    let connection_id = Uuid::new_v4();
    let span = tracing::info_span!("ws", %connection_id, user_id = %connecting.user.id);
    serve_connection(socket, state, connecting, last_seq, connection_id)
        .instrument(span)
        .await;
}

async fn serve_connection(
    socket: WebSocket,
    state: AppState,
    connecting: Connecting,
    last_seq: Option<u64>,
    connection_id: Uuid,
) {
    let Connecting {
        user,
        interrupted_runs,
    } = connecting;
    state.metrics.connections_opened.inc();
    state.metrics.connections_open.inc();
    tracing::info!("connected");
    // Subscribe before reading the head (with the session record), so no event falls
    // between the two.
    let mut live = state.bus.subscribe(user.id);
    // Resyncs before this point void nothing sent here.
    let (resyncs_seen, _) = state.bus.resyncs_since(user.id, u64::MAX);
    let limiter = RateLimiter::new(state.config.rate_limit_per_sec);
    let mut conn = Connection {
        socket,
        state: state.clone(),
        user,
        cursor: 0,
        sent_lo: None,
        armed: false,
        pending: BTreeMap::new(),
        limiter,
        seq_offset: 0,
        resyncs_seen,
    };
    // 1006: the socket went away without a close frame.
    let code = conn
        .serve(connection_id, &mut live, last_seq, interrupted_runs)
        .await
        .unwrap_or(1006);
    tracing::info!(code, "disconnected");
    drop(live);
    state.bus.unsubscribed(conn.user.id);
    state.bus.end_session(connection_id).await;
    state.metrics.connection_closed(code);
}

impl Connection {
    /// Runs the connection to its end; returns the close code it ended with.
    async fn serve(
        &mut self,
        connection_id: Uuid,
        live: &mut tokio::sync::broadcast::Receiver<Delivery>,
        last_seq: Option<u64>,
        interrupted: Vec<Uuid>,
    ) -> Result<u16, Closed> {
        let opened = self
            .state
            .bus
            .open_session(connection_id, self.user.id, &self.state.server_id)
            .await;
        let head = match opened {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(error = %e, "event bus unavailable at connect");
                return self.close(close::INTERNAL, "event bus unavailable").await;
            }
        };
        let established = json!({
            "type": "connection_established",
            "connection_id": connection_id,
            "user_id": self.user.id,
            "server_id": self.state.server_id,
            "last_seq": head,
            "interrupted_runs": interrupted,
            "timestamp": now_rfc3339(),
            "payload": {
                "connection_id": connection_id,
                "user_id": self.user.id,
                "server_id": self.state.server_id,
                "last_seq": head,
                "interrupted_runs": interrupted,
            },
        });
        self.send(established.to_string()).await?;
        self.cursor = head;
        if let Some(last_seq) = last_seq {
            self.resume(last_seq).await?;
            self.armed = true;
        }
        let arm_at = Instant::now() + self.state.config.resume_window();
        let shutdown = self.state.connections_close.clone();

        loop {
            let next_due = self.pending.values().map(|p| p.due).min();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Runs have finished by now: deliver what they published, then close.
                    if self.armed {
                        self.catch_up(u64::MAX).await?;
                    }
                    return self.close(close::GOING_AWAY, "server shutting down").await;
                }
                incoming = self.socket.recv() => match incoming {
                    None => return Ok(1006),
                    Some(Err(e)) => {
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("limit") {
                            return self.close(close::TOO_BIG, "message too large").await;
                        }
                        tracing::debug!(error = %text, "socket error");
                        return Ok(1006);
                    }
                    Some(Ok(Message::Text(text))) => {
                        if text.len() > MAX_FRAME_BYTES {
                            return self.close(close::TOO_BIG, "message exceeds 1 MiB").await;
                        }
                        self.on_text(&text).await?;
                        self.armed = true;
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        if bytes.len() > MAX_FRAME_BYTES {
                            return self.close(close::TOO_BIG, "message exceeds 1 MiB").await;
                        }
                        self.send_error(ErrorCode::InvalidFrame, "binary frames are not supported; send JSON text frames", None).await?;
                        self.armed = true;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // The WebSocket layer queued the echoing close frame; flush it out.
                        let _ = futures_util::SinkExt::close(&mut self.socket).await;
                        return Ok(frame.map_or(1005, |f| f.code));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                },
                received = live.recv(), if self.armed => match received {
                    Ok(Delivery::Event(event)) => self.deliver(event).await?,
                    Ok(Delivery::Resync { generation, .. }) => {
                        if generation > self.resyncs_seen {
                            self.follow_resyncs().await?;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "connection lagged; catching up from the bus");
                        // A resync may have been among the deliveries missed: follow it
                        // first, or the cursor would continue over the void numbering.
                        self.follow_resyncs().await?;
                        self.catch_up(u64::MAX).await?;
                    }
                    Err(RecvError::Closed) => {
                        return self.close(close::INTERNAL, "event stream ended").await;
                    }
                },
                () = sleep_until(next_due.unwrap_or(arm_at)), if next_due.is_some() => {
                    self.redeliver_due().await?;
                }
                () = sleep_until(arm_at), if !self.armed => {
                    self.armed = true;
                }
            }
        }
    }

    async fn send(&mut self, text: String) -> Result<(), Closed> {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| Closed)
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        details: Option<serde_json::Value>,
    ) -> Result<(), Closed> {
        self.state.metrics.error_frames.inc();
        self.send(error_frame(code, message, details)).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) -> Result<u16, Closed> {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        Ok(code)
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        let frame = parse_client_frame(text);
        // Acks are exempt: they are cheap, and dropping one would cause redeliveries.
        if !matches!(frame, Ok(ClientFrame::Ack { .. })) && !self.limiter.allow() {
            let details = json!({ "limit_per_sec": self.state.config.rate_limit_per_sec });
            return self
                .send_error(
                    ErrorCode::RateLimited,
                    "too many frames; slow down",
                    Some(details),
                )
                .await;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return self.send_error(e.code(), &e.to_string(), None).await,
        };
        match frame {
            ClientFrame::UserMessage {
                content,
                thread_id,
                client_message_id,
            } => {
                let started = crate::run::start(
                    &self.state,
                    &self.user,
                    content,
                    thread_id,
                    client_message_id,
                )
                .await;
                if let Err(refused) = started {
                    self.send_error(refused.code, &refused.message, None)
                        .await?;
                }
                Ok(())
            }
            ClientFrame::Ack { seq } => {
                let unconfirmed = self.pending.split_off(&(seq.saturating_add(1)));
                let confirmed = std::mem::replace(&mut self.pending, unconfirmed).len();
                self.state.metrics.events_acked.inc_by(confirmed as u64);
                Ok(())
            }
            ClientFrame::Resume { last_seq } => self.resume(last_seq).await,
            ClientFrame::Ping { payload } => {
                self.send(
                    json!({ "type": "pong", "timestamp": now_rfc3339(), "payload": payload })
                        .to_string(),
                )
                .await
            }
        }
    }

    /// First send of an event: advances the cursor and awaits its acknowledgement.
    async fn send_first(&mut self, event: Arc<Event>) -> Result<(), Closed> {
        if self.state.sabotage.is_some() {
            return self.send_sabotaged(event).await;
        }
        self.send(event.to_json(false)).await?;
        self.sent(event);
        Ok(())
    }

    /// The first send under a sabotage mode that breaks the wire (test only).
    async fn send_sabotaged(&mut self, event: Arc<Event>) -> Result<(), Closed> {
        let step = (event.kind, event.agent_name.as_str());
        match self.state.sabotage {
            Some(Sabotage::SkipSeq) => {
                if step == (EventType::AgentThinking, "optimizer") {
                    self.seq_offset = 1;
                }
                let shifted = Event {
                    seq: event.seq + self.seq_offset,
                    ..(*event).clone()
                };
                self.send(shifted.to_json(false)).await?;
            }
            Some(Sabotage::DuplicateEvent) if step == (EventType::ToolCompleted, "data_helper") => {
                self.send(event.to_json(false)).await?;
                self.send(event.to_json(false)).await?;
            }
            Some(Sabotage::Close1011) if step == (EventType::ToolExecuting, "optimizer") => {
                self.send(event.to_json(false)).await?;
                self.close(close::INTERNAL, "sabotage: close-1011").await?;
                return Err(Closed);
            }
            _ => self.send(event.to_json(false)).await?,
        }
        self.sent(event);
        Ok(())
    }

    /// Books a first send: advances the cursor and awaits its acknowledgement.
    fn sent(&mut self, event: Arc<Event>) {
        self.state.metrics.events_sent.inc();
        self.cursor = event.seq;
        self.sent_lo = Some(self.sent_lo.map_or(event.seq, |lo| lo.min(event.seq)));
        let due = Instant::now() + self.state.config.redelivery_timeout();
        self.pending.insert(
            event.seq,
            Pending {
                event,
                due,
                resends: 0,
            },
        );
    }

    /// A live event from the bus.
    async fn deliver(&mut self, event: Arc<Event>) -> Result<(), Closed> {
        if event.seq <= self.cursor {
            return Ok(());
        }
        if event.seq > self.cursor + 1 {
            self.catch_up(event.seq - 1).await?;
        }
        if event.seq == self.cursor + 1 {
            self.send_first(event).await?;
        }
        Ok(())
    }

    /// Follows the user's resyncs since the last one followed here, from the lowest
    /// `from_seq` among them.
    async fn follow_resyncs(&mut self) -> Result<(), Closed> {
        let (generation, from_seq) = self
            .state
            .bus
            .resyncs_since(self.user.id, self.resyncs_seen);
        self.resyncs_seen = generation;
        match from_seq {
            Some(from_seq) => self.resync(from_seq).await,
            None => Ok(()),
        }
    }

    /// The stream after `from_seq` was renumbered (docs/failure-modes.md, two instances
    /// through a Redis outage). If this connection sent anything after it, the client is told
    /// with a `resync` frame that those events are void, and everything after `from_seq` is
    /// delivered again in the new numbering.
    async fn resync(&mut self, from_seq: u64) -> Result<(), Closed> {
        if self.cursor <= from_seq {
            return Ok(());
        }
        let frame = json!({
            "type": "resync",
            "from_seq": from_seq,
            "timestamp": now_rfc3339(),
            "payload": {
                "from_seq": from_seq,
                "reason": "events after from_seq were renumbered after a Redis outage; \
                           discard them, the stream after from_seq follows",
            },
        });
        self.send(frame.to_string()).await?;
        self.cursor = from_seq;
        self.sent_lo = self.sent_lo.filter(|lo| *lo <= from_seq);
        self.pending.retain(|seq, _| *seq <= from_seq);
        self.catch_up(u64::MAX).await
    }

    /// The retained events after `after`, telling the client (error frames) when the bus
    /// failed or retention already dropped some; `None` when the bus failed.
    async fn replay_after(&mut self, after: u64) -> Result<Option<Replay>, Closed> {
        let replay = match self.state.bus.replay(self.user.id, after).await {
            Ok(replay) => replay,
            Err(e) => {
                tracing::error!(error = %e, "replay failed");
                self.send_error(
                    ErrorCode::ServiceUnavailable,
                    "events could not be replayed; send resume to retry",
                    None,
                )
                .await?;
                return Ok(None);
            }
        };
        if let Some(oldest) = replay.truncated_from {
            self.send_error(
                ErrorCode::ReplayTruncated,
                "events after the requested seq were dropped by retention; replaying from the \
                 oldest retained",
                Some(json!({ "oldest_seq": oldest, "requested_after": after })),
            )
            .await?;
        }
        Ok(Some(replay))
    }

    /// First-sends the retained events after the cursor, up to `until`.
    async fn catch_up(&mut self, until: u64) -> Result<(), Closed> {
        let Some(replay) = self.replay_after(self.cursor).await? else {
            return Ok(());
        };
        for event in replay.events.into_iter().filter(|e| e.seq <= until) {
            // A partial replay may lack events between the cursor and the next it holds:
            // stop there, the rest comes from a later catch-up (or a resync voids it).
            let jump_allowed = replay.truncated_from == Some(event.seq);
            if replay.partial && event.seq != self.cursor + 1 && !jump_allowed {
                break;
            }
            self.send_first(event).await?;
        }
        Ok(())
    }

    /// `resume {last_seq}`: every retained event after `last_seq`, in order. Events this
    /// connection had already sent go out again marked `redelivery`; older ones go out
    /// unmarked.
    async fn resume(&mut self, last_seq: u64) -> Result<(), Closed> {
        let head = match self.state.bus.head_seq(self.user.id).await {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(error = %e, "head lookup failed");
                return self
                    .send_error(
                        ErrorCode::ServiceUnavailable,
                        "the event stream is unavailable; retry",
                        None,
                    )
                    .await;
            }
        };
        if last_seq > head {
            return self
                .send_error(
                    ErrorCode::InvalidSeq,
                    &format!("last_seq {last_seq} is ahead of the stream (last seq {head})"),
                    Some(json!({ "last_seq": head })),
                )
                .await;
        }
        if !self.armed {
            // Nothing was sent on this connection yet: the replay is its first delivery.
            self.cursor = last_seq;
        }
        let Some(Replay { events, .. }) = self.replay_after(last_seq).await? else {
            return Ok(());
        };
        // What was sent here before this resume; sends are in order, so it is one range.
        let (sent_lo, sent_hi) = (self.sent_lo.unwrap_or(u64::MAX), self.cursor);
        for event in events {
            if (sent_lo..=sent_hi).contains(&event.seq) {
                self.send(event.to_json(true)).await?;
            } else if event.seq <= sent_hi {
                // Older than anything sent here: a first delivery on this connection, below
                // the cursor because the client asked for it.
                self.send(event.to_json(false)).await?;
                self.state.metrics.events_sent.inc();
                self.sent_lo = Some(self.sent_lo.map_or(event.seq, |lo| lo.min(event.seq)));
            } else {
                self.send_first(event).await?;
            }
        }
        Ok(())
    }

    /// Re-sends unacknowledged events whose time is up; gives up after the last re-send.
    async fn redeliver_due(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        let timeout: Duration = self.state.config.redelivery_timeout();
        let max = self.state.config.max_redeliveries;
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let Some(pending) = self.pending.get_mut(&seq) else {
                continue;
            };
            if pending.resends >= max {
                self.pending.remove(&seq);
                self.state.metrics.events_unacked_dropped.inc();
                continue;
            }
            pending.resends += 1;
            pending.due = now + timeout;
            let text = pending.event.to_json(true);
            self.state.metrics.events_redelivered.inc();
            self.send(text).await?;
        }
        Ok(())
    }
}
