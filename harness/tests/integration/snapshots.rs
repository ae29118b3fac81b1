//! Snapshots (insta) of what people read: the normalised event transcript of each golden
//! scenario, the JSON, JUnit and Markdown reports of a fixed run, every `--help`, and each
//! invalid scenario's diagnostic. The files are in `snapshots/` beside this one.
//!
//! Values that differ between runs are replaced only after a check of their shape (a UUID
//! where a run id belongs, RFC 3339 where a timestamp belongs, a non-negative number where a
//! duration belongs), so a malformed id or a negative duration still fails.
//!
//! A mismatched or missing snapshot fails; in CI (`CI=true`, `INSTA_UPDATE=no`) nothing is
//! written. To review changes: `INSTA_UPDATE=always cargo test -p apex-harness --test
//! integration snapshots` and read `git diff` (or `cargo insta review` where cargo-insta is
//! installed).

use std::path::{Path, PathBuf};

use apex_harness::runner::{JourneyContext, run_journey};
use apex_harness::scenario::{discover, load};
use regex::Regex;
use serde_json::Value;

use crate::{run_cli, start_backend};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

fn shape(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap()
}

/// Replaces run-dependent values by placeholders after checking their shape.
fn normalise(key: &str, value: &mut Value) {
    let uuid = shape(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
    let rfc3339 = shape(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$");
    match value {
        Value::Object(map) => {
            // A latency threshold's observed value is a duration; a rate's is not.
            let latency_verdict = map
                .get("threshold")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("_duration"));
            for (k, child) in map.iter_mut() {
                if k == "histogram_us" {
                    let samples: u64 = child
                        .as_array()
                        .expect("histogram_us is an array")
                        .iter()
                        .map(|b| {
                            let pair = b.as_array().expect("[value_us, count]");
                            assert!(pair.len() == 2 && pair[0].as_u64().is_some_and(|v| v > 0));
                            pair[1].as_u64().expect("a count")
                        })
                        .sum();
                    *child = Value::String(format!("[histogram of {samples} samples]"));
                } else if latency_verdict && k == "observed" {
                    normalise("observed_ms", child);
                } else {
                    normalise(k, child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| normalise(key, item)),
        Value::String(s) => {
            let placeholder = match key {
                "run_id" | "thread_id" | "connection_id" => {
                    assert!(uuid.is_match(s), "{key} {s:?} is not a v4 UUID");
                    "[uuid]"
                }
                "timestamp" => {
                    assert!(rfc3339.is_match(s), "{key} {s:?} is not RFC 3339");
                    "[timestamp]"
                }
                // The bundled backend listens on a free loopback port.
                "target" => {
                    assert!(shape(r"^127\.0\.0\.1:\d+$").is_match(s), "target {s:?}");
                    "[loopback]"
                }
                "server_id" => {
                    assert!(shape("^apex-[0-9a-f]{8}$").is_match(s), "server_id {s:?}");
                    "[server_id]"
                }
                _ => return,
            };
            *value = Value::String(placeholder.into());
        }
        // `run` draws a seed for the markers when --seed is not given.
        Value::Number(n) if key == "seed" => {
            assert!(n.as_u64().is_some(), "seed {n}");
            *value = Value::String("[seed]".into());
        }
        Value::Number(n) if key == "bytes_received" => {
            assert!(n.as_u64().is_some_and(|b| b > 1000), "bytes_received {n}");
            *value = Value::String("[bytes]".into());
        }
        Value::Number(n) if key.ends_with("_ms") || key.ends_with("_us") || key.ends_with("_s") => {
            let v = n.as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{key} = {v} is not a duration");
            *value = Value::String("[duration]".into());
        }
        _ => {}
    }
}

/// Each golden scenario, run once as its first user against a fresh bundled backend: every
/// frame of every connection, normalised.
#[tokio::test]
async fn golden_scenario_transcripts() {
    let root = workspace();
    let read_yaml = |path: &str| -> Value {
        serde_saphyr::from_str(&std::fs::read_to_string(root.join(path)).unwrap()).unwrap()
    };
    let users = read_yaml("fixtures/users.yaml");
    for name in [
        "golden_path",
        "auth/transport_header",
        "auth/transport_subprotocol",
        "auth/transport_ticket",
        "auth/transport_lb_header",
        "resume",
    ] {
        let file = load(&root.join(format!("scenarios/{name}.yaml"))).unwrap();
        let user = &file.scenario.users[0];
        let email = user.email.clone().unwrap();
        let password = user.password.clone().unwrap();
        let usage = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == email.as_str())
            .map(|u| u["usage"].as_str().unwrap().to_owned())
            .unwrap();
        let stem = Path::new(&usage).file_stem().unwrap().to_string_lossy();
        let truth = read_yaml(&format!("fixtures/expected/{stem}.yaml"));
        let (target, _stop) = start_backend().await;
        let http = target.http_client().unwrap();
        let ctx = JourneyContext {
            http: &http,
            target: &target,
            profile: &file.profile,
            timeout: std::time::Duration::from_secs(10),
            truth: Some(&truth),
            faults: None,
            cutoff: &Default::default(),
            isolation: None,
        };
        let outcome = run_journey(&ctx, &file.scenario.steps, &email, &password, "snap-1").await;
        assert!(
            outcome.failures.is_empty(),
            "{name}: {:?}",
            outcome.failures
        );
        let mut transcripts: Value = outcome
            .transcripts
            .iter()
            .map(|t| {
                serde_json::json!({
                    "resumed_after": t.resumed_after,
                    "close_code": t.close_code,
                    // What arrived after the client's close depends on timing.
                    "frames": t.frames[..t.frames.len() - t.after_close]
                        .iter()
                        .map(|f| f.value.clone())
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        normalise("", &mut transcripts);
        let snapshot = format!("transcript__{}", name.replace('/', "__"));
        settings().bind(|| insta::assert_json_snapshot!(snapshot, transcripts));
    }
}

/// The reports of a fixed run: one passing and one failing scenario.
#[test]
fn reports_of_a_fixed_run() {
    let dir = std::env::temp_dir().join(format!("apex-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, junit, markdown) = (dir.join("r.json"), dir.join("r.xml"), dir.join("r.md"));
    // Relative to the package folder, where cargo runs tests, so the paths in the reports
    // are the same on every machine.
    let (code, _, _) = run_cli(&[
        "../fixtures/scenarios/report",
        "--fixtures",
        "../fixtures",
        "--json",
        json.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "one scenario fails on its answer");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();

    let mut report: Value = serde_json::from_str(&read(&json)).unwrap();
    // With the service URLs set the bundled backend keeps its streams in Redis across runs,
    // so a failed journey's `seq`s depend on earlier runs: check they are consecutive, then
    // hide them.
    for scenario in report["scenarios"].as_array_mut().unwrap() {
        for failed in scenario["failed"].as_array_mut().unwrap() {
            let frames = failed["last_frames"].as_array_mut().unwrap();
            let seqs: Vec<u64> = frames
                .iter()
                .filter_map(|f| f["frame"]["seq"].as_u64())
                .collect();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
            for frame in frames {
                if frame["frame"]["seq"].is_u64() {
                    frame["frame"]["seq"] = Value::String("[seq]".into());
                }
            }
        }
    }
    normalise("", &mut report);
    let mut settings = settings();
    settings.bind(|| insta::assert_json_snapshot!("report__json", report));

    // JUnit: `time` attributes are seconds; Markdown: the p95/p99 cells are milliseconds.
    let junit_text = read(&junit);
    assert!(shape(r#"time="\d+\.\d{3}""#).is_match(&junit_text));
    settings.add_filter(r#"time="\d+\.\d{3}""#, r#"time="[s]""#);
    settings.add_filter(
        r"\| \d+\.\d \| \d+\.\d \| (\d+\.\d%) \|",
        "| [ms] | [ms] | $1 |",
    );
    settings.bind(|| {
        insta::assert_snapshot!("report__junit", junit_text);
        insta::assert_snapshot!("report__markdown", read(&markdown));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_texts() {
    use clap::Parser;
    for (name, args) in [
        ("help__main", vec!["--help"]),
        ("help__run", vec!["run", "--help"]),
        ("help__validate", vec!["validate", "--help"]),
        ("help__list", vec!["list", "--help"]),
    ] {
        let argv = std::iter::once("apex-harness").chain(args);
        let error = apex_harness::cli::Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
        settings().bind(|| insta::assert_snapshot!(name, error.to_string()));
    }
}

/// Each invalid fixture gives a diagnostic that points at its mistake (path:line:col, the
/// line, a caret and a hint).
#[test]
fn each_invalid_fixture_points_at_its_mistake() {
    let root = workspace();
    let cases = discover(&[root.join("fixtures/scenarios/invalid")]).unwrap();
    assert!(cases.len() >= 9, "{cases:?}");
    for case in cases {
        let source = std::fs::read_to_string(&case).unwrap();
        let shown = case.strip_prefix(&root).unwrap();
        let diagnostics = apex_harness::scenario::parse(shown, &source)
            .expect_err("an invalid fixture must not parse");
        let rendered: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
        let name = format!(
            "diagnostic__{}",
            case.file_stem().unwrap().to_string_lossy()
        );
        settings().bind(|| insta::assert_snapshot!(name, rendered));
    }
}
