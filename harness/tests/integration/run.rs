//! `apex-harness run` end to end against the bundled backend: the shipped scenarios pass, a
//! wrong expectation fails with exit 1, a breached threshold with exit 3.

use std::path::PathBuf;

use apex_harness::exit_codes;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> (u8, String, String) {
    let fixtures = workspace().join("fixtures");
    let mut argv = vec!["--fixtures", fixtures.to_str().unwrap()];
    argv.extend_from_slice(args);
    crate::run_cli(&argv)
}

#[test]
fn the_shipped_scenarios_pass_against_the_bundled_backend() {
    let scenarios = workspace().join("scenarios");
    let report =
        std::env::temp_dir().join(format!("apex-harness-report-{}.json", std::process::id()));
    let (code, out, err) = run(&[
        scenarios.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, exit_codes::PASS, "{out}\n{err}");
    assert!(out.contains("PASS  Load smoke"), "{out}");
    // scenarios/netra/ is for the real platform: left out here, in one line.
    assert!(
        err.contains("4 scenarios written for another platform are left out"),
        "{err}"
    );
    assert!(!out.contains("Netra"), "{out}");
    // scenarios/resilience/ is among them; its Redis scenarios run (through fault proxies in
    // front of the bundled backend's services) whenever the services are configured.
    assert!(out.contains("PASS  A bandwidth-starved client"), "{out}");
    if std::env::var("APEX_DATABASE_URL").is_ok() && std::env::var("APEX_REDIS_URL").is_ok() {
        assert!(!out.contains("SKIP"), "{out}");
        assert!(out.contains("PASS  Redis down for 5 s mid-run"), "{out}");
        assert!(
            out.contains("PASS  Redis down while journeys come and go"),
            "{out}"
        );
        assert!(
            out.contains("PASS  Two instances through a Redis outage of one"),
            "{out}"
        );
    }
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    assert_eq!(document["schema_version"], 1);
    assert!(document["totals"]["journeys"].as_u64().unwrap() >= 250);
    assert_eq!(document["totals"]["failed_journeys"], 0);
    let load = document["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Load smoke")
        .unwrap();
    assert!(load["journeys"].as_u64().unwrap() >= 200);
    assert!(
        load["trends"]["journey_duration"]["p99_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn a_wrong_expectation_fails_the_journey_and_a_breach_fails_the_thresholds() {
    let dir = std::env::temp_dir().join(format!("apex-harness-cases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("wrong.yaml");
    std::fs::write(&wrong, r#"
name: Wrong truth
users: [{ email: alice@apex.test, password: correct-horse }]
steps:
  - login: {}
  - connect: {}
  - send: { content: "where does my money go?" }
  - expect: { events: [agent_started, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_completed] }
  - expect_response: { json: { result.total_calls: 7 } }
"#).unwrap();
    let junit = dir.join("report.xml");
    let markdown = dir.join("report.md");
    let (code, out, _) = run(&[
        wrong.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
    ]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("content_mismatch"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testcase name=\"Wrong truth\"") && xml.contains("<failure"),
        "{xml}"
    );
    assert!(xml.contains("result.total_calls"), "{xml}");
    let md = std::fs::read_to_string(&markdown).unwrap();
    assert!(md.contains("| Wrong truth | ❌ fail | 1 | 1 |"), "{md}");
    assert!(md.contains("`content_mismatch`: 1"), "{md}");
    assert!(
        out.contains("last frames received"),
        "the diagnosis shows the frames: {out}"
    );

    let strict = dir.join("strict.yaml");
    std::fs::write(
        &strict,
        r#"
name: Impossible latency
users: [{ email: bob@apex.test, password: correct-horse }]
steps:
  - login: {}
  - connect: {}
  - send: { content: "where does my money go?" }
  - expect:
      events: [agent_started, agent_completed]
      ignore: [agent_thinking, tool_executing, tool_completed]
thresholds:
  journey_duration: ["p(99) < 0.001"]
"#,
    )
    .unwrap();
    let (code, out, _) = run(&[strict.to_str().unwrap()]);
    assert_eq!(code, exit_codes::THRESHOLD_BREACHED, "{out}");

    let (code, _, err) = run(&[
        strict.to_str().unwrap(),
        "--threshold",
        "latency: p(99) < 3",
    ]);
    assert_eq!(code, exit_codes::USAGE, "{err}");
    let (code, _, err) = run(&[
        strict.to_str().unwrap(),
        "--target",
        "ftp://staging.example.test",
    ]);
    assert_eq!(code, exit_codes::USAGE, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_builder_runs_a_scenario_from_rust() {
    let report = apex_harness::builder::Harness::bundled()
        .scenario(workspace().join("scenarios/golden_path.yaml"))
        .unwrap()
        .vus(3)
        .iterations(2)
        .threshold("journey_duration: p(99) < 5000")
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(
        report.exit_code(),
        exit_codes::PASS,
        "{}",
        apex_harness::report::summary(&report, true)
    );
    assert_eq!(report.scenarios[0].journeys, 6);
}

#[test]
fn an_unreachable_target_is_an_infrastructure_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let golden = workspace().join("scenarios/golden_path.yaml");
    let (code, out, _) = run(&[golden.to_str().unwrap(), "--target", &url]);
    assert_eq!(code, exit_codes::INFRASTRUCTURE, "{out}");
}

/// Runs `yaml` (a scenario) against `target` from the library.
async fn run_yaml(
    yaml: &str,
    target: apex_harness::client::Target,
) -> apex_harness::runner::ScenarioReport {
    let file = apex_harness::scenario::parse(std::path::Path::new("inline.yaml"), yaml).unwrap();
    let options = apex_harness::runner::RunOptions::new(target, workspace().join("fixtures"));
    apex_harness::runner::run_scenario(&file, &options).await
}

const CHAT: &str = r#"
steps:
  - login: {}
  - connect: { transport: header }
  - send: { content: "Where am I wasting money on LLM calls?" }
  - expect:
      events: [agent_started, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, tool_completed, agent_completed]
  - disconnect: {}
"#;

fn logins(report: &apex_harness::runner::ScenarioReport) -> u64 {
    report
        .metrics
        .trends
        .get("login_duration")
        .map_or(0, |t| t.count())
}

#[tokio::test]
async fn logging_in_once_per_virtual_user_reuses_the_session() {
    let (target, _guard) = crate::start_backend().await;
    let once = format!(
        "name: once\nusers: [{{ pool: vu }}]\nload: {{ vus: 3, iterations: 4, login: once_per_vu }}\n{CHAT}"
    );
    let report = run_yaml(&once, target.clone()).await;
    assert!(report.passed(), "{:?}", report.failed);
    assert_eq!(report.journeys, 12);
    assert_eq!(logins(&report), 3, "one login per virtual user");
    // Every journey connected on its session, reused or not.
    assert_eq!(report.metrics.rates["ws_connect_success_rate"].total, 12);
    assert!(
        report.verdicts.iter().all(|v| v.passed),
        "{:?}",
        report.verdicts
    );
    // The default logs in on every journey.
    let each =
        format!("name: each\nusers: [{{ pool: vu }}]\nload: {{ vus: 3, iterations: 4 }}\n{CHAT}");
    let report = run_yaml(&each, target).await;
    assert!(report.passed(), "{:?}", report.failed);
    assert_eq!(logins(&report), 12);
}

#[tokio::test]
async fn a_kept_session_is_renewed_before_its_token_expires() {
    // Tokens live 62 s and are renewed a minute before they expire: a session is kept for
    // one or two seconds.
    let (target, _guard) = crate::start_backend_with(|c| c.access_ttl_secs = 62).await;
    let yaml = format!(
        "name: renew\nusers: [{{ pool: vu }}]\nload: {{ vus: 1, iterations: 5, login: once_per_vu }}\n{CHAT}  - wait: 700ms\n"
    );
    let report = run_yaml(&yaml, target).await;
    assert!(report.passed(), "{:?}", report.failed);
    let logins = logins(&report);
    assert!(
        (2..=3).contains(&logins),
        "{logins} logins in 5 journeys over 3.5 s"
    );
}

#[tokio::test]
async fn only_journeys_that_check_content_count_towards_answer_quality() {
    let (target, _guard) = crate::start_backend().await;
    let unchecked = format!(
        "name: unchecked\nusers: [{{ pool: vu }}]\nload: {{ vus: 2, iterations: 2 }}\n{CHAT}"
    );
    let report = run_yaml(&unchecked, target.clone()).await;
    assert!(report.passed(), "{:?}", report.failed);
    assert!(
        !report.metrics.rates.contains_key("content_pass_rate"),
        "{:?}",
        report.metrics.rates.keys()
    );
    let checked = format!("{unchecked}  - expect_response: {{ min_length: 200 }}\n")
        .replace("name: unchecked", "name: checked");
    let report = run_yaml(&checked, target).await;
    assert!(report.passed(), "{:?}", report.failed);
    assert_eq!(report.metrics.rates["content_pass_rate"].total, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_html_report_shows_the_verdict_the_waterfall_and_the_failures() {
    let (target, _server) = crate::start_backend_with(|c| {
        c.sabotage = Some(apex_backend::sabotage::Sabotage::DropEvent);
        c.allow_sabotage = true;
    })
    .await;
    let page = std::env::temp_dir().join(format!("apex-harness-{}.html", std::process::id()));
    let (url, path) = (
        format!("http://{}", target.authority),
        page.to_str().unwrap().to_owned(),
    );
    let scenario = workspace().join("scenarios/golden_path.yaml");
    let (code, out, _) = tokio::task::spawn_blocking(move || {
        let scenario = scenario.to_str().unwrap().to_owned();
        run(&[&scenario, "--target", &url, "--html", &path])
    })
    .await
    .unwrap();
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    let html = std::fs::read_to_string(&page).unwrap();
    let _ = std::fs::remove_file(&page);
    assert!(html.contains("data-exit=\"1\""), "{html}");
    assert!(html.contains("missing_event:tool_completed"), "{html}");
    // The failed journey's waterfall: the events that came, and the one that never did.
    assert!(html.contains(">agent_started</text>") && html.contains("never arrived"));
    assert!(html.contains("last 6 frames"), "{html}");
    // Self-contained: no script, nothing fetched.
    for outside in ["<script", "src=", "href=\"http", "@import"] {
        assert!(!html.contains(outside), "{outside} in {html}");
    }
    // The fixture user's password never appears.
    assert!(!html.contains("correct-horse"));
}
