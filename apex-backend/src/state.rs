//! The shared state of one backend instance, and how it is built from a [`Config`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::agents::Pricing;
use crate::auth::{PasswordHashing, TokenKeys};
use crate::bus::{EventBus, TimedBus};
use crate::config::Config;
use crate::fixtures::{FixtureError, Fixtures};
use crate::limits::{DemoUsers, HashGate, RateLimiter};
use crate::metrics::Metrics;
use crate::services::{ServiceError, ServiceMode, Services};
use crate::store::{Store, StoreError, TimedStore, UserRecord};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("loading fixtures: {0}")]
    Fixtures(#[from] FixtureError),
    #[error("invalid argon2 parameters: {0}")]
    Argon2(String),
    #[error("seeding users: {0}")]
    Seed(#[from] StoreError),
    #[error(transparent)]
    Services(#[from] ServiceError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    #[error(
        "APEX_JWT_SECRET (--jwt-secret) is {0} bytes: an HS256 secret needs at least \
         {MIN_JWT_SECRET_BYTES} (256 bits) of random bytes; unset it for a random secret per process"
    )]
    WeakJwtSecret(usize),
    #[error(
        "--sabotage {0:?} breaks the golden path on purpose and is refused without \
         --allow-sabotage (test only; see docs/failure-modes.md)"
    )]
    SabotageRefused(crate::sabotage::Sabotage),
}

/// The shortest HS256 secret accepted: the hash's output size, below which a secret is easier
/// to guess than the signature.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Client addresses and accounts each rate limiter tracks at most (about 100 bytes each).
const RATE_LIMIT_KEYS: usize = 100_000;

/// Per-user count of runs in flight, bounded by `max_runs_per_user`.
#[derive(Debug, Default)]
pub struct RunSlots {
    active: Mutex<HashMap<Uuid, usize>>,
}

impl RunSlots {
    /// A user other than `user` with a run in flight, if any (`cross-user` sabotage).
    pub fn other_active(&self, user: Uuid) -> Option<Uuid> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.keys().copied().find(|u| *u != user)
    }
}

/// A held run slot; dropping it frees the slot.
#[derive(Debug)]
pub struct RunSlot {
    state: AppState,
    user_id: Uuid,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut active = self
            .state
            .run_slots
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = active.get_mut(&self.user_id) {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.user_id);
            }
        }
    }
}

/// Everything a request handler or connection needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

pub struct Inner {
    pub config: Config,
    pub server_id: String,
    pub mode: ServiceMode,
    /// Keeps containers (if any) alive as long as the state.
    _services: Services,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub tokens: TokenKeys,
    pub passwords: PasswordHashing,
    /// Hash verified against when the email is unknown, so timing does not tell.
    pub dummy_hash: String,
    /// Login and demo requests per client address.
    pub login_ip: RateLimiter<IpAddr>,
    /// Failed logins per account (lower-cased email).
    pub login_failures: RateLimiter<String>,
    pub demo_users: DemoUsers,
    pub pricing: Arc<Pricing>,
    pub metrics: Metrics,
    pub run_slots: RunSlots,
    /// Tracks run tasks so shutdown can wait for them.
    pub runs: TaskTracker,
    /// Cancelled when in-flight runs must stop (shutdown grace exceeded).
    pub runs_cancel: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for their close frames.
    pub connections: TaskTracker,
    /// Cancelled when connections must close with 1001.
    pub connections_close: CancellationToken,
    draining: AtomicBool,
    /// The deliberate breakage in force (test only), and what it remembers.
    pub sabotage: Option<crate::sabotage::Sabotage>,
    pub sabotage_state: crate::sabotage::SabotageState,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds an embedded-mode state: in-process store and bus, seeded from the fixtures.
    pub async fn embedded(config: Config) -> Result<Self, StartupError> {
        let services = Services::embedded(&config);
        Self::with_services(config, services).await
    }

    /// Selects the services (README, "Services"; embedded only when `allow_embedded`) and builds the
    /// state over them.
    pub async fn start(config: Config, allow_embedded: bool) -> Result<Self, StartupError> {
        let services = Services::select(&config, allow_embedded).await?;
        Self::with_services(config, services).await
    }

    /// Builds a state over the given services; seeds the fixture users into the store in the
    /// embedded and containers modes, and on external services with `--seed-fixtures`.
    pub async fn with_services(config: Config, services: Services) -> Result<Self, StartupError> {
        if let Some(mode) = config.sabotage
            && !config.allow_sabotage
        {
            return Err(StartupError::SabotageRefused(mode));
        }
        if let Some(mode) = config.sabotage {
            tracing::warn!(
                ?mode,
                "SABOTAGE is on: this backend breaks the golden path on purpose"
            );
        }
        let fixtures = Fixtures::load(&config.fixtures_dir)?;
        let sabotage_state =
            crate::sabotage::SabotageState::new(fixtures.users.first().map(|(u, _)| u.id));
        let mut metrics = Metrics::default();
        let store: Arc<dyn Store> = Arc::new(TimedStore::new(
            services.store.clone(),
            metrics.store_operations.clone(),
        ));
        let bus: Arc<dyn EventBus> = Arc::new(TimedBus::new(
            services.bus.clone(),
            metrics.bus_operations.clone(),
        ));
        metrics.watch_services(store.clone(), bus.clone());
        let mode = services.mode;
        let passwords = PasswordHashing::new(
            config.argon2_m_cost,
            config.argon2_t_cost,
            config.argon2_p_cost,
            HashGate::new(config.login_concurrency, config.login_queue),
        )
        .map_err(|e| StartupError::Argon2(e.to_string()))?;
        let secret = match &config.jwt_secret {
            Some(secret) if secret.len() < MIN_JWT_SECRET_BYTES => {
                return Err(StartupError::WeakJwtSecret(secret.len()));
            }
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "APEX_JWT_SECRET is not set: using a random secret for this process; tokens \
                     will not survive a restart or work on other instances"
                );
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret).expect("the OS provides randomness");
                secret
            }
        };
        let tokens = TokenKeys::new(&secret, &config.jwt_issuer, &config.jwt_audience);

        if mode != ServiceMode::External || config.seed_fixtures {
            seed_users(&*store, &passwords, fixtures.users).await?;
        } else {
            tracing::info!(
                "fixture users not seeded on the external store (--seed-fixtures to seed them)"
            );
        }
        let dummy_hash = passwords.hash("not-a-real-password".into()).await;
        let server_id = config
            .server_id
            .clone()
            .unwrap_or_else(|| format!("apex-{}", &Uuid::new_v4().simple().to_string()[..8]));
        Ok(Self(Arc::new(Inner {
            server_id,
            mode,
            _services: services,
            store,
            bus,
            tokens,
            passwords,
            dummy_hash,
            login_ip: RateLimiter::new(
                config.login_ip_per_sec,
                config.login_ip_burst,
                RATE_LIMIT_KEYS,
            ),
            login_failures: RateLimiter::new(
                config.login_account_failures_per_min / 60.0,
                config.login_account_failure_burst,
                RATE_LIMIT_KEYS,
            ),
            demo_users: DemoUsers::new(
                config.demo_max_users,
                std::time::Duration::from_secs(config.demo_ttl_secs),
            ),
            pricing: Arc::new(fixtures.pricing),
            metrics,
            run_slots: RunSlots::default(),
            runs: TaskTracker::new(),
            runs_cancel: CancellationToken::new(),
            connections: TaskTracker::new(),
            connections_close: CancellationToken::new(),
            draining: AtomicBool::new(false),
            sabotage: config.sabotage,
            sabotage_state,
            config,
        })))
    }

    /// Takes a run slot for the user, or `None` when they already have the maximum in flight.
    pub fn try_run_slot(&self, user_id: Uuid) -> Option<RunSlot> {
        let mut active = self
            .run_slots
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = active.entry(user_id).or_default();
        if *n >= self.config.max_runs_per_user {
            return None;
        }
        *n += 1;
        Some(RunSlot {
            state: self.clone(),
            user_id,
        })
    }

    /// True once shutdown began: no new runs are accepted.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// Writes the fixture users (password hashed) and their usage logs into the store.
async fn seed_users(
    store: &dyn Store,
    passwords: &PasswordHashing,
    users: Vec<(crate::fixtures::SeedUser, Vec<crate::agents::UsageRecord>)>,
) -> Result<(), StoreError> {
    let hashes = futures_util::future::join_all(
        users
            .iter()
            .map(|(user, _)| passwords.hash(user.password.clone())),
    )
    .await;
    for ((user, records), password_hash) in users.into_iter().zip(hashes) {
        store
            .upsert_user(UserRecord {
                id: user.id,
                email: user.email,
                name: user.name,
                password_hash,
                is_demo: false,
            })
            .await?;
        store.set_usage(user.id, records).await?;
    }
    Ok(())
}
