//! [`TimedBus`]: any event bus, with each call's latency in
//! `apex_bus_operation_duration_seconds{operation}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{BusError, Delivery, EventBus, Replay};
use crate::metrics::OperationDurations;
use crate::protocol::{Event, EventDraft};

/// An [`EventBus`] that times every call of the bus it wraps, under the method's name.
/// `subscribe` is not timed: it only registers a local receiver.
pub struct TimedBus {
    inner: Arc<dyn EventBus>,
    durations: OperationDurations,
}

impl TimedBus {
    /// Wraps `inner`, recording into `durations`.
    pub fn new(inner: Arc<dyn EventBus>, durations: OperationDurations) -> Self {
        Self { inner, durations }
    }
}

#[async_trait]
impl EventBus for TimedBus {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.durations.time("ping", self.inner.ping()).await
    }

    fn is_degraded(&self) -> bool {
        self.inner.is_degraded()
    }

    fn degradations(&self) -> u64 {
        self.inner.degradations()
    }

    async fn append(&self, user_id: Uuid, draft: EventDraft) -> Result<Arc<Event>, BusError> {
        let work = self.inner.append(user_id, draft);
        self.durations.time("append", work).await
    }

    async fn append_all(
        &self,
        user_id: Uuid,
        drafts: Vec<EventDraft>,
        deliver: usize,
    ) -> Result<Vec<Arc<Event>>, BusError> {
        let work = self.inner.append_all(user_id, drafts, deliver);
        self.durations.time("append_all", work).await
    }

    async fn fan_out(&self, user_id: Uuid, event: &Arc<Event>) -> Result<(), BusError> {
        let work = self.inner.fan_out(user_id, event);
        self.durations.time("fan_out", work).await
    }

    fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Delivery> {
        self.inner.subscribe(user_id)
    }

    fn unsubscribed(&self, user_id: Uuid) {
        self.inner.unsubscribed(user_id);
    }

    fn resyncs_since(&self, user_id: Uuid, seen: u64) -> (u64, Option<u64>) {
        self.inner.resyncs_since(user_id, seen)
    }

    async fn head_seq(&self, user_id: Uuid) -> Result<u64, BusError> {
        self.durations
            .time("head_seq", self.inner.head_seq(user_id))
            .await
    }

    async fn replay(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError> {
        let work = self.inner.replay(user_id, after_seq);
        self.durations.time("replay", work).await
    }

    async fn issue_ticket(
        &self,
        ticket: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let work = self.inner.issue_ticket(ticket, user_id, ttl);
        self.durations.time("issue_ticket", work).await
    }

    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Uuid>, BusError> {
        let work = self.inner.redeem_ticket(ticket);
        self.durations.time("redeem_ticket", work).await
    }

    async fn record_session(&self, connection_id: Uuid, user_id: Uuid, server_id: &str) {
        let work = self.inner.record_session(connection_id, user_id, server_id);
        self.durations.time("record_session", work).await
    }

    async fn open_session(
        &self,
        connection_id: Uuid,
        user_id: Uuid,
        server_id: &str,
    ) -> Result<u64, BusError> {
        let work = self.inner.open_session(connection_id, user_id, server_id);
        self.durations.time("open_session", work).await
    }

    async fn end_session(&self, connection_id: Uuid) {
        let work = self.inner.end_session(connection_id);
        self.durations.time("end_session", work).await
    }
}
