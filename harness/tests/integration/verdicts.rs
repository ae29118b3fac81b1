//! Verdicts fail closed: every way a run could pass by accident, or mislead, against a
//! scripted server that misbehaves on purpose (see `double.rs`), and through `validate`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apex_harness::exit_codes;

use crate::double::{self, Script, Then};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A folder of its own for a test's scenario files.
fn cases(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "apex-harness-verdicts-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(target: &str, paths: &[&Path], extra: &[&str]) -> (u8, String, String) {
    let fixtures = workspace().join("fixtures");
    let mut argv: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    argv.extend(["--target", target, "--fixtures", fixtures.to_str().unwrap()]);
    argv.extend_from_slice(extra);
    crate::run_cli(&argv)
}

const JOURNEY: &str = r#"
name: Scripted journey
users: [{ email: qa@double.test, password: pw }]
target: { timeout: 2s }
steps:
  - login: {}
  - connect: {}
  - send: { content: "where does my money go?" }
  - expect: { events: [agent_started, agent_thinking, tool_executing, tool_completed, agent_completed], timeout: 30s }
"#;

#[test]
fn a_healthy_scripted_run_passes() {
    // The control for the tests below: the same journey against a well-behaved script.
    let url = double::start(Script::replying(double::run_of_five(Some("fine"))));
    let dir = cases("healthy");
    let file = write(&dir, "s.yaml", &format!("{JOURNEY}  - disconnect: {{}}\n"));
    let (code, out, err) = run(&url, &[&file], &[]);
    assert_eq!(code, exit_codes::PASS, "{out}\n{err}");
}

/// Point 3: a duplicate sent right after `agent_completed`, before the client's close, is
/// read and judged.
#[test]
fn a_duplicate_after_agent_completed_fails_the_journey() {
    let mut frames = double::run_of_five(Some("fine"));
    frames.push(frames[2].clone());
    let url = double::start(Script::replying(frames));
    let dir = cases("late-duplicate");
    let file = write(&dir, "s.yaml", &format!("{JOURNEY}  - disconnect: {{}}\n"));
    let (code, out, err) = run(&url, &[&file], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}\n{err}");
    assert!(out.contains("duplicate_event"), "{out}");
}

/// Point 7: an answer without `final_response` is not an empty answer that passes
/// `not_contains`.
#[test]
fn a_missing_answer_does_not_pass_not_contains() {
    let url = double::start(Script::replying(double::run_of_five(None)));
    let dir = cases("no-answer");
    let file = write(
        &dir,
        "s.yaml",
        &format!("{JOURNEY}  - expect_response: {{ not_contains: [Traceback] }}\n"),
    );
    let (code, out, err) = run(&url, &[&file], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}\n{err}");
    assert!(out.contains("no text at `final_response`"), "{out}");
}

/// Point 8: `expect_status` is the refusal's status, not text in its body.
#[test]
fn expect_status_matches_the_status_not_the_message() {
    let url = double::start(Script {
        refuse: Some((401, "refused with 403")),
        ..Script::replying(Vec::new())
    });
    let dir = cases("expect-status");
    let wrong = write(
        &dir,
        "wrong.yaml",
        "name: Wants 403\nusers: [{ email: qa@double.test, password: pw }]\nsteps:\n  - login: {}\n  - connect: { expect_status: 403 }\n",
    );
    let (code, out, err) = run(&url, &[&wrong], &[]);
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}\n{err}");
    assert!(
        out.contains("expected the upgrade refused with 403"),
        "{out}"
    );
    let right = write(
        &dir,
        "right.yaml",
        "name: Wants 401\nusers: [{ email: qa@double.test, password: pw }]\nsteps:\n  - login: {}\n  - connect: { expect_status: 401 }\n",
    );
    let (code, out, err) = run(&url, &[&right], &[]);
    assert_eq!(code, exit_codes::PASS, "{out}\n{err}");
}

/// Point 10: a scenario that sends no message is not held to the chat-completion default.
#[test]
fn a_scenario_without_messages_gets_no_chat_default() {
    let url = double::start(Script::replying(Vec::new()));
    let dir = cases("no-send");
    let file = write(
        &dir,
        "s.yaml",
        "name: Status only\nsteps:\n  - http: { path: /status, status: 200, json: { status: ok } }\n",
    );
    let (code, out, err) = run(&url, &[&file], &[]);
    assert_eq!(code, exit_codes::PASS, "{out}\n{err}");
    assert!(!out.contains("chat_completion_rate: rate > 0.95"), "{out}");
}

/// Point 4: a run whose every scenario was skipped verified nothing and does not pass.
#[test]
fn an_all_skipped_run_does_not_pass() {
    let url = double::start(Script::replying(Vec::new()));
    let dir = cases("all-skipped");
    let file = write(
        &dir,
        "s.yaml",
        "name: Needs Redis\nfaults:\n  - { between: redis, toxic: down }\nsteps:\n  - http: { path: /status, status: 200 }\n",
    );
    let (code, out, err) = run(&url, &[&file], &[]);
    assert_eq!(code, exit_codes::USAGE, "{out}\n{err}");
    assert!(out.contains("SKIP") && out.contains("nothing ran"), "{out}");
}

/// Point 12: against a server that hangs after `tool_executing`, `--max-duration` ends the
/// run near its bound, naming what the journey waited for; `--fail-fast` stops at the first
/// failure and does not run the next scenario.
#[test]
fn max_duration_and_fail_fast_bound_a_hung_run() {
    let mut frames = double::run_of_five(Some("never"));
    frames.truncate(3);
    let url = double::start(Script {
        then: Then::Hang,
        ..Script::replying(frames)
    });
    let dir = cases("hang");
    // Per event 20 s, the step 30 s, three virtual users: about 40 s unbounded.
    let hung = JOURNEY.replace(
        "target: { timeout: 2s }",
        "target: { timeout: 20s }\nload: { vus: 3 }",
    );
    let first = write(&dir, "a.yaml", &hung);
    let second = write(
        &dir,
        "b.yaml",
        &hung.replace("Scripted journey", "Second journey"),
    );

    let started = Instant::now();
    let (code, out, err) = run(&url, &[&first, &second], &["--max-duration", "2s"]);
    let took = started.elapsed();
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}\n{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}\n{out}");
    assert!(
        out.contains("--max-duration 2s ran out while waiting for `tool_completed`"),
        "{out}"
    );
    assert!(
        out.contains("SKIP  Second journey") && out.contains("not run"),
        "{out}"
    );

    let short = write(
        &dir,
        "0-short.yaml",
        &hung.replace("timeout: 30s", "timeout: 2s"),
    );
    let started = Instant::now();
    let (code, out, err) = run(&url, &[&short, &second], &["--fail-fast"]);
    let took = started.elapsed();
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}\n{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}\n{out}");
    assert!(out.contains("stopped early: --fail-fast"), "{out}");
    assert!(out.contains("SKIP  Second journey"), "{out}");
}

/// Point 9: a `fault` step that cannot be carried out is the harness's failure, named as
/// such, not the server's handshake.
#[tokio::test]
async fn a_fault_step_that_cannot_run_is_a_harness_error() {
    let file = apex_harness::scenario::parse(
        Path::new("fault.yaml"),
        "name: f\nfaults:\n  - { name: cut, toxic: down }\nsteps:\n  - fault: { name: cut, enabled: true }\n",
    )
    .unwrap();
    let target = apex_harness::client::Target::parse("http://127.0.0.1:9").unwrap();
    let http = target.http_client().unwrap();
    let ctx = apex_harness::runner::JourneyContext {
        http: &http,
        target: &target,
        profile: &file.profile,
        timeout: Duration::from_secs(1),
        truth: None,
        faults: None,
        cutoff: &Default::default(),
        isolation: None,
    };
    let outcome =
        apex_harness::runner::run_journey(&ctx, &file.scenario.steps, "qa@x.test", "pw", "mk")
            .await;
    let classes: Vec<String> = outcome
        .failures
        .iter()
        .map(|f| f.class.to_string())
        .collect();
    assert_eq!(
        classes,
        ["harness_error:fault_step"],
        "{:?}",
        outcome.failures
    );
}

/// Point 7: `validate` refuses a `near_truth` key no fixture truth has, with exit 2 and the
/// key's position.
#[test]
fn validate_refuses_an_unknown_truth_key() {
    use clap::Parser;
    let dir = cases("truth-key");
    let file = write(
        &dir,
        "s.yaml",
        "name: Typo\nsteps:\n  - login: {}\n  - expect_response:\n      near_truth:\n        - { path: result.x, truth: projected_monthly_savings }\n",
    );
    let fixtures = workspace().join("fixtures");
    let cli = apex_harness::cli::Cli::try_parse_from([
        "apex-harness",
        "validate",
        file.to_str().unwrap(),
        "--fixtures",
        fixtures.to_str().unwrap(),
    ])
    .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = apex_harness::cli::execute(cli, &mut out, &mut err);
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, exit_codes::USAGE, "{err}");
    assert!(
        err.contains("no fixture truth has the key `projected_monthly_savings`"),
        "{err}"
    );
    assert!(err.contains("s.yaml:6:36"), "{err}");
}

/// Point 11: a login sent over a pooled keep-alive connection that the server closes
/// without answering is sent once more on a fresh connection.
#[tokio::test]
async fn a_login_on_a_connection_the_server_dropped_is_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut connections = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            connections += 1;
            let first_connection = connections == 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                loop {
                    // One request: its head and a small JSON body in one read.
                    let mut buf = vec![0u8; 4096];
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // The keep-alive connection's second request: dropped unanswered, as a
                    // server does whose idle timeout fired just as it arrived.
                    if first_connection && answered == 1 {
                        return;
                    }
                    let body = r#"{"access_token":"t","user":{"id":"u"}}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    answered += 1;
                }
            });
        }
    });
    let target = apex_harness::client::Target::parse(&format!("http://{addr}")).unwrap();
    let http = target.http_client().unwrap();
    let timeout = Duration::from_secs(5);
    apex_harness::client::login(&http, &target, "a@x.test", "pw", timeout)
        .await
        .unwrap();
    let second = apex_harness::client::login(&http, &target, "a@x.test", "pw", timeout).await;
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
}
