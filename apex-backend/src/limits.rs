//! Bounds on the work anonymous clients can cause: how many password hashes run and wait at
//! once ([`HashGate`]), login attempts per client address and failed logins per account
//! ([`RateLimiter`]), and live demo users ([`DemoUsers`]).
//!
//! Everything here is in memory and per instance: N instances allow N times the configured
//! rates. That is enough to keep one process alive and its memory bounded, which is what these
//! limits are for; a shared limit across instances would need a round trip per login.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use uuid::Uuid;

/// Refused because the hashing queue is full; retry after the given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy(pub Duration);

/// Admits at most `slots` password hashes at once and at most `queue` more waiting for a slot.
///
/// Argon2 takes its memory cost (19 MiB by default) per hash in flight, and a hash on the
/// blocking pool cannot be cancelled; unbounded, a flood of logins grows the pool and the heap
/// with every request. Beyond the queue a login is refused at once, before any hashing.
#[derive(Debug)]
pub struct HashGate {
    slots: Semaphore,
    waiting: AtomicUsize,
    queue: usize,
    /// What a refused client is told to wait: about the time the queue takes to drain.
    retry_after: Duration,
}

/// Decrements the waiting count when a queued login gets its slot or is abandoned.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashGate {
    /// `slots` of 0 means one per available core.
    pub fn new(slots: usize, queue: usize) -> Self {
        let slots = if slots == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            slots
        };
        Self {
            slots: Semaphore::new(slots),
            waiting: AtomicUsize::new(0),
            queue,
            retry_after: Duration::from_secs(1),
        }
    }

    /// How many hashes may run at once.
    pub fn slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// A slot, waiting in the queue if it has room; [`Busy`] when it has none.
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, Busy> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.queue).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(Busy(self.retry_after));
        }
        let _waiting = Waiting(&self.waiting);
        self.slots
            .acquire()
            .await
            .map_err(|_| Busy(self.retry_after))
    }

    /// A slot, however long the wait: for the backend's own hashing (seeding at start).
    pub async fn enter_unbounded(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key: `burst` tokens, refilled at `per_sec`. A rate of 0 turns the limit
/// off. At most `max_keys` keys are tracked; when full, buckets that have refilled are dropped
/// (they carry no state), and if none has, new keys are refused until some do, so a client
/// inventing keys cannot grow the map.
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_sec", &self.per_sec)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_sec: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            per_sec,
            burst: f64::from(burst.max(1)),
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.per_sec > 0.0
    }

    /// The time until one token is back, at least a second (`Retry-After` has second
    /// resolution, and 0 would invite an immediate retry).
    fn wait_for_token(&self, tokens: f64) -> Duration {
        let secs = ((1.0 - tokens) / self.per_sec).ceil().max(1.0);
        Duration::from_secs_f64(secs.min(3600.0))
    }

    /// Runs `f` on the key's bucket, refilled to now; `None` when the map is full.
    fn with_bucket<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> Option<T> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if buckets.len() >= self.max_keys {
                return None;
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        bucket.at = now;
        Some(f(bucket))
    }

    /// Takes a token; `Err(retry_after)` when there is none.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        self.with_bucket(key, Instant::now(), |b| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait_for_token(b.tokens))
            }
        })
        .unwrap_or(Err(Duration::from_secs(1)))
    }

    /// `Err(retry_after)` when the key has no token left, without taking one.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        self.with_bucket(key, Instant::now(), |b| {
            if b.tokens >= 1.0 {
                Ok(())
            } else {
                Err(self.wait_for_token(b.tokens))
            }
        })
        .unwrap_or(Err(Duration::from_secs(1)))
    }

    /// Takes a token if there is one (after [`Self::check`], for what is counted only once
    /// its outcome is known).
    pub fn charge(&self, key: &K) {
        if self.enabled() {
            let _ = self.with_bucket(key, Instant::now(), |b| {
                b.tokens = (b.tokens - 1.0).max(0.0);
            });
        }
    }
}

/// The demo users this instance issued and when each expires, oldest first.
#[derive(Debug)]
pub struct DemoUsers {
    max: usize,
    ttl: Duration,
    live: Mutex<VecDeque<(Instant, Uuid)>>,
}

impl DemoUsers {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            max,
            ttl,
            live: Mutex::new(VecDeque::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Removes and returns the users whose time is up.
    pub fn expired(&self, now: Instant) -> Vec<Uuid> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        while let Some(&(until, id)) = live.front() {
            if until > now {
                break;
            }
            live.pop_front();
            gone.push(id);
        }
        gone
    }

    /// Records a new demo user; `Err(retry_after)` (the time until the oldest expires) when
    /// `max` are live.
    pub fn admit(&self, id: Uuid, now: Instant) -> Result<(), Duration> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= self.max {
            let oldest = live.front().map_or(now, |(until, _)| *until);
            return Err(oldest
                .saturating_duration_since(now)
                .max(Duration::from_secs(1)));
        }
        live.push_back((now + self.ttl, id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_beyond_the_burst_and_refill() {
        let limiter = RateLimiter::new(1000.0, 3, 10);
        for _ in 0..3 {
            assert!(limiter.take(&"a").is_ok());
        }
        assert_eq!(limiter.take(&"a"), Err(Duration::from_secs(1)));
        assert!(limiter.take(&"b").is_ok(), "keys are independent");
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.take(&"a").is_ok());
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_token() {
        let limiter = RateLimiter::new(0.1, 1, 10);
        limiter.take(&1).unwrap();
        let wait = limiter.take(&1).unwrap_err();
        assert!(
            (Duration::from_secs(9)..=Duration::from_secs(10)).contains(&wait),
            "{wait:?}"
        );
    }

    #[test]
    fn check_and_charge_count_only_what_is_charged() {
        let limiter = RateLimiter::new(0.001, 2, 10);
        for _ in 0..5 {
            assert!(limiter.check(&"x").is_ok());
        }
        limiter.charge(&"x");
        limiter.charge(&"x");
        assert!(limiter.check(&"x").is_err());
    }

    #[test]
    fn a_full_map_refuses_new_keys_until_buckets_refill() {
        let limiter = RateLimiter::new(0.001, 1, 2);
        limiter.take(&1).unwrap();
        limiter.take(&2).unwrap();
        assert!(limiter.take(&3).is_err());
        let limiter = RateLimiter::new(1000.0, 1, 2);
        limiter.take(&1).unwrap();
        limiter.take(&2).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.take(&3).is_ok(), "refilled buckets are dropped");
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let limiter = RateLimiter::new(0.0, 1, 1);
        for key in 0..100 {
            assert!(limiter.take(&key).is_ok());
        }
    }

    #[tokio::test]
    async fn the_gate_queues_up_to_its_bound_then_refuses() {
        use futures_util::FutureExt as _;
        let gate = HashGate::new(1, 2);
        let held = gate.enter().await.unwrap();
        let (a, b) = (gate.enter(), gate.enter());
        tokio::pin!(a, b);
        // Polled once each: both are queued.
        assert!(a.as_mut().now_or_never().is_none());
        assert!(b.as_mut().now_or_never().is_none());
        assert_eq!(
            gate.enter().await.unwrap_err(),
            Busy(Duration::from_secs(1))
        );
        drop(held);
        drop(a.await.unwrap());
        drop(b.await.unwrap());
        assert!(gate.enter().await.is_ok(), "the queue emptied");
    }

    #[test]
    fn demo_users_are_capped_and_expire() {
        let demo = DemoUsers::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        demo.admit(a, now).unwrap();
        demo.admit(b, now + Duration::from_secs(10)).unwrap();
        assert_eq!(
            demo.admit(Uuid::new_v4(), now + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        assert_eq!(demo.expired(now + Duration::from_secs(61)), vec![a]);
        assert!(
            demo.admit(Uuid::new_v4(), now + Duration::from_secs(61))
                .is_ok()
        );
    }
}
