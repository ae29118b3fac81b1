//! The CPU-bound hot paths, each a function over prepared inputs so that setup is not
//! measured: event encode/decode, scenario parse, expectation matching (a run's transcript
//! through every invariant and the field paths a scenario checks), histogram merge.
//!
//! Inputs are fixed (no clock, no randomness), so instruction counts repeat exactly.

use std::time::Duration;

use apex_backend::protocol::{Event, EventType};
use apex_harness::metrics::Metrics;
use apex_harness::profile::Profile;
use apex_harness::verify::{Transcript, check_connection};
use serde_json::{Value, json};

/// Every workload, by the name the gate and the benches use.
pub const NAMES: [&str; 4] = [
    "event_codec",
    "scenario_parse",
    "expectation_match",
    "histogram_merge",
];

/// Prepared inputs.
pub struct Inputs {
    events: Vec<Event>,
    scenario: String,
    transcript: Transcript,
    profile: Profile,
    workers: Vec<Metrics>,
}

const RUN: [(EventType, &str, &str); 11] = [
    (EventType::AgentStarted, "supervisor", ""),
    (EventType::AgentThinking, "data_helper", ""),
    (EventType::ToolExecuting, "data_helper", "fetch_usage_data"),
    (EventType::ToolCompleted, "data_helper", "fetch_usage_data"),
    (EventType::AgentThinking, "optimizer", ""),
    (EventType::ToolExecuting, "optimizer", "analyze_costs"),
    (EventType::ToolCompleted, "optimizer", "analyze_costs"),
    (EventType::AgentThinking, "report_generator", ""),
    (
        EventType::ToolExecuting,
        "report_generator",
        "generate_report",
    ),
    (
        EventType::ToolCompleted,
        "report_generator",
        "generate_report",
    ),
    (EventType::AgentCompleted, "supervisor", ""),
];

fn run_events() -> Vec<Event> {
    let run_id = "0d6f3a8e-2b71-4c9a-b5e4-7f1c2d3e4a5b".parse().unwrap();
    let thread_id = "c41e7a92-5d3b-4f08-8a6c-e2b9d0f41c37".parse().unwrap();
    RUN.iter()
        .enumerate()
        .map(|(i, (kind, agent, tool))| {
            let payload = match kind {
                EventType::AgentStarted => json!({ "status": "started", "pipeline": ["data_helper", "optimizer", "report_generator"], "client_message_id": "msg-42" }),
                EventType::AgentThinking => json!({ "thought": "Loading your AI API usage records and summarising spend per model" }),
                EventType::ToolExecuting => json!({ "tool_name": tool, "parameters": { "user_id": "7b0c6a0e-4c1f-4f6e-9a51-0a11ce000001" } }),
                EventType::ToolCompleted => json!({ "tool_name": tool, "status": "success", "duration_ms": 0.138948, "result": { "total_calls": 199, "window_days": 30, "total_monthly_cost_usd": 1.176379, "models": 4 } }),
                _ => json!({
                    "status": "completed",
                    "final_response": "## AI spend analysis\n\nAnalysed **199 calls** over **30 days**. ".repeat(12),
                    "result": { "total_calls": 199, "window_days": 30, "total_monthly_cost_usd": 1.176379, "projected_monthly_savings_usd": 0.407775,
                                "recommendations": [{ "kind": "model_downgrade", "from_model": "gpt-4o", "to_model": "gpt-4o-mini", "affected_calls": 61, "monthly_savings_usd": 0.29 }] },
                    "usage": { "steps": 3, "tool_calls": 3, "records_analyzed": 199, "llm_tokens": 0, "compute_ms": 0.8 },
                }),
            };
            Event {
                kind: *kind,
                seq: i as u64 + 1,
                run_id,
                thread_id,
                agent_name: (*agent).to_owned(),
                timestamp: "2026-11-26T10:15:03.106Z".into(),
                payload,
                redelivery: false,
            }
        })
        .collect()
}

/// Builds the inputs (`scenarios/golden_path.yaml` is compiled in).
pub fn inputs() -> Inputs {
    let events = run_events();
    let mut transcript = Transcript::default();
    transcript.push(
        Duration::ZERO,
        json!({ "type": "connection_established", "connection_id": "3f1d2c4e-8a7b-4c6d-9e0f-1a2b3c4d5e6f",
                "user_id": "7b0c6a0e-4c1f-4f6e-9a51-0a11ce000001", "server_id": "apex-5c2e91d0", "last_seq": 0 }),
    );
    for (i, event) in events.iter().enumerate() {
        transcript.push(
            Duration::from_micros(i as u64 * 100),
            serde_json::to_value(event).unwrap(),
        );
    }
    // Compiled in, not read through a path: the checkout's path would otherwise change the
    // allocator's state and with it the instruction counts (see `bench_gate.rs`).
    let scenario = include_str!("../../scenarios/golden_path.yaml").to_owned();
    let workers = (0..8u64)
        .map(|w| {
            let mut m = Metrics::default();
            for i in 0..1000u64 {
                let micros = 2_000 + (i * 7919 + w * 104_729) % 50_000;
                m.record("journey_duration", Duration::from_micros(micros));
                m.rate("chat_completion_rate", i % 97 != 0);
                m.count("journeys_started", 1);
            }
            m
        })
        .collect();
    Inputs {
        events,
        scenario,
        transcript,
        profile: Profile::apex(),
        workers,
    }
}

/// Encodes a run's 11 events as the server does and decodes them as the harness does.
#[inline(never)]
pub fn event_codec(inputs: &Inputs) -> usize {
    let mut total = 0;
    for event in &inputs.events {
        let text = event.to_json(false);
        let value: Value = serde_json::from_str(&text).expect("valid JSON");
        total += text.len() + usize::from(value["seq"].is_u64());
    }
    total
}

/// Parses and validates the golden-path scenario file.
#[inline(never)]
pub fn scenario_parse(inputs: &Inputs) -> usize {
    let file = apex_harness::scenario::parse(
        std::path::Path::new("scenarios/golden_path.yaml"),
        &inputs.scenario,
    )
    .expect("the golden path parses");
    file.scenario.steps.len()
}

/// Checks a complete run's transcript against every invariant and reads the field paths a
/// scenario's expectations look at.
#[inline(never)]
pub fn expectation_match(inputs: &Inputs) -> usize {
    let failures = check_connection(&inputs.profile, &inputs.transcript);
    assert!(failures.is_empty(), "{failures:?}");
    let last = &inputs.transcript.frames.last().expect("frames").value;
    let paths = [
        "payload.result.total_calls",
        "payload.result.projected_monthly_savings_usd",
        "payload.result.recommendations.0.to_model",
        "payload.usage.compute_ms",
    ];
    paths
        .iter()
        .filter(|p| apex_harness::runner::lookup(last, p).is_some())
        .count()
}

/// Merges eight workers' metrics (8,000 latencies) and reads the percentiles.
#[inline(never)]
pub fn histogram_merge(inputs: &Inputs) -> u64 {
    let mut total = Metrics::default();
    for worker in &inputs.workers {
        total.merge(worker);
    }
    let trend = &total.trends["journey_duration"];
    (trend.percentile_ms(99.0) * 1000.0) as u64 + trend.count()
}

/// Runs workload `name` once; `None` for an unknown name.
pub fn run(name: &str, inputs: &Inputs) -> Option<u64> {
    Some(match name {
        "event_codec" => event_codec(inputs) as u64,
        "scenario_parse" => scenario_parse(inputs) as u64,
        "expectation_match" => expectation_match(inputs) as u64,
        "histogram_merge" => histogram_merge(inputs),
        _ => return None,
    })
}
