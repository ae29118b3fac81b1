//! One golden-path journey, run and judged: login → connect → message (carrying the virtual
//! user's unique marker) → the expected events in order, each within its timeout → the
//! answer. Everything received is recorded and held to the profile's invariants; timings feed
//! the run's metrics.
//!
//! This is the executor that scenario files will drive; scenario parsing is still to come.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{ClientFailure, Connection, Target, Transport, connect, login};
use crate::metrics::Metrics;
use crate::profile::Profile;
use crate::verify::{Failure, FailureClass, Identity, Transcript, check_connection};

/// The five critical events and the three steps between, as the bundled backend sends them.
pub const GOLDEN_EVENTS: [&str; 11] = [
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

/// What one journey does and expects.
#[derive(Debug, Clone)]
pub struct JourneySpec {
    pub email: String,
    pub password: String,
    pub transport: Transport,
    pub message: String,
    /// Event types expected in this order (other frames in between are allowed).
    pub expected_events: Vec<String>,
    /// Longest wait for each expected event.
    pub event_timeout: Duration,
    /// Longest wait for login and for the WebSocket upgrade.
    pub connect_timeout: Duration,
    pub profile: Profile,
}

impl JourneySpec {
    /// The golden path for a user with the bundled backend's defaults.
    pub fn golden(email: &str, password: &str) -> Self {
        Self {
            email: email.to_owned(),
            password: password.to_owned(),
            transport: Transport::Header,
            message: "Where am I wasting money on LLM calls?".into(),
            expected_events: GOLDEN_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            event_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            profile: Profile::apex(),
        }
    }
}

/// How long each phase took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    pub login: Option<Duration>,
    pub connect: Option<Duration>,
    pub first_event: Option<Duration>,
    pub agent_completed: Option<Duration>,
    pub total: Duration,
}

/// What happened in one journey.
#[derive(Debug, Clone)]
pub struct JourneyOutcome {
    pub identity: Identity,
    /// One per connection the journey opened, in order.
    pub transcripts: Vec<Transcript>,
    pub failures: Vec<Failure>,
    pub timings: Timings,
    /// `agent_completed.payload` of the journey's run, when it arrived.
    pub answer: Option<Value>,
    /// Each expected event and when it arrived (since the journey started), `None` if it
    /// never did.
    pub events: Vec<(String, Option<Duration>)>,
    /// Stopped by `--fail-fast` after another journey failed: neither passed nor failed.
    pub cut_short: bool,
    /// The journey checks its answer's content (`expect_response`): only such journeys count
    /// towards `content_pass_rate`.
    pub content_checked: bool,
    /// The journey sends a chat message (so it counts towards `chat_completion_rate`); true
    /// unless its steps send none.
    pub chats: bool,
    /// The journey reused its virtual user's session instead of logging in
    /// (`load.login: once_per_vu`).
    pub session_reused: bool,
}

impl JourneyOutcome {
    /// A journey of `email` that has not started yet; `marker` is unique to it.
    pub fn new(email: &str, marker: &str) -> Self {
        Self {
            identity: Identity {
                user_id: None,
                email: email.to_owned(),
                marker: marker.to_owned(),
                runs: Vec::new(),
            },
            transcripts: Vec::new(),
            failures: Vec::new(),
            timings: Timings::default(),
            answer: None,
            events: Vec::new(),
            cut_short: false,
            content_checked: false,
            chats: true,
            session_reused: false,
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Adds this journey to a run's metrics.
    pub fn record(&self, metrics: &mut Metrics) {
        metrics.count("journeys_started", 1);
        metrics.count(
            if self.passed() {
                "journeys_completed"
            } else {
                "journeys_failed"
            },
            1,
        );
        if self.chats {
            metrics.rate(
                "chat_completion_rate",
                self.timings.agent_completed.is_some(),
            );
        }
        metrics.rate("error_rate", !self.passed());
        if self.timings.login.is_some() || self.session_reused {
            metrics.rate("ws_connect_success_rate", self.timings.connect.is_some());
        }
        let trends = [
            ("login_duration", self.timings.login),
            ("connect_duration", self.timings.connect),
            ("first_event_duration", self.timings.first_event),
            ("agent_completed_duration", self.timings.agent_completed),
        ];
        for (name, value) in trends {
            if let Some(value) = value {
                metrics.record(name, value);
            }
        }
        if self.passed() {
            metrics.record("journey_duration", self.timings.total);
        }
        for (kind, at) in &self.events {
            metrics.rate(&format!("event_delivery_rate:{kind}"), at.is_some());
            if let Some(at) = at {
                metrics.record(&format!("event_duration:{kind}"), *at);
            }
        }
        for failure in &self.failures {
            metrics.count(&format!("failures:{}", failure.class), 1);
        }
        let bytes: u64 = self.transcripts.iter().map(|t| t.bytes_received).sum();
        metrics.count("bytes_received", bytes);
        if let Some(answer) = &self.answer {
            // Quality: the answer's substance passed its content checks. Journeys that check
            // nothing would dilute a drop where answers are checked, so they do not count.
            if self.content_checked {
                let wrong = self
                    .failures
                    .iter()
                    .any(|f| f.class == FailureClass::ContentMismatch);
                metrics.rate("content_pass_rate", !wrong);
            }
            // Cost as the backend reports it (`payload.usage`, protocol §4.3).
            let usage = &answer["usage"];
            if let Some(ms) = usage["compute_ms"].as_f64().filter(|ms| *ms >= 0.0) {
                metrics.record(
                    "backend_compute_duration",
                    Duration::from_secs_f64(ms / 1000.0),
                );
            }
            if let Some(tokens) = usage["llm_tokens"].as_u64() {
                metrics.count("llm_tokens", tokens);
            }
        }
    }
}

fn from_client(failure: ClientFailure) -> Failure {
    Failure::new(failure.class, failure.message, None)
}

/// Runs one journey. `marker` is unique to the virtual user and travels in its message, so a
/// leak shows up in other users' transcripts.
pub async fn run(
    http: &reqwest::Client,
    target: &Target,
    spec: &JourneySpec,
    marker: &str,
) -> JourneyOutcome {
    let started = Instant::now();
    let mut outcome = JourneyOutcome::new(&spec.email, marker);
    let session = match login(
        http,
        target,
        &spec.email,
        &spec.password,
        spec.connect_timeout,
    )
    .await
    {
        Ok(session) => session,
        Err(e) => {
            outcome.failures.push(from_client(e));
            outcome.timings.total = started.elapsed();
            return outcome;
        }
    };
    outcome.timings.login = Some(started.elapsed());
    outcome.identity.user_id = session.user_id.clone();
    let mut conn = match connect(
        http,
        target,
        Some(&session),
        spec.transport,
        spec.connect_timeout,
    )
    .await
    {
        Ok(conn) => conn,
        Err(e) => {
            outcome.failures.push(from_client(e));
            outcome.timings.total = started.elapsed();
            return outcome;
        }
    };
    outcome.timings.connect = Some(started.elapsed());
    let message_id = format!("{marker}-msg");
    let frame = json!({
        "type": "user_message",
        "payload": { "content": format!("{} [{marker}]", spec.message), "message_id": message_id },
    });
    if let Err(e) = conn.send_json(&frame).await {
        outcome.failures.push(from_client(e));
    } else {
        expect_events(&mut conn, spec, &message_id, started, &mut outcome).await;
    }
    // Acknowledge what arrived, so the server does not redeliver after we leave.
    if let Some(last) = conn
        .transcript
        .frames
        .iter()
        .filter_map(|f| spec.profile.seq(&f.value))
        .max()
    {
        let _ = conn.send_json(&json!({ "type": "ack", "seq": last })).await;
    }
    let transcript = conn.close().await;
    outcome
        .failures
        .extend(check_connection(&spec.profile, &transcript));
    outcome.transcripts.push(transcript);
    outcome.timings.total = started.elapsed();
    outcome
}

/// Reads frames until each expected event of this journey's run arrived in order.
async fn expect_events(
    conn: &mut Connection,
    spec: &JourneySpec,
    message_id: &str,
    started: Instant,
    outcome: &mut JourneyOutcome,
) {
    let profile = &spec.profile;
    let mut run_id: Option<String> = None;
    let expected = &spec.expected_events;
    let mut next = 0;
    while let Some(want) = expected.get(next) {
        let frame = match conn.next_frame(spec.event_timeout).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                outcome.events.push((want.clone(), None));
                outcome.failures.push(Failure::new(
                    FailureClass::MissingEvent(want.clone()),
                    format!("connection closed before `{want}`"),
                    None,
                ));
                return;
            }
            Err(e) if e.class == FailureClass::Timeout => {
                outcome.events.push((want.clone(), None));
                outcome.failures.push(Failure::new(
                    FailureClass::MissingEvent(want.clone()),
                    format!("`{want}` did not arrive within {:?}", spec.event_timeout),
                    None,
                ));
                return;
            }
            Err(e) => {
                outcome.failures.push(from_client(e));
                return;
            }
        };
        let Some(kind) = profile.frame_type(&frame) else {
            continue;
        };
        if kind == "error" {
            outcome.failures.push(Failure::new(
                FailureClass::ContentMismatch,
                format!("error frame while waiting for `{want}`: {frame}"),
                Some(conn.transcript.frames.len() - 1),
            ));
            return;
        }
        // This journey's run is the one that echoes its message id; other runs of the same
        // user may interleave.
        let this_run = profile.run_id(&frame).map(str::to_owned);
        match (&run_id, kind) {
            (None, "agent_started") if frame["payload"]["client_message_id"] == message_id => {
                run_id = this_run
            }
            (Some(mine), _) if this_run.as_ref() == Some(mine) => {}
            _ => continue,
        }
        if frame.get("redelivery") == Some(&Value::Bool(true)) {
            continue;
        }
        if outcome.timings.first_event.is_none() {
            outcome.timings.first_event = Some(started.elapsed());
        }
        let at = Some(conn.transcript.frames.len() - 1);
        match expected[next..].iter().position(|e| e == kind) {
            Some(0) => {}
            // Events further along arrived: the ones in between are missing.
            Some(skipped) => {
                for missing in &expected[next..next + skipped] {
                    outcome.failures.push(Failure::new(
                        FailureClass::MissingEvent(missing.clone()),
                        format!("`{kind}` arrived but `{missing}` before it never did"),
                        at,
                    ));
                }
                outcome.events.extend(
                    expected[next..next + skipped]
                        .iter()
                        .map(|e| (e.clone(), None)),
                );
                next += skipped;
            }
            None => {
                outcome.failures.push(Failure::new(
                    FailureClass::OrderViolation,
                    format!("expected `{want}`, received `{kind}`"),
                    at,
                ));
                continue;
            }
        }
        outcome
            .events
            .push((kind.to_owned(), Some(started.elapsed())));
        next += 1;
        if kind == "agent_completed" {
            outcome.timings.agent_completed = Some(started.elapsed());
            outcome.answer = frame.get("payload").cloned();
        }
    }
}
