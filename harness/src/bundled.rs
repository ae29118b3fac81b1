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
    /// Its further instances (1, 2, …) on the same Postgres and Redis, for scenarios with
    /// `instances` (none in embedded mode: instances share nothing there).
    pub more: Vec<Instance>,
    #[cfg(feature = "bundled")]
    _server: apex_backend::InProcess,
    #[cfg(feature = "bundled")]
    _more: Vec<apex_backend::InProcess>,
    /// The run's schema and key prefix on the services, removed after the servers stop.
    #[cfg(feature = "bundled")]
    _scratch: Option<apex_backend::services::Scratch>,
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

/// One more instance of the bundled backend: where journeys reach it, and the fault proxies
/// in front of its services when asked for.
#[derive(Debug, Clone)]
pub struct Instance {
    pub target: Target,
    pub dependencies: Option<DependencyProxies>,
}

/// Starts the backend with the fixtures in `fixtures_dir`.
pub async fn start(fixtures_dir: &Path) -> Result<Bundled, BundledError> {
    start_with(fixtures_dir, false)
        .await
        .map(|(bundled, _)| bundled)
}

/// [`start`]; with `proxied` and services configured, the backend reaches Redis and Postgres
/// through fault proxies (for `between: redis|postgres` faults), returned alongside.
pub async fn start_with(
    fixtures_dir: &Path,
    proxied: bool,
) -> Result<(Bundled, Option<DependencyProxies>), BundledError> {
    start_instances(fixtures_dir, proxied, 1).await
}

/// [`start_with`], and on Postgres and Redis `instances - 1` more instances of the backend
/// sharing them (the same schema and key prefix), each through its own fault proxies when
/// `proxied` ([`Bundled::more`]). In embedded mode only the first starts.
#[cfg(feature = "bundled")]
pub async fn start_instances(
    fixtures_dir: &Path,
    proxied: bool,
    instances: u32,
) -> Result<(Bundled, Option<DependencyProxies>), BundledError> {
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
    // A schema and key prefix of this run's own, removed when it ends: kept apart from a
    // backend deployed on the same services and from other runs on them (parallel CI jobs,
    // tests in parallel), which would otherwise share the fixture users' event streams.
    let scratch = match (&config.database_url, &config.redis_url) {
        (Some(db), Some(redis)) => {
            let scratch = apex_backend::services::Scratch::new("apex_harness", db, redis);
            config.database_schema = scratch.namespace.schema.clone();
            config.redis_prefix = scratch.namespace.prefix.clone();
            Some(scratch)
        }
        _ => None,
    };
    let shared = scratch.is_some();
    let (server, proxies) = serve(config.clone(), proxied).await?;
    let mode = serde_json::to_value(server.state.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut more = Vec::new();
    let mut more_servers = Vec::new();
    for _ in 1..if shared { instances } else { 1 } {
        let (server, dependencies) = serve(config.clone(), proxied).await?;
        let target =
            Target::parse(&server.base_url()).map_err(|e| BundledError::Startup(e.to_string()))?;
        more.push(Instance {
            target,
            dependencies,
        });
        more_servers.push(server);
    }
    #[cfg(feature = "containers")]
    let mode = if containers.is_some() {
        "containers".to_owned()
    } else {
        mode
    };
    let target =
        Target::parse(&server.base_url()).map_err(|e| BundledError::Startup(e.to_string()))?;
    Ok((
        Bundled {
            target,
            mode,
            more,
            _server: server,
            _more: more_servers,
            _scratch: scratch,
            #[cfg(feature = "containers")]
            _containers: containers,
        },
        proxies,
    ))
}

/// One instance on `config`'s services, through fault proxies in front of them when
/// `proxied` and both services are configured (returned alongside).
#[cfg(feature = "bundled")]
async fn serve(
    mut config: apex_backend::Config,
    proxied: bool,
) -> Result<(apex_backend::InProcess, Option<DependencyProxies>), BundledError> {
    use crate::fault::FaultProxy;
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
    let state = apex_backend::AppState::start(config, true)
        .await
        .map_err(|e| BundledError::Startup(e.to_string()))?;
    let server = apex_backend::InProcess::serve(state)
        .await
        .map_err(BundledError::Listen)?;
    Ok((server, proxies))
}

/// Without the `bundled` feature there is no backend to start.
#[cfg(not(feature = "bundled"))]
pub async fn start_instances(
    _fixtures_dir: &Path,
    _proxied: bool,
    _instances: u32,
) -> Result<(Bundled, Option<DependencyProxies>), BundledError> {
    Err(BundledError::NotBuilt)
}
