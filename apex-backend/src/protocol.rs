//! The wire contract of `/ws` (written out in `docs/protocol.md`): server events, connection
//! frames, client frames and their legacy spellings, error and close codes.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// Largest `user_message` content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 32 * 1024;
/// Largest WebSocket message; bigger ones close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Close codes the server sends.
pub mod close {
    /// Server shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Frame larger than [`super::MAX_FRAME_BYTES`].
    pub const TOO_BIG: u16 = 1009;
    /// A genuine internal failure; never for a client mistake.
    pub const INTERNAL: u16 = 1011;
}

/// The types of events on a user's stream. Every one of them carries a `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    AgentStarted,
    AgentThinking,
    ToolExecuting,
    ToolCompleted,
    AgentCompleted,
    /// A run that could not finish (server shutdown, store failure); carries partial results.
    AgentError,
}

/// An event of a user's stream, before the bus gives it a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub kind: EventType,
    pub run_id: Uuid,
    pub thread_id: Uuid,
    pub agent_name: String,
    pub payload: Value,
}

/// An event as sent: a draft with its `seq` and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub seq: u64,
    pub run_id: Uuid,
    pub thread_id: Uuid,
    pub agent_name: String,
    /// RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub payload: Value,
    /// Set on re-sends of an event not yet acknowledged, and on replays of events this
    /// connection already sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivery: bool,
}

impl Event {
    pub fn new(draft: EventDraft, seq: u64) -> Self {
        Self {
            kind: draft.kind,
            seq,
            run_id: draft.run_id,
            thread_id: draft.thread_id,
            agent_name: draft.agent_name,
            timestamp: now_rfc3339(),
            payload: draft.payload,
            redelivery: false,
        }
    }

    /// The event as JSON text, with `redelivery` set as given.
    pub fn to_json(&self, redelivery: bool) -> String {
        if redelivery == self.redelivery {
            serde_json::to_string(self)
        } else {
            serde_json::to_string(&Event {
                redelivery,
                ..self.clone()
            })
        }
        .expect("events serialize")
    }
}

/// Current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&format).expect("timestamps format")
}

/// Error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidJson,
    InvalidFrame,
    UnknownType,
    EmptyMessage,
    MessageTooLarge,
    RateLimited,
    TooManyRuns,
    ThreadNotFound,
    InvalidSeq,
    ReplayTruncated,
    ShuttingDown,
    ServiceUnavailable,
}

/// An `error` frame: the connection stays open.
pub fn error_frame(code: ErrorCode, message: impl Into<String>, details: Option<Value>) -> String {
    let mut payload = json!({ "code": code, "message": message.into() });
    if let Some(details) = details {
        payload["details"] = details;
    }
    json!({ "type": "error", "timestamp": now_rfc3339(), "payload": payload }).to_string()
}

/// A frame a client sent, after the legacy spellings were folded in.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `user_message` (also `chat_message`, `start_agent`).
    UserMessage {
        content: String,
        thread_id: Option<Uuid>,
        /// Echoed in `agent_started` so a client can match its message to the run.
        client_message_id: Option<String>,
    },
    /// Cumulative acknowledgement of every event up to `seq`.
    Ack {
        seq: u64,
    },
    /// Replay every retained event after `last_seq`.
    Resume {
        last_seq: u64,
    },
    Ping {
        payload: Value,
    },
}

/// Why a client frame was refused; each maps to one error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidFrame(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("message content is empty")]
    EmptyMessage,
    #[error("message content is {0} bytes; the limit is {MAX_CONTENT_BYTES}")]
    MessageTooLarge(usize),
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::InvalidFrame(_) => ErrorCode::InvalidFrame,
            Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::EmptyMessage => ErrorCode::EmptyMessage,
            Self::MessageTooLarge(_) => ErrorCode::MessageTooLarge,
        }
    }
}

/// Where a user message's text may be, in the order they are tried (the real platform's
/// clients use all of them).
const CONTENT_PATHS: &[&[&str]] = &[
    &["payload", "content"],
    &["payload", "text"],
    &["payload", "user_request"],
    &["payload", "message"],
    &["content"],
    &["text"],
    &["message"],
    &["user_request"],
];

fn lookup<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// The first of `keys` found at the top level or under `payload`.
fn field<'a>(frame: &'a Value, key: &str) -> Option<&'a Value> {
    frame.get(key).or_else(|| frame.get("payload")?.get(key))
}

fn seq_field(frame: &Value, key: &str) -> Result<u64, FrameError> {
    match field(frame, key) {
        Some(v) => v.as_u64().ok_or_else(|| {
            FrameError::InvalidFrame(format!("`{key}` must be a non-negative integer"))
        }),
        None => Err(FrameError::InvalidFrame(format!("`{key}` is required"))),
    }
}

/// Parses one text frame from a client.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let frame: Value =
        serde_json::from_str(text).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
    let Some(kind) = frame.get("type") else {
        return Err(FrameError::InvalidFrame(
            "frame must be a JSON object with a string `type`".into(),
        ));
    };
    let kind = kind
        .as_str()
        .ok_or_else(|| FrameError::InvalidFrame("`type` must be a string".into()))?;
    match kind {
        "user_message" | "chat_message" | "start_agent" => {
            let content = CONTENT_PATHS
                .iter()
                .find_map(|path| lookup(&frame, path))
                .ok_or(FrameError::EmptyMessage)?;
            let content = content.as_str().ok_or_else(|| {
                FrameError::InvalidFrame("message content must be a string".into())
            })?;
            if content.trim().is_empty() {
                return Err(FrameError::EmptyMessage);
            }
            if content.len() > MAX_CONTENT_BYTES {
                return Err(FrameError::MessageTooLarge(content.len()));
            }
            let thread_id = match field(&frame, "thread_id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .ok_or_else(|| {
                            FrameError::InvalidFrame("`thread_id` must be a UUID".into())
                        })?,
                ),
            };
            let client_message_id = ["message_id", "client_message_id"]
                .iter()
                .find_map(|k| field(&frame, k))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            Ok(ClientFrame::UserMessage {
                content: content.to_owned(),
                thread_id,
                client_message_id,
            })
        }
        "ack" => Ok(ClientFrame::Ack {
            seq: seq_field(&frame, "seq")?,
        }),
        "resume" => Ok(ClientFrame::Resume {
            last_seq: seq_field(&frame, "last_seq")?,
        }),
        "ping" => Ok(ClientFrame::Ping {
            payload: frame.get("payload").cloned().unwrap_or(Value::Null),
        }),
        other => Err(FrameError::UnknownType(other.chars().take(64).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_legacy_spelling_of_a_user_message_is_accepted() {
        for text in [
            r#"{"type":"user_message","payload":{"content":"hi"}}"#,
            r#"{"type":"chat_message","payload":{"text":"hi"}}"#,
            r#"{"type":"start_agent","payload":{"user_request":"hi"}}"#,
            r#"{"type":"user_message","content":"hi"}"#,
            r#"{"type":"user_message","text":"hi"}"#,
            r#"{"type":"user_message","message":"hi"}"#,
        ] {
            match parse_client_frame(text) {
                Ok(ClientFrame::UserMessage { content, .. }) => assert_eq!(content, "hi", "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_frames_get_their_own_codes() {
        let code = |t: &str| parse_client_frame(t).unwrap_err().code();
        assert_eq!(code("{not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"teleport"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"user_message","payload":{"content":"  "}}"#),
            ErrorCode::EmptyMessage
        );
        assert_eq!(code(r#"{"type":"user_message"}"#), ErrorCode::EmptyMessage);
        assert_eq!(code(r#"{"type":"ack","seq":-1}"#), ErrorCode::InvalidFrame);
        let big = format!(
            r#"{{"type":"user_message","payload":{{"content":"{}"}}}}"#,
            "x".repeat(MAX_CONTENT_BYTES + 1)
        );
        assert_eq!(code(&big), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn ack_and_resume_read_top_level_or_payload() {
        assert_eq!(
            parse_client_frame(r#"{"type":"ack","seq":7}"#),
            Ok(ClientFrame::Ack { seq: 7 })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"resume","payload":{"last_seq":3}}"#),
            Ok(ClientFrame::Resume { last_seq: 3 })
        );
    }

    #[test]
    fn redelivery_flag_is_only_written_when_set() {
        let event = Event::new(
            EventDraft {
                kind: EventType::AgentStarted,
                run_id: Uuid::nil(),
                thread_id: Uuid::nil(),
                agent_name: "supervisor".into(),
                payload: json!({}),
            },
            1,
        );
        assert!(!event.to_json(false).contains("redelivery"));
        assert!(event.to_json(true).contains(r#""redelivery":true"#));
    }
}
