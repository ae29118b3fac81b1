//! `apex-harness monitor` as a separate process against the bundled backend: its `/metrics`
//! and status agree with what the journeys did; a real Prometheus (Debian's `prometheus`)
//! with the shipped alert rules stays quiet against a healthy backend and fires against a
//! broken one; a real browser (headless Chromium through chromedriver) shows the dashboard's
//! numbers as `/metrics` has them and turns a scenario red, without a reload, when its
//! backend goes away mid-run.
//!
//! Prometheus and Chromium are external programs: without them these tests say so loudly and
//! pass, unless `APEX_REQUIRE_TOOLS` is set (as `.ci/run` does, after `ci/monitoring.sh`
//! installed them), when a missing program fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{start_backend, start_backend_with};

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `apex-harness monitor`.
struct Monitor {
    _process: Process,
    /// `127.0.0.1:PORT`
    addr: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts the monitor binary on the golden path against `target`, a round every `every`.
fn start_monitor(target: &str, every: &str) -> Monitor {
    let mut child = Command::new(env!("CARGO_BIN_EXE_apex-harness"))
        .current_dir(repo())
        .args(["monitor", "scenarios/golden_path.yaml", "--target", target])
        .args(["--every", every, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the harness binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").expect("readable");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    // Keep reading, so a full pipe never stalls the monitor.
    std::thread::spawn(move || for _ in lines {});
    Monitor {
        _process: Process(child),
        addr,
    }
}

fn url(target: &apex_harness::client::Target) -> String {
    format!("http://{}", target.authority)
}

fn http() -> reqwest::Client {
    apex_harness::client::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_text(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

async fn status(monitor: &Monitor) -> Value {
    let text = get_text(&format!("http://{}/api/status", monitor.addr)).await;
    serde_json::from_str(&text).unwrap()
}

/// Waits until `/api/status` has at least `rounds` rounds (bounded).
async fn wait_rounds(monitor: &Monitor, rounds: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status(monitor).await;
        if status["rounds"].as_u64() >= Some(rounds) {
            return status;
        }
        assert!(Instant::now() < deadline, "no round {rounds}: {status:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the sample `name{labels}` in a Prometheus exposition, labels in any order.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|line| {
            let Some((series, _)) = line.rsplit_once(' ') else {
                return false;
            };
            let bare = series.split('{').next() == Some(name);
            bare && labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
}

#[tokio::test]
async fn metrics_and_status_count_what_the_journeys_did() {
    let (backend, _server) = start_backend().await;
    let monitor = start_monitor(&url(&backend), "300ms");
    wait_rounds(&monitor, 3).await;
    let metrics = get_text(&format!("http://{}/metrics", monitor.addr)).await;
    let status = status(&monitor).await;
    let rounds = sample(&metrics, "apex_monitor_rounds_total", &[]).unwrap();
    assert!(rounds >= 3.0, "{metrics}");
    let scenario = &status["scenarios"][0];
    assert_eq!(scenario["name"], "Golden path", "{status:#}");
    let passed = sample(
        &metrics,
        "apex_monitor_journeys_total",
        &[("scenario", "Golden path"), ("result", "passed")],
    )
    .unwrap();
    // The status was read after the metrics: it may have one more round, never fewer.
    assert!(passed >= rounds && scenario["passed"].as_f64() >= Some(passed));
    assert_eq!(scenario["status"], "passing", "{status:#}");
    for event in ["agent_started", "tool_completed", "agent_completed"] {
        let labels = [("scenario", "Golden path"), ("event", event)];
        let expected = sample(&metrics, "apex_monitor_events_expected_total", &labels).unwrap();
        let delivered = sample(&metrics, "apex_monitor_events_delivered_total", &labels).unwrap();
        assert!(
            expected >= rounds && delivered == expected,
            "{event}: {metrics}"
        );
    }
    let count = sample(
        &metrics,
        "apex_monitor_journey_duration_seconds_count",
        &[("scenario", "Golden path")],
    );
    assert_eq!(count, Some(passed), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
}

#[tokio::test]
async fn a_dropped_event_shows_as_missing_in_metrics_and_status() {
    let (backend, _server) = start_backend_with(|c| {
        c.sabotage = Some(apex_backend::sabotage::Sabotage::DropEvent);
        c.allow_sabotage = true;
    })
    .await;
    let monitor = start_monitor(&url(&backend), "300ms");
    let status = wait_rounds(&monitor, 2).await;
    let metrics = get_text(&format!("http://{}/metrics", monitor.addr)).await;
    let scenario = &status["scenarios"][0];
    assert_eq!(scenario["status"], "failing", "{status:#}");
    assert_eq!(scenario["passed"], 0, "{status:#}");
    let failure = &status["failures"][0];
    let classes: Vec<&str> = (failure["findings"].as_array().unwrap().iter())
        .filter_map(|f| f["class"].as_str())
        .collect();
    assert!(
        classes.iter().any(|c| c.starts_with("missing_event")),
        "{failure:#}"
    );
    assert!(!failure["last_frames"].as_array().unwrap().is_empty());
    let labels = [("scenario", "Golden path"), ("class", "missing_event")];
    assert!(
        sample(&metrics, "apex_monitor_journey_failures_total", &labels) >= Some(2.0),
        "{metrics}"
    );
    let labels = [("scenario", "Golden path"), ("event", "tool_completed")];
    let expected = sample(&metrics, "apex_monitor_events_expected_total", &labels).unwrap();
    let delivered = sample(&metrics, "apex_monitor_events_delivered_total", &labels).unwrap();
    assert!(delivered < expected, "{metrics}");
    let up = sample(
        &metrics,
        "apex_monitor_scenario_up",
        &[("scenario", "Golden path")],
    );
    assert_eq!(up, Some(0.0), "{metrics}");
}

/// An external program on the PATH; `None` (after a loud note) when it is missing, unless
/// `APEX_REQUIRE_TOOLS` is set.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let message = format!(
            "`{name}` is not installed (Debian package `{package}`; ci/monitoring.sh installs it)"
        );
        assert!(
            std::env::var_os("APEX_REQUIRE_TOOLS").is_none(),
            "{message}"
        );
        eprintln!("\n!!! SKIPPED: {message}\n");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus scraping `monitor` and `backend` every second and evaluating the shipped
/// rules every second. Only the rules' `for:` durations are shortened (to 2 s), so a test
/// sees them fire in seconds; every expression and threshold is as shipped.
struct Prometheus {
    _process: Process,
    _dir: TempDir,
    url: String,
}

fn start_prometheus(binary: &Path, monitor: &Monitor, backend: &str) -> Prometheus {
    let dir = TempDir::new("prometheus");
    let rules = std::fs::read_to_string(repo().join("ci/monitoring/alerts.yml")).unwrap();
    let rules = regex::Regex::new(r"(?m)^(\s+)for: \S+$")
        .unwrap()
        .replace_all(&rules, "${1}for: 2s");
    std::fs::write(dir.0.join("alerts.yml"), rules.as_ref()).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [alerts.yml]\n\
         scrape_configs:\n\
         \x20 - job_name: apex-monitor\n    static_configs: [{{targets: ['{}']}}]\n\
         \x20 - job_name: apex-backend\n    static_configs: [{{targets: ['{backend}']}}]\n",
        monitor.addr
    );
    std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .current_dir(&dir.0)
        .arg("--config.file=prometheus.yml")
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        _process: Process(child),
        _dir: dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

impl Prometheus {
    /// Alerts by name and state (`pending`, `firing`); empty until Prometheus answers.
    async fn alerts(&self) -> Vec<(String, String, Value)> {
        let Ok(answer) = http()
            .get(format!("{}/api/v1/alerts", self.url))
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        let alerts = body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        alerts
            .into_iter()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_owned();
                let state = a["state"].as_str().unwrap_or("").to_owned();
                (name, state, a["labels"].clone())
            })
            .collect()
    }

    /// Whether Prometheus has scraped both targets at least once.
    async fn scraping(&self) -> bool {
        let Ok(answer) = http()
            .get(format!("{}/api/v1/query?query=up", self.url))
            .send()
            .await
        else {
            return false;
        };
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        let up = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        up.len() == 2 && up.iter().all(|r| r["value"][1] == "1")
    }
}

/// A scratch directory under the target directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let unique = format!("{prefix}-{}-{}", std::process::id(), free_port());
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn prometheus_fires_the_shipped_alerts_against_a_broken_backend_only() {
    let Some(binary) = tool("prometheus", "prometheus") else {
        return;
    };
    let (healthy, _h) = start_backend().await;
    let (broken, _b) = start_backend_with(|c| {
        c.sabotage = Some(apex_backend::sabotage::Sabotage::DropEvent);
        c.allow_sabotage = true;
    })
    .await;
    let started = Instant::now();
    let (quiet_monitor, loud_monitor) = (
        start_monitor(&url(&healthy), "1s"),
        start_monitor(&url(&broken), "1s"),
    );
    let quiet = start_prometheus(&binary, &quiet_monitor, &healthy.authority);
    let loud = start_prometheus(&binary, &loud_monitor, &broken.authority);
    let want = ["EventsMissing", "ChatCompletionLow"];
    let deadline = started + Duration::from_secs(90);
    let fired = loop {
        let alerts = loud.alerts().await;
        let firing = |name: &str| alerts.iter().any(|(n, s, _)| n == name && s == "firing");
        if want.iter().all(|name| firing(name)) {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "not firing after 90 s: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "monitor: {want:?} firing {:.1} s after the monitor started against a backend dropping \
         tool_completed (scrape and evaluation every 1 s, `for:` 2 s)",
        started.elapsed().as_secs_f64()
    );
    let missing = fired
        .iter()
        .find(|(n, s, _)| n == "EventsMissing" && s == "firing")
        .unwrap();
    assert_eq!(missing.2["event"], "tool_completed", "{fired:?}");
    assert_eq!(missing.2["severity"], "page", "{fired:?}");
    // The healthy side has run as long, scraped and evaluated the same rules.
    assert!(
        quiet.scraping().await,
        "the healthy Prometheus scrapes both targets"
    );
    let alerts = quiet.alerts().await;
    assert!(
        alerts.is_empty(),
        "alerts against a healthy backend: {alerts:?}"
    );
}

/// A WebDriver session on headless Chromium, through chromedriver.
struct Browser {
    _driver: Process,
    session: String,
}

impl Browser {
    async fn start(chromedriver: &Path) -> Self {
        let port = free_port();
        let driver = Process(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1800"]
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            match http()
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
            {
                Ok(answer) => break answer.json::<Value>().await.unwrap(),
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"));
        Self {
            _driver: driver,
            session: format!("{base}/session/{id}"),
        }
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let answer = http()
            .post(format!("{}/{path}", self.session))
            .json(&body)
            .send()
            .await
            .unwrap();
        answer.json::<Value>().await.unwrap()["value"].take()
    }

    /// Runs `script` in the page; its return value.
    async fn eval(&self, script: &str) -> Value {
        self.command("execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Saves a screenshot as a PNG under the target directory (a CI artifact).
    async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let answer = http()
            .get(format!("{}/screenshot", self.session))
            .send()
            .await
            .unwrap();
        let body: Value = answer.json().await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(body["value"].as_str().unwrap())
            .unwrap();
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, so chromedriver closes its Chromium before it is killed.
        let session = self.session.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async { http().delete(session).send().await })
        })
        .join();
    }
}

/// What the page shows for the scenario: status, passed, failed.
const READ_CARD: &str = "const c = document.querySelector('[data-scenario]'); \
    if (!c) return null; \
    const f = n => c.querySelector(`[data-field=\"${n}\"]`).textContent; \
    return {name: c.dataset.scenario, status: c.dataset.status, \
            passed: Number(f('passed')), failed: Number(f('failed')), \
            polls: Number(document.body.dataset.polls || 0)};";

/// Reads `/metrics`, the page, and `/metrics` again until the two reads of the metrics agree
/// and the page shows them (the page polls every 2 s, a round may land in between, so the
/// rounds must be further apart than that).
async fn page_matching_metrics(browser: &Browser, monitor: &Monitor) -> (Value, f64, f64) {
    let url = format!("http://{}/metrics", monitor.addr);
    let journeys = |text: &str, result: &str| {
        let labels = [("scenario", "Golden path"), ("result", result)];
        sample(text, "apex_monitor_journeys_total", &labels).unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = get_text(&url).await;
        let card = browser.eval(READ_CARD).await;
        let after = get_text(&url).await;
        let (passed, failed) = (journeys(&before, "passed"), journeys(&before, "failed"));
        let steady = passed == journeys(&after, "passed") && failed == journeys(&after, "failed");
        let shown = |field: &str| card[field].as_f64();
        if steady && shown("passed") == Some(passed) && shown("failed") == Some(failed) {
            let up = sample(
                &before,
                "apex_monitor_scenario_up",
                &[("scenario", "Golden path")],
            );
            let want = if up == Some(1.0) {
                "passing"
            } else {
                "failing"
            };
            if card["status"] == want {
                return (card, passed, failed);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the page never matched /metrics: {card} vs {before}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_dashboard_shows_what_metrics_say_and_turns_red_without_a_reload() {
    let Some(chromedriver) = tool("chromedriver", "chromium-driver") else {
        return;
    };
    let (backend, server) = start_backend().await;
    // Rounds further apart than the page's 2 s poll: between two rounds the metrics hold
    // still long enough for a poll to land, so the page catches up with them. With rounds
    // every second the poll could lock in phase just before each round and never match.
    let monitor = start_monitor(&url(&backend), "3s");
    wait_rounds(&monitor, 2).await;
    let browser = Browser::start(&chromedriver).await;
    let page = format!("http://{}/", monitor.addr);
    browser.command("url", json!({"url": page})).await;
    let (card, passed, failed) = page_matching_metrics(&browser, &monitor).await;
    assert_eq!(card["name"], "Golden path");
    assert_eq!(card["status"], "passing");
    assert!(passed >= 2.0 && failed == 0.0, "{card}");
    let shot = browser.screenshot("monitor-dashboard-passing.png").await;
    eprintln!("screenshot: {}", shot.display());
    let polls = card["polls"].as_f64().unwrap();

    // The backend goes away mid-run: the next rounds fail, and the open page must show it.
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    let card = loop {
        let card = browser.eval(READ_CARD).await;
        if card["status"] == "failing" {
            break card;
        }
        assert!(Instant::now() < deadline, "never turned red: {card}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        card["polls"].as_f64().unwrap() > polls,
        "updated by polling: {card}"
    );
    let (card, _, failed) = page_matching_metrics(&browser, &monitor).await;
    assert_eq!(card["status"], "failing");
    assert!(failed >= 1.0, "{card}");
    let color = browser
        .eval(
            "return getComputedStyle(document.querySelector('[data-scenario] [data-field=\"status\"]')).backgroundColor",
        )
        .await;
    let rgb: Vec<u32> = color
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert!(
        rgb.len() >= 3 && rgb[0] > 150 && rgb[1] < 100 && rgb[2] < 100,
        "a failing status is red, not {color}"
    );
    let shot = browser.screenshot("monitor-dashboard-failing.png").await;
    eprintln!("screenshot: {}", shot.display());
}
