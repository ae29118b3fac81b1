//! The Redis bus: per-user streams (`XADD` with the `seq` as entry id, bounded by `MAXLEN`),
//! `seq` allocation by `INCR` in the same Lua script (so it is gap-free across instances),
//! fan-out by Pub/Sub to every instance, single-use tickets, session records.
//!
//! Every operation has an explicit timeout. When Redis fails or is slow, the bus degrades:
//! events are numbered and delivered in-process (connections of this instance still complete
//! the golden path), `/ready` says so, and a recovery task writes the degraded events back
//! to Redis and leaves degraded mode as soon as Redis answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::local::{LocalStreams, LocalTickets};
use super::{BusError, Delivery, EventBus, Replay};
use crate::protocol::{Event, EventDraft};

/// Numbers and appends events atomically, as one block of consecutive `seq`s in order, and
/// publishes the first `deliver` of them to the other instances, in one round trip: KEYS =
/// counter, stream; ARGV = maxlen, channel, the envelope's start (origin, user), deliver, then
/// each event's body split around its `seq` (head ending in `"seq":`, tail). The stream holds
/// the bodies with `seq` 0, as before; the envelopes the events with their `seq`, as
/// [`Shared::publish`] writes them. Returns the first `seq`.
const APPEND: &str = r#"
local n = (#ARGV - 4) / 2
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
local deliver = tonumber(ARGV[4])
for i = 1, n do
  local seq = first + i - 1
  local head, tail = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'e', head .. '0' .. tail)
  if i <= deliver then
    redis.call('PUBLISH', ARGV[2], ARGV[3] .. head .. seq .. tail .. '}')
  end
end
return first"#;

/// An event's body (with `seq` 0) split around the `seq`'s value: the head ends in `"seq":`.
/// `Event` serializes `type` (an enum's name) first and `seq` second, so the first `"seq":0`
/// is the field.
fn split_at_seq(body: &[u8]) -> Option<(&[u8], &[u8])> {
    const FIELD: &[u8] = b"\"seq\":0,";
    let at = body.windows(FIELD.len()).position(|w| w == FIELD)?;
    Some((&body[..at + 6], &body[at + 7..]))
}

/// Writes back one user's events numbered while degraded: KEYS = counter, stream; ARGV =
/// maxlen, base (the `seq` before the first of them), then (seq, body) pairs in order (bodies
/// with `seq` 0, as appends write them).
///
/// An event whose body is already in the stream after `base` landed before its append timed
/// out: it is not written again. Any other entry after `base` was numbered by another
/// instance: a conflict, and so is an event of ours whose `seq` Redis already gave out. On a
/// conflict the events are renumbered after the counter (and this instance resyncs its
/// connections); otherwise they keep their `seq`. Returns {conflict, the `seq` each pair was
/// written at (0: already there)}.
const SYNC: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = tonumber(ARGV[2])
local ours, landed, conflict = {}, {}, false
for i = 3, #ARGV, 2 do ours[ARGV[i + 1]] = true end
if cur > base then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '(' .. base .. '-0', '+')) do
    if ours[entry[2][2]] then landed[entry[2][2]] = true else conflict = true end
  end
end
for i = 3, #ARGV, 2 do
  if not landed[ARGV[i + 1]] and tonumber(ARGV[i]) <= cur then conflict = true end
end
local start, given = cur, {}
for i = 3, #ARGV, 2 do
  local seq = 0
  if not landed[ARGV[i + 1]] then
    if conflict then seq = cur + 1 else seq = tonumber(ARGV[i]) end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'e', ARGV[i + 1])
    cur = seq
  end
  given[#given + 1] = seq
end
if cur > start then redis.call('SET', KEYS[1], cur) end
return {conflict and 1 or 0, given}";

/// How to reach Redis and how to name things in it.
#[derive(Debug, Clone)]
pub struct RedisBusOptions {
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Upper bound of every operation.
    pub timeout: Duration,
    /// Events retained per user (approximately, `MAXLEN ~`).
    pub retain: usize,
}

/// What goes over the Pub/Sub channel: the user and the event.
#[derive(Deserialize)]
struct Envelope {
    u: Uuid,
    e: Event,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    u: Uuid,
    e: &'a Event,
}

struct Shared {
    options: RedisBusOptions,
    conn: ConnectionManager,
    client: redis::Client,
    local: LocalStreams,
    degraded: AtomicBool,
    degradations: AtomicU64,
    /// Events numbered locally while degraded, to write back on recovery.
    pending: Mutex<HashMap<Uuid, Vec<Arc<Event>>>>,
    /// Users whose written-back events were renumbered, with the `seq` their connections
    /// resync from once the write-back is complete.
    resyncs: Mutex<HashMap<Uuid, u64>>,
    /// Keeps the two ways of numbering apart: appends through Redis hold it shared; an
    /// append numbered here while degraded, and the recovery's write-back up to leaving
    /// degraded mode, hold it exclusively. So local numbering starts only after every append
    /// in flight to Redis has landed in the local head, and no append can be numbered locally
    /// between the write-back and the switch back to Redis (which would give two events one
    /// `seq`, and the second one would never be delivered).
    numbering: tokio::sync::RwLock<()>,
    tickets: LocalTickets,
    append: redis::Script,
    sync: redis::Script,
    stop: CancellationToken,
    /// Envelopes for the Pub/Sub channel, published in order by one task.
    outbox: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// Prefixes this instance's envelopes, so its tail skips them without parsing.
    origin: [u8; 32],
}

/// Envelopes waiting for the publisher; beyond it, fan-out to other instances falls back to
/// their gap detection and resync.
const OUTBOX_CAPACITY: usize = 16 * 1024;

/// [`EventBus`] on Redis with in-process degradation.
pub struct RedisBus(Arc<Shared>);

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.0.stop.cancel();
    }
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl Shared {
    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}{kind}:{id}", self.options.prefix)
    }

    fn channel(&self) -> String {
        format!("{}events", self.options.prefix)
    }

    /// Runs a Redis operation under the timeout; any failure enters degraded mode.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BusError> {
        let result = match tokio::time::timeout(self.options.timeout, work).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => unavailable(e),
            Err(_) => BusError::Timeout,
        };
        self.degrade(&result);
        Err(result)
    }

    fn degrade(&self, cause: &BusError) {
        if !self.degraded.swap(true, Ordering::SeqCst) {
            self.degradations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %cause, "redis unreachable: event bus degraded to in-process delivery");
        }
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    /// An event read back from the stream. Not added to the local mirror: only the tail and
    /// this instance's appends do that, so the mirror's fan-out never skips an event.
    fn decode(id: &str, body: &[u8]) -> Option<Arc<Event>> {
        let seq = id.split('-').next()?.parse().ok()?;
        let mut event: Event = serde_json::from_slice(body).ok()?;
        event.seq = seq;
        Some(Arc::new(event))
    }

    /// The commands recording an open connection (`session:<id>`, a hash kept a day).
    fn session_pipe(&self, connection_id: Uuid, user_id: Uuid, server_id: &str) -> redis::Pipeline {
        let key = self.key("session", connection_id);
        let fields = [
            ("user_id", user_id.to_string()),
            ("server_id", server_id.to_owned()),
            ("connected_at", crate::protocol::now_rfc3339()),
        ];
        let mut pipe = redis::pipe();
        pipe.hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, 24 * 3600)
            .ignore();
        pipe
    }

    /// Catches up the local mirror of users connected here (after the tail was down).
    async fn resync_local(&self) {
        for user_id in self.local.subscribed_users() {
            let head = self.local.head(user_id);
            if let Ok(replay) = self.replay_remote(user_id, head).await {
                for event in replay.events {
                    if self.local.insert(user_id, event.clone()) {
                        self.local.send(user_id, &event);
                    }
                }
            }
        }
    }

    async fn replay_remote(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError> {
        let mut conn = self.conn.clone();
        let stream = self.key("stream", user_id);
        let counter = self.key("seq", user_id);
        let (entries, head): (redis::streams::StreamRangeReply, Option<u64>) = self
            .bounded(async {
                redis::pipe()
                    .xrange(&stream, format!("({after_seq}-0"), "+")
                    .get(&counter)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let head = head.unwrap_or(0);
        self.local.observe_head(user_id, head);
        let events: Vec<Arc<Event>> = entries
            .ids
            .iter()
            .filter_map(|entry| {
                let body: Vec<u8> = entry.get("e")?;
                Self::decode(&entry.id, &body)
            })
            .collect();
        let first = events.first().map_or(head + 1, |e| e.seq);
        let truncated_from = (after_seq + 1 < first && after_seq < head).then_some(first);
        Ok(Replay {
            events,
            truncated_from,
            partial: false,
        })
    }

    /// Writes back what was numbered while degraded; true when Redis took it all. Events
    /// written are published to the other instances; users whose events were renumbered are
    /// noted for a resync.
    async fn write_back(&self) -> bool {
        let pending: Vec<(Uuid, Vec<Arc<Event>>)> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        let mut ok = true;
        for (user_id, events) in pending {
            match self.write_back_user(user_id, &events).await {
                Some(written) => {
                    for event in written {
                        self.publish(user_id, &event);
                    }
                }
                None => {
                    ok = false;
                    self.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(user_id)
                        .or_default()
                        .extend(events);
                }
            }
        }
        ok
    }

    /// Writes back one user's degraded events (the [`SYNC`] script); the events as written
    /// (with the `seq` Redis holds them at), or `None` when Redis did not answer.
    async fn write_back_user(&self, user_id: Uuid, events: &[Arc<Event>]) -> Option<Vec<Event>> {
        let base = events.first()?.seq.saturating_sub(1);
        let mut invocation = self.sync.prepare_invoke();
        invocation
            .key(self.key("seq", user_id))
            .key(self.key("stream", user_id))
            .arg(self.options.retain)
            .arg(base);
        for event in events {
            let unnumbered = Event {
                seq: 0,
                ..(**event).clone()
            };
            invocation
                .arg(event.seq)
                .arg(serde_json::to_vec(&unnumbered).unwrap_or_default());
        }
        let mut conn = self.conn.clone();
        let written = tokio::time::timeout(
            self.options.timeout,
            invocation.invoke_async::<(u8, Vec<u64>)>(&mut conn),
        )
        .await;
        let Ok(Ok((conflict, given))) = written else {
            return None;
        };
        if conflict == 1 {
            tracing::warn!(%user_id, base, "events numbered while degraded were renumbered after another instance's");
            let mut resyncs = self.resyncs.lock().unwrap_or_else(|e| e.into_inner());
            let from = resyncs.entry(user_id).or_insert(base);
            *from = (*from).min(base);
        }
        Some(
            events
                .iter()
                .zip(given)
                .filter(|(_, seq)| *seq > 0)
                .map(|(event, seq)| Event {
                    seq,
                    ..(**event).clone()
                })
                .collect(),
        )
    }

    /// Queues an event for the other instances (Pub/Sub); a full outbox is recovered by their
    /// gap detection and resync.
    fn publish(&self, user_id: Uuid, event: &Event) {
        let mut envelope = Vec::with_capacity(1024);
        envelope.extend_from_slice(&self.origin);
        envelope.push(b' ');
        // The same shape the append script writes: `{"u":"<user>","e":<event>}`.
        let envelope_ref = EnvelopeRef {
            u: user_id,
            e: event,
        };
        if serde_json::to_writer(&mut envelope, &envelope_ref).is_ok() {
            let _ = self.outbox.try_send(envelope);
        }
    }

    /// Forgets, in the local mirror, the events of each renumbered user after the `seq` it
    /// resyncs from; the users and those `seq`s, for the resync.
    fn forget_renumbered(&self) -> Vec<(Uuid, u64)> {
        let resyncs: Vec<(Uuid, u64)> = self
            .resyncs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (user_id, from_seq) in &resyncs {
            self.local.forget_after(*user_id, *from_seq);
        }
        resyncs
    }

    /// Publishes queued envelopes in order, pipelining whatever has accumulated, so a run's
    /// events do not wait on a Pub/Sub round trip each.
    async fn publish_loop(self: Arc<Self>, mut outbox: tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let channel = self.channel();
        let mut batch = Vec::new();
        loop {
            let received = tokio::select! {
                () = self.stop.cancelled() => return,
                n = outbox.recv_many(&mut batch, 256) => n,
            };
            if received == 0 {
                return;
            }
            let mut pipe = redis::pipe();
            for envelope in batch.drain(..) {
                pipe.publish(&channel, envelope).ignore();
            }
            let mut conn = self.conn.clone();
            // A lost publish is recovered by the receivers' gap detection and resync.
            let _ = self.bounded(pipe.query_async::<()>(&mut conn)).await;
        }
    }

    /// While degraded: ping Redis, write back, and leave degraded mode once it all worked.
    async fn recover_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if !self.is_degraded() {
                continue;
            }
            let mut conn = self.conn.clone();
            let pong = tokio::time::timeout(
                self.options.timeout,
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await;
            if !matches!(pong, Ok(Ok(_))) {
                continue;
            }
            let numbering = self.numbering.write().await;
            if self.write_back().await {
                // The void events are forgotten before leaving degraded mode, so none of them
                // is published under its old `seq` (`fan_out`); the connections are told only
                // after it, so they fetch the stream again from Redis, not from the mirror
                // just emptied. Appends wait on `numbering` until all is done.
                let resyncs = self.forget_renumbered();
                self.degraded.store(false, Ordering::SeqCst);
                for (user_id, from_seq) in resyncs {
                    self.local.resync(user_id, from_seq);
                }
                drop(numbering);
                tracing::info!("redis answers again: event bus recovered");
                self.resync_local().await;
            }
        }
    }

    /// Receives every instance's events on the Pub/Sub channel and hands the new ones to this
    /// instance's connections. Reconnects with a pause; catches up after each reconnect.
    async fn tail_loop(self: Arc<Self>) {
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                redis::RedisResult::Ok(pubsub)
            };
            let pubsub = tokio::select! {
                () = self.stop.cancelled() => return,
                result = tokio::time::timeout(self.options.timeout, subscribed) => result,
            };
            if let Ok(Ok(pubsub)) = pubsub {
                self.resync_local().await;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        () = self.stop.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let payload = message.get_payload_bytes();
                    // Own events were delivered locally when they were published.
                    if payload.starts_with(&self.origin) {
                        continue;
                    }
                    let body = payload.get(self.origin.len() + 1..).unwrap_or_default();
                    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
                        continue;
                    };
                    let event = Arc::new(envelope.e);
                    if self.local.insert(envelope.u, event.clone()) {
                        self.local.send(envelope.u, &event);
                    }
                }
                tracing::warn!("redis pub/sub connection lost; reconnecting");
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

impl RedisBus {
    /// Connects to Redis (bounded by the timeout) and starts the tail and recovery tasks.
    pub async fn connect(options: RedisBusOptions) -> Result<Self, BusError> {
        let client = redis::Client::open(options.url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.timeout))
            .set_connection_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            options.timeout,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| BusError::Timeout)?
        .map_err(unavailable)?;
        let (outbox, outbox_rx) = tokio::sync::mpsc::channel(OUTBOX_CAPACITY);
        let shared = Arc::new(Shared {
            local: LocalStreams::new(options.retain),
            options,
            conn,
            client,
            degraded: AtomicBool::new(false),
            degradations: AtomicU64::new(0),
            pending: Mutex::default(),
            resyncs: Mutex::default(),
            numbering: tokio::sync::RwLock::new(()),
            tickets: LocalTickets::default(),
            append: redis::Script::new(APPEND),
            sync: redis::Script::new(SYNC),
            stop: CancellationToken::new(),
            outbox,
            origin: {
                let mut origin = [0u8; 32];
                origin.copy_from_slice(Uuid::new_v4().simple().to_string().as_bytes());
                origin
            },
        });
        tokio::spawn(shared.clone().publish_loop(outbox_rx));
        tokio::spawn(shared.clone().tail_loop());
        tokio::spawn(shared.clone().recover_loop());
        Ok(Self(shared))
    }

    /// Deletes every key under the prefix (tests clean up after themselves with it).
    pub async fn delete_prefix(&self) -> Result<u64, BusError> {
        let shared = &self.0;
        let mut conn = shared.conn.clone();
        let pattern = format!("{}*", shared.options.prefix);
        let keys: Vec<String> = shared
            .bounded(async {
                let mut iter = conn.scan_match::<_, String>(&pattern).await?;
                let mut keys = Vec::new();
                while let Some(key) = iter.next().await {
                    keys.push(key?);
                }
                Ok(keys)
            })
            .await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut conn = shared.conn.clone();
        shared
            .bounded(async { conn.del::<_, u64>(&keys).await })
            .await
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.0.conn.clone();
        let result = tokio::time::timeout(
            self.0.options.timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match result {
            Ok(Ok(_)) if !self.0.is_degraded() => Ok(()),
            Ok(Ok(_)) => Err(BusError::Unavailable(
                "recovering: writing back degraded events".into(),
            )),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(BusError::Timeout),
        }
    }

    fn is_degraded(&self) -> bool {
        self.0.is_degraded()
    }

    fn degradations(&self) -> u64 {
        self.0.degradations.load(Ordering::Relaxed)
    }

    async fn append(&self, user_id: Uuid, draft: EventDraft) -> Result<Arc<Event>, BusError> {
        let mut events = self.append_all(user_id, vec![draft], 0).await?;
        events
            .pop()
            .ok_or_else(|| BusError::Unavailable("no event appended".into()))
    }

    async fn append_all(
        &self,
        user_id: Uuid,
        drafts: Vec<EventDraft>,
        deliver: usize,
    ) -> Result<Vec<Arc<Event>>, BusError> {
        let shared = &self.0;
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        // One template per event for both ways of numbering: if the append through Redis
        // times out but lands, the write-back recognises the same bodies.
        let templates: Vec<Event> = drafts.into_iter().map(|d| Event::new(d, 0)).collect();
        let mut bodies = Vec::with_capacity(templates.len());
        for template in &templates {
            bodies.push(serde_json::to_vec(template).map_err(unavailable)?);
        }
        let mut envelope_start = Vec::with_capacity(shared.origin.len() + 64);
        envelope_start.extend_from_slice(&shared.origin);
        envelope_start.extend_from_slice(format!(" {{\"u\":\"{user_id}\",\"e\":").as_bytes());
        loop {
            if !shared.is_degraded() {
                let _numbering = shared.numbering.read().await;
                if !shared.is_degraded() {
                    let mut conn = shared.conn.clone();
                    let mut invocation = shared.append.prepare_invoke();
                    invocation
                        .key(shared.key("seq", user_id))
                        .key(shared.key("stream", user_id))
                        .arg(shared.options.retain)
                        .arg(shared.channel())
                        .arg(&envelope_start)
                        .arg(deliver);
                    for body in &bodies {
                        let (head, tail) = split_at_seq(body).ok_or_else(|| {
                            BusError::Unavailable("an event without its seq field".into())
                        })?;
                        invocation.arg(head).arg(tail);
                    }
                    if let Ok(first) = shared
                        .bounded(invocation.invoke_async::<u64>(&mut conn))
                        .await
                    {
                        let events: Vec<Arc<Event>> = templates
                            .into_iter()
                            .zip(first..)
                            .map(|(template, seq)| Arc::new(Event { seq, ..template }))
                            .collect();
                        for event in &events {
                            shared.local.insert(user_id, event.clone());
                        }
                        // Published to the other instances by the script already.
                        for event in events.iter().take(deliver) {
                            shared.local.send(user_id, event);
                        }
                        return Ok(events);
                    }
                }
            }
            let _numbering = shared.numbering.write().await;
            if !shared.is_degraded() {
                // Recovered while this append waited: Redis numbers it.
                continue;
            }
            // Degraded: number them after the last seq this instance knows and write them
            // back later.
            let events: Vec<Arc<Event>> = templates
                .into_iter()
                .map(|template| shared.local.append_event(user_id, template))
                .collect();
            shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(user_id)
                .or_default()
                .extend(events.iter().cloned());
            // Degraded: delivered here only, as fan_out does; the write-back publishes them.
            for event in events.iter().take(deliver) {
                shared.local.send(user_id, event);
            }
            return Ok(events);
        }
    }

    async fn fan_out(&self, user_id: Uuid, event: &Arc<Event>) -> Result<(), BusError> {
        let shared = &self.0;
        // A void event (numbered while cut off, renumbered since) goes nowhere: the
        // write-back published it under its new `seq`, and the resync delivers it here.
        if shared.local.send(user_id, event) && !shared.is_degraded() {
            shared.publish(user_id, event);
        }
        Ok(())
    }

    fn subscribe(&self, user_id: Uuid) -> broadcast::Receiver<Delivery> {
        self.0.local.subscribe(user_id)
    }

    fn unsubscribed(&self, user_id: Uuid) {
        self.0.local.forget_if_idle(user_id);
    }

    fn resyncs_since(&self, user_id: Uuid, seen: u64) -> (u64, Option<u64>) {
        self.0.local.resyncs_since(user_id, seen)
    }

    async fn head_seq(&self, user_id: Uuid) -> Result<u64, BusError> {
        let shared = &self.0;
        if !shared.is_degraded() {
            let mut conn = shared.conn.clone();
            if let Ok(head) = shared
                .bounded(conn.get::<_, Option<u64>>(shared.key("seq", user_id)))
                .await
            {
                shared.local.observe_head(user_id, head.unwrap_or(0));
            }
        }
        Ok(shared.local.head(user_id))
    }

    async fn replay(&self, user_id: Uuid, after_seq: u64) -> Result<Replay, BusError> {
        let shared = &self.0;
        if !shared.is_degraded()
            && let Ok(replay) = shared.replay_remote(user_id, after_seq).await
        {
            return Ok(replay);
        }
        Ok(Replay {
            partial: true,
            ..shared.local.replay(user_id, after_seq)
        })
    }

    async fn issue_ticket(
        &self,
        ticket: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let shared = &self.0;
        if shared.is_degraded() {
            // Degraded: the ticket lives in this instance only, never also in Redis.
            shared.tickets.issue(ticket, user_id, ttl);
            return Ok(());
        }
        let mut conn = shared.conn.clone();
        let key = shared.key("ticket", ticket);
        // A write that failed or timed out may have landed: no local copy, so the ticket can
        // never be redeemed twice (once here, once from Redis).
        shared
            .bounded(conn.set_ex::<_, _, ()>(key, user_id.to_string(), ttl.as_secs().max(1)))
            .await
    }

    async fn redeem_ticket(&self, ticket: &str) -> Result<Option<Uuid>, BusError> {
        let shared = &self.0;
        let local = shared.tickets.redeem(ticket);
        if local.is_some() {
            return Ok(local);
        }
        let mut conn = shared.conn.clone();
        let user: Option<String> = shared
            .bounded(conn.get_del(shared.key("ticket", ticket)))
            .await?;
        Ok(user.and_then(|u| u.parse().ok()))
    }

    async fn record_session(&self, connection_id: Uuid, user_id: Uuid, server_id: &str) {
        let shared = &self.0;
        if shared.is_degraded() {
            return;
        }
        let mut conn = shared.conn.clone();
        let pipe = shared.session_pipe(connection_id, user_id, server_id);
        let _ = shared.bounded(pipe.query_async::<()>(&mut conn)).await;
    }

    async fn open_session(
        &self,
        connection_id: Uuid,
        user_id: Uuid,
        server_id: &str,
    ) -> Result<u64, BusError> {
        let shared = &self.0;
        if !shared.is_degraded() {
            let mut conn = shared.conn.clone();
            let mut pipe = shared.session_pipe(connection_id, user_id, server_id);
            pipe.get(shared.key("seq", user_id));
            if let Ok((head,)) = shared
                .bounded(pipe.query_async::<(Option<u64>,)>(&mut conn))
                .await
            {
                shared.local.observe_head(user_id, head.unwrap_or(0));
            }
        }
        Ok(shared.local.head(user_id))
    }

    async fn end_session(&self, connection_id: Uuid) {
        let shared = &self.0;
        if shared.is_degraded() {
            return;
        }
        let mut conn = shared.conn.clone();
        let _ = shared
            .bounded(conn.del::<_, ()>(shared.key("session", connection_id)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::EventType;

    /// The append script rebuilds the stream's body and the envelope from the split: both must
    /// come out as the Rust side writes them.
    #[test]
    fn an_event_splits_around_its_seq_into_the_same_body_and_envelope() {
        let user = Uuid::new_v4();
        let event = Event::new(
            EventDraft {
                kind: EventType::ToolCompleted,
                run_id: Uuid::new_v4(),
                thread_id: Uuid::new_v4(),
                agent_name: "optimizer".into(),
                // A payload that mentions the field must not move the split.
                payload: json!({ "note": "\"seq\":0, again", "seq": 0 }),
            },
            0,
        );
        let body = serde_json::to_vec(&event).unwrap();
        let (head, tail) = split_at_seq(&body).unwrap();
        assert!(head.ends_with(b"\"seq\":"));
        assert_eq!([head, b"0", tail].concat(), body);
        let envelope = [
            format!("{{\"u\":\"{user}\",\"e\":").as_bytes(),
            head,
            b"42",
            tail,
            b"}",
        ]
        .concat();
        let parsed: Envelope = serde_json::from_slice(&envelope).unwrap();
        assert_eq!(parsed.u, user);
        assert_eq!(parsed.e, Event { seq: 42, ..event });
        assert!(split_at_seq(b"{\"type\":\"x\",\"seq\":7,\"a\":1}").is_none());
    }
}
