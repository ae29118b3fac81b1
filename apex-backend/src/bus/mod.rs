//! The per-user event stream: `seq` allocation, fan-out to connections, retention for
//! `resume`, and single-use WebSocket tickets.
//!
//! [`EventBus`] is the seam; [`MemBus`] is the in-process implementation of the embedded
//! mode. A Redis implementation slots in behind the same trait (a tail task feeding the same
//! local fan-out).

mod mem;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::protocol::{Event, EventDraft};

pub use mem::MemBus;

/// A bus operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus operation timed out")]
    Timeout,
}

/// What [`EventBus::replay`] found after a given `seq`.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Retained events after the requested `seq`, in `seq` order.
    pub events: Vec<Arc<Event>>,
    /// Set when events after the requested `seq` were already dropped by retention: the
    /// oldest `seq` still retained.
    pub truncated_from: Option<u64>,
}

/// The per-user event streams.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Short name shown by `/ready` (`memory`, `redis`).
    fn kind(&self) -> &'static str;
    async fn ping(&self) -> Result<(), BusError>;

    /// Appends an event to the user's stream with the next `seq` and fans it out.
    async fn publish(&self, user_id: Uuid, draft: EventDraft) -> Result<Arc<Event>, BusError>;
    /// Live events of the user's stream from now on.
    fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Arc<Event>>;
    /// The last `seq` given out on the user's stream (0 if none).
    async fn head_seq(&self, user_id: Uuid) -> Result<u64, BusError>;
    /// Retained events with `seq > after_seq`, in order.
    async fn replay(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError>;

    /// Stores a single-use ticket for `user_id` that expires after `ttl`.
    async fn issue_ticket(
        &self,
        ticket: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError>;
    /// Consumes a ticket: the user it was issued to, once, if it has not expired.
    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Uuid>, BusError>;
}
