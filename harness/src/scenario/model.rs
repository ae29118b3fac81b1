//! The scenario file, as data. Every section rejects unknown keys, so a typo is an error with
//! a line and a column, never a silently ignored setting. `docs/scenarios.md` documents each
//! key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Protocol profile: `apex` (default), `netra`, or a profile file (`./my-platform.yaml`,
    /// relative to this file).
    #[serde(default)]
    pub profile: Option<Spanned<String>>,
    /// `false`: written for another platform; `run` against the bundled backend leaves it
    /// out (and says so), `run --target URL` runs it.
    #[serde(default = "yes")]
    pub bundled: bool,
    /// Where the profile finds a frame's fields, overriding the profile's defaults.
    #[serde(default)]
    pub fields: FieldPaths,
    /// The platform's routes, fields and frames, over the profile's (docs/scenarios.md).
    #[serde(default)]
    pub target: crate::profile::TargetSettings,
    /// Who the virtual users are; they take these in turn.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub load: Load,
    pub steps: Vec<Step>,
    /// Metric name → threshold expressions (`journey_duration: ["p(99) < 3000"]`).
    #[serde(default)]
    pub thresholds: BTreeMap<String, Vec<Spanned<String>>>,
    /// Faults injected while the scenario runs (docs/scenarios.md, "Faults").
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Bundled backends on the same Postgres and Redis that the virtual users spread over
    /// (docs/scenarios.md, "Several instances"); more than one needs the bundled target on
    /// the services, elsewhere the scenario is skipped.
    #[serde(default = "one")]
    pub instances: u32,
}

/// A profile file: a built-in profile to start from, then field paths and target settings
/// over it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub name: String,
    /// `apex` (default) or `netra`.
    #[serde(default)]
    pub base: Option<Spanned<String>>,
    #[serde(default)]
    pub fields: FieldPaths,
    /// Sub-agents nest their own runs inside the user's run.
    #[serde(default)]
    pub nested_agents: Option<bool>,
    #[serde(default)]
    pub target: crate::profile::TargetSettings,
}

/// Where a fault sits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPlace {
    /// Between the harness and the target (any target).
    #[default]
    Target,
    /// Between the bundled backend and Redis.
    Redis,
    /// Between the bundled backend and Postgres.
    Postgres,
}

/// One fault: a toxic, where, which way, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Needed to switch it with `fault` steps.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub between: FaultPlace,
    #[serde(default)]
    pub direction: crate::fault::Direction,
    pub toxic: ToxicSpec,
    /// When it starts, from the scenario's start (default: at once).
    #[serde(default, with = "duration_opt")]
    pub at: Option<Duration>,
    /// How long it lasts (default: to the scenario's end).
    #[serde(default, rename = "for", with = "duration_opt")]
    pub lasts: Option<Duration>,
    /// `false`: off until a `fault` step switches it on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `between: target` only: the virtual users (0-based) whose connections go through the
    /// fault; empty (default): every one.
    #[serde(default)]
    pub vus: Vec<u32>,
    /// `between: redis|postgres` only: which bundled instance's service connections go
    /// through the fault (0-based, below the scenario's `instances`; default 0).
    #[serde(default)]
    pub instance: Option<u32>,
}

fn yes() -> bool {
    true
}

/// The toxics, as scenario files spell them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToxicSpec {
    Latency {
        #[serde(with = "duration")]
        delay: Duration,
        #[serde(default, with = "duration_opt")]
        jitter: Option<Duration>,
    },
    Bandwidth {
        bytes_per_sec: u64,
    },
    Slicer {
        size: usize,
        #[serde(default)]
        variation: usize,
        #[serde(default, with = "duration_opt")]
        delay: Option<Duration>,
    },
    Timeout {
        #[serde(default, with = "duration_opt")]
        after: Option<Duration>,
    },
    ResetPeer {
        #[serde(default, with = "duration_opt")]
        after: Option<Duration>,
    },
    LimitData {
        bytes: u64,
    },
    CloseAfterFrames {
        frames: u64,
    },
    StripHeader {
        name: String,
    },
    SetHeader {
        name: String,
        value: String,
    },
    Down,
}

impl ToxicSpec {
    pub fn toxic(&self) -> crate::fault::Toxic {
        use crate::fault::Toxic;
        match self.clone() {
            Self::Latency { delay, jitter } => Toxic::Latency {
                delay,
                jitter: jitter.unwrap_or_default(),
            },
            Self::Bandwidth { bytes_per_sec } => Toxic::Bandwidth { bytes_per_sec },
            Self::Slicer {
                size,
                variation,
                delay,
            } => Toxic::Slicer {
                size: size.max(1),
                variation,
                delay: delay.unwrap_or_default(),
            },
            Self::Timeout { after } => Toxic::Timeout {
                after: after.unwrap_or_default(),
            },
            Self::ResetPeer { after } => Toxic::ResetPeer {
                after: after.unwrap_or_default(),
            },
            Self::LimitData { bytes } => Toxic::LimitData { bytes },
            Self::CloseAfterFrames { frames } => Toxic::CloseAfterFrames { frames },
            Self::StripHeader { name } => Toxic::StripHeader { name },
            Self::SetHeader { name, value } => Toxic::SetHeader { name, value },
            Self::Down => Toxic::Down,
        }
    }
}

/// `- fault: { name: slow_redis, enabled: true }`: switches a named fault on or off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    pub name: String,
    pub enabled: bool,
}

/// Field paths (dotted) that override the profile's, for platforms with other shapes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPaths {
    #[serde(default, rename = "type")]
    pub kind: Vec<String>,
    #[serde(default)]
    pub seq: Vec<String>,
    #[serde(default)]
    pub run_id: Vec<String>,
    #[serde(default)]
    pub thread_id: Vec<String>,
    #[serde(default)]
    pub tool_name: Vec<String>,
    /// Frame types that are never events (heartbeats), added to the profile's.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Require a `seq` on every event (overrides the profile).
    #[serde(default)]
    pub require_seq: Option<bool>,
}

/// A user, by credentials (with `${ENV}` interpolation at run time) or a fixture pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A pool of fixture users (`users.yaml`: the users with `pool: <name>`), e.g. `vu`.
    #[serde(default)]
    pub pool: Option<String>,
}

/// How much load: closed (virtual users × iterations or duration) or open (arrival rate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    #[serde(default = "one")]
    pub vus: u32,
    /// Journeys per virtual user.
    #[serde(default)]
    pub iterations: Option<u32>,
    /// Keep starting journeys for this long instead of a fixed count.
    #[serde(default, with = "duration_opt")]
    pub duration: Option<Duration>,
    /// Start the virtual users evenly over this time.
    #[serde(default, with = "duration_opt")]
    pub ramp_up: Option<Duration>,
    /// Journeys started per second (open model), instead of as fast as they finish.
    #[serde(default)]
    pub arrival_rate: Option<f64>,
    /// When a virtual user's `login` steps really log in.
    #[serde(default)]
    pub login: LoginMode,
}

/// When `login` steps log in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginMode {
    /// Every journey logs in: the honest choice when login itself is under test.
    #[default]
    PerJourney,
    /// A virtual user logs in on its first journey and its later journeys reuse the session
    /// until the token is close to expiry, then log in again: load measures the chat path,
    /// not password hashing.
    OncePerVu,
}

fn one() -> u32 {
    1
}

impl Default for Load {
    fn default() -> Self {
        Self {
            vus: 1,
            iterations: None,
            duration: None,
            ramp_up: None,
            arrival_rate: None,
            login: LoginMode::PerJourney,
        }
    }
}

/// One step of a journey.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Login(LoginStep),
    Connect(ConnectStep),
    Send(SendStep),
    Expect(ExpectStep),
    ExpectResponse(ResponseStep),
    Disconnect(Empty),
    Resume(ResumeStep),
    #[serde(with = "duration")]
    Wait(Duration),
    Http(HttpStep),
    ExpectClose(CloseStep),
    Fault(FaultStep),
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Login(_) => "login",
            Self::Connect(_) => "connect",
            Self::Send(_) => "send",
            Self::Expect(_) => "expect",
            Self::ExpectResponse(_) => "expect_response",
            Self::Disconnect(_) => "disconnect",
            Self::Resume(_) => "resume",
            Self::Wait(_) => "wait",
            Self::Http(_) => "http",
            Self::ExpectClose(_) => "expect_close",
            Self::Fault(_) => "fault",
        }
    }
}

/// A step without options: `- disconnect: {}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStep {
    /// Expect login to fail with this status (e.g. 401) instead of succeeding.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// Use this password instead of the user's (for bad-credential scenarios).
    #[serde(default)]
    pub password: Option<String>,
}

/// How the client presents its credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportName {
    #[default]
    Header,
    Subprotocol,
    Ticket,
    LbHeader,
    None,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectStep {
    #[serde(default)]
    pub transport: TransportName,
    /// Present this token instead of the logged-in user's (bad-token scenarios).
    #[serde(default)]
    pub token: Option<String>,
    /// Expect the upgrade to be refused with this HTTP status.
    #[serde(default)]
    pub expect_status: Option<u16>,
    #[serde(default, with = "duration_opt")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    /// A `user_message` with this text (the virtual user's marker is appended).
    #[serde(default)]
    pub content: Option<String>,
    /// Any JSON frame, sent as is.
    #[serde(default)]
    pub frame: Option<Value>,
    /// Raw text, sent as is (for malformed-frame scenarios).
    #[serde(default)]
    pub raw: Option<String>,
    /// Send a text frame of this many bytes (oversized-frame scenarios).
    #[serde(default)]
    pub size: Option<usize>,
}

/// An expected event: a type, or a map with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EventExpectation {
    Type(String),
    Detailed(DetailedEvent),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, with = "duration_opt")]
    pub timeout: Option<Duration>,
    /// May be absent.
    #[serde(default)]
    pub optional: bool,
    /// May arrive several times in a row.
    #[serde(default)]
    pub repeat: bool,
    /// Dotted path → expected JSON value.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    /// Events in the order they must arrive; other frames may come in between.
    #[serde(default)]
    pub events: Vec<EventExpectation>,
    /// An error frame with this code, instead of events.
    #[serde(default)]
    pub error: Option<String>,
    /// Bound of the whole sequence.
    #[serde(default, with = "duration_opt")]
    pub timeout: Option<Duration>,
    /// Frame types that may be interleaved and are skipped (heartbeats, pongs).
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// A number in the answer checked against a fixture truth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearTruth {
    /// Dotted path into `agent_completed.payload` (`result.projected_monthly_savings_usd`).
    pub path: String,
    /// Key in the user's `fixtures/expected/<dataset>.yaml`.
    pub truth: String,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    1e-4
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseStep {
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub not_contains: Vec<String>,
    #[serde(default)]
    pub regex: Vec<String>,
    /// Dotted path into `agent_completed.payload` → expected JSON value.
    #[serde(default)]
    pub json: BTreeMap<String, Value>,
    #[serde(default)]
    pub near_truth: Vec<NearTruth>,
    #[serde(default)]
    pub min_length: Option<usize>,
    /// No stack traces, Python reprs or internal error text in the answer.
    #[serde(default)]
    pub no_leaked_internals: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeVia {
    /// A new connection sending `resume {last_seq}` as its first frame.
    #[default]
    Frame,
    /// A new connection with `?last_seq=`.
    Query,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeStep {
    #[serde(default)]
    pub via: ResumeVia,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<Value>,
    /// Send the logged-in user's token.
    #[serde(default)]
    pub auth: bool,
    #[serde(default)]
    pub status: Option<u16>,
    /// Dotted path → expected JSON value in the response body.
    #[serde(default)]
    pub json: BTreeMap<String, Value>,
    /// Prometheus metric (a sample's series as written, labels included) → bound, e.g.
    /// `process_resident_memory_bytes: "< 500000000"`; for a `/metrics` endpoint in the
    /// Prometheus or OpenMetrics text format (where a counter's samples end in `_total`).
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseStep {
    pub code: u16,
    #[serde(default, with = "duration_opt")]
    pub timeout: Option<Duration>,
}

/// Parses `250ms`, `2s`, `1.5s`, `3m`.
pub fn parse_duration(text: &str) -> Result<Duration, super::ScenarioError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| super::ScenarioError::NotADuration {
            text: text.to_owned(),
        })?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(super::ScenarioError::UnknownUnit {
                text: text.to_owned(),
            });
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(super::super::ScenarioError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("fast"),
            Err(super::super::ScenarioError::NotADuration { .. })
        ));
    }
}
