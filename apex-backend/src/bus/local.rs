//! Per-user streams held in this process: retention for replay and fan-out to this
//! instance's connections. The embedded bus is just this; the Redis bus keeps one as its
//! local mirror and as its fallback while Redis is unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Delivery, Replay};
use crate::protocol::{Event, EventDraft};

/// Live events a slow connection may fall behind before it recovers through replay. Each user
/// with a connection holds the channel's slots (about 50 bytes each): at 256 that was 12 KiB
/// of the 21 KiB an idle connection cost (`idle-scale`). Five runs of one user at once emit
/// 55 events; a connection further behind catches up from the retained stream.
const FANOUT_CAPACITY: usize = 64;

struct UserStream {
    head: u64,
    /// Retained events, each with whether it was handed to this instance's connections.
    retained: BTreeMap<u64, (Arc<Event>, bool)>,
    fanout: broadcast::Sender<Delivery>,
    /// The `from_seq` of every resync of this stream, in order; its length is the stream's
    /// resync generation. A connection that lagged behind the fan-out channel reads here the
    /// resyncs it may have missed.
    resyncs: Vec<u64>,
}

impl UserStream {
    fn new() -> Self {
        Self {
            head: 0,
            retained: BTreeMap::new(),
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
            resyncs: Vec::new(),
        }
    }
}

/// The local streams.
pub struct LocalStreams {
    retain: usize,
    streams: Mutex<HashMap<Uuid, UserStream>>,
}

impl LocalStreams {
    pub fn new(retain: usize) -> Self {
        Self {
            retain: retain.max(1),
            streams: Mutex::default(),
        }
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<Uuid, UserStream>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers a draft with the next local `seq` and retains it.
    pub fn append(&self, user_id: Uuid, draft: EventDraft) -> Arc<Event> {
        self.append_event(user_id, Event::new(draft, 0))
    }

    /// Numbers drafts with the next local `seq`s, as one block, and retains them.
    pub fn append_all(&self, user_id: Uuid, drafts: Vec<EventDraft>) -> Vec<Arc<Event>> {
        let mut streams = self.streams();
        let stream = streams.entry(user_id).or_insert_with(UserStream::new);
        drafts
            .into_iter()
            .map(|draft| {
                let event = Arc::new(Event::new(draft, stream.head + 1));
                self.retain_in(stream, event.clone());
                event
            })
            .collect()
    }

    /// Gives an event the next local `seq` and retains it.
    pub fn append_event(&self, user_id: Uuid, event: Event) -> Arc<Event> {
        let mut streams = self.streams();
        let stream = streams.entry(user_id).or_insert_with(UserStream::new);
        let event = Arc::new(Event {
            seq: stream.head + 1,
            ..event
        });
        self.retain_in(stream, event.clone());
        event
    }

    /// Forgets every event after `from_seq` (they were renumbered elsewhere): the events
    /// numbered here after it are void from now on ([`LocalStreams::send`] drops them).
    pub fn forget_after(&self, user_id: Uuid, from_seq: u64) {
        let mut streams = self.streams();
        let stream = streams.entry(user_id).or_insert_with(UserStream::new);
        stream.retained.retain(|seq, _| *seq <= from_seq);
        stream.head = from_seq;
    }

    /// Tells this instance's connections of the user to fetch the stream after `from_seq`
    /// again (after [`LocalStreams::forget_after`]).
    pub fn resync(&self, user_id: Uuid, from_seq: u64) {
        let mut streams = self.streams();
        let stream = streams.entry(user_id).or_insert_with(UserStream::new);
        stream.resyncs.push(from_seq);
        let generation = stream.resyncs.len() as u64;
        let _ = stream.fanout.send(Delivery::Resync {
            from_seq,
            generation,
        });
    }

    /// The user's resync generation, and the lowest `from_seq` of the resyncs after
    /// generation `seen` (none if there was none since; `u64::MAX` asks for the generation
    /// only).
    pub fn resyncs_since(&self, user_id: Uuid, seen: u64) -> (u64, Option<u64>) {
        let streams = self.streams();
        let Some(stream) = streams.get(&user_id) else {
            return (0, None);
        };
        let generation = stream.resyncs.len() as u64;
        let missed = usize::try_from(seen).map_or(&[][..], |seen| {
            stream.resyncs.get(seen..).unwrap_or_default()
        });
        (generation, missed.iter().copied().min())
    }

    fn retain_in(&self, stream: &mut UserStream, event: Arc<Event>) {
        stream.head = stream.head.max(event.seq);
        stream.retained.entry(event.seq).or_insert((event, false));
        while stream.retained.len() > self.retain {
            stream.retained.pop_first();
        }
    }

    /// Retains an event numbered elsewhere; false if its `seq` was already known.
    pub fn insert(&self, user_id: Uuid, event: Arc<Event>) -> bool {
        let mut streams = self.streams();
        let stream = streams.entry(user_id).or_insert_with(UserStream::new);
        if stream.retained.contains_key(&event.seq) || event.seq + self.retain as u64 <= stream.head
        {
            return false;
        }
        self.retain_in(stream, event);
        true
    }

    /// Hands an event to this instance's connections of the user, once: an event that
    /// reached this instance by two paths (its own publish and a resync) is sent one time.
    /// False when the event is void: numbered here while cut off from Redis and renumbered
    /// since (a resync forgot its `seq`, or another event holds it now); it is not sent.
    pub fn send(&self, user_id: Uuid, event: &Arc<Event>) -> bool {
        let mut streams = self.streams();
        let Some(stream) = streams.get_mut(&user_id) else {
            return true;
        };
        match stream.retained.get_mut(&event.seq) {
            Some((held, _)) if !Arc::ptr_eq(held, event) && **held != **event => return false,
            Some((_, sent)) => {
                if *sent {
                    return true;
                }
                *sent = true;
            }
            // Not retained: dropped by retention, or forgotten by a resync.
            None if event.seq > stream.head => return false,
            None => {}
        }
        // No receivers is fine: the event is retained for replay.
        let _ = stream.fanout.send(Delivery::Event(event.clone()));
        true
    }

    pub fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Delivery> {
        self.streams()
            .entry(user_id)
            .or_insert_with(UserStream::new)
            .fanout
            .subscribe()
    }

    /// Frees the user's stream when it holds nothing: no receiver, no event ever numbered or
    /// seen (an idle connection that closed). Its fan-out channel is most of what an idle
    /// user costs.
    pub fn forget_if_idle(&self, user_id: Uuid) {
        let mut streams = self.streams();
        if streams
            .get(&user_id)
            .is_some_and(|s| s.head == 0 && s.retained.is_empty() && s.fanout.receiver_count() == 0)
        {
            streams.remove(&user_id);
        }
    }

    pub fn head(&self, user_id: Uuid) -> u64 {
        self.streams().get(&user_id).map_or(0, |s| s.head)
    }

    /// Raises the known head (learned from elsewhere) so local numbering continues after it.
    pub fn observe_head(&self, user_id: Uuid, head: u64) {
        let mut streams = self.streams();
        let stream = streams.entry(user_id).or_insert_with(UserStream::new);
        stream.head = stream.head.max(head);
    }

    /// Users with at least one connection on this instance.
    pub fn subscribed_users(&self) -> Vec<Uuid> {
        self.streams()
            .iter()
            .filter(|(_, s)| s.fanout.receiver_count() > 0)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn replay(&self, user_id: Uuid, after_seq: u64) -> Replay {
        let streams = self.streams();
        let Some(stream) = streams.get(&user_id) else {
            return Replay::default();
        };
        let oldest = stream
            .retained
            .keys()
            .next()
            .copied()
            .unwrap_or(stream.head + 1);
        let truncated_from = (after_seq + 1 < oldest && after_seq < stream.head).then_some(oldest);
        Replay {
            events: stream
                .retained
                .range(after_seq.saturating_add(1)..)
                .map(|(_, (e, _))| e.clone())
                .collect(),
            truncated_from,
            partial: false,
        }
    }
}

/// Single-use tickets held in this process: the embedded bus's tickets, and the Redis bus's
/// while Redis is unreachable.
#[derive(Default)]
pub struct LocalTickets(Mutex<HashMap<String, (Uuid, Instant)>>);

impl LocalTickets {
    pub fn issue(&self, ticket: &str, user_id: Uuid, ttl: Duration) {
        let mut tickets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tickets.retain(|_, (_, expires)| *expires > now);
        tickets.insert(ticket.to_owned(), (user_id, now + ttl));
    }

    /// The ticket's user, once, if it has not expired.
    pub fn redeem(&self, ticket: &str) -> Option<Uuid> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ticket)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(user, _)| user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventType;

    fn draft(step: u64) -> EventDraft {
        EventDraft {
            kind: EventType::AgentThinking,
            run_id: Uuid::nil(),
            thread_id: Uuid::nil(),
            agent_name: "supervisor".into(),
            payload: serde_json::json!({ "step": step }),
        }
    }

    fn delivered(rx: &mut broadcast::Receiver<Delivery>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|d| match d {
                Delivery::Event(e) => format!("event {}", e.seq),
                Delivery::Resync {
                    from_seq,
                    generation,
                } => format!("resync {from_seq} #{generation}"),
            })
            .collect()
    }

    #[test]
    fn a_resync_lost_to_a_lag_is_still_found_by_its_generation() {
        let streams = LocalStreams::new(1000);
        let user = Uuid::new_v4();
        let mut rx = streams.subscribe(user);
        let (seen, missed) = streams.resyncs_since(user, u64::MAX);
        assert_eq!((seen, missed), (0, None));
        streams.resync(user, 7);
        // More than the channel holds after it: the receiver lags and loses the resync.
        for step in 0..FANOUT_CAPACITY as u64 + 1 {
            let event = streams.append(user, draft(step));
            streams.send(user, &event);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        assert!(!delivered(&mut rx).iter().any(|d| d.starts_with("resync")));
        assert_eq!(streams.resyncs_since(user, seen), (1, Some(7)));
        streams.resync(user, 3);
        streams.resync(user, 5);
        assert_eq!(streams.resyncs_since(user, seen), (3, Some(3)));
        assert_eq!(streams.resyncs_since(user, 2), (3, Some(5)));
        assert_eq!(streams.resyncs_since(user, 3), (3, None));
        assert_eq!(delivered(&mut rx), ["resync 3 #2", "resync 5 #3"]);
    }

    #[test]
    fn an_event_forgotten_by_a_resync_is_not_sent_under_its_old_seq() {
        let streams = LocalStreams::new(1000);
        let user = Uuid::new_v4();
        let mut rx = streams.subscribe(user);
        let kept = streams.append(user, draft(1));
        let void = streams.append(user, draft(2));
        streams.forget_after(user, 1);
        assert!(streams.send(user, &kept));
        // Its seq forgotten: void.
        assert!(!streams.send(user, &void));
        // Its seq taken by another event (the stream after the resync): void too.
        let other = Arc::new(Event::new(draft(3), 2));
        assert!(streams.insert(user, other.clone()));
        assert!(!streams.send(user, &void));
        assert!(streams.send(user, &other));
        assert_eq!(delivered(&mut rx), ["event 1", "event 2"]);
        // Dropped by retention (not forgotten): still sent, replay says what was lost.
        let small = LocalStreams::new(1);
        let old = small.append(user, draft(1));
        small.append(user, draft(2));
        assert!(small.send(user, &old));
    }
}
