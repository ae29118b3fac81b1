//! The harness as a client of `resync` (docs/protocol.md §4.7), against a scripted server on a
//! real socket (`double.rs`): a run whose events after `from_seq` are voided and sent again
//! passes; a loss after the resync and a re-send without one fail with their classes.

use std::path::PathBuf;

use apex_harness::exit_codes;
use serde_json::{Value, json};

use crate::double::{self, Script};

const JOURNEY: &str = r#"
name: Resynced journey
users: [{ email: qa@double.test, password: pw }]
target: { timeout: 2s }
steps:
  - login: {}
  - connect: {}
  - send: { content: "where does my money go?" }
  - expect: { events: [agent_started, agent_thinking, tool_executing, tool_completed, agent_completed], timeout: 30s }
  - expect_response: { contains: [fine] }
  - disconnect: {}
"#;

fn event(seq: u64, kind: &str, run: &str) -> Value {
    let payload = match kind {
        "tool_executing" | "tool_completed" => json!({ "tool_name": "t" }),
        "agent_completed" => json!({ "final_response": "fine" }),
        _ => json!({}),
    };
    json!({ "type": kind, "seq": seq, "run_id": run, "thread_id": format!("thread-{run}"), "payload": payload })
}

/// The journey's run `run-1` got seqs 1–3 on a cut-off instance; another instance's run
/// `run-2` took 2–6 meanwhile. The `resync` from 1 voids 2–3; then come `run-2` (2–6) and the
/// rest of `run-1` in the final numbering (7–10).
fn resynced() -> Vec<Value> {
    let mut frames = vec![
        event(1, "agent_started", "run-1"),
        event(2, "agent_thinking", "run-1"),
        event(3, "tool_executing", "run-1"),
        json!({ "type": "resync", "from_seq": 1, "payload": { "from_seq": 1, "reason": "renumbered" } }),
    ];
    let kinds = [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
    ];
    for (i, kind) in kinds.iter().enumerate() {
        frames.push(event(2 + i as u64, kind, "run-2"));
    }
    for (i, kind) in kinds[1..].iter().enumerate() {
        frames.push(event(7 + i as u64, kind, "run-1"));
    }
    frames
}

/// Runs the journey against a server that sends `frames` after the message: (exit, summary).
fn journey_against(frames: Vec<Value>, name: &str) -> (u8, String) {
    let url = double::start(Script::replying(frames));
    let dir =
        std::env::temp_dir().join(format!("apex-harness-resync-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.yaml");
    std::fs::write(&file, JOURNEY).unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let (code, out, err) = crate::run_cli(&[
        file.to_str().unwrap(),
        "--target",
        &url,
        "--fixtures",
        fixtures.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    (code, format!("{out}\n{err}"))
}

#[test]
fn voided_events_sent_again_after_a_resync_pass() {
    // `agent_thinking` and `tool_executing` arrive twice, the second time after the resync
    // and under new seqs: the step matches them anew, the invariants restart at from_seq.
    let (code, out) = journey_against(resynced(), "passes");
    assert_eq!(code, exit_codes::PASS, "{out}");
}

#[test]
fn an_event_missing_after_a_resync_is_a_missing_event() {
    let mut frames = resynced();
    let completed = frames
        .iter()
        .rposition(|f| f["type"] == "tool_completed" && f["run_id"] == "run-1")
        .unwrap();
    frames.remove(completed);
    let last = frames.last_mut().unwrap();
    last["seq"] = json!(9);
    let (code, out) = journey_against(frames, "missing");
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("missing_event:tool_completed"), "{out}");
}

#[test]
fn events_sent_again_without_a_resync_are_duplicates() {
    // The same frames without the resync: seqs 2–3 arrive a second time, unmarked.
    let mut frames = resynced();
    frames.remove(3);
    let (code, out) = journey_against(frames, "duplicate");
    assert_eq!(code, exit_codes::JOURNEY_FAILED, "{out}");
    assert!(out.contains("duplicate_event"), "{out}");
}
