//! Service selection (README, "Services"), one module for the backend, its tests and the harness:
//!
//! 1. **external** — `APEX_DATABASE_URL` and `APEX_REDIS_URL` (or the flags) are set;
//! 2. **containers** — with the cargo feature `containers`, when a Docker daemon answers a
//!    ping: testcontainers starts `apex-services/postgres:15` and `apex-services/redis:7`
//!    (built from Debian's packages by `ci/images.sh`), or the images named by
//!    `APEX_POSTGRES_IMAGE` / `APEX_REDIS_IMAGE` (`postgres:15-alpine`, `redis:7-alpine` where a
//!    registry is reachable);
//! 3. **embedded** — in-process store and bus, when the caller allows it;
//! 4. otherwise a clear error naming the three options.

use std::sync::Arc;

use crate::bus::{BusError, EventBus, MemBus, RedisBus, RedisBusOptions};
use crate::config::Config;
use crate::store::{MemStore, PgStore, PgStoreOptions, Store, StoreError};

/// Where the store and bus live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMode {
    External,
    Containers,
    Embedded,
}

/// Why no services could be selected.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "no services available: set APEX_DATABASE_URL and APEX_REDIS_URL (e.g. \
         postgres://postgres@127.0.0.1:5432/test and redis://127.0.0.1:6379), or build with \
         the `containers` feature on a machine where Docker runs, or allow the embedded \
         in-process mode (unset APEX_REQUIRE_SERVICES)"
    )]
    NoneAvailable,
    #[error("APEX_DATABASE_URL and APEX_REDIS_URL must be set together (only {0} is set)")]
    HalfConfigured(&'static str),
    #[error("postgres: {0}")]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Bus(#[from] BusError),
    #[error("containers: {0}")]
    Containers(String),
}

/// The selected store and bus, and what keeps them alive.
pub struct Services {
    pub mode: ServiceMode,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Containers stop when this is dropped.
    #[cfg(feature = "containers")]
    pub containers: Option<Arc<containers::Containers>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// In-process store and bus.
    pub fn embedded(config: &Config) -> Self {
        Self {
            mode: ServiceMode::Embedded,
            store: Arc::new(MemStore::new()),
            bus: Arc::new(MemBus::new(config.retain_events)),
            #[cfg(feature = "containers")]
            containers: None,
        }
    }

    /// Postgres and Redis at the given URLs, with the config's schema, prefix and timeouts.
    pub async fn external(
        config: &Config,
        database_url: &str,
        redis_url: &str,
    ) -> Result<Self, ServiceError> {
        let store = PgStore::connect(&PgStoreOptions {
            url: database_url.to_owned(),
            schema: config.database_schema.clone(),
            timeout: config.database_timeout(),
            run_migrations: !config.no_migrate,
            max_connections: config.database_max_connections,
        })
        .await?;
        let bus = RedisBus::connect(RedisBusOptions {
            url: redis_url.to_owned(),
            prefix: config.redis_prefix.clone(),
            timeout: config.redis_timeout(),
            retain: config.retain_events,
        })
        .await?;
        Ok(Self {
            mode: ServiceMode::External,
            store: Arc::new(store),
            bus: Arc::new(bus),
            #[cfg(feature = "containers")]
            containers: None,
        })
    }

    /// Selects services in the documented order; `allow_embedded` permits the last resort.
    pub async fn select(config: &Config, allow_embedded: bool) -> Result<Self, ServiceError> {
        match (&config.database_url, &config.redis_url) {
            (Some(db), Some(redis)) => return Self::external(config, db, redis).await,
            (Some(_), None) => return Err(ServiceError::HalfConfigured("APEX_DATABASE_URL")),
            (None, Some(_)) => return Err(ServiceError::HalfConfigured("APEX_REDIS_URL")),
            (None, None) => {}
        }
        #[cfg(feature = "containers")]
        if containers::docker_answers().await {
            let (running, db, redis) = containers::start()
                .await
                .map_err(ServiceError::Containers)?;
            let mut services = Self::external(config, &db, &redis).await?;
            services.mode = ServiceMode::Containers;
            services.containers = Some(Arc::new(running));
            return Ok(services);
        }
        if allow_embedded {
            Ok(Self::embedded(config))
        } else {
            Err(ServiceError::NoneAvailable)
        }
    }
}

/// A private corner of shared services: a Postgres schema and a Redis key prefix no other
/// user of the same services has. The harness's bundled backend takes one per run and the
/// backend's tests one each, so runs on the same services (parallel CI jobs, tests in
/// parallel, two worktrees) never share users' event streams or a migrated schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `{base}_{12 hex}`.
    pub schema: String,
    /// `{base}:{12 hex}:`.
    pub prefix: String,
}

impl Namespace {
    /// A new namespace named after `base` (letters, digits, underscores) and a random id.
    pub fn unique(base: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = &id[..12];
        Self {
            schema: format!("{base}_{id}"),
            prefix: format!("{base}:{id}:"),
        }
    }

    /// Drops the schema and deletes the keys under the prefix; best effort (what is
    /// unreachable stays), each service bounded by 10 s.
    pub async fn remove(&self, database_url: &str, redis_url: &str) {
        use sqlx::Connection;
        const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
        let schema = async {
            let mut conn = sqlx::PgConnection::connect(database_url).await?;
            let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await?;
            conn.close().await
        };
        let _ = tokio::time::timeout(BOUND, schema).await;
        let keys = async {
            let client = redis::Client::open(redis_url)?;
            let mut redis = client.get_multiplexed_async_connection().await?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut redis)
                    .await?;
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<()>(&mut redis)
                        .await?;
                }
                if next == 0 {
                    return Ok::<(), redis::RedisError>(());
                }
                cursor = next;
            }
        };
        let _ = tokio::time::timeout(BOUND, keys).await;
    }
}

/// A [`Namespace`] on the services at two URLs, removed when dropped (a `Drop` cannot await:
/// the removal runs on a thread of its own with its own runtime, waited for).
#[derive(Debug)]
pub struct Scratch {
    pub namespace: Namespace,
    database_url: String,
    redis_url: String,
}

impl Scratch {
    /// A new [`Namespace::unique`] named after `base` on these services.
    pub fn new(base: &str, database_url: &str, redis_url: &str) -> Self {
        Self {
            namespace: Namespace::unique(base),
            database_url: database_url.to_owned(),
            redis_url: redis_url.to_owned(),
        }
    }

    /// Removes the namespace now (dropping does it again, harmlessly).
    pub async fn remove(&self) {
        (self.namespace)
            .remove(&self.database_url, &self.redis_url)
            .await;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let namespace = self.namespace.clone();
        let (db, redis) = (self.database_url.clone(), self.redis_url.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(namespace.remove(&db, &redis));
            Ok::<(), std::io::Error>(())
        })
        .join();
    }
}

#[cfg(feature = "containers")]
pub mod containers {
    //! Postgres and Redis in Docker, for machines that have a daemon.

    use std::time::Duration;

    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::redis::Redis;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

    /// The image `ci/images.sh` builds for Postgres; `APEX_POSTGRES_IMAGE` overrides it.
    pub const DEFAULT_POSTGRES_IMAGE: &str = "apex-services/postgres:15";
    /// The image `ci/images.sh` builds for Redis; `APEX_REDIS_IMAGE` overrides it.
    pub const DEFAULT_REDIS_IMAGE: &str = "apex-services/redis:7";
    /// Label on containers started by [`shared`]: the PID of the process that owns them.
    pub const OWNER_LABEL: &str = "apex.owner-pid";

    /// The running containers; dropping them stops them.
    pub struct Containers {
        _postgres: ContainerAsync<Postgres>,
        _redis: ContainerAsync<Redis>,
    }

    /// The Postgres and Redis images: `APEX_POSTGRES_IMAGE` / `APEX_REDIS_IMAGE`, else the
    /// defaults.
    pub fn images() -> (String, String) {
        let pick = |var: &str, default: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        (
            pick("APEX_POSTGRES_IMAGE", DEFAULT_POSTGRES_IMAGE),
            pick("APEX_REDIS_IMAGE", DEFAULT_REDIS_IMAGE),
        )
    }

    /// `name[:tag]` split at the tag's colon (not a registry's port); the tag defaults to
    /// `latest`.
    pub fn split_image(image: &str) -> (String, String) {
        let last_slash = image.rfind('/').map_or(0, |i| i + 1);
        match image[last_slash..].rfind(':') {
            Some(i) => (
                image[..last_slash + i].to_owned(),
                image[last_slash + i + 1..].to_owned(),
            ),
            None => (image.to_owned(), "latest".to_owned()),
        }
    }

    /// True when a Docker daemon answers a ping within 2 s (`docker --version` proves nothing).
    pub async fn docker_answers() -> bool {
        let ping = async {
            testcontainers_modules::testcontainers::core::client::docker_client_instance()
                .await
                .ok()?
                .ping()
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Some(_))
        )
    }

    /// Starts the Postgres and Redis images ([`images`]); returns them with their URLs.
    pub async fn start() -> Result<(Containers, String, String), String> {
        start_labelled(None).await
    }

    async fn start_labelled(owner: Option<u32>) -> Result<(Containers, String, String), String> {
        let (postgres_image, redis_image) = images();
        let (pg_name, pg_tag) = split_image(&postgres_image);
        let (redis_name, redis_tag) = split_image(&redis_image);
        let mut postgres = Postgres::default().with_name(pg_name).with_tag(pg_tag);
        let mut redis = Redis::default().with_name(redis_name).with_tag(redis_tag);
        if let Some(pid) = owner {
            postgres = postgres.with_label(OWNER_LABEL, pid.to_string());
            redis = redis.with_label(OWNER_LABEL, pid.to_string());
        }
        let postgres = (postgres.start().await).map_err(|e| format!("{postgres_image}: {e}"))?;
        let redis = (redis.start().await).map_err(|e| format!("{redis_image}: {e}"))?;
        let pg_port = postgres
            .get_host_port_ipv4(5432)
            .await
            .map_err(|e| e.to_string())?;
        let redis_port = redis
            .get_host_port_ipv4(6379)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            Containers {
                _postgres: postgres,
                _redis: redis,
            },
            format!("postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres"),
            format!("redis://127.0.0.1:{redis_port}"),
        ))
    }

    /// One Postgres and one Redis for the whole process (test binaries): started on first
    /// use on a thread of their own and kept until the process exits; returns their URLs.
    /// Statics are never dropped, so the containers outlive the process: they carry
    /// [`OWNER_LABEL`], and `ci/containers.sh` removes them (`docker rm -f $(docker ps -aq
    /// --filter label=apex.owner-pid)` does it by hand).
    pub fn shared() -> Result<(String, String), String> {
        static SHARED: std::sync::OnceLock<Result<(String, String), String>> =
            std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let spawned = std::thread::Builder::new()
                    .name("apex-containers".into())
                    .spawn(move || {
                        let runtime = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(runtime) => runtime,
                            Err(e) => {
                                let _ = tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                        runtime.block_on(async move {
                            if !docker_answers().await {
                                let _ = tx.send(Err("no Docker daemon answers".to_owned()));
                                return;
                            }
                            match start_labelled(Some(std::process::id())).await {
                                Ok((running, db, redis)) => {
                                    let _ = tx.send(Ok((db, redis)));
                                    // Keeps the containers (and the client's connection
                                    // tasks, on this runtime) for the process's lifetime.
                                    std::future::pending::<()>().await;
                                    drop(running);
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(e));
                                }
                            }
                        });
                    });
                match spawned {
                    Ok(_) => rx
                        .recv()
                        .unwrap_or_else(|_| Err("the container thread ended".to_owned())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .clone()
    }
}

#[cfg(all(test, feature = "containers"))]
mod tests {
    /// Without a Docker daemon the probe says no, quickly, and selection falls through.
    #[tokio::test]
    async fn the_docker_probe_answers_within_its_bound() {
        let started = std::time::Instant::now();
        let _ = super::containers::docker_answers().await;
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }

    #[test]
    fn images_split_at_the_tag_not_at_a_registry_port() {
        use super::containers::split_image;
        let split = |s: &str| {
            let (name, tag) = split_image(s);
            (name, tag)
        };
        assert_eq!(
            split("apex-services/postgres:15"),
            ("apex-services/postgres".into(), "15".into())
        );
        assert_eq!(split("redis:7-alpine"), ("redis".into(), "7-alpine".into()));
        assert_eq!(
            split("registry.local:5000/pg"),
            ("registry.local:5000/pg".into(), "latest".into())
        );
        assert_eq!(
            split("registry.local:5000/pg:16"),
            ("registry.local:5000/pg".into(), "16".into())
        );
    }
}
