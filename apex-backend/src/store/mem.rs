//! The in-process store of the embedded mode: maps behind one mutex, nothing on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    MessageRecord, RefreshRecord, RefreshUse, RunRecord, RunStatus, Store, StoreError, UserRecord,
};
use crate::agents::UsageRecord;
use crate::protocol::Event;

#[derive(Default)]
struct Tables {
    users: HashMap<Uuid, UserRecord>,
    users_by_email: HashMap<String, Uuid>,
    usage: HashMap<Uuid, Arc<Vec<UsageRecord>>>,
    thread_owners: HashMap<Uuid, Uuid>,
    messages: HashMap<Uuid, Vec<MessageRecord>>,
    runs: HashMap<Uuid, RunRecord>,
    /// Heartbeat of running runs; finish time of interrupted ones.
    run_times: HashMap<Uuid, Instant>,
    events: HashMap<Uuid, BTreeMap<u64, (Uuid, Event)>>,
    refresh: HashMap<Uuid, RefreshRow>,
}

struct RefreshRow {
    token: RefreshRecord,
    spent: bool,
    revoked: bool,
}

/// In-process [`Store`].
#[derive(Default)]
pub struct MemStore {
    tables: Mutex<Tables>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn upsert_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let mut t = self.tables();
        let email = user.email.to_lowercase();
        if let Some(other) = t.users_by_email.get(&email)
            && *other != user.id
        {
            return Err(StoreError::Conflict(format!("email {email} is taken")));
        }
        t.users_by_email.insert(email, user.id);
        t.users.insert(user.id, user);
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let t = self.tables();
        Ok(t.users_by_email
            .get(&email.to_lowercase())
            .and_then(|id| t.users.get(id))
            .cloned())
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.tables().users.get(&id).cloned())
    }

    async fn delete_user(&self, id: Uuid) -> Result<(), StoreError> {
        let mut t = self.tables();
        if let Some(user) = t.users.remove(&id) {
            t.users_by_email.remove(&user.email.to_lowercase());
        }
        t.usage.remove(&id);
        t.events.retain(|_, log| {
            log.retain(|_, (user, _)| *user != id);
            !log.is_empty()
        });
        let threads: Vec<Uuid> = t
            .thread_owners
            .iter()
            .filter(|(_, owner)| **owner == id)
            .map(|(thread, _)| *thread)
            .collect();
        for thread in threads {
            t.thread_owners.remove(&thread);
            t.messages.remove(&thread);
        }
        let runs: Vec<Uuid> = t
            .runs
            .values()
            .filter(|run| run.user_id == id)
            .map(|run| run.id)
            .collect();
        for run in runs {
            t.runs.remove(&run);
            t.run_times.remove(&run);
        }
        t.refresh.retain(|_, row| row.token.user_id != id);
        Ok(())
    }

    async fn store_refresh(&self, token: RefreshRecord) -> Result<(), StoreError> {
        let mut t = self.tables();
        // Expired tokens can never be used again; they are dropped as the table doubles.
        if t.refresh.len() >= 1024 && t.refresh.len().is_power_of_two() {
            let now = crate::auth::unix_now();
            t.refresh.retain(|_, row| row.token.expires_at >= now);
        }
        t.refresh.insert(
            token.jti,
            RefreshRow {
                token,
                spent: false,
                revoked: false,
            },
        );
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        jti: Uuid,
        now: u64,
        next: Uuid,
        next_expires_at: u64,
    ) -> Result<RefreshUse, StoreError> {
        let mut t = self.tables();
        let Some(row) = t.refresh.get_mut(&jti) else {
            return Ok(RefreshUse::Refused);
        };
        if row.revoked || row.token.expires_at < now {
            return Ok(RefreshUse::Refused);
        }
        let token = row.token;
        if row.spent {
            for row in t.refresh.values_mut() {
                if row.token.family == token.family {
                    row.revoked = true;
                }
            }
            return Ok(RefreshUse::Reused);
        }
        row.spent = true;
        t.refresh.insert(
            next,
            RefreshRow {
                token: RefreshRecord {
                    jti: next,
                    expires_at: next_expires_at,
                    ..token
                },
                spent: false,
                revoked: false,
            },
        );
        Ok(RefreshUse::Rotated)
    }

    async fn set_usage(&self, user_id: Uuid, records: Vec<UsageRecord>) -> Result<(), StoreError> {
        self.tables().usage.insert(user_id, Arc::new(records));
        Ok(())
    }

    async fn usage(&self, user_id: Uuid) -> Result<Arc<Vec<UsageRecord>>, StoreError> {
        Ok(self
            .tables()
            .usage
            .get(&user_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn claim_thread(&self, thread_id: Uuid, user_id: Uuid) -> Result<bool, StoreError> {
        let mut t = self.tables();
        Ok(*t.thread_owners.entry(thread_id).or_insert(user_id) == user_id)
    }

    async fn append_message(&self, message: MessageRecord) -> Result<(), StoreError> {
        self.tables()
            .messages
            .entry(message.thread_id)
            .or_default()
            .push(message);
        Ok(())
    }

    async fn messages(&self, thread_id: Uuid) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(self
            .tables()
            .messages
            .get(&thread_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn start_run(&self, run: RunRecord) -> Result<(), StoreError> {
        let mut t = self.tables();
        t.run_times.insert(run.id, Instant::now());
        t.runs.insert(run.id, run);
        Ok(())
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        result: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let mut t = self.tables();
        let run = t
            .runs
            .get_mut(&run_id)
            .ok_or_else(|| StoreError::Conflict(format!("run {run_id} does not exist")))?;
        run.status = status;
        run.result = result;
        t.run_times.insert(run_id, Instant::now());
        Ok(())
    }

    async fn run(&self, run_id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.tables().runs.get(&run_id).cloned())
    }

    async fn record_progress(
        &self,
        run_id: Uuid,
        partial: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut t = self.tables();
        if let Some(run) = t.runs.get_mut(&run_id) {
            run.result = Some(partial);
            t.run_times.insert(run_id, Instant::now());
        }
        Ok(())
    }

    async fn interrupt_orphaned_runs(
        &self,
        owner: &str,
        restarted: bool,
        stale_after: Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut t = self.tables();
        let now = Instant::now();
        let Tables {
            runs, run_times, ..
        } = &mut *t;
        let mut interrupted = Vec::new();
        for run in runs.values_mut().filter(|r| r.status == RunStatus::Running) {
            let beat = run_times.get(&run.id).copied().unwrap_or(now);
            if (restarted && run.server_id == owner) || now.duration_since(beat) > stale_after {
                run.status = RunStatus::Interrupted;
                run_times.insert(run.id, now);
                interrupted.push(run.clone());
            }
        }
        Ok(interrupted)
    }

    async fn recently_interrupted_runs(
        &self,
        user_id: Uuid,
        within: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        let t = self.tables();
        let now = Instant::now();
        Ok(t.runs
            .values()
            .filter(|r| r.user_id == user_id && r.status == RunStatus::Interrupted)
            .filter(|r| {
                t.run_times
                    .get(&r.id)
                    .is_some_and(|at| now.duration_since(*at) <= within)
            })
            .map(|r| r.id)
            .collect())
    }

    async fn append_events(&self, user_id: Uuid, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let mut t = self.tables();
        for event in events {
            t.events
                .entry(event.run_id)
                .or_default()
                .entry(event.seq)
                .or_insert_with(|| (user_id, (**event).clone()));
        }
        Ok(())
    }

    async fn run_events(&self, run_id: Uuid) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .tables()
            .events
            .get(&run_id)
            .map(|events| events.values().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default())
    }
}
