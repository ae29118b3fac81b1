//! The in-process bus of the embedded mode.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::local::{LocalStreams, LocalTickets};
use super::{BusError, Delivery, EventBus, Replay};
use crate::protocol::{Event, EventDraft};

/// In-process [`EventBus`]: one stream per user with bounded retention.
pub struct MemBus {
    streams: LocalStreams,
    tickets: LocalTickets,
}

impl MemBus {
    /// A bus that keeps the last `retain` events of each user for replay.
    pub fn new(retain: usize) -> Self {
        Self {
            streams: LocalStreams::new(retain),
            tickets: LocalTickets::default(),
        }
    }
}

#[async_trait]
impl EventBus for MemBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn append(&self, user_id: Uuid, draft: EventDraft) -> Result<Arc<Event>, BusError> {
        Ok(self.streams.append(user_id, draft))
    }

    async fn append_all(
        &self,
        user_id: Uuid,
        drafts: Vec<EventDraft>,
        deliver: usize,
    ) -> Result<Vec<Arc<Event>>, BusError> {
        let events = self.streams.append_all(user_id, drafts);
        for event in events.iter().take(deliver) {
            self.streams.send(user_id, event);
        }
        Ok(events)
    }

    async fn fan_out(&self, user_id: Uuid, event: &Arc<Event>) -> Result<(), BusError> {
        self.streams.send(user_id, event);
        Ok(())
    }

    fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Delivery> {
        self.streams.subscribe(user_id)
    }

    fn unsubscribed(&self, user_id: Uuid) {
        self.streams.forget_if_idle(user_id);
    }

    fn resyncs_since(&self, user_id: Uuid, seen: u64) -> (u64, Option<u64>) {
        self.streams.resyncs_since(user_id, seen)
    }

    async fn head_seq(&self, user_id: Uuid) -> Result<u64, BusError> {
        Ok(self.streams.head(user_id))
    }

    async fn replay(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError> {
        Ok(self.streams.replay(user_id, after_seq))
    }

    async fn issue_ticket(
        &self,
        ticket: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        self.tickets.issue(ticket, user_id, ttl);
        Ok(())
    }

    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Uuid>, BusError> {
        Ok(self.tickets.redeem(ticket))
    }
}
