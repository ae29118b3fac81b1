//! Protocol profiles: how to reach a platform and how to read its frames.
//!
//! `apex` is the bundled backend's strict contract (every event has a top-level `seq` and
//! `run_id`). `netra` is the real Netra Apex platform as observed: routes of its own, a
//! `ticket_id`, no `seq`, event fields flat or nested under `data` or `payload`, heartbeats
//! interleaved, a run id and a thread id per run with sub-agents nested inside, errors as
//! `error_message` frames, the answer in `message`. Other platforms are profile files
//! (`profile: ./my-platform.yaml`, docs/scenarios.md).

use serde::Deserialize;
use serde_json::{Value, json};

/// The value at a dotted path (`payload.result.total_calls`, `items.0`); the empty path is
/// the value itself.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |v, key| match v {
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => v.get(key),
    })
}

/// A dotted path into a frame (`payload.run_id`).
pub type FieldPath = Vec<String>;

fn path(text: &str) -> FieldPath {
    text.split('.').map(str::to_owned).collect()
}

/// How frames of one platform are read and which invariants apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Where the frame type may be, tried in order.
    pub type_paths: Vec<FieldPath>,
    /// Where the sequence number may be; empty when the platform has none.
    pub seq_paths: Vec<FieldPath>,
    /// Where the run id may be.
    pub run_id_paths: Vec<FieldPath>,
    /// Where the thread id may be (a run's second id on platforms that have one).
    pub thread_id_paths: Vec<FieldPath>,
    /// Where a tool event names its tool.
    pub tool_name_paths: Vec<FieldPath>,
    /// Frame types that may appear anywhere and are not events (heartbeats, pongs).
    pub ignored_types: Vec<String>,
    /// Every event must carry a `seq`, strictly increasing and gap-free.
    pub require_seq: bool,
    /// Sub-agents may emit their own `agent_started`/`agent_completed` inside a run, so a
    /// run ends at its last `agent_completed`, not its first.
    pub nested_agents: bool,
    /// Routes, fields and frames of the platform.
    pub target: TargetSettings,
}

/// How to reach a platform: routes, field names, the frames it sends and expects. Every
/// field is optional: unset means the `apex` contract's value (the getters give it), so a
/// scenario's `target:` and `--target-setting` override one field at a time
/// ([`TargetSettings::over`]). Strings take `${ENV}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Longest wait for login, the upgrade, and each expected event unless a step says
    /// otherwise (default 10 s).
    #[serde(default, with = "crate::scenario::model::duration_opt")]
    pub timeout: Option<std::time::Duration>,
    #[serde(default)]
    pub login: LoginSettings,
    #[serde(default)]
    pub ticket: TicketSettings,
    #[serde(default)]
    pub ws: WsSettings,
    /// The welcome frame's type, or `none` when the platform sends none.
    #[serde(default)]
    pub welcome: Option<String>,
    /// The message frame: JSON in which `{content}` (the text with the virtual user's
    /// marker), `{marker}` and `{message_id}` are replaced.
    #[serde(default)]
    pub message: Option<Value>,
    /// Acknowledge every event (`{"type":"ack","seq":N}`).
    #[serde(default)]
    pub ack: Option<bool>,
    /// The platform resumes a stream (`resume` steps); without it they cannot run.
    #[serde(default)]
    pub resume: Option<bool>,
    #[serde(default)]
    pub error: ErrorSettings,
    #[serde(default)]
    pub answer: AnswerSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    pub path: Option<String>,
    pub email_field: Option<String>,
    pub password_field: Option<String>,
    /// Dotted path of the access token in the answer.
    pub token: Option<String>,
    /// Dotted path of the user id in the answer.
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketSettings {
    pub path: Option<String>,
    /// Dotted path of the ticket in the answer.
    pub field: Option<String>,
    /// The query parameter that carries it on the upgrade.
    pub param: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    pub path: Option<String>,
    /// Added to every upgrade's query (`mode=legacy`).
    pub query: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSettings {
    /// The error frame's type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Dotted path of its code.
    pub code: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSettings {
    /// Dotted path, in the final `agent_completed`, of the object that `expect_response`'s
    /// `json` and `near_truth` paths start from; empty: the whole frame.
    pub root: Option<String>,
    /// Where the answer's text is, under `root` (the first that is there).
    pub text: Option<Vec<String>>,
}

fn pick<T: Clone>(over: &Option<T>, base: &Option<T>) -> Option<T> {
    over.clone().or_else(|| base.clone())
}

impl TargetSettings {
    /// `over`'s fields where it sets them, this one's elsewhere.
    pub fn over(&self, over: &TargetSettings) -> TargetSettings {
        TargetSettings {
            timeout: pick(&over.timeout, &self.timeout),
            login: LoginSettings {
                path: pick(&over.login.path, &self.login.path),
                email_field: pick(&over.login.email_field, &self.login.email_field),
                password_field: pick(&over.login.password_field, &self.login.password_field),
                token: pick(&over.login.token, &self.login.token),
                user_id: pick(&over.login.user_id, &self.login.user_id),
            },
            ticket: TicketSettings {
                path: pick(&over.ticket.path, &self.ticket.path),
                field: pick(&over.ticket.field, &self.ticket.field),
                param: pick(&over.ticket.param, &self.ticket.param),
            },
            ws: WsSettings {
                path: pick(&over.ws.path, &self.ws.path),
                query: pick(&over.ws.query, &self.ws.query),
            },
            welcome: pick(&over.welcome, &self.welcome),
            message: pick(&over.message, &self.message),
            ack: pick(&over.ack, &self.ack),
            resume: pick(&over.resume, &self.resume),
            error: ErrorSettings {
                kind: pick(&over.error.kind, &self.error.kind),
                code: pick(&over.error.code, &self.error.code),
            },
            answer: AnswerSettings {
                root: pick(&over.answer.root, &self.answer.root),
                text: pick(&over.answer.text, &self.answer.text),
            },
        }
    }

    /// Every string passed through `interpolate` (`${NAME}` from the environment).
    pub fn interpolated(&self, interpolate: &dyn Fn(&str) -> String) -> TargetSettings {
        let one = |s: &Option<String>| s.as_deref().map(interpolate);
        TargetSettings {
            timeout: self.timeout,
            login: LoginSettings {
                path: one(&self.login.path),
                email_field: one(&self.login.email_field),
                password_field: one(&self.login.password_field),
                token: one(&self.login.token),
                user_id: one(&self.login.user_id),
            },
            ticket: TicketSettings {
                path: one(&self.ticket.path),
                field: one(&self.ticket.field),
                param: one(&self.ticket.param),
            },
            ws: WsSettings {
                path: one(&self.ws.path),
                query: one(&self.ws.query),
            },
            welcome: one(&self.welcome),
            message: self.message.clone(),
            ack: self.ack,
            resume: self.resume,
            error: ErrorSettings {
                kind: one(&self.error.kind),
                code: one(&self.error.code),
            },
            answer: self.answer.clone(),
        }
    }

    pub fn login_path(&self) -> &str {
        self.login.path.as_deref().unwrap_or("/api/auth/login")
    }
    pub fn login_email_field(&self) -> &str {
        self.login.email_field.as_deref().unwrap_or("email")
    }
    pub fn login_password_field(&self) -> &str {
        self.login.password_field.as_deref().unwrap_or("password")
    }
    pub fn login_token(&self) -> &str {
        self.login.token.as_deref().unwrap_or("access_token")
    }
    pub fn login_user_id(&self) -> &str {
        self.login.user_id.as_deref().unwrap_or("user.id")
    }
    pub fn ticket_path(&self) -> &str {
        self.ticket
            .path
            .as_deref()
            .unwrap_or("/api/websocket/ticket")
    }
    pub fn ticket_field(&self) -> &str {
        self.ticket.field.as_deref().unwrap_or("ticket")
    }
    pub fn ticket_param(&self) -> &str {
        self.ticket.param.as_deref().unwrap_or("ticket")
    }
    pub fn ws_path(&self) -> &str {
        self.ws.path.as_deref().unwrap_or("/ws")
    }
    pub fn ws_query(&self) -> &str {
        self.ws.query.as_deref().unwrap_or_default()
    }
    /// The welcome frame's type; `None` when the platform sends none.
    pub fn welcome(&self) -> Option<&str> {
        match self.welcome.as_deref() {
            Some("none") => None,
            Some(kind) => Some(kind),
            None => Some("connection_established"),
        }
    }
    /// The message frame template.
    pub fn message(&self) -> Value {
        self.message.clone().unwrap_or_else(|| {
            json!({ "type": "user_message", "payload": { "content": "{content}", "message_id": "{message_id}" } })
        })
    }
    pub fn ack(&self) -> bool {
        self.ack.unwrap_or(false)
    }
    pub fn resume(&self) -> bool {
        self.resume.unwrap_or(true)
    }
    pub fn error_type(&self) -> &str {
        self.error.kind.as_deref().unwrap_or("error")
    }
    pub fn error_code(&self) -> &str {
        self.error.code.as_deref().unwrap_or("payload.code")
    }
    pub fn answer_root(&self) -> &str {
        self.answer.root.as_deref().unwrap_or("payload")
    }
    pub fn answer_text(&self) -> Vec<&str> {
        match &self.answer.text {
            Some(paths) => paths.iter().map(String::as_str).collect(),
            None => vec!["final_response"],
        }
    }
}

/// The message frame for `content`: the template with its placeholders filled in.
pub fn message_frame(template: &Value, content: &str, marker: &str, message_id: &str) -> Value {
    match template {
        Value::String(s) => Value::String(
            s.replace("{content}", content)
                .replace("{marker}", marker)
                .replace("{message_id}", message_id),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| message_frame(v, content, marker, message_id))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), message_frame(v, content, marker, message_id)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Profile {
    /// The bundled backend's contract.
    pub fn apex() -> Self {
        Self {
            name: "apex".into(),
            type_paths: vec![path("type")],
            seq_paths: vec![path("seq")],
            run_id_paths: vec![path("run_id")],
            thread_id_paths: vec![path("thread_id")],
            tool_name_paths: vec![path("payload.tool_name")],
            ignored_types: vec!["pong".into(), "connection_established".into()],
            require_seq: true,
            nested_agents: false,
            target: TargetSettings::default(),
        }
    }

    /// The real Netra Apex platform, as observed running.
    pub fn netra() -> Self {
        let nested = |field: &str| {
            vec![
                path(field),
                path(&format!("data.{field}")),
                path(&format!("payload.{field}")),
            ]
        };
        Self {
            name: "netra".into(),
            type_paths: vec![path("type"), path("event"), path("data.type")],
            seq_paths: nested("seq"),
            run_id_paths: nested("run_id"),
            thread_id_paths: nested("thread_id"),
            tool_name_paths: [nested("tool_name"), nested("tool")].concat(),
            ignored_types: vec![
                "heartbeat".into(),
                "pong".into(),
                "ping".into(),
                "connection_established".into(),
            ],
            require_seq: false,
            nested_agents: true,
            target: TargetSettings {
                login: LoginSettings {
                    path: Some("/auth/login".into()),
                    ..LoginSettings::default()
                },
                ticket: TicketSettings {
                    field: Some("ticket_id".into()),
                    ..TicketSettings::default()
                },
                resume: Some(false),
                error: ErrorSettings {
                    kind: Some("error_message".into()),
                    code: Some("data.error_code".into()),
                },
                answer: AnswerSettings {
                    root: Some(String::new()),
                    text: Some(vec![
                        "message".into(),
                        "data.message".into(),
                        "payload.final_response".into(),
                    ]),
                },
                ..TargetSettings::default()
            },
        }
    }

    /// A profile by name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "apex" => Some(Self::apex()),
            "netra" => Some(Self::netra()),
            _ => None,
        }
    }

    fn first<'a>(frame: &'a Value, paths: &[FieldPath]) -> Option<&'a Value> {
        paths
            .iter()
            .find_map(|p| p.iter().try_fold(frame, |v, key| v.get(key)))
    }

    pub fn frame_type<'a>(&self, frame: &'a Value) -> Option<&'a str> {
        Self::first(frame, &self.type_paths)?.as_str()
    }

    pub fn seq(&self, frame: &Value) -> Option<u64> {
        Self::first(frame, &self.seq_paths)?.as_u64()
    }

    pub fn run_id<'a>(&self, frame: &'a Value) -> Option<&'a str> {
        Self::first(frame, &self.run_id_paths)?.as_str()
    }

    pub fn thread_id<'a>(&self, frame: &'a Value) -> Option<&'a str> {
        Self::first(frame, &self.thread_id_paths)?.as_str()
    }

    pub fn tool_name<'a>(&self, frame: &'a Value) -> Option<&'a str> {
        Self::first(frame, &self.tool_name_paths)?.as_str()
    }

    pub fn is_ignored(&self, frame_type: &str) -> bool {
        self.ignored_types.iter().any(|t| t == frame_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn netra_reads_fields_flat_or_nested() {
        let netra = Profile::netra();
        let flat = json!({ "type": "tool_completed", "run_id": "r1", "tool_name": "t" });
        let nested = json!({ "type": "tool_completed", "data": { "run_id": "r1", "tool": "t" } });
        for frame in [&flat, &nested] {
            assert_eq!(netra.run_id(frame), Some("r1"));
            assert_eq!(netra.tool_name(frame), Some("t"));
            assert_eq!(netra.seq(frame), None);
        }
        assert!(netra.is_ignored("heartbeat"));
    }

    #[test]
    fn apex_reads_only_the_documented_places() {
        let apex = Profile::apex();
        let frame =
            json!({ "type": "agent_started", "seq": 3, "run_id": "r", "data": { "seq": 9 } });
        assert_eq!(apex.seq(&frame), Some(3));
        assert_eq!(
            Profile::by_name("netra").map(|p| p.name),
            Some("netra".to_owned())
        );
        assert!(Profile::by_name("other").is_none());
    }
}
