//! The Postgres store: sqlx with runtime-checked queries, migrations embedded from
//! `apex-backend/migrations/`, every operation under an explicit timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

use super::{
    MessageRecord, RefreshRecord, RefreshUse, Role, RunRecord, RunStatus, Store, StoreError,
    UserRecord,
};
use crate::agents::UsageRecord;
use crate::metrics::CacheLookups;
use crate::protocol::Event;

/// How to reach Postgres and where to keep the tables.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    pub url: String,
    /// Schema holding the tables (created if missing); tests use one each.
    pub schema: String,
    /// Upper bound of every operation, connecting included.
    pub timeout: Duration,
    pub run_migrations: bool,
    pub max_connections: u32,
}

/// [`Store`] on Postgres.
pub struct PgStore {
    pool: PgPool,
    timeout: Duration,
    /// Usage logs change only when seeded; every run reads one, so they are cached per
    /// instance (refreshed by this instance's `set_usage`).
    usage_cache: Mutex<HashMap<Uuid, Arc<Vec<UsageRecord>>>>,
    /// Lookups of `usage_cache` answered from it.
    usage_hits: AtomicU64,
    /// Lookups of `usage_cache` that went to the database.
    usage_misses: AtomicU64,
}

fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.to_string())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn status_text(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

fn status_from(text: &str) -> RunStatus {
    match text {
        "completed" => RunStatus::Completed,
        "failed" => RunStatus::Failed,
        "interrupted" => RunStatus::Interrupted,
        _ => RunStatus::Running,
    }
}

type RunRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    String,
    Option<Json<serde_json::Value>>,
);

fn run_from(row: RunRow) -> RunRecord {
    let (id, user_id, thread_id, server_id, status, result) = row;
    RunRecord {
        id,
        user_id,
        thread_id,
        server_id,
        status: status_from(&status),
        result: result.map(|j| j.0),
    }
}

type UserRow = (Uuid, String, String, String, bool);

/// Events as the columns of an `UNNEST` insert into the event log.
struct EventRows<'a> {
    seqs: Vec<i64>,
    runs: Vec<Uuid>,
    kinds: Vec<String>,
    bodies: Vec<Json<&'a Event>>,
}

impl<'a> EventRows<'a> {
    fn new(events: &'a [Arc<Event>]) -> Self {
        Self {
            seqs: events.iter().map(|e| e.seq as i64).collect(),
            runs: events.iter().map(|e| e.run_id).collect(),
            kinds: events
                .iter()
                .map(|e| {
                    serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect(),
            bodies: events.iter().map(|e| Json(&**e)).collect(),
        }
    }
}

fn user_from((id, email, name, password_hash, is_demo): UserRow) -> UserRecord {
    UserRecord {
        id,
        email,
        name,
        password_hash,
        is_demo,
    }
}

impl PgStore {
    /// Connects, creates the schema if needed and runs the migrations (unless disabled).
    pub async fn connect(options: &PgStoreOptions) -> Result<Self, StoreError> {
        let schema = &options.schema;
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Unavailable(format!(
                "invalid schema name `{schema}`: use letters, digits and underscores"
            )));
        }
        let connect: PgConnectOptions = options
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        // Creating the schema and migrating may take longer than one operation may: instances
        // starting together wait on each other's migration lock.
        let startup_timeout = (options.timeout * 10).max(Duration::from_secs(10));
        let setup = async {
            let mut conn = PgConnection::connect_with(&connect)
                .await
                .map_err(map_err)?;
            let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
            if let Err(e) = sqlx::query(AssertSqlSafe(create)).execute(&mut conn).await {
                // Two instances creating the schema at once: one loses the race, harmlessly.
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                )
                .bind(schema)
                .fetch_one(&mut conn)
                .await
                .map_err(map_err)?;
                if !exists {
                    return Err(map_err(e));
                }
            }
            let _ = conn.close().await;
            Ok(())
        };
        tokio::time::timeout(startup_timeout, setup)
            .await
            .map_err(|_| StoreError::Timeout)??;

        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.timeout)
            .connect_lazy_with(connect.options([("search_path", schema.as_str())]));
        let store = Self {
            pool,
            timeout: options.timeout,
            usage_cache: Mutex::default(),
            usage_hits: AtomicU64::new(0),
            usage_misses: AtomicU64::new(0),
        };
        if options.run_migrations {
            // Migrations take an advisory lock, so instances starting together are safe.
            let migrate = sqlx::migrate!("./migrations").run(&store.pool);
            match tokio::time::timeout(startup_timeout, migrate).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!("migration failed: {e}")));
                }
                Err(_) => return Err(StoreError::Timeout),
            }
        }
        Ok(store)
    }

    /// The connection pool (tests use it to inspect what was stored).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result.map_err(map_err),
            Err(_) => Err(StoreError::Timeout),
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn caches(&self) -> Vec<CacheLookups> {
        vec![CacheLookups {
            cache: "usage",
            hits: self.usage_hits.load(Relaxed),
            misses: self.usage_misses.load(Relaxed),
        }]
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map(|_| ())
    }

    async fn upsert_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            // Instances seeding the same user at once take turns: a concurrent insert would
            // otherwise trip the email index before `ON CONFLICT (id)` can apply.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
                .bind(user.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO users (id, email, name, password_hash, is_demo) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name,
                   password_hash = EXCLUDED.password_hash, is_demo = EXCLUDED.is_demo",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(user.is_demo)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as("SELECT id, email, name, password_hash, is_demo FROM users WHERE lower(email) = lower($1)")
                    .bind(email)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(user_from))
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as(
                    "SELECT id, email, name, password_hash, is_demo FROM users WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(user_from))
    }

    async fn delete_user(&self, id: Uuid) -> Result<(), StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            // The event log has no foreign key (it is appended to before a run row may
            // exist); threads, messages, runs and usage go with the user (ON DELETE CASCADE).
            sqlx::query("DELETE FROM events WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
        .await?;
        self.usage_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        Ok(())
    }

    async fn store_refresh(&self, token: RefreshRecord) -> Result<(), StoreError> {
        // Expired tokens can never be used again; every login clears those of its user, in
        // the same round trip.
        self.bounded(
            sqlx::query(
                "WITH expired AS (DELETE FROM refresh_tokens WHERE user_id = $3 AND expires_at < $5)
                 INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(token.jti)
            .bind(token.family)
            .bind(token.user_id)
            .bind(token.expires_at as i64)
            .bind(crate::auth::unix_now() as i64)
            .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn rotate_refresh(
        &self,
        jti: Uuid,
        now: u64,
        next: Uuid,
        next_expires_at: u64,
    ) -> Result<RefreshUse, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            // The row lock makes concurrent uses of one token take turns: one rotates, the
            // next finds it spent.
            let row: Option<(Uuid, Uuid, i64, bool, bool)> = sqlx::query_as(
                "SELECT family, user_id, expires_at, spent, revoked FROM refresh_tokens
                 WHERE jti = $1 FOR UPDATE",
            )
            .bind(jti)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((family, user_id, expires_at, spent, revoked)) = row else {
                return Ok(RefreshUse::Refused);
            };
            if revoked || expires_at < now as i64 {
                return Ok(RefreshUse::Refused);
            }
            if spent {
                sqlx::query("UPDATE refresh_tokens SET revoked = true WHERE family = $1")
                    .bind(family)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(RefreshUse::Reused);
            }
            sqlx::query("UPDATE refresh_tokens SET spent = true WHERE jti = $1")
                .bind(jti)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(next)
            .bind(family)
            .bind(user_id)
            .bind(next_expires_at as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RefreshUse::Rotated)
        })
        .await
    }

    async fn set_usage(&self, user_id: Uuid, records: Vec<UsageRecord>) -> Result<(), StoreError> {
        let lines: Vec<i32> = (0..records.len() as i32).collect();
        let bodies: Vec<Json<UsageRecord>> = records.into_iter().map(Json).collect();
        self.bounded(async {
            // Upsert line by line and drop what is beyond the new length, so instances that
            // seed the same users at the same time do not trip over each other's rows.
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO usage_records (user_id, line, record)
                 SELECT $1, line, record FROM UNNEST($2::int[], $3::jsonb[]) AS t(line, record)
                 ON CONFLICT (user_id, line) DO UPDATE SET record = EXCLUDED.record",
            )
            .bind(user_id)
            .bind(&lines)
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM usage_records WHERE user_id = $1 AND line >= $2")
                .bind(user_id)
                .bind(lines.len() as i32)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
        .await?;
        self.usage_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user_id);
        Ok(())
    }

    async fn usage(&self, user_id: Uuid) -> Result<Arc<Vec<UsageRecord>>, StoreError> {
        if let Some(cached) = self
            .usage_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user_id)
        {
            self.usage_hits.fetch_add(1, Relaxed);
            return Ok(cached.clone());
        }
        self.usage_misses.fetch_add(1, Relaxed);
        let rows: Vec<(Json<UsageRecord>,)> = self
            .bounded(
                sqlx::query_as("SELECT record FROM usage_records WHERE user_id = $1 ORDER BY line")
                    .bind(user_id)
                    .fetch_all(&self.pool),
            )
            .await?;
        let records = Arc::new(rows.into_iter().map(|(j,)| j.0).collect::<Vec<_>>());
        self.usage_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user_id, records.clone());
        Ok(records)
    }

    async fn claim_thread(&self, thread_id: Uuid, user_id: Uuid) -> Result<bool, StoreError> {
        let owner: Uuid = self
            .bounded(
                sqlx::query_scalar(
                    "WITH ins AS (INSERT INTO threads (id, user_id) VALUES ($1, $2)
                                  ON CONFLICT (id) DO NOTHING RETURNING user_id)
                     SELECT user_id FROM ins UNION ALL SELECT user_id FROM threads WHERE id = $1 LIMIT 1",
                )
                .bind(thread_id)
                .bind(user_id)
                .fetch_one(&self.pool),
            )
            .await?;
        Ok(owner == user_id)
    }

    async fn append_message(&self, message: MessageRecord) -> Result<(), StoreError> {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        self.bounded(
            sqlx::query(
                "INSERT INTO messages (id, thread_id, user_id, run_id, role, content) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(message.id)
            .bind(message.thread_id)
            .bind(message.user_id)
            .bind(message.run_id)
            .bind(role)
            .bind(&message.content)
            .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn messages(&self, thread_id: Uuid) -> Result<Vec<MessageRecord>, StoreError> {
        let rows: Vec<(Uuid, Uuid, Uuid, Option<Uuid>, String, String)> = self
            .bounded(
                sqlx::query_as(
                    "SELECT id, thread_id, user_id, run_id, role, content FROM messages
                     WHERE thread_id = $1 ORDER BY created_at, id",
                )
                .bind(thread_id)
                .fetch_all(&self.pool),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, thread_id, user_id, run_id, role, content)| MessageRecord {
                    id,
                    thread_id,
                    user_id,
                    run_id,
                    role: if role == "assistant" {
                        Role::Assistant
                    } else {
                        Role::User
                    },
                    content,
                },
            )
            .collect())
    }

    async fn start_run(&self, run: RunRecord) -> Result<(), StoreError> {
        self.bounded(
            sqlx::query("INSERT INTO runs (id, user_id, thread_id, server_id, status) VALUES ($1, $2, $3, $4, $5)")
                .bind(run.id)
                .bind(run.user_id)
                .bind(run.thread_id)
                .bind(&run.server_id)
                .bind(status_text(run.status))
                .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        result: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let updated = self
            .bounded(
                sqlx::query(
                    "UPDATE runs SET status = $2, result = $3, finished_at = now() WHERE id = $1",
                )
                .bind(run_id)
                .bind(status_text(status))
                .bind(result.map(Json))
                .execute(&self.pool),
            )
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("run {run_id} does not exist")));
        }
        Ok(())
    }

    async fn run(&self, run_id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let row: Option<RunRow> = self
            .bounded(
                sqlx::query_as("SELECT id, user_id, thread_id, server_id, status, result FROM runs WHERE id = $1")
                    .bind(run_id)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(run_from))
    }

    async fn record_progress(
        &self,
        run_id: Uuid,
        partial: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.bounded(
            sqlx::query("UPDATE runs SET result = $2, heartbeat_at = now() WHERE id = $1 AND status = 'running'")
                .bind(run_id)
                .bind(Json(partial))
                .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn interrupt_orphaned_runs(
        &self,
        owner: &str,
        restarted: bool,
        stale_after: Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows: Vec<RunRow> = self
            .bounded(
                sqlx::query_as(
                    "UPDATE runs SET status = 'interrupted', finished_at = now()
                     WHERE status = 'running'
                       AND ((server_id = $1 AND $3)
                            OR heartbeat_at < now() - make_interval(secs => $2))
                     RETURNING id, user_id, thread_id, server_id, status, result",
                )
                .bind(owner)
                .bind(stale_after.as_secs_f64())
                .bind(restarted)
                .fetch_all(&self.pool),
            )
            .await?;
        Ok(rows.into_iter().map(run_from).collect())
    }

    async fn recently_interrupted_runs(
        &self,
        user_id: Uuid,
        within: Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.bounded(
            sqlx::query_scalar(
                "SELECT id FROM runs WHERE user_id = $1 AND status = 'interrupted'
                   AND finished_at > now() - make_interval(secs => $2)
                 ORDER BY finished_at DESC LIMIT 20",
            )
            .bind(user_id)
            .bind(within.as_secs_f64())
            .fetch_all(&self.pool),
        )
        .await
    }

    async fn user_for_connection(
        &self,
        id: Uuid,
        within: Duration,
    ) -> Result<Option<(UserRecord, Vec<Uuid>)>, StoreError> {
        let row: Option<(Uuid, String, String, String, bool, Vec<Uuid>)> = self
            .bounded(
                sqlx::query_as(
                    "SELECT id, email, name, password_hash, is_demo,
                       ARRAY(SELECT r.id FROM runs r
                             WHERE r.user_id = $1 AND r.status = 'interrupted'
                               AND r.finished_at > now() - make_interval(secs => $2)
                             ORDER BY r.finished_at DESC LIMIT 20)
                     FROM users WHERE id = $1",
                )
                .bind(id)
                .bind(within.as_secs_f64())
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(
            row.map(|(id, email, name, password_hash, is_demo, interrupted)| {
                (
                    user_from((id, email, name, password_hash, is_demo)),
                    interrupted,
                )
            }),
        )
    }

    async fn append_events(&self, user_id: Uuid, events: &[Arc<Event>]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = EventRows::new(events);
        self.bounded(
            sqlx::query(
                "INSERT INTO events (user_id, seq, run_id, type, body)
                 SELECT $1, seq, run_id, type, body
                 FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], $5::jsonb[]) AS t(seq, run_id, type, body)
                 ON CONFLICT (user_id, seq) DO NOTHING",
            )
            .bind(user_id)
            .bind(&rows.seqs)
            .bind(&rows.runs)
            .bind(&rows.kinds)
            .bind(&rows.bodies)
            .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn run_events(&self, run_id: Uuid) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<(Json<Event>,)> = self
            .bounded(
                sqlx::query_as("SELECT body FROM events WHERE run_id = $1 ORDER BY seq")
                    .bind(run_id)
                    .fetch_all(&self.pool),
            )
            .await?;
        Ok(rows.into_iter().map(|(j,)| j.0).collect())
    }

    async fn begin_run(&self, run: RunRecord, message: MessageRecord) -> Result<bool, StoreError> {
        // One statement: claim the thread, then store the message and the run only if the
        // thread is the user's. (The owner subquery cannot see the CTE's own insert, hence
        // the UNION with its RETURNING.)
        let owned: bool = self
            .bounded(
                sqlx::query_scalar(
                    "WITH claimed AS (
                         INSERT INTO threads (id, user_id) VALUES ($1, $2)
                         ON CONFLICT (id) DO NOTHING RETURNING user_id),
                     owner AS (
                         SELECT user_id FROM claimed
                         UNION ALL SELECT user_id FROM threads WHERE id = $1 LIMIT 1),
                     message AS (
                         INSERT INTO messages (id, thread_id, user_id, run_id, role, content)
                         SELECT $3, $1, $2, $4, 'user', $5 FROM owner WHERE user_id = $2),
                     run AS (
                         INSERT INTO runs (id, user_id, thread_id, server_id, status)
                         SELECT $4, $2, $1, $6, 'running' FROM owner WHERE user_id = $2)
                     SELECT COALESCE((SELECT user_id = $2 FROM owner), false)",
                )
                .bind(run.thread_id)
                .bind(run.user_id)
                .bind(message.id)
                .bind(run.id)
                .bind(&message.content)
                .bind(&run.server_id)
                .fetch_one(&self.pool),
            )
            .await?;
        Ok(owned)
    }

    async fn checkpoint_run(
        &self,
        run_id: Uuid,
        user_id: Uuid,
        events: &[Arc<Event>],
        partial: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let rows = EventRows::new(events);
        self.bounded(
            sqlx::query(
                "WITH logged AS (
                     INSERT INTO events (user_id, seq, run_id, type, body)
                     SELECT $1, seq, run_id, type, body
                     FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], $5::jsonb[]) AS t(seq, run_id, type, body)
                     ON CONFLICT (user_id, seq) DO NOTHING)
                 UPDATE runs SET result = COALESCE($7, result), heartbeat_at = now()
                 WHERE id = $6 AND status = 'running'",
            )
            .bind(user_id)
            .bind(&rows.seqs)
            .bind(&rows.runs)
            .bind(&rows.kinds)
            .bind(&rows.bodies)
            .bind(run_id)
            .bind(partial.map(Json))
            .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn complete_run(
        &self,
        answer: MessageRecord,
        result: serde_json::Value,
        events: &[Arc<Event>],
    ) -> Result<(), StoreError> {
        let rows = EventRows::new(events);
        let run_id = answer.run_id.unwrap_or_default();
        let updated = self
            .bounded(
                sqlx::query(
                    "WITH logged AS (
                         INSERT INTO events (user_id, seq, run_id, type, body)
                         SELECT $1, seq, run_id, type, body
                         FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], $5::jsonb[]) AS t(seq, run_id, type, body)
                         ON CONFLICT (user_id, seq) DO NOTHING),
                     answer AS (
                         INSERT INTO messages (id, thread_id, user_id, run_id, role, content)
                         VALUES ($6, $7, $1, $8, 'assistant', $9))
                     UPDATE runs SET status = 'completed', result = $10, finished_at = now()
                     WHERE id = $8",
                )
                .bind(answer.user_id)
                .bind(&rows.seqs)
                .bind(&rows.runs)
                .bind(&rows.kinds)
                .bind(&rows.bodies)
                .bind(answer.id)
                .bind(answer.thread_id)
                .bind(run_id)
                .bind(&answer.content)
                .bind(Json(result))
                .execute(&self.pool),
            )
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("run {run_id} does not exist")));
        }
        Ok(())
    }
}
