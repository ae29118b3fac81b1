//! The in-process bus of the embedded mode.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{BusError, EventBus, Replay};
use crate::protocol::{Event, EventDraft};

/// Live events a slow connection may fall behind before it recovers through replay.
const FANOUT_CAPACITY: usize = 256;

struct UserStream {
    head: u64,
    retained: VecDeque<Arc<Event>>,
    fanout: broadcast::Sender<Arc<Event>>,
}

impl UserStream {
    fn new() -> Self {
        Self {
            head: 0,
            retained: VecDeque::new(),
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
        }
    }
}

#[derive(Default)]
struct Inner {
    streams: HashMap<Uuid, UserStream>,
    tickets: HashMap<String, (Uuid, Instant)>,
}

/// In-process [`EventBus`]: one stream per user with bounded retention.
pub struct MemBus {
    retain: usize,
    inner: Mutex<Inner>,
}

impl MemBus {
    /// A bus that keeps the last `retain` events of each user for replay.
    pub fn new(retain: usize) -> Self {
        Self {
            retain: retain.max(1),
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

    async fn publish(&self, user_id: Uuid, draft: EventDraft) -> Result<Arc<Event>, BusError> {
        let mut inner = self.inner();
        let stream = inner.streams.entry(user_id).or_insert_with(UserStream::new);
        stream.head += 1;
        let event = Arc::new(Event::new(draft, stream.head));
        stream.retained.push_back(event.clone());
        while stream.retained.len() > self.retain {
            stream.retained.pop_front();
        }
        // No receivers is fine: the event is retained for replay.
        let _ = stream.fanout.send(event.clone());
        Ok(event)
    }

    fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Arc<Event>> {
        self.inner()
            .streams
            .entry(user_id)
            .or_insert_with(UserStream::new)
            .fanout
            .subscribe()
    }

    async fn head_seq(&self, user_id: Uuid) -> Result<u64, BusError> {
        Ok(self.inner().streams.get(&user_id).map_or(0, |s| s.head))
    }

    async fn replay(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError> {
        let inner = self.inner();
        let Some(stream) = inner.streams.get(&user_id) else {
            return Ok(Replay::default());
        };
        let oldest = stream.retained.front().map_or(stream.head + 1, |e| e.seq);
        let truncated_from = (after_seq + 1 < oldest && after_seq < stream.head).then_some(oldest);
        // Retained seqs are contiguous, so the start index is arithmetic.
        let skip = (after_seq + 1).saturating_sub(oldest) as usize;
        Ok(Replay {
            events: stream.retained.iter().skip(skip).cloned().collect(),
            truncated_from,
        })
    }

    async fn issue_ticket(
        &self,
        ticket: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut inner = self.inner();
        let now = Instant::now();
        inner.tickets.retain(|_, (_, expires)| *expires > now);
        inner
            .tickets
            .insert(ticket.to_owned(), (user_id, now + ttl));
        Ok(())
    }

    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Uuid>, BusError> {
        let mut inner = self.inner();
        Ok(inner
            .tickets
            .remove(ticket)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(user, _)| user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventType;

    fn draft() -> EventDraft {
        EventDraft {
            kind: EventType::AgentThinking,
            run_id: Uuid::nil(),
            thread_id: Uuid::nil(),
            agent_name: "optimizer".into(),
            payload: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn seq_is_per_user_and_gap_free() {
        let bus = MemBus::new(10);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(bus.publish(a, draft()).await.unwrap().seq, 1);
        assert_eq!(bus.publish(a, draft()).await.unwrap().seq, 2);
        assert_eq!(bus.publish(b, draft()).await.unwrap().seq, 1);
        assert_eq!(bus.head_seq(a).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn replay_returns_exactly_the_events_after_a_seq_and_reports_truncation() {
        let bus = MemBus::new(3);
        let user = Uuid::new_v4();
        for _ in 0..5 {
            bus.publish(user, draft()).await.unwrap();
        }
        let seqs = |r: &Replay| r.events.iter().map(|e| e.seq).collect::<Vec<_>>();
        let replay = bus.replay(user, 3).await.unwrap();
        assert_eq!(seqs(&replay), [4, 5]);
        assert_eq!(replay.truncated_from, None);
        let replay = bus.replay(user, 0).await.unwrap();
        assert_eq!(seqs(&replay), [3, 4, 5]);
        assert_eq!(replay.truncated_from, Some(3));
        assert!(bus.replay(user, 5).await.unwrap().events.is_empty());
    }

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let bus = MemBus::new(3);
        let user = Uuid::new_v4();
        bus.issue_ticket("t1", user, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(bus.redeem_ticket("t1").await.unwrap(), Some(user));
        assert_eq!(bus.redeem_ticket("t1").await.unwrap(), None);
        bus.issue_ticket("t2", user, Duration::ZERO).await.unwrap();
        assert_eq!(bus.redeem_ticket("t2").await.unwrap(), None);
    }
}
