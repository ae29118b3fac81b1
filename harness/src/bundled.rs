//! `--target bundled`: the reference backend started in-process on `127.0.0.1:0`, on the
//! services the backend selects (README, "Services": the machine's Postgres and Redis when
//! `APEX_DATABASE_URL` and `APEX_REDIS_URL` are set, else embedded). This is the only use the
//! harness makes of the backend crate; journeys still speak to it over real sockets.

use std::path::Path;

use tokio::sync::oneshot;

use crate::client::Target;

/// A running bundled backend; dropping it shuts the backend down.
pub struct Bundled {
    pub target: Target,
    /// `embedded`, `external` or `containers`.
    pub mode: String,
    _stop: oneshot::Sender<()>,
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
pub async fn start(fixtures_dir: &Path) -> Result<Bundled, String> {
    start_with(fixtures_dir, false)
        .await
        .map(|(bundled, _)| bundled)
}

/// [`start`]; with `proxied` and services configured, the backend reaches Redis and Postgres
/// through fault proxies (for `between: redis|postgres` faults), returned alongside.
pub async fn start_with(
    fixtures_dir: &Path,
    proxied: bool,
) -> Result<(Bundled, Option<crate::fault::DependencyProxies>), String> {
    use crate::fault::{FaultProxy, url_authority, url_through};
    let mut config = apex_backend::Config::for_tests();
    config.fixtures_dir = fixtures_dir.to_owned();
    config.database_url = std::env::var("APEX_DATABASE_URL").ok();
    config.redis_url = std::env::var("APEX_REDIS_URL").ok();
    let mut proxies = None;
    if let (true, Some(db), Some(redis)) = (proxied, &config.database_url, &config.redis_url) {
        let through = async |url: &str, port: u16| -> Result<(FaultProxy, String), String> {
            let authority = url_authority(url, port).ok_or("cannot read the service URL")?;
            let upstream = tokio::net::lookup_host(&authority)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("cannot resolve {authority}"))?;
            let proxy = FaultProxy::start(upstream)
                .await
                .map_err(|e| e.to_string())?;
            let url = url_through(url, proxy.addr).ok_or("cannot rewrite the service URL")?;
            Ok((proxy, url))
        };
        let (pg, db_url) = through(db, 5432).await?;
        let (rd, redis_url) = through(redis, 6379).await?;
        config.database_url = Some(db_url);
        config.redis_url = Some(redis_url);
        proxies = Some(crate::fault::DependencyProxies {
            redis: Some(rd),
            postgres: Some(pg),
        });
    }
    if config.database_url.is_some() {
        // Kept apart from a backend deployed on the same services.
        config.database_schema = "apex_harness".into();
        config.redis_prefix = "apex_harness:".into();
    }
    let state = apex_backend::AppState::start(config, true)
        .await
        .map_err(|e| e.to_string())?;
    let mode = serde_json::to_value(state.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(apex_backend::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Ok((
        Bundled {
            target: Target::parse(&format!("http://{addr}"))?,
            mode,
            _stop: stop,
        },
        proxies,
    ))
}
