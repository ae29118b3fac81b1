//! Protocol profiles: how to read a frame of a given platform.
//!
//! `apex` is the bundled backend's strict contract (every event has a top-level `seq` and
//! `run_id`). `netra` is the real platform as DESIGN §7 describes it: no `seq`, event fields
//! flat or nested under `data` or `payload`, heartbeats interleaved, sub-agents with their own
//! `agent_started`/`agent_completed`.

use serde_json::Value;

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
    /// Where a tool event names its tool.
    pub tool_name_paths: Vec<FieldPath>,
    /// Frame types that may appear anywhere and are not events (heartbeats, pongs).
    pub ignored_types: Vec<String>,
    /// Every event must carry a `seq`, strictly increasing and gap-free.
    pub require_seq: bool,
    /// Sub-agents may emit their own `agent_started`/`agent_completed` inside a run, so a
    /// run ends at its last `agent_completed`, not its first.
    pub nested_agents: bool,
}

impl Profile {
    /// The bundled backend's contract.
    pub fn apex() -> Self {
        Self {
            name: "apex".into(),
            type_paths: vec![path("type")],
            seq_paths: vec![path("seq")],
            run_id_paths: vec![path("run_id")],
            tool_name_paths: vec![path("payload.tool_name")],
            ignored_types: vec!["pong".into(), "connection_established".into()],
            require_seq: true,
            nested_agents: false,
        }
    }

    /// The real Netra Apex platform (DESIGN §7).
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
            tool_name_paths: [nested("tool_name"), nested("tool")].concat(),
            ignored_types: vec![
                "heartbeat".into(),
                "pong".into(),
                "ping".into(),
                "connection_established".into(),
            ],
            require_seq: false,
            nested_agents: true,
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
