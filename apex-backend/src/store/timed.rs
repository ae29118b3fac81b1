//! [`TimedStore`]: any store, with each call's latency in
//! `apex_store_operation_duration_seconds{operation}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    MessageRecord, RefreshRecord, RefreshUse, RunRecord, RunStatus, Store, StoreError, UserRecord,
};
use crate::agents::UsageRecord;
use crate::metrics::{CacheLookups, OperationDurations};
use crate::protocol::Event;

/// A [`Store`] that times every call of the store it wraps, under the method's name. The
/// pipeline's composite calls (`begin_run`, `checkpoint_run`, `complete_run`) are timed as
/// one operation each, as the wrapped store runs them.
pub struct TimedStore {
    inner: Arc<dyn Store>,
    durations: OperationDurations,
}

impl TimedStore {
    /// Wraps `inner`, recording into `durations`.
    pub fn new(inner: Arc<dyn Store>, durations: OperationDurations) -> Self {
        Self { inner, durations }
    }
}

#[async_trait]
impl Store for TimedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn caches(&self) -> Vec<CacheLookups> {
        self.inner.caches()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.durations.time("ping", self.inner.ping()).await
    }

    async fn upsert_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let work = self.inner.upsert_user(user);
        self.durations.time("upsert_user", work).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let work = self.inner.user_by_email(email);
        self.durations.time("user_by_email", work).await
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        let work = self.inner.user_by_id(id);
        self.durations.time("user_by_id", work).await
    }

    async fn delete_user(&self, id: Uuid) -> Result<(), StoreError> {
        let work = self.inner.delete_user(id);
        self.durations.time("delete_user", work).await
    }

    async fn store_refresh(&self, token: RefreshRecord) -> Result<(), StoreError> {
        let work = self.inner.store_refresh(token);
        self.durations.time("store_refresh", work).await
    }

    async fn rotate_refresh(
        &self,
        jti: Uuid,
        now: u64,
        next: Uuid,
        next_expires_at: u64,
    ) -> Result<RefreshUse, StoreError> {
        let work = self.inner.rotate_refresh(jti, now, next, next_expires_at);
        self.durations.time("rotate_refresh", work).await
    }

    async fn set_usage(&self, user_id: Uuid, records: Vec<UsageRecord>) -> Result<(), StoreError> {
        let work = self.inner.set_usage(user_id, records);
        self.durations.time("set_usage", work).await
    }

    async fn usage(&self, user_id: Uuid) -> Result<Arc<Vec<UsageRecord>>, StoreError> {
        self.durations
            .time("usage", self.inner.usage(user_id))
            .await
    }

    async fn claim_thread(&self, thread_id: Uuid, user_id: Uuid) -> Result<bool, StoreError> {
        let work = self.inner.claim_thread(thread_id, user_id);
        self.durations.time("claim_thread", work).await
    }

    async fn append_message(&self, message: MessageRecord) -> Result<(), StoreError> {
        let work = self.inner.append_message(message);
        self.durations.time("append_message", work).await
    }

    async fn messages(&self, thread_id: Uuid) -> Result<Vec<MessageRecord>, StoreError> {
        let work = self.inner.messages(thread_id);
        self.durations.time("messages", work).await
    }

    async fn start_run(&self, run: RunRecord) -> Result<(), StoreError> {
        self.durations
            .time("start_run", self.inner.start_run(run))
            .await
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        result: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let work = self.inner.finish_run(run_id, status, result);
        self.durations.time("finish_run", work).await
    }

    async fn run(&self, run_id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        self.durations.time("run", self.inner.run(run_id)).await
    }

    async fn record_progress(
        &self,
        run_id: Uuid,
        partial: serde_json::Value,
    ) -> Result<(), StoreError> {
        let work = self.inner.record_progress(run_id, partial);
        self.durations.time("record_progress", work).await
    }

    async fn interrupt_orphaned_runs(
        &self,
        owner: &str,
        restarted: bool,
        stale_after: Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let work = self
            .inner
            .interrupt_orphaned_runs(owner, restarted, stale_after);
        self.durations.time("interrupt_orphaned_runs", work).await
    }

    async fn recently_interrupted_runs(
        &self,
        user_id: Uuid,
        within: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        let work = self.inner.recently_interrupted_runs(user_id, within);
        self.durations.time("recently_interrupted_runs", work).await
    }

    async fn user_for_connection(
        &self,
        id: Uuid,
        within: Duration,
    ) -> Result<Option<(UserRecord, Vec<Uuid>)>, StoreError> {
        let work = self.inner.user_for_connection(id, within);
        self.durations.time("user_for_connection", work).await
    }

    async fn append_events(&self, user_id: Uuid, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let work = self.inner.append_events(user_id, events);
        self.durations.time("append_events", work).await
    }

    async fn run_events(&self, run_id: Uuid) -> Result<Vec<Event>, StoreError> {
        let work = self.inner.run_events(run_id);
        self.durations.time("run_events", work).await
    }

    async fn begin_run(&self, run: RunRecord, message: MessageRecord) -> Result<bool, StoreError> {
        let work = self.inner.begin_run(run, message);
        self.durations.time("begin_run", work).await
    }

    async fn checkpoint_run(
        &self,
        run_id: Uuid,
        user_id: Uuid,
        events: &[Arc<Event>],
        partial: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let work = self.inner.checkpoint_run(run_id, user_id, events, partial);
        self.durations.time("checkpoint_run", work).await
    }

    async fn complete_run(
        &self,
        answer: MessageRecord,
        result: serde_json::Value,
        events: &[Arc<Event>],
    ) -> Result<(), StoreError> {
        let work = self.inner.complete_run(answer, result, events);
        self.durations.time("complete_run", work).await
    }
}
