//! Verification: what a connection received (its [`Transcript`]), the invariants every
//! journey is held to, and the failure classes a report names.

mod invariants;
mod isolation;

use std::fmt;
use std::time::Duration;

use serde_json::Value;

pub use invariants::{Identity, check_connection};
pub use isolation::{Isolation, check_isolation};

/// What went wrong, by class, as reports and thresholds count it (docs/failure-modes.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    /// Login or handshake refused credentials that should work.
    AuthRejected,
    /// The server closed with 1011 (always an error).
    Ws1011,
    /// The WebSocket handshake failed: the upgrade was refused (not for credentials), or
    /// the first frame was not the welcome.
    HandshakeFailed,
    /// The target could not be reached at all: connection refused, DNS, TLS, a reset before
    /// any answer. The only class that makes a run an infrastructure failure (exit 4).
    Unreachable,
    /// An HTTP request got an answer that is not a success (a 404 on the login route): the
    /// server is there; the message has the route, the status and the body.
    HttpError,
    /// An expected event never arrived.
    MissingEvent(String),
    /// Events arrived out of order (within a run, or `seq` going backwards).
    OrderViolation,
    /// The same event arrived twice without being marked as a redelivery.
    DuplicateEvent,
    /// A `seq` was skipped, or an event had none where the profile requires it.
    SeqGap,
    /// A `tool_executing` without its `tool_completed`, or the reverse.
    UnpairedTool,
    /// A frame carried another user's identity or message marker.
    IsolationBreach,
    /// A step ran out of time.
    Timeout,
    /// The answer's content did not hold up.
    ContentMismatch,
    /// The connection ended without a close frame (reset, protocol error, EOF): 1006.
    ConnectionLost,
    /// The server closed the connection (any code but 1011) before the journey was done;
    /// the message names the code and reason.
    ConnectionClosed,
    /// The harness itself could not carry out a check or a step (a crashed virtual user, a
    /// check that could not run, a fault that could not be switched). Never a pass.
    Harness(String),
    /// No journey ran where one should have (a scenario whose load started none).
    NoJourneys,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AuthRejected => f.write_str("auth_rejected"),
            Self::Ws1011 => f.write_str("ws_1011"),
            Self::HandshakeFailed => f.write_str("handshake_failed"),
            Self::Unreachable => f.write_str("unreachable"),
            Self::HttpError => f.write_str("http_error"),
            Self::MissingEvent(kind) => write!(f, "missing_event:{kind}"),
            Self::OrderViolation => f.write_str("order_violation"),
            Self::DuplicateEvent => f.write_str("duplicate_event"),
            Self::SeqGap => f.write_str("seq_gap"),
            Self::UnpairedTool => f.write_str("unpaired_tool"),
            Self::IsolationBreach => f.write_str("isolation_breach"),
            Self::Timeout => f.write_str("timeout"),
            Self::ContentMismatch => f.write_str("content_mismatch"),
            Self::ConnectionLost => f.write_str("connection_lost"),
            Self::ConnectionClosed => f.write_str("connection_closed"),
            Self::Harness(what) => write!(f, "harness_error:{what}"),
            Self::NoJourneys => f.write_str("no_journeys"),
        }
    }
}

impl std::str::FromStr for FailureClass {
    type Err = String;

    /// A class as [`fmt::Display`] writes it (a report read back, `merge`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "auth_rejected" => Self::AuthRejected,
            "ws_1011" => Self::Ws1011,
            "handshake_failed" => Self::HandshakeFailed,
            "unreachable" => Self::Unreachable,
            "http_error" => Self::HttpError,
            "order_violation" => Self::OrderViolation,
            "duplicate_event" => Self::DuplicateEvent,
            "seq_gap" => Self::SeqGap,
            "unpaired_tool" => Self::UnpairedTool,
            "isolation_breach" => Self::IsolationBreach,
            "timeout" => Self::Timeout,
            "content_mismatch" => Self::ContentMismatch,
            "connection_lost" => Self::ConnectionLost,
            "connection_closed" => Self::ConnectionClosed,
            "no_journeys" => Self::NoJourneys,
            _ => match text.split_once(':') {
                Some(("missing_event", kind)) => Self::MissingEvent(kind.to_owned()),
                Some(("harness_error", what)) => Self::Harness(what.to_owned()),
                _ => return Err(format!("unknown failure class `{text}`")),
            },
        })
    }
}

/// One finding, pointing at the frame where it showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
    /// Index into the transcript's frames.
    pub frame: Option<usize>,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>, frame: Option<usize>) -> Self {
        Self {
            class,
            message: message.into(),
            frame,
        }
    }
}

/// A frame as received, with when it arrived (since the journey started).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedFrame {
    pub at: Duration,
    pub value: Value,
}

/// Everything one connection received, in order, and how it closed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    pub frames: Vec<ReceivedFrame>,
    /// The close code the server sent, if it closed.
    pub close_code: Option<u16>,
    /// The reason the server gave with its close frame.
    pub close_reason: Option<String>,
    /// Set when the connection ended without a close frame: what the socket said.
    pub lost: Option<String>,
    /// Set when the connection resumed after this `seq`: the first event must follow it
    /// (instead of `connection_established.last_seq`).
    pub resumed_after: Option<u64>,
    /// How many of `frames` (the last ones) were read after the client sent its close: what
    /// the server still sent before it saw the close. Timing decides how many there are.
    pub after_close: usize,
    /// Bytes of the text frames received (the payload, not the WebSocket framing).
    pub bytes_received: u64,
    /// `resync` frames received (docs/protocol.md §4.7).
    pub resyncs: u64,
}

impl Transcript {
    pub fn push(&mut self, at: Duration, value: Value) {
        self.frames.push(ReceivedFrame { at, value });
    }

    /// How the server closed, for messages: `1000 "main cleanup"`.
    pub fn close_text(&self) -> String {
        match (&self.close_code, &self.close_reason) {
            (Some(code), Some(reason)) if !reason.is_empty() => format!("{code} \"{reason}\""),
            (Some(code), _) => format!("{code} (no reason given)"),
            (None, _) => "no close code".into(),
        }
    }

    /// How the connection ended, for a diagnosis; `None` while it was open when read.
    pub fn ending(&self) -> Option<String> {
        match (&self.close_code, &self.lost) {
            (Some(_), _) => Some(format!("closed with {}", self.close_text())),
            (None, Some(lost)) => Some(format!("lost without a close frame: {lost}")),
            (None, None) => None,
        }
    }
}

/// The type of the frame that voids a connection's events after a `seq` (docs/protocol.md
/// §4.7).
pub const RESYNC: &str = "resync";

/// A `resync` frame's `from_seq` (top level, or under `payload`); `None` when it has no
/// whole number there.
pub fn resync_from(frame: &Value) -> Option<u64> {
    (frame.get("from_seq"))
        .or_else(|| frame.get("payload")?.get("from_seq"))
        .and_then(Value::as_u64)
}
