//! Journey latency against in-process targets: the reference backend (embedded, or on the
//! machine's Postgres and Redis) and the minimal server, which does no work and so serves as
//! the calibration a wall-clock ratio is taken against.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apex_backend::{AppState, Config};
use apex_harness::client::Target;
use apex_harness::journey::JourneySpec;
use tokio::sync::oneshot;

/// A target running in this process; dropping it stops the server.
pub struct InProcess {
    pub target: Target,
    _stop: Option<oneshot::Sender<()>>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

async fn serve_backend(config: Config) -> InProcess {
    let state = AppState::start(config, true)
        .await
        .expect("the backend starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(apex_backend::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    InProcess {
        target: Target::parse(&format!("http://{addr}")).unwrap(),
        _stop: Some(stop),
    }
}

/// The reference backend on its embedded stores (cheapest argon2, as in tests).
pub async fn embedded_backend() -> InProcess {
    embedded_backend_on(fixtures()).await
}

async fn embedded_backend_on(fixtures: PathBuf) -> InProcess {
    let mut config = Config::for_tests();
    config.fixtures_dir = fixtures;
    serve_backend(config).await
}

/// Verified journeys against the embedded backend with the harness and the backend on one
/// thread, so that callgrind counts the instructions of both (the `journey` workload of
/// `bench-gate ir`). Password hashing runs on tokio's blocking pool and is not counted.
pub struct SameThreadJourneys {
    runtime: tokio::runtime::Runtime,
    backend: InProcess,
    http: reqwest::Client,
    next: usize,
}

impl SameThreadJourneys {
    /// Starts the backend with the fixtures in `fixtures` (a relative path keeps the
    /// process the same wherever the checkout lives).
    pub fn start(fixtures: &Path) -> Self {
        apex_harness::client::install_crypto_provider();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let backend = runtime.block_on(embedded_backend_on(fixtures.to_owned()));
        Self {
            runtime,
            backend,
            http: reqwest::Client::new(),
            next: 0,
        }
    }

    /// One journey; its latency in microseconds.
    pub fn run(&mut self) -> u64 {
        self.next += 1;
        let latency = self
            .runtime
            .block_on(journey(&self.http, &self.backend.target, self.next));
        latency.as_micros() as u64
    }
}

/// The reference backend on `APEX_DATABASE_URL` and `APEX_REDIS_URL` (schema `apex_bench`,
/// prefix `apex_bench:`), or `None` when they are not set.
pub async fn services_backend() -> Option<InProcess> {
    let mut config = Config::for_tests();
    config.fixtures_dir = fixtures();
    config.database_url = Some(std::env::var("APEX_DATABASE_URL").ok()?);
    config.redis_url = Some(std::env::var("APEX_REDIS_URL").ok()?);
    config.database_schema = "apex_bench".into();
    config.redis_prefix = "apex_bench:".into();
    Some(serve_backend(config).await)
}

/// The minimal server.
pub async fn minimal() -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::minimal::serve(listener));
    InProcess {
        target: Target::parse(&format!("http://{addr}")).unwrap(),
        _stop: None,
    }
}

/// One golden-path journey with the harness's full verification; its latency from login to
/// `agent_completed`. Panics on a failed journey: a benchmark of failures measures nothing.
pub async fn journey(http: &reqwest::Client, target: &Target, id: usize) -> Duration {
    let email = format!("vu{:02}@apex.test", id % 48 + 1);
    let spec = JourneySpec::golden(&email, "correct-horse");
    let outcome = apex_harness::journey::run(http, target, &spec, &format!("bench-{id}")).await;
    match (outcome.failures.first(), outcome.timings.agent_completed) {
        (None, Some(latency)) => latency,
        (failure, _) => panic!(
            "journey {id} against {} failed: {failure:?}",
            target.authority
        ),
    }
}
