//! The per-user event stream: `seq` allocation, fan-out to connections, retention for
//! `resume`, and single-use WebSocket tickets.
//!
//! [`EventBus`] is the seam; [`MemBus`] is the in-process implementation of the embedded
//! mode. A Redis implementation slots in behind the same trait (a tail task feeding the same
//! local fan-out).

mod local;
mod mem;
mod redis;
mod timed;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::protocol::{Event, EventDraft};

pub use mem::MemBus;
pub use redis::{RedisBus, RedisBusOptions};
pub use timed::TimedBus;

/// A bus operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus operation timed out")]
    Timeout,
}

/// What a connection receives on its user's live stream.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An appended event.
    Event(Arc<Event>),
    /// The events after `from_seq` were renumbered: this instance numbered them while cut off
    /// from Redis and another instance numbered others in the meantime. What a connection
    /// sent after `from_seq` is void; the stream after it is fetched again (`resync` frame,
    /// docs/protocol.md). `generation` counts the stream's resyncs: a connection that lagged
    /// behind the channel, and may have missed one, asks [`EventBus::resyncs_since`].
    Resync { from_seq: u64, generation: u64 },
}

/// What [`EventBus::replay`] found after a given `seq`.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Retained events after the requested `seq`, in `seq` order.
    pub events: Vec<Arc<Event>>,
    /// Set when events after the requested `seq` were already dropped by retention: the
    /// oldest `seq` still retained.
    pub truncated_from: Option<u64>,
    /// Read from an in-process mirror that may lack events another instance numbered (the
    /// Redis bus while degraded): a `seq` missing in it is unknown, not lost, so delivery
    /// stops there rather than skip it.
    pub partial: bool,
}

/// The per-user event streams.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Short name shown by `/ready` (`memory`, `redis`).
    fn kind(&self) -> &'static str;
    /// Succeeds when the backing service answers and the bus is not degraded.
    async fn ping(&self) -> Result<(), BusError>;
    /// True while the bus delivers in-process only because its service is unreachable.
    fn is_degraded(&self) -> bool {
        false
    }
    /// How many times the bus entered degraded mode.
    fn degradations(&self) -> u64 {
        0
    }

    /// Appends an event to the user's stream with the next `seq` and retains it for replay.
    /// Connections see it after [`EventBus::fan_out`] (or through a replay).
    async fn append(&self, user_id: Uuid, draft: EventDraft) -> Result<Arc<Event>, BusError>;
    /// Appends events in order as one block of consecutive `seq`s (no other event of the user
    /// falls between them) and delivers the first `deliver` of them as [`EventBus::fan_out`]
    /// would, in one step: one round trip on Redis, where a run's events emitted back to back
    /// would otherwise wait on one append and one publish each. The rest are delivered by
    /// `fan_out` later (`agent_completed`, once the answer is stored).
    async fn append_all(
        &self,
        user_id: Uuid,
        drafts: Vec<EventDraft>,
        deliver: usize,
    ) -> Result<Vec<Arc<Event>>, BusError>;
    /// Delivers an appended event to every connection of the user, on every instance.
    async fn fan_out(&self, user_id: Uuid, event: &Arc<Event>) -> Result<(), BusError>;
    /// Live events of the user's stream from now on.
    fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Delivery>;
    /// A receiver of the user's was dropped: the user's in-process stream is freed if nothing
    /// holds it any more (no receiver, no event ever numbered).
    fn unsubscribed(&self, _user_id: Uuid) {}
    /// The user's resync generation (how many [`Delivery::Resync`] its stream had), and the
    /// lowest `from_seq` of those after generation `seen`, if any (`u64::MAX`: the generation
    /// only). No default: a wrapper that forgot to forward it would hide every resync.
    fn resyncs_since(&self, user_id: Uuid, seen: u64) -> (u64, Option<u64>);
    /// The last `seq` given out on the user's stream (0 if none).
    async fn head_seq(&self, user_id: Uuid) -> Result<u64, BusError>;
    /// Retained events with `seq > after_seq`, in order.
    async fn replay(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError>;

    /// Stores a single-use ticket for `user_id` that expires after `ttl`, in exactly one place
    /// (the shared service, or this process while degraded). On an error the ticket may still
    /// have been stored: the caller must not hand it out.
    async fn issue_ticket(
        &self,
        ticket: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError>;
    /// Consumes a ticket: the user it was issued to, once, if it has not expired.
    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Uuid>, BusError>;

    /// Records an open connection (best effort, bounded).
    async fn record_session(&self, _connection_id: Uuid, _user_id: Uuid, _server_id: &str) {}
    /// Records an open connection (as [`EventBus::record_session`]) and returns the user's
    /// head `seq` (as [`EventBus::head_seq`]), in one round trip where the bus can.
    async fn open_session(
        &self,
        connection_id: Uuid,
        user_id: Uuid,
        server_id: &str,
    ) -> Result<u64, BusError> {
        self.record_session(connection_id, user_id, server_id).await;
        self.head_seq(user_id).await
    }
    /// Forgets a closed connection (best effort, bounded).
    async fn end_session(&self, _connection_id: Uuid) {}
}
