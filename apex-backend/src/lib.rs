//! `apex-backend`: the reference backend of the Netra Apex golden path.
//!
//! HTTP login → WebSocket → user message → the five agent events → the answer, done correctly:
//! strict JWTs that survive header stripping, per-user event streams with gap-free `seq`,
//! acknowledgement and redelivery, resume, isolation, and agents that do real, deterministic
//! analysis of the user's AI-spend data. The wire contract is `docs/protocol.md`.
//!
//! # Layout
//!
//! - [`config`]: the clap `Config` (every flag has an env var).
//! - [`state`]: `AppState`, built from a config; per-user run slots; startup errors.
//! - [`http`]: login, refresh, demo, tickets, health, readiness, metrics.
//! - [`ws`]: the `/ws` upgrade and the per-connection delivery loop.
//! - [`protocol`]: frames on the wire, client frame parsing, error and close codes.
//! - [`run`]: one agent run: events on the user's stream, persistence.
//! - [`agents`]: Data Helper, Optimizer, Report Generator (pure functions).
//! - [`store`], [`bus`]: the durable state and the event streams, each a trait with an
//!   in-process implementation.
//! - [`limits`]: the bounds on password hashing, login attempts and demo users.
//! - [`auth`], [`metrics`], [`fixtures`], [`error`]: tokens and passwords, OpenMetrics,
//!   seed data, the HTTP error type.
//!
//! Test seams: [`app`] builds the router for a state; [`serve`] runs it on a listener until a
//! shutdown future resolves, then drains.

pub mod agents;
pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod fixtures;
pub mod http;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod protocol;
pub mod run;
pub mod sabotage;
pub mod services;
pub mod state;
pub mod store;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use config::Config;
pub use state::{AppState, StartupError};

/// How long connections get to send their close frames at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/auth/login", post(http::auth::login))
        .route("/auth/login", post(http::auth::login))
        .route("/api/auth/refresh", post(http::auth::refresh))
        .route("/api/auth/demo", post(http::auth::demo))
        .route("/api/websocket/ticket", post(http::auth::ticket))
        .route("/ws", any(ws::handler))
        .route("/health", get(http::health::health))
        .route("/ready", get(http::health::ready))
        .route("/metrics", get(http::health::metrics))
        .with_state(state)
}

/// A backend serving in this process on a free loopback port, over real sockets: what the
/// harness's `--target bundled`, the tests and the benches start. Dropped, it shuts down;
/// [`InProcess::stop`] also waits until it has drained.
pub struct InProcess {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    /// Serves `state` on `127.0.0.1:0`.
    pub async fn serve(state: AppState) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, requested) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = requested.await;
        }));
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests shutdown and waits until runs and connections have drained.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then drains: no new runs, in-flight
/// runs finish within the grace period (or are marked interrupted), connections close with 1001.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Without TCP_NODELAY, the five events written as separate frames wait on delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let drain = state.clone();
    // Before any run of this life can start, the running runs under this instance's name are
    // leftovers of its previous life.
    if let Err(e) = run::interrupt_orphaned_runs(&state, true).await {
        tracing::warn!(error = %e, "could not sweep the runs of this instance's previous life");
    }
    let sweeper = tokio::spawn(sweep_orphaned_runs(state.clone()));
    let keeper = tokio::spawn(memory::keep(state.clone()));
    // The peer address keys the per-client login limit.
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining");
            drain.begin_drain();
        })
        .await?;

    sweeper.abort();
    keeper.abort();
    state.runs.close();
    if tokio::time::timeout(state.config.shutdown_grace(), state.runs.wait())
        .await
        .is_err()
    {
        tracing::warn!("runs still in flight after the grace period: interrupting them");
        state.runs_cancel.cancel();
        state.runs.wait().await;
    }
    state.connections_close.cancel();
    state.connections.close();
    if tokio::time::timeout(CLOSE_GRACE, state.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Marks interrupted the runs whose heartbeat went stale (a dead instance, or a hung run),
/// and keeps looking. This instance's live runs renew their heartbeat as they progress.
async fn sweep_orphaned_runs(state: AppState) {
    let every = (state.config.run_stale_after() / 2).max(Duration::from_millis(500));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = run::interrupt_orphaned_runs(&state, false).await {
            tracing::warn!(error = %e, "could not sweep orphaned runs");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
}

/// The binary's job: build the state, bind, print `listening on ADDR`, serve until a signal.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let addr = config.listen;
    let allow_embedded = !config.require_services;
    let state = AppState::start(config, allow_embedded).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { addr, source })?;
    println!("listening on {local}");
    tracing::info!(%local, mode = ?state.mode, server_id = %state.server_id, "serving");
    serve(listener, state, shutdown_signal())
        .await
        .map_err(StartupError::Serve)
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`), text or JSON lines on
/// stderr so stdout stays for `listening on ADDR`.
pub fn init_tracing(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Text => builder.try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
}
