//! Journey latency against in-process targets: the reference backend (embedded, or on the
//! machine's Postgres and Redis) and the minimal server, which does no work and so serves as
//! the calibration a wall-clock ratio is taken against.
//!
//! A journey is `benches/scenarios/journey.yaml` run by the harness's own executor
//! ([`Prepared::journey`]), the code `apex-harness run` runs: every step, expectation,
//! content check and invariant included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apex_backend::Config;
use apex_harness::client::Target;
use apex_harness::runner::{Prepared, RunOptions};

/// A target running in this process with the bench journey prepared against it; dropping
/// it stops the server.
pub struct InProcess {
    pub target: Target,
    journeys: Prepared,
    _server: Option<apex_backend::InProcess>,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bench journey, compiled in: the probe under callgrind reads no file by path but the
/// fixtures.
const JOURNEY: &str = include_str!("../scenarios/journey.yaml");

/// The bench journey (`benches/scenarios/journey.yaml`) prepared against `target`, with the
/// fixtures in `root/fixtures` (a relative root keeps the process the same wherever the
/// checkout lives, for callgrind).
pub async fn prepare(root: &Path, target: &Target) -> Prepared {
    let path = Path::new("benches/scenarios/journey.yaml");
    let file = apex_harness::scenario::parse(path, JOURNEY)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let options = RunOptions::new(target.clone(), root.join("fixtures"));
    Prepared::new(&file, &options)
        .await
        .unwrap_or_else(|e| panic!("the bench journey cannot start: {e:?}"))
}

async fn serve(root: &Path, server: Option<apex_backend::InProcess>, addr: String) -> InProcess {
    let target = Target::parse(&addr).expect("a loopback URL");
    InProcess {
        journeys: prepare(root, &target).await,
        target,
        _server: server,
    }
}

async fn serve_backend(root: &Path, mut config: Config) -> InProcess {
    config.seed_fixtures = true;
    let state = apex_backend::AppState::start(config, true)
        .await
        .expect("the backend starts");
    let server = apex_backend::InProcess::serve(state)
        .await
        .expect("a loopback port");
    let url = server.base_url();
    serve(root, Some(server), url).await
}

/// The reference backend on its embedded stores (cheapest argon2, as in tests).
pub async fn embedded_backend() -> InProcess {
    embedded_backend_in(&workspace()).await
}

async fn embedded_backend_in(root: &Path) -> InProcess {
    let mut config = Config::for_tests();
    config.fixtures_dir = root.join("fixtures");
    serve_backend(root, config).await
}

impl InProcess {
    /// One verified journey as virtual user `id`; its latency from the journey's start to
    /// `agent_completed`. Panics on a failed journey: a benchmark of failures measures
    /// nothing.
    pub async fn journey(&self, id: u32) -> Duration {
        let outcome = self.journeys.journey(id, 0, None).await;
        match (outcome.failures.first(), outcome.timings.agent_completed) {
            (None, Some(latency)) => latency,
            (failure, _) => panic!(
                "journey {id} against {} failed: {failure:?}",
                self.target.authority
            ),
        }
    }
}

/// Verified journeys against the embedded backend with the harness and the backend on one
/// thread, so that callgrind counts the instructions of both (the `journey` workload of
/// `bench-gate ir`). Password hashing runs on tokio's blocking pool and is not counted.
pub struct SameThreadJourneys {
    runtime: tokio::runtime::Runtime,
    backend: InProcess,
    next: u32,
}

impl SameThreadJourneys {
    /// Starts the backend with the checkout at `root` (a relative path keeps the process the
    /// same wherever the checkout lives).
    pub fn start(root: &Path) -> Self {
        apex_harness::client::install_crypto_provider();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let backend = runtime.block_on(embedded_backend_in(root));
        Self {
            runtime,
            backend,
            next: 0,
        }
    }

    /// One journey; its latency in microseconds.
    pub fn run(&mut self) -> u64 {
        self.next += 1;
        let latency = self.runtime.block_on(self.backend.journey(self.next));
        latency.as_micros() as u64
    }
}

/// The reference backend on `APEX_DATABASE_URL` and `APEX_REDIS_URL` (schema `apex_bench`,
/// prefix `apex_bench:`), or `None` when they are not set.
pub async fn services_backend() -> Option<InProcess> {
    let root = workspace();
    let mut config = Config::for_tests();
    config.fixtures_dir = root.join("fixtures");
    config.database_url = Some(std::env::var("APEX_DATABASE_URL").ok()?);
    config.redis_url = Some(std::env::var("APEX_REDIS_URL").ok()?);
    config.database_schema = "apex_bench".into();
    config.redis_prefix = "apex_bench:".into();
    Some(serve_backend(&root, config).await)
}

/// The minimal server.
pub async fn minimal() -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::minimal::serve(listener));
    serve(&workspace(), None, format!("http://{addr}")).await
}
