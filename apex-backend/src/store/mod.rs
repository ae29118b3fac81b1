//! Durable state: users, their usage data, threads, messages and runs.
//!
//! [`Store`] is the seam between the backend and its database. The in-process [`MemStore`]
//! serves the embedded mode and unit tests; a Postgres implementation slots in behind the same
//! trait.

mod mem;
mod pg;
mod timed;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use crate::agents::UsageRecord;
use crate::metrics::CacheLookups;
use crate::protocol::Event;

pub use mem::MemStore;
pub use pg::{PgStore, PgStoreOptions};
pub use timed::TimedStore;

/// A store operation that failed. Callers map it to 503s and error frames, never to panics.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store operation timed out")]
    Timeout,
    #[error("conflict: {0}")]
    Conflict(String),
}

/// A user as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub is_demo: bool,
}

/// A refresh token as the store keeps it. Tokens rotated from one login form a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRecord {
    pub jti: Uuid,
    pub family: Uuid,
    pub user_id: Uuid,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshUse {
    /// It was live: it is spent now and its successor is stored in its family.
    Rotated,
    /// It had been spent already, so a copy is in other hands: its whole family is revoked.
    Reused,
    /// Unknown, expired or revoked: nothing changed.
    Refused,
}

/// Who wrote a message in a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: Uuid,
    pub thread_id: Uuid,
    pub user_id: Uuid,
    pub run_id: Option<Uuid>,
    pub role: Role,
    pub content: String,
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Interrupted,
}

/// A run as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub thread_id: Uuid,
    /// The instance executing the run.
    pub server_id: String,
    pub status: RunStatus,
    /// The final result, or the partial results of the steps that finished.
    pub result: Option<serde_json::Value>,
}

/// The backend's durable state.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name shown by `/ready` (`memory`, `postgres`).
    fn kind(&self) -> &'static str;
    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Lookups of the store's caches so far (`apex_cache_requests_total`); none by default.
    fn caches(&self) -> Vec<CacheLookups> {
        Vec::new()
    }

    /// Inserts a user; an existing user with the same id is replaced.
    async fn upsert_user(&self, user: UserRecord) -> Result<(), StoreError>;
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError>;
    /// Deletes a user and everything of theirs; an unknown id is not an error.
    async fn delete_user(&self, id: Uuid) -> Result<(), StoreError>;

    /// Stores a newly issued refresh token (the first of a family, at login).
    async fn store_refresh(&self, token: RefreshRecord) -> Result<(), StoreError>;
    /// Spends the refresh token `jti` and stores `next` (same user, `next_expires_at`) in its
    /// family, in one step: of two concurrent uses only one rotates, the other revokes.
    async fn rotate_refresh(
        &self,
        jti: Uuid,
        now: u64,
        next: Uuid,
        next_expires_at: u64,
    ) -> Result<RefreshUse, StoreError>;

    /// Replaces a user's usage records.
    async fn set_usage(&self, user_id: Uuid, records: Vec<UsageRecord>) -> Result<(), StoreError>;
    async fn usage(&self, user_id: Uuid) -> Result<Arc<Vec<UsageRecord>>, StoreError>;

    /// Creates the thread for `user_id`, or checks that an existing one belongs to them.
    /// Returns false when the thread exists and belongs to someone else.
    async fn claim_thread(&self, thread_id: Uuid, user_id: Uuid) -> Result<bool, StoreError>;
    async fn append_message(&self, message: MessageRecord) -> Result<(), StoreError>;
    async fn messages(&self, thread_id: Uuid) -> Result<Vec<MessageRecord>, StoreError>;

    async fn start_run(&self, run: RunRecord) -> Result<(), StoreError>;
    /// Sets a run's final status and result.
    async fn finish_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        result: Option<serde_json::Value>,
    ) -> Result<(), StoreError>;
    async fn run(&self, run_id: Uuid) -> Result<Option<RunRecord>, StoreError>;
    /// Stores the partial results of a running run and renews its heartbeat.
    async fn record_progress(
        &self,
        run_id: Uuid,
        partial: serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Marks interrupted the running runs whose heartbeat is older than `stale_after` (their
    /// instance died or the run hung) and, when `restarted`, every running run owned by
    /// `owner` (left by this instance's previous life); returns them. Without `restarted`,
    /// `owner`'s runs with a fresh heartbeat are untouched: they are this instance's live runs.
    async fn interrupt_orphaned_runs(
        &self,
        owner: &str,
        restarted: bool,
        stale_after: Duration,
    ) -> Result<Vec<RunRecord>, StoreError>;
    /// Runs of the user interrupted within the last `within`, newest first.
    async fn recently_interrupted_runs(
        &self,
        user_id: Uuid,
        within: Duration,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// The user (as [`Store::user_by_id`]) and their runs interrupted within `within` (as
    /// [`Store::recently_interrupted_runs`], best effort: a failure of that part leaves the
    /// list empty): what opening a WebSocket connection reads, in one round trip where the
    /// store can.
    async fn user_for_connection(
        &self,
        id: Uuid,
        within: Duration,
    ) -> Result<Option<(UserRecord, Vec<Uuid>)>, StoreError> {
        let Some(user) = self.user_by_id(id).await? else {
            return Ok(None);
        };
        let interrupted = self
            .recently_interrupted_runs(id, within)
            .await
            .unwrap_or_default();
        Ok(Some((user, interrupted)))
    }

    /// Appends stream events to the user's durable event log (idempotent per `seq`).
    async fn append_events(&self, user_id: Uuid, events: &[Arc<Event>]) -> Result<(), StoreError>;
    /// The logged events of a run, in `seq` order.
    async fn run_events(&self, run_id: Uuid) -> Result<Vec<Event>, StoreError>;

    // The run lifecycle as the pipeline uses it: each call is one unit, so a store can make
    // it one round trip. The defaults compose the calls above.

    /// Claims the thread, stores the user's message and the running run. False (and nothing
    /// stored) when the thread belongs to another user.
    async fn begin_run(&self, run: RunRecord, message: MessageRecord) -> Result<bool, StoreError> {
        if !self.claim_thread(run.thread_id, run.user_id).await? {
            return Ok(false);
        }
        self.append_message(message).await?;
        self.start_run(run).await?;
        Ok(true)
    }

    /// Logs the run's events so far and, if given, its partial results (renewing its
    /// heartbeat).
    async fn checkpoint_run(
        &self,
        run_id: Uuid,
        user_id: Uuid,
        events: &[Arc<Event>],
        partial: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.append_events(user_id, events).await?;
        if let Some(partial) = partial {
            self.record_progress(run_id, partial).await?;
        }
        Ok(())
    }

    /// Logs the run's last events, stores the answer and marks the run completed.
    async fn complete_run(
        &self,
        answer: MessageRecord,
        result: serde_json::Value,
        events: &[Arc<Event>],
    ) -> Result<(), StoreError> {
        let (run_id, user_id) = (answer.run_id.unwrap_or_default(), answer.user_id);
        self.append_events(user_id, events).await?;
        self.append_message(answer).await?;
        self.finish_run(run_id, RunStatus::Completed, Some(result))
            .await
    }
}
