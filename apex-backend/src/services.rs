//! Service selection (README, "Services"), one module for the backend, its tests and the harness:
//!
//! 1. **external** — `APEX_DATABASE_URL` and `APEX_REDIS_URL` (or the flags) are set;
//! 2. **containers** — with the cargo feature `containers`, when a Docker daemon answers a
//!    ping: testcontainers `postgres:15-alpine` and `redis:7-alpine`;
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

#[cfg(feature = "containers")]
pub mod containers {
    //! Postgres and Redis in Docker, for machines that have a daemon.

    use std::time::Duration;

    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::redis::Redis;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

    /// The running containers; dropping them stops them.
    pub struct Containers {
        _postgres: ContainerAsync<Postgres>,
        _redis: ContainerAsync<Redis>,
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

    /// Starts `postgres:15-alpine` and `redis:7-alpine`; returns them with their URLs.
    pub async fn start() -> Result<(Containers, String, String), String> {
        let postgres = Postgres::default()
            .with_tag("15-alpine")
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let redis = Redis::default()
            .with_tag("7-alpine")
            .start()
            .await
            .map_err(|e| e.to_string())?;
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
}
