//! Backend configuration: one clap struct, every field a flag with an environment variable.
//!
//! The fold is defaults → environment → flags (clap does the last two); tests build a
//! [`Config`] with [`Config::for_tests`] and change fields directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Where the workspace's fixtures live when the binary runs from a checkout.
const DEFAULT_FIXTURES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of one `apex-backend` process.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "apex-backend",
    version,
    about = "Reference backend for the Netra Apex golden path (auth, WebSocket events, agents)",
    after_help = "Services, in this order: Postgres and Redis at --database-url and --redis-url; \
with the cargo feature `containers` and a Docker daemon that answers, Postgres and Redis \
containers started by testcontainers from APEX_POSTGRES_IMAGE (default \
apex-services/postgres:15) and APEX_REDIS_IMAGE (default apex-services/redis:7; ci/images.sh \
builds both from Debian's packages; postgres:15-alpine and redis:7-alpine work where a registry \
is reachable); else embedded in-process stores, unless --require-services."
)]
pub struct Config {
    /// Address to listen on. With port 0 a free port is chosen and printed as `listening on ADDR`.
    #[arg(long, env = "APEX_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// HS256 secret for access and refresh tokens. Unset: a random secret per process (tokens
    /// then do not survive a restart and are not accepted by other instances).
    #[arg(long, env = "APEX_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// `iss` claim written into and required from every token.
    #[arg(long, env = "APEX_JWT_ISSUER", default_value = "netra-apex")]
    pub jwt_issuer: String,

    /// `aud` claim written into and required from every token.
    #[arg(long, env = "APEX_JWT_AUDIENCE", default_value = "netra-apex-chat")]
    pub jwt_audience: String,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "APEX_ACCESS_TTL_SECS", default_value_t = 900)]
    pub access_ttl_secs: u64,

    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "APEX_REFRESH_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub refresh_ttl_secs: u64,

    /// Lifetime of single-use WebSocket tickets, in seconds (at most 300).
    #[arg(long, env = "APEX_TICKET_TTL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub ticket_ttl_secs: u64,

    /// Folder holding `users.yaml`, `pricing.yaml` and `usage/*.jsonl`.
    #[arg(long, env = "APEX_FIXTURES_DIR", default_value = DEFAULT_FIXTURES_DIR)]
    pub fixtures_dir: PathBuf,

    /// Argon2id memory cost in KiB (8 is the minimum; use it only for tests).
    #[arg(long, env = "APEX_ARGON2_M_COST", default_value_t = 19_456)]
    pub argon2_m_cost: u32,

    /// Argon2id iterations.
    #[arg(long, env = "APEX_ARGON2_T_COST", default_value_t = 2)]
    pub argon2_t_cost: u32,

    /// Argon2id parallelism.
    #[arg(long, env = "APEX_ARGON2_P_COST", default_value_t = 1)]
    pub argon2_p_cost: u32,

    /// Re-send an unacknowledged event after this many milliseconds.
    #[arg(long, env = "APEX_REDELIVERY_TIMEOUT_MS", default_value_t = 2000)]
    pub redelivery_timeout_ms: u64,

    /// How many times an unacknowledged event is re-sent before the connection gives up on it.
    #[arg(long, env = "APEX_MAX_REDELIVERIES", default_value_t = 3)]
    pub max_redeliveries: u32,

    /// Events retained per user for `resume` (older ones are dropped first).
    #[arg(long, env = "APEX_RETAIN_EVENTS", default_value_t = 1000)]
    pub retain_events: usize,

    /// Concurrent runs allowed per user; one more gets a `TOO_MANY_RUNS` error frame.
    #[arg(long, env = "APEX_MAX_RUNS_PER_USER", default_value_t = 5)]
    pub max_runs_per_user: usize,

    /// Client frames allowed per connection per second (burst of twice as many); beyond it
    /// frames get `RATE_LIMITED` error frames.
    #[arg(long, env = "APEX_RATE_LIMIT_PER_SEC", default_value_t = 20)]
    pub rate_limit_per_sec: u32,

    /// Password hashes (logins) computed at once; 0 means one per available core. Each holds
    /// the argon2 memory cost (`--argon2-m-cost`) while it runs.
    #[arg(long, env = "APEX_LOGIN_CONCURRENCY", default_value_t = 0)]
    pub login_concurrency: usize,

    /// Logins waiting for a hashing slot; one more is answered `503` with `Retry-After`
    /// before any hashing.
    #[arg(long, env = "APEX_LOGIN_QUEUE", default_value_t = 64)]
    pub login_queue: usize,

    /// Login and demo requests allowed per client address per second, in this instance
    /// (burst `--login-ip-burst`); beyond it `429` with `Retry-After`. 0 turns the limit off.
    #[arg(long, env = "APEX_LOGIN_IP_PER_SEC", default_value_t = 20.0)]
    pub login_ip_per_sec: f64,

    /// Login and demo requests a client address may make at once before `--login-ip-per-sec`
    /// applies.
    #[arg(long, env = "APEX_LOGIN_IP_BURST", default_value_t = 200)]
    pub login_ip_burst: u32,

    /// Failed logins allowed per account (email) per minute, in this instance (burst
    /// `--login-account-failure-burst`); beyond it every login of the account, right password
    /// or not, is `429` with `Retry-After` until the allowance refills. 0 turns the limit off.
    #[arg(
        long,
        env = "APEX_LOGIN_ACCOUNT_FAILURES_PER_MIN",
        default_value_t = 6.0
    )]
    pub login_account_failures_per_min: f64,

    /// Failed logins an account may take in a row before `--login-account-failures-per-min`
    /// applies.
    #[arg(long, env = "APEX_LOGIN_ACCOUNT_FAILURE_BURST", default_value_t = 10)]
    pub login_account_failure_burst: u32,

    /// Demo users (`--demo-mode`) live at once per instance; one more is `503` with
    /// `Retry-After` (until the oldest expires).
    #[arg(long, env = "APEX_DEMO_MAX_USERS", default_value_t = 1000)]
    pub demo_max_users: usize,

    /// Lifetime of a demo user and its tokens, in seconds; expired demo users are deleted.
    #[arg(long, env = "APEX_DEMO_TTL_SECS", default_value_t = 3600)]
    pub demo_ttl_secs: u64,

    /// A fresh connection holds live events this long (or until its first frame) so that a
    /// `resume` sent as the first frame replays in order without duplicates.
    #[arg(long, env = "APEX_RESUME_WINDOW_MS", default_value_t = 100)]
    pub resume_window_ms: u64,

    /// Pause between pipeline events, for realistic pacing. 0 (default) means no pause.
    #[arg(long, env = "APEX_THINK_TIME_MS", default_value_t = 0)]
    pub think_time_ms: u64,

    /// On SIGINT/SIGTERM, how long in-flight runs may take to finish before they are marked
    /// interrupted.
    #[arg(long, env = "APEX_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Enables `POST /api/auth/demo`, which issues a token for a fresh demo user each call.
    #[arg(long, env = "DEMO_MODE", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub demo_mode: bool,

    /// Seed the fixture users (`users.yaml`, one shared password) and their usage logs into
    /// the store at start. Always done in the embedded and containers modes (their stores are
    /// this process's own); on an external Postgres only with this flag: for tests, benches
    /// and demos, never on a deployment with real users.
    #[arg(long, env = "APEX_SEED_FIXTURES", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub seed_fixtures: bool,

    /// Postgres URL. With `--redis-url`, selects the external service mode.
    #[arg(long, env = "APEX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis URL. With `--database-url`, selects the external service mode.
    #[arg(long, env = "APEX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Postgres schema holding the tables (created if missing).
    #[arg(long, env = "APEX_DATABASE_SCHEMA", default_value = "apex")]
    pub database_schema: String,

    /// Prefix of every Redis key and channel, so deployments can share a Redis.
    #[arg(long, env = "APEX_REDIS_PREFIX", default_value = "apex:")]
    pub redis_prefix: String,

    /// Upper bound of each Postgres operation, in milliseconds.
    #[arg(long, env = "APEX_DATABASE_TIMEOUT_MS", default_value_t = 1000)]
    pub database_timeout_ms: u64,

    /// Upper bound of each Redis operation, in milliseconds; beyond it the bus degrades to
    /// in-process delivery until Redis answers again.
    #[arg(long, env = "APEX_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// Postgres connections in the pool.
    #[arg(long, env = "APEX_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Skip the migrations at start (the schema is managed elsewhere).
    #[arg(long, env = "APEX_NO_MIGRATE", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub no_migrate: bool,

    /// Refuse to fall back to embedded in-process stores when no services are configured.
    #[arg(long, env = "APEX_REQUIRE_SERVICES", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub require_services: bool,

    /// A running run whose instance has not reported progress for this long is marked
    /// interrupted by any instance.
    #[arg(long, env = "APEX_RUN_STALE_SECS", default_value_t = 30)]
    pub run_stale_secs: u64,

    /// Name of this instance in `connection_established.server_id` and in the runs it owns.
    /// Give each instance a stable name so that after a restart it marks its own unfinished
    /// runs interrupted at once (default: random).
    #[arg(long, env = "APEX_SERVER_ID")]
    pub server_id: Option<String>,

    /// Log format.
    #[arg(long, env = "APEX_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// TEST ONLY: break the golden path on purpose, for the harness's self-test
    /// (docs/failure-modes.md). Refused unless --allow-sabotage is also given.
    #[arg(long, env = "APEX_SABOTAGE", value_enum, hide = true)]
    pub sabotage: Option<crate::sabotage::Sabotage>,

    /// TEST ONLY: permit --sabotage. Never set this on a deployment.
    #[arg(long, env = "APEX_ALLOW_SABOTAGE", hide = true, default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_sabotage: bool,

    /// TEST ONLY: how long `--sabotage delay-event` holds `agent_completed` back.
    #[arg(
        long,
        env = "APEX_SABOTAGE_DELAY_MS",
        default_value_t = 6000,
        hide = true
    )]
    pub sabotage_delay_ms: u64,
}

impl Config {
    /// The defaults with the settings tests want: a free port, the cheapest argon2 parameters
    /// and a fixed secret. Environment variables are not read.
    pub fn for_tests() -> Self {
        let mut config = Self::parse_defaults();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.jwt_secret = Some("apex-test-secret-not-for-production".into());
        config.argon2_m_cost = argon2::Params::MIN_M_COST;
        config.argon2_t_cost = 1;
        config.argon2_p_cost = 1;
        // Tests and the harness's bundled backend log many virtual users in from 127.0.0.1 at
        // once; the limits stay on (the code path is the same) but far above what they send.
        config.login_queue = 1024;
        config.login_ip_per_sec = 10_000.0;
        config.login_ip_burst = 10_000;
        config.login_account_failures_per_min = 60_000.0;
        config.login_account_failure_burst = 1000;
        config
    }

    /// Every field at its documented default, ignoring the environment.
    fn parse_defaults() -> Self {
        let mut command = <Self as clap::CommandFactory>::command();
        // Strip env lookups so a developer's shell does not leak into tests.
        let args: Vec<clap::Arg> = command.get_arguments().cloned().collect();
        for arg in args {
            let id = arg.get_id().clone();
            command = command.mut_arg(id, |a| a.env(None::<&str>));
        }
        let matches = command
            .try_get_matches_from(["apex-backend"])
            .expect("defaults parse");
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).expect("defaults convert")
    }

    pub fn redelivery_timeout(&self) -> Duration {
        Duration::from_millis(self.redelivery_timeout_ms)
    }

    pub fn resume_window(&self) -> Duration {
        Duration::from_millis(self.resume_window_ms)
    }

    pub fn think_time(&self) -> Duration {
        Duration::from_millis(self.think_time_ms)
    }

    pub fn run_stale_after(&self) -> Duration {
        Duration::from_secs(self.run_stale_secs)
    }

    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let config = Config::try_parse_from([
            "apex-backend",
            "--listen",
            "127.0.0.1:0",
            "--max-runs-per-user",
            "2",
            "--demo-mode",
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.max_runs_per_user, 2);
        assert!(config.demo_mode);
    }

    #[test]
    fn ticket_ttl_is_capped_at_five_minutes() {
        let err = Config::try_parse_from(["apex-backend", "--ticket-ttl-secs", "301"]).unwrap_err();
        assert!(err.to_string().contains("301"), "{err}");
    }

    #[test]
    fn test_defaults_ignore_environment_and_use_cheap_hashing() {
        let config = Config::for_tests();
        assert_eq!(config.argon2_m_cost, argon2::Params::MIN_M_COST);
        assert_eq!(config.redelivery_timeout_ms, 2000);
        assert_eq!(config.max_redeliveries, 3);
    }
}
