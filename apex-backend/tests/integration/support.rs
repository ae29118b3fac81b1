//! A test server and a small WebSocket client that reads frames as JSON values, the way any
//! client of the documented protocol would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use apex_backend::services::Scratch;
use apex_backend::{AppState, Config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const PASSWORD: &str = "correct-horse";
pub const ALICE: &str = "alice@apex.test";
pub const BOB: &str = "bob@apex.test";
pub const CAROL: &str = "carol@apex.test";
pub const DAVE: &str = "dave@apex.test";

/// The five critical events plus the three steps, in the order one run emits them.
pub const RUN_EVENT_TYPES: [&str; 11] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

/// How long a test waits for any single frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// An HTTP client. In a workspace build reqwest carries the harness's rustls feature without
/// a built-in crypto provider, so one is installed first (ring; harmless when repeated).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A backend serving on a free loopback port; dropped or [`TestServer::stop`]ped, it shuts down.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    server: apex_backend::InProcess,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests();
        config.fixtures_dir = fixtures_dir();
        configure(&mut config);
        let state = AppState::embedded(config).await.expect("state builds");
        Self::serve(state).await
    }

    /// A backend on the real Postgres and Redis of `services`, in its own schema and prefix.
    pub async fn start_on(services: &Isolated, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests();
        config.fixtures_dir = fixtures_dir();
        services.configure(&mut config);
        // The tests log the fixture users in; `configure` may turn this off.
        config.seed_fixtures = true;
        configure(&mut config);
        let state = AppState::start(config, false)
            .await
            .expect("state builds on services");
        Self::serve(state).await
    }

    pub async fn serve(state: AppState) -> Self {
        let server = apex_backend::InProcess::serve(state)
            .await
            .expect("a loopback port");
        Self {
            addr: server.addr,
            state: server.state.clone(),
            server,
            http: http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Signals shutdown and waits until the server has drained.
    pub async fn stop(self) {
        self.server.stop().await.unwrap();
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The OpenMetrics text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// `/metrics` once `series` (as written, labels included) reaches `at_least`, within
    /// [`FRAME_TIMEOUT`]: counters a connection updates after the client moved on.
    pub async fn metrics_once(&self, series: &str, at_least: f64) -> String {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let text = self.metrics_text().await;
            let value = parse_exposition(&text).get(series).copied();
            if value >= Some(at_least) || tokio::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn login_response(&self, email: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/auth/login",
                json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, 200, "login of {email}: {body}");
        body
    }

    pub async fn login(&self, email: &str) -> String {
        self.login_response(email).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn ticket(&self, token: &str) -> String {
        let response = self
            .http
            .post(self.url("/api/websocket/ticket"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["ticket"].as_str().unwrap().to_owned()
    }

    /// Logs in and connects with a bearer header.
    pub async fn client(&self, email: &str) -> WsClient {
        let token = self.login(email).await;
        WsClient::connect(self, Transport::Header(token))
            .await
            .unwrap()
    }
}

/// How a client presents its credentials to `/ws`.
#[derive(Debug, Clone)]
pub enum Transport {
    Header(String),
    Subprotocol(String),
    /// Only `X-Original-Authorization`, as after a load balancer stripped `Authorization`.
    LbPreserved(String),
    Ticket(String),
    None,
}

/// A WebSocket client that sees frames as JSON values.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server echoed, if any.
    pub protocol: Option<String>,
    /// The `connection_established` frame.
    pub established: Value,
}

impl WsClient {
    pub async fn connect(
        server: &TestServer,
        transport: Transport,
    ) -> Result<Self, tungstenite::Error> {
        let mut url = server.ws_url();
        if let Transport::Ticket(ticket) = &transport {
            url = format!("{url}?ticket={ticket}");
        }
        Self::connect_url(&url, transport).await
    }

    pub async fn connect_url(url: &str, transport: Transport) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        match &transport {
            Transport::Header(token) => {
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
            }
            Transport::Subprotocol(token) => {
                headers.insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(&format!("jwt-auth, jwt.{token}")).unwrap(),
                );
            }
            Transport::LbPreserved(token) => {
                headers.insert(
                    "x-original-authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
            }
            Transport::Ticket(_) | Transport::None => {}
        }
        let (stream, response) = tokio_tungstenite::connect_async(request).await?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut client = Self {
            stream,
            protocol,
            established: Value::Null,
        };
        client.established = client.next().await.expect("connection_established arrives");
        assert_eq!(
            client.established["type"], "connection_established",
            "{}",
            client.established
        );
        Ok(client)
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn message(&mut self, content: &str) {
        self.send(json!({ "type": "user_message", "payload": { "content": content } }))
            .await;
    }

    /// The next JSON frame, or `None` when the connection closed. Panics after FRAME_TIMEOUT.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(FRAME_TIMEOUT)
            .await
            .expect("a frame arrives in time")
    }

    /// The next JSON frame within `wait`: `Err(())` on timeout, `Ok(None)` on close.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        loop {
            let message = tokio::time::timeout(wait, self.stream.next())
                .await
                .map_err(|_| ())?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(Some(serde_json::from_str(&text).expect("frames are JSON")));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(FRAME_TIMEOUT, self.stream.next())
                .await
                .expect("close arrives")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f: CloseFrame| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return None,
            }
        }
    }

    /// Reads stream events (frames with a `seq`) until `agent_completed`, acknowledging each
    /// when `ack` is set. Other frames are returned separately.
    pub async fn run_events(&mut self, ack: bool) -> (Vec<Value>, Vec<Value>) {
        let mut events = Vec::new();
        let mut others = Vec::new();
        loop {
            let frame = self
                .next()
                .await
                .expect("connection stays open during a run");
            if frame.get("seq").is_some() {
                if ack {
                    self.send(json!({ "type": "ack", "seq": frame["seq"] }))
                        .await;
                }
                let done = frame["type"] == "agent_completed" || frame["type"] == "agent_error";
                events.push(frame);
                if done {
                    return (events, others);
                }
            } else {
                others.push(frame);
            }
        }
    }

    /// Sends a message and returns the run's events, acknowledged.
    pub async fn ask(&mut self, content: &str) -> Vec<Value> {
        self.message(content).await;
        self.run_events(true).await.0
    }
}

pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Asserts a complete, well-formed run: the 11 events in order, consecutive seqs, one run id.
pub fn assert_complete_run(events: &[Value]) {
    assert_eq!(types(events), RUN_EVENT_TYPES, "{events:#?}");
    let seqs = seqs(events);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs not consecutive: {seqs:?}"
    );
    let run_id = &events[0]["run_id"];
    assert!(
        events.iter().all(|e| &e["run_id"] == run_id),
        "more than one run_id"
    );
    assert!(
        events.iter().all(|e| e.get("redelivery").is_none()),
        "first sends are not redeliveries"
    );
    for (event, agent) in events[1..10].iter().zip([
        "data_helper",
        "data_helper",
        "data_helper",
        "optimizer",
        "optimizer",
        "optimizer",
        "report_generator",
        "report_generator",
        "report_generator",
    ]) {
        assert_eq!(event["agent_name"], agent, "{event}");
    }
    let tools: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "tool_completed")
        .map(|e| e["payload"]["tool_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["fetch_usage_data", "analyze_costs", "generate_report"]
    );
}

/// The user's truth: `fixtures/expected/<stem of the user's usage file>.yaml`.
pub fn expected(email: &str) -> Value {
    let read = |path: &str| std::fs::read_to_string(fixtures_dir().join(path)).unwrap();
    let users: Value = serde_saphyr::from_str(&read("users.yaml")).unwrap();
    let user = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap_or_else(|| panic!("{email} is not in fixtures/users.yaml"));
    let usage = std::path::Path::new(user["usage"].as_str().unwrap());
    let stem = usage.file_stem().unwrap().to_str().unwrap();
    serde_saphyr::from_str(&read(&format!("expected/{stem}.yaml"))).unwrap()
}

/// Asserts that a run's `payload.result` equals the fixture truth (USD within 0.0001).
pub fn assert_result_matches_truth(email: &str, result: &Value) {
    let truth = expected(email);
    let close = |a: &Value, b: &Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4, "{email} {what}: got {a}, truth {b}");
    };
    assert_eq!(
        result["total_calls"], truth["total_calls"],
        "{email} total_calls"
    );
    assert_eq!(
        result["window_days"], truth["window_days"],
        "{email} window_days"
    );
    close(
        &result["total_monthly_cost_usd"],
        &truth["total_monthly_cost_usd"],
        "monthly cost",
    );
    close(
        &result["projected_monthly_savings_usd"],
        &truth["projected_monthly_savings_usd"],
        "savings",
    );
    let got = result["recommendations"].as_array().unwrap();
    let want = truth["recommendations"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{email} recommendations: {got:#?}");
    for (g, w) in got.iter().zip(want) {
        for key in [
            "kind",
            "from_model",
            "to_model",
            "affected_calls",
            "distinct_prompts",
        ] {
            if w.get(key).is_some() {
                assert_eq!(g[key], w[key], "{email} recommendation {key}");
            }
        }
        close(
            &g["monthly_savings_usd"],
            &w["monthly_savings_usd"],
            "recommendation savings",
        );
        for dimension in ["cost", "quality", "latency", "throughput"] {
            assert!(
                g["effect"][dimension].is_string(),
                "{email}: effect.{dimension} missing"
            );
        }
    }
}

/// Postgres and Redis URLs from the environment, as CI sets them.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub database: String,
    pub redis: String,
}

/// The machine's services, or `None` after saying loudly that the test is skipped
/// (`APEX_REQUIRE_SERVICES=1` turns the skip into a failure). Built with the `containers`
/// feature and without the URLs, the services are a Postgres and a Redis container started
/// by testcontainers, one pair for the whole test binary.
pub fn service_urls(test: &str) -> Option<ServiceUrls> {
    let missing = match (
        std::env::var("APEX_DATABASE_URL"),
        std::env::var("APEX_REDIS_URL"),
    ) {
        (Ok(database), Ok(redis)) => return Some(ServiceUrls { database, redis }),
        _ => "APEX_DATABASE_URL / APEX_REDIS_URL are not set".to_owned(),
    };
    #[cfg(feature = "containers")]
    let missing = match apex_backend::services::containers::shared() {
        Ok((database, redis)) => return Some(ServiceUrls { database, redis }),
        Err(e) => format!("{missing} and no containers: {e}"),
    };
    assert!(
        std::env::var("APEX_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{test}: APEX_REQUIRE_SERVICES=1 but {missing}"
    );
    // Written past the test harness's output capture, so it shows even for a pass.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: needs Postgres and Redis ({missing}); set APEX_DATABASE_URL \
         and APEX_REDIS_URL, or build with --features containers where Docker runs (see \
         README) ***"
    );
    None
}

/// Skips the test (loudly) when no services are configured.
#[macro_export]
macro_rules! services_or_skip {
    ($name:expr) => {
        match $crate::support::service_urls($name) {
            Some(urls) => $crate::support::Isolated::new(urls),
            None => return,
        }
    };
}

/// One test's private corner of the services: its own Postgres schema and Redis key prefix,
/// removed when the last clone is dropped (also when the test fails).
#[derive(Debug, Clone)]
pub struct Isolated {
    pub urls: ServiceUrls,
    pub schema: String,
    pub prefix: String,
    _cleanup: std::sync::Arc<Scratch>,
}

impl Isolated {
    pub fn new(urls: ServiceUrls) -> Self {
        let scratch = Scratch::new("apex_test", &urls.database, &urls.redis);
        Self {
            schema: scratch.namespace.schema.clone(),
            prefix: scratch.namespace.prefix.clone(),
            urls,
            _cleanup: std::sync::Arc::new(scratch),
        }
    }

    pub fn configure(&self, config: &mut Config) {
        config.database_url = Some(self.urls.database.clone());
        config.redis_url = Some(self.urls.redis.clone());
        config.database_schema = self.schema.clone();
        config.redis_prefix = self.prefix.clone();
    }

    /// A connection pool on this test's schema.
    pub async fn pool(&self) -> sqlx::PgPool {
        let options: sqlx::postgres::PgConnectOptions = self.urls.database.parse().unwrap();
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.options([("search_path", self.schema.as_str())]))
            .await
            .unwrap()
    }

    /// Drops the schema and deletes the keys now (dropping the last clone does it too).
    pub async fn cleanup(&self) {
        self._cleanup.remove().await;
    }
}

/// An orphan sweep every second (`run_stale_secs` 2) and runs of over two seconds (think
/// time 200 ms), so that each run spans at least one sweep.
pub fn frequent_sweeps(config: &mut Config) {
    config.think_time_ms = 200;
    config.run_stale_secs = 2;
}

/// Two runs back to back on a server configured with [`frequent_sweeps`]: both complete,
/// and the store records them completed, not interrupted.
pub async fn assert_live_runs_survive_sweeps(server: &TestServer) {
    let mut client = server.client(ALICE).await;
    for question in [
        "where am I wasting money?",
        "and what would you change first?",
    ] {
        let events = client.ask(question).await;
        assert_complete_run(&events);
        let run_id: uuid::Uuid = events[0]["run_id"].as_str().unwrap().parse().unwrap();
        let run = server.state.store.run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, apex_backend::store::RunStatus::Completed);
    }
}

/// The samples of an OpenMetrics text exposition, by series (`name{labels}`), after checking
/// the syntax Prometheus relies on: metadata lines are `# HELP`, `# TYPE` or `# UNIT`, every
/// other line is `name{label="value",…} value`, and the text ends with `# EOF`.
pub fn parse_exposition(text: &str) -> std::collections::HashMap<String, f64> {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("no `# EOF` at the end of\n{text}"));
    let mut samples = std::collections::HashMap::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let kind = meta.split(' ').next().unwrap_or_default();
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad line `{line}`"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in `{line}`"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in `{line}`"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}')),
            None => (series, Some("")),
        };
        let name_ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let labels_ok = labels.is_some_and(|labels| {
            labels.is_empty()
                || labels.split(',').all(|pair| {
                    pair.split_once('=').is_some_and(|(key, value)| {
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && value.len() >= 2
                            && value.starts_with('"')
                            && value.ends_with('"')
                    })
                })
        });
        assert!(name_ok && labels_ok, "bad sample `{line}`");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "`{series}` twice"
        );
    }
    samples
}
