//! What one journey did: its identity, transcripts, failures, timings and answer, and how it
//! counts towards a scenario's metrics.

use std::time::Duration;

use serde_json::Value;

use crate::metrics::Metrics;
use crate::verify::{Failure, FailureClass, Identity, Isolation, Transcript};

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
    /// What a report needs of the frames once the journey is settled
    /// ([`JourneyOutcome::settle`]), with their arrival times: a failed journey's last
    /// frames; a passed one's frames of runs not its own, if any (should the scenario's end
    /// find one of them another user's).
    pub kept_frames: Vec<(Duration, Value)>,
    /// How its last connection ended, once settled (`closed with 1000 "bye"`).
    pub close: Option<String>,
    /// Run and thread ids of runs not its own its frames carried, once settled, each with
    /// the index of the first frame (in its connection's transcript) that did.
    pub seen: Vec<(String, usize)>,
}

/// How many of a failed journey's last frames a report shows.
const LAST_FRAMES: usize = 6;

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
            kept_frames: Vec::new(),
            close: None,
            seen: Vec::new(),
        }
    }

    /// Judges the journey's frames against every other user's identities (`isolation`), then
    /// keeps of them only what a report needs (see [`JourneyOutcome::kept_frames`],
    /// [`JourneyOutcome::seen`]) and drops the rest: a settled journey holds a few hundred
    /// bytes, not its whole transcript, so a long load run's memory does not grow with what
    /// its journeys received. A journey cut short is not judged.
    pub fn settle(&mut self, profile: &crate::profile::Profile, isolation: &Isolation) {
        if !self.cut_short {
            for transcript in &self.transcripts {
                let found = isolation.check(&self.identity.email, transcript);
                self.failures.extend(found);
            }
        }
        let own = &self.identity.runs;
        // (connection, frame) of the frames that first carried an id in `seen`.
        let mut carrying: Vec<(usize, usize)> = Vec::new();
        for (conn, transcript) in self.transcripts.iter().enumerate() {
            for (index, frame) in transcript.frames.iter().enumerate() {
                let ids = [
                    profile.run_id(&frame.value),
                    profile.thread_id(&frame.value),
                ];
                for id in ids.into_iter().flatten() {
                    if !own.iter().any(|o| o == id) && !self.seen.iter().any(|(s, _)| s == id) {
                        self.seen.push((id.to_owned(), index));
                        if carrying.last() != Some(&(conn, index)) {
                            carrying.push((conn, index));
                        }
                    }
                }
            }
        }
        let frames: Vec<_> = (self.transcripts.iter().enumerate())
            .flat_map(|(conn, t)| {
                t.frames
                    .iter()
                    .enumerate()
                    .map(move |(i, f)| ((conn, i), f))
            })
            .collect();
        let keep = |frames: &[(_, &crate::verify::ReceivedFrame)]| {
            (frames.iter())
                .map(|(_, f)| (f.at, f.value.clone()))
                .collect()
        };
        self.kept_frames = if self.passed() {
            let carried: Vec<_> = (frames.iter())
                .filter(|(at, _)| carrying.contains(at))
                .copied()
                .collect();
            keep(&carried)
        } else {
            keep(&frames[frames.len().saturating_sub(LAST_FRAMES)..])
        };
        self.close = self.transcripts.last().and_then(Transcript::ending);
        for transcript in &mut self.transcripts {
            transcript.frames = Vec::new();
        }
        // Of the answer, the metrics read only its cost (`usage`).
        if let Some(answer) = &mut self.answer {
            *answer = serde_json::json!({ "usage": answer["usage"].take() });
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Its phases and events in time.
    pub fn timeline(&self) -> crate::report::Timeline {
        crate::report::Timeline {
            email: self.identity.email.clone(),
            login: self.timings.login,
            connect: self.timings.connect,
            events: self.events.clone(),
            total: self.timings.total,
        }
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
        let resyncs: u64 = self.transcripts.iter().map(|t| t.resyncs).sum();
        if resyncs > 0 {
            metrics.count("resyncs_received", resyncs);
        }
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
