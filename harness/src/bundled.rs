//! `--target bundled`: the reference backend started in-process on `127.0.0.1:0`, on the
//! services the backend selects (README, "Services": the machine's Postgres and Redis when
//! `APEX_DATABASE_URL` and `APEX_REDIS_URL` are set; with the feature `containers`, else
//! Postgres and Redis containers started here when a Docker daemon answers, reached through
//! fault proxies like the machine's; else embedded). This is the only use the
//! harness makes of the backend crate; journeys still speak to it over real sockets.
//!
//! Behind the default cargo feature `bundled`: a harness built without it (for remote
//! targets only, without sqlx, redis, argon2 and axum) answers `--target bundled` with
//! [`BundledError::NotBuilt`].

use std::path::Path;

use crate::client::Target;
use crate::fault::DependencyProxies;

/// Why the bundled backend is not there.
#[derive(Debug, thiserror::Error)]
pub enum BundledError {
    #[error(
        "this apex-harness was built without the bundled backend (cargo feature `bundled`); \
         pass --target URL"
    )]
    NotBuilt,
    #[error("a fault proxy in front of its services: {0}")]
    Proxy(std::io::Error),
    #[error("{0}")]
    Startup(String),
    #[error("no loopback port to serve on: {0}")]
    Listen(std::io::Error),
}

/// A running bundled backend; dropping it shuts the backend down.
pub struct Bundled {
    pub target: Target,
    /// `embedded`, `external` or `containers`.
    pub mode: String,
    #[cfg(feature = "bundled")]
    _server: apex_backend::InProcess,
    /// Dropped after the server (fields drop in order).
    #[cfg(feature = "containers")]
    _containers: Option<apex_backend::services::containers::Containers>,
}

impl std::fmt::Debug for Bundled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundled")
            .field("target", &self.target)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Starts the backend with the fixtures in `fixtures_dir`.
pub async fn start(fixtures_dir: &Path) -> Result<Bundled, BundledError> {
    start_with(fixtures_dir, false)
        .await
        .map(|(bundled, _)| bundled)
}

/// [`start`]; with `proxied` and services configured, the backend reaches Redis and Postgres
/// through fault proxies (for `between: redis|postgres` faults), returned alongside.
#[cfg(feature = "bundled")]
pub async fn start_with(
    fixtures_dir: &Path,
    proxied: bool,
) -> Result<(Bundled, Option<DependencyProxies>), BundledError> {
    use crate::fault::FaultProxy;
    let mut config = apex_backend::Config::for_tests();
    config.fixtures_dir = fixtures_dir.to_owned();
    // The harness logs the fixture users in, on the embedded store or on the services.
    config.seed_fixtures = true;
    config.database_url = std::env::var("APEX_DATABASE_URL").ok();
    config.redis_url = std::env::var("APEX_REDIS_URL").ok();
    // Started here rather than by the backend's own selection, so that the fault proxies
    // can stand in front of them as in front of the machine's services.
    #[cfg(feature = "containers")]
    let mut containers = None;
    #[cfg(feature = "containers")]
    if config.database_url.is_none()
        && config.redis_url.is_none()
        && apex_backend::services::containers::docker_answers().await
    {
        let (running, db, redis) = apex_backend::services::containers::start()
            .await
            .map_err(|e| BundledError::Startup(format!("containers: {e}")))?;
        config.database_url = Some(db);
        config.redis_url = Some(redis);
        containers = Some(running);
    }
    let mut proxies = None;
    if let (true, Some(db), Some(redis)) = (proxied, &config.database_url, &config.redis_url) {
        let (postgres, db) = (FaultProxy::in_front_of(db).await).map_err(BundledError::Proxy)?;
        let (redis, redis_url) =
            (FaultProxy::in_front_of(redis).await).map_err(BundledError::Proxy)?;
        config.database_url = Some(db);
        config.redis_url = Some(redis_url);
        proxies = Some(DependencyProxies {
            redis: Some(redis),
            postgres: Some(postgres),
        });
    }
    if config.database_url.is_some() {
        // Kept apart from a backend deployed on the same services.
        config.database_schema = "apex_harness".into();
        config.redis_prefix = "apex_harness:".into();
    }
    let state = apex_backend::AppState::start(config, true)
        .await
        .map_err(|e| BundledError::Startup(e.to_string()))?;
    let mode = serde_json::to_value(state.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    #[cfg(feature = "containers")]
    let mode = if containers.is_some() {
        "containers".to_owned()
    } else {
        mode
    };
    let server = apex_backend::InProcess::serve(state)
        .await
        .map_err(BundledError::Listen)?;
    let target =
        Target::parse(&server.base_url()).map_err(|e| BundledError::Startup(e.to_string()))?;
    Ok((
        Bundled {
            target,
            mode,
            _server: server,
            #[cfg(feature = "containers")]
            _containers: containers,
        },
        proxies,
    ))
}

/// Without the `bundled` feature there is no backend to start.
#[cfg(not(feature = "bundled"))]
pub async fn start_with(
    _fixtures_dir: &Path,
    _proxied: bool,
) -> Result<(Bundled, Option<DependencyProxies>), BundledError> {
    Err(BundledError::NotBuilt)
}
