//! `idle-scale`: holds N authenticated, idle WebSocket connections on a child apex-backend
//! and reports its resident memory at start, once every user exists, with the connections
//! open, and after they close.
//!
//! Each connection is its own user (a demo user, `POST /api/auth/demo`; `--users K` shares K
//! users among them instead), connects with a bearer header, reads `connection_established`
//! and then stays silent, as an idle chat tab does. The clients run in this process on
//! loopback, so it needs N descriptors and the backend N more (`ulimit -n`). The backend is
//! the release `apex-backend` next to this binary, embedded mode, started as a child so its
//! `VmRSS` is its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_benches::child::{ChildBackend, rss_mib};
use clap::Parser;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Debug, Parser)]
#[command(
    name = "idle-scale",
    about = "Idle authenticated WebSocket connections on a child apex-backend: resident memory"
)]
struct Args {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Distinct users among them (0: one per connection).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Connections (and demo logins) being opened at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Times the connections are opened and closed again (a second round tells memory the
    /// allocator kept for reuse from memory still held).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Pause before each memory reading, in seconds.
    #[arg(long, default_value_t = 3)]
    settle_seconds: u64,
    /// The apex-backend binary to start (default: next to this binary).
    #[arg(long)]
    backend_bin: Option<std::path::PathBuf>,
    /// An option for the backend (repeatable), e.g. `--backend-arg=--retain-events=100`.
    #[arg(long, allow_hyphen_values = true)]
    backend_arg: Vec<String>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn start_backend(args: &Args, users: usize) -> ChildBackend {
    let max_users = (users + 100).to_string();
    ChildBackend::start(args.backend_bin.clone(), |command| {
        command
            .args(["--demo-mode", "--demo-max-users", &max_users])
            .args([
                "--login-ip-per-sec",
                "1000000",
                "--login-ip-burst",
                "1000000",
            ])
            .args(&args.backend_arg)
            .env_remove("APEX_DATABASE_URL")
            .env_remove("APEX_REDIS_URL")
            .env_remove("APEX_REQUIRE_SERVICES")
            .env(
                "APEX_JWT_SECRET",
                "idle-scale-bench-secret-0123456789abcdef",
            )
            .env("RUST_LOG", "error");
    })
}

/// An access token for a fresh demo user.
async fn demo_token(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let response = http
        .post(format!("{base}/api/auth/demo"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("demo answered {status}: {body}"))
}

/// Opens one authenticated connection and reads its `connection_established`.
async fn connect(ws_url: &str, token: &str) -> Result<Socket, String> {
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
        Ok(Some(Ok(_established))) => Ok(socket),
        other => Err(format!("no connection_established: {other:?}")),
    }
}

/// The backend's `apex_ws_connections_open`, if it answers.
async fn connections_open(http: &reqwest::Client, base: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("apex_ws_connections_open "))
        .and_then(|v| v.trim().parse().ok())
}

fn reading(label: &str, mib: f64, since: f64, per: Option<(usize, &str)>) {
    let per = per.map_or(String::new(), |(n, what)| {
        format!(
            "  ({:+.1} MiB; {:.1} KiB per {what})",
            mib - since,
            (mib - since) * 1024.0 / n.max(1) as f64
        )
    });
    println!("  {label:<32} {mib:>8.1} MiB{per}");
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    apex_harness::client::install_crypto_provider();
    let users = if args.users == 0 {
        args.connections
    } else {
        args.users
    };
    let backend = start_backend(&args, users);
    let (pid, base) = (backend.pid(), Arc::<str>::from(backend.base.as_str()));
    let ws_url = format!("{}/ws", base.replacen("http", "ws", 1));
    let http = reqwest::Client::new();
    let settle = Duration::from_secs(args.settle_seconds);
    tokio::time::sleep(settle).await;
    let rss_start = rss_mib(pid);

    let started = Instant::now();
    let tokens: Vec<Result<String, String>> = futures_util::stream::iter(0..users)
        .map(|_| demo_token(&http, &base))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let tokens: Vec<String> = tokens.into_iter().filter_map(Result::ok).collect();
    assert!(!tokens.is_empty(), "no demo user could be created");
    let users_took = started.elapsed();
    tokio::time::sleep(settle).await;
    let rss_users = rss_mib(pid);

    let mut rounds = Vec::new();
    for _ in 0..args.rounds.max(1) {
        rounds.push(round(&args, &http, &base, &ws_url, &tokens, pid).await);
    }
    let (held, failures) = (rounds[0].held, rounds[0].failed);
    println!(
        "idle-scale: {held} idle connections of {} users held ({} failed; backend reported {} open), \
         users in {:.1} s, connections in {:.1} s",
        tokens.len(),
        failures,
        rounds[0]
            .open_reported
            .map_or("?".into(), |n| format!("{n}")),
        users_took.as_secs_f64(),
        rounds[0].connect_took.as_secs_f64()
    );
    println!(
        "backend resident memory (VmRSS, {}s after each step):",
        args.settle_seconds
    );
    reading("at start", rss_start, rss_start, None);
    reading(
        "with the users",
        rss_users,
        rss_start,
        Some((tokens.len(), "user")),
    );
    for (i, r) in rounds.iter().enumerate() {
        let n = if rounds.len() > 1 {
            format!(" (round {})", i + 1)
        } else {
            String::new()
        };
        let open = format!("with the connections{n}");
        reading(&open, r.rss_open, rss_users, Some((r.held, "connection")));
        reading(
            &format!("after they closed{n}"),
            r.rss_closed,
            rss_start,
            None,
        );
    }
}

/// What one round of opening and closing the connections measured.
struct Round {
    held: usize,
    failed: usize,
    open_reported: Option<f64>,
    connect_took: Duration,
    rss_open: f64,
    rss_closed: f64,
}

/// Opens the connections, reads the memory, closes them, waits until the backend has seen
/// them all close, and reads it again.
async fn round(
    args: &Args,
    http: &reqwest::Client,
    base: &str,
    ws_url: &str,
    tokens: &[String],
    pid: u32,
) -> Round {
    let settle = Duration::from_secs(args.settle_seconds);
    let started = Instant::now();
    let opened: Vec<Result<Socket, String>> = futures_util::stream::iter(0..args.connections)
        .map(|i| connect(ws_url, &tokens[i % tokens.len()]))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let connect_took = started.elapsed();
    let (sockets, failures): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    if let Some(Err(first)) = failures.first() {
        eprintln!(
            "idle-scale: {} connections failed, first: {first}",
            failures.len()
        );
    }
    tokio::time::sleep(settle).await;
    let rss_open = rss_mib(pid);
    let open_reported = connections_open(http, base).await;
    let held = sockets.len();
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(30);
    while connections_open(http, base).await.unwrap_or(0.0) > 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;
    Round {
        held,
        failed: failures.len(),
        open_reported,
        connect_took,
        rss_open,
        rss_closed: rss_mib(pid),
    }
}
