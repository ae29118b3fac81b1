//! One virtual user's journey through a scenario's steps. Each step either holds or ends the
//! journey with a classified failure; everything received is kept per connection and held to
//! the profile's invariants at the end.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::JourneyOutcome;
use crate::client::{
    ClientFailure, Connection, Session, Target, Transport, connect_with, login_with, send_retrying,
};
pub use crate::profile::lookup;
use crate::profile::{Profile, message_frame};
use crate::runner::RunError;
use crate::runner::cutoff::{Cut, Cutoff};
use crate::scenario::{
    CloseStep, ConnectStep, EventExpectation, ExpectStep, HttpStep, LoginStep, ResponseStep,
    ResumeStep, ResumeVia, SendStep, Step, TransportName,
};
use crate::verify::{Failure, FailureClass, check_connection};

/// Text that must never reach a user: stack traces and panics of Python, JavaScript, Java,
/// Go and Rust, language reprs of objects and dicts, driver errors. Each with its name for
/// the message.
const LEAKED_INTERNALS: &[(&str, &str)] = &[
    ("a Python traceback", r"Traceback \(most recent call last\)"),
    ("a Python stack frame", r#"File "[^"]+", line \d+"#),
    (
        "a Python object repr",
        r"\b[A-Z][A-Za-z0-9_]*\([a-z_][a-z0-9_]*=",
    ),
    ("a Python dict repr", r"\{'[^'\n]{1,80}': "),
    ("a Python object address", r" object at 0x[0-9a-fA-F]+"),
    ("Python's NoneType", r"\bNoneType\b"),
    (
        "a JavaScript stack frame",
        r"\bat [^\s()]+ \([^()\s]+:\d+:\d+\)",
    ),
    (
        "a JavaScript error",
        r"\b(TypeError|ReferenceError|SyntaxError): ",
    ),
    ("a Java stack frame", r"\bat [\w$.]+\([\w$]+\.java:\d+\)"),
    ("a Java exception", r"Exception in thread "),
    ("a Go panic", r"goroutine \d+ \[[a-z ]+\]:"),
    ("a Rust panic", r"panicked at"),
    ("a Rust backtrace", r"stack backtrace|RUST_BACKTRACE"),
    ("a SQL error", r"SQLSTATE"),
    ("a driver's error", r"\b(sqlx|redis)::"),
];

/// The first leak of internals in `text`, by name.
fn leaked_internals(text: &str) -> Option<&'static str> {
    static PATTERNS: std::sync::OnceLock<regex::RegexSet> = std::sync::OnceLock::new();
    let set = PATTERNS.get_or_init(|| {
        // ASCII word boundaries: the names they delimit are ASCII, and a Unicode `\b` keeps
        // the set off the lazy DFA (several times the instructions of the whole journey).
        let ascii = |p: &&str| p.replace(r"\b", r"(?-u:\b)");
        regex::RegexSet::new(LEAKED_INTERNALS.iter().map(|(_, p)| p).map(ascii))
            .expect("valid patterns")
    });
    let first = set.matches(text).into_iter().next()?;
    Some(LEAKED_INTERNALS[first].0)
}

/// What every journey of a run shares.
pub struct JourneyContext<'a> {
    pub http: &'a reqwest::Client,
    pub target: &'a Target,
    pub profile: &'a Profile,
    pub timeout: Duration,
    /// The user's fixture truth (`fixtures/expected/<dataset>.yaml`), if known.
    pub truth: Option<&'a Value>,
    /// The scenario's faults, for `fault` steps.
    pub faults: Option<&'a crate::fault::ScenarioFaults>,
    /// The run's `--max-duration` and `--fail-fast`.
    pub cutoff: &'a Cutoff,
    /// The run's isolation check: the user and run ids a journey learns are added to it as
    /// they are learnt, so other journeys' frames are checked against them.
    pub isolation: Option<&'a crate::verify::Isolation>,
}

/// A virtual user's session, kept across its journeys when the scenario logs in once per
/// virtual user (`load.login: once_per_vu`).
#[derive(Debug, Default)]
pub struct VuSession {
    /// The session and when it must be renewed by logging in again.
    kept: Option<(Session, Instant)>,
}

/// A token whose expiry cannot be read (not a JWT, no `exp`) is renewed after this long.
const UNKNOWN_EXPIRY_REUSE: Duration = Duration::from_secs(60);
/// A session is renewed this long before its token expires, so no journey starts with a
/// token about to lapse mid-journey.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(60);

impl VuSession {
    /// The kept session, unless it is due for renewal.
    fn fresh(&self) -> Option<&Session> {
        self.kept
            .as_ref()
            .filter(|(_, renew_at)| Instant::now() < *renew_at)
            .map(|(session, _)| session)
    }

    fn keep(&mut self, session: &Session) {
        let reuse = token_lifetime(&session.access_token).map_or(UNKNOWN_EXPIRY_REUSE, |left| {
            left.saturating_sub(RENEW_BEFORE_EXPIRY)
        });
        self.kept = Some((session.clone(), Instant::now() + reuse));
    }
}

/// How long a JWT has left before its `exp`, read from its payload (not verified: the server
/// does that; this only decides when to log in again).
fn token_lifetime(token: &str) -> Option<Duration> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

fn fail(class: FailureClass, message: impl Into<String>) -> Failure {
    Failure::new(class, message, None)
}

fn mismatch(message: impl Into<String>) -> Failure {
    fail(FailureClass::ContentMismatch, message)
}

fn client_failure(e: ClientFailure) -> Failure {
    Failure::new(e.class, e.message, None)
}

struct Journey<'a> {
    ctx: &'a JourneyContext<'a>,
    /// The virtual user's kept session (`load.login: once_per_vu`).
    vu_session: Option<&'a mut VuSession>,
    password: String,
    outcome: JourneyOutcome,
    started: Instant,
    session: Option<Session>,
    conn: Option<Connection>,
    transport: Transport,
    token: Option<String>,
    messages: usize,
    message_id: Option<String>,
    /// The run this journey's message started, once its `agent_started` arrived.
    run: Option<RunFamily>,
    /// Highest `seq` received on any connection of this journey.
    last_seq: Option<u64>,
    /// The event an `expect` step is waiting for, for the message when the run is cut.
    waiting_for: Option<String>,
}

/// A journey's run on the wire: every id it goes by (its run id, its thread id, the runs of
/// sub-agents started inside it) and how deep its agents are nested.
#[derive(Debug, Default)]
struct RunFamily {
    ids: Vec<String>,
    depth: u32,
}

/// Where a frame belongs, as far as this journey's expectations go.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// An event of this journey's run.
    Mine,
    /// A sub-agent's own start or end inside this journey's run: part of the run, but not
    /// the run's `agent_started`/`agent_completed`.
    Nested,
    /// Another run's.
    Other,
}

/// What a received frame means for an `expect` step.
enum Screened<'f> {
    /// Not for this step: read on.
    Skip,
    /// The error frame the step expects: the step holds.
    ErrorWanted,
    /// An event of this journey's run, by type.
    Event(&'f str),
}

/// How far an `expect` step has come through its events, and what it waits for.
struct Progress<'s> {
    events: &'s [EventExpectation],
    /// The error code the step expects instead of events, if any.
    error_wanted: Option<&'s str>,
    /// The step's own deadline.
    deadline: Instant,
    /// The first expected event not yet passed (a repeating one stays while it repeats).
    next: usize,
    matched: Vec<bool>,
    /// When the wait for `events[next]` began; its own timeout counts from there, whatever
    /// other frames (pongs, re-sends, other runs) arrive meanwhile.
    waiting_since: (usize, Instant),
    /// Set once the awaited event is overdue: (its kind, its timeout). It is still awaited
    /// until the step's deadline, so a late event is told apart from a missing one.
    overdue: Option<(String, Duration)>,
    /// Set when an event arrived before one expected earlier: (missing, arrived). Reading
    /// on tells an order violation (the missing one comes after all) from a missing event.
    skipped: Option<(String, String)>,
    /// Before each event with a `seq` was taken: its `seq` and where the step stood, so a
    /// `resync` can take the step back to before the events it voids.
    before: Vec<(u64, Resumable)>,
    /// Which expectations have had their first arrival counted in the journey's events (a
    /// re-match after a `resync` is not counted again).
    counted: Vec<bool>,
}

/// Where an `expect` step stood, as far as matching goes.
#[derive(Clone)]
struct Resumable {
    next: usize,
    matched: Vec<bool>,
    skipped: Option<(String, String)>,
}

impl<'s> Progress<'s> {
    fn new(step: &'s ExpectStep, deadline: Instant) -> Self {
        Self {
            events: &step.events,
            error_wanted: step.error.as_deref(),
            deadline,
            next: 0,
            matched: vec![false; step.events.len()],
            waiting_since: (usize::MAX, Instant::now()),
            overdue: None,
            skipped: None,
            before: Vec::new(),
            counted: vec![false; step.events.len()],
        }
    }

    /// Notes where the step stands before it takes the event with `seq`.
    fn remember(&mut self, seq: u64) {
        self.before.push((
            seq,
            Resumable {
                next: self.next,
                matched: self.matched.clone(),
                skipped: self.skipped.clone(),
            },
        ));
    }

    /// A `resync {from_seq}`: the events taken with a `seq` above it are void and come again,
    /// so the step goes back to before the first of them and matches them anew. `true` when
    /// it went back.
    fn resync(&mut self, from_seq: u64) -> bool {
        let Some(first) = self.before.iter().position(|(seq, _)| *seq > from_seq) else {
            return false;
        };
        let (_, back) = self.before[first].clone();
        self.before.truncate(first);
        self.next = back.next;
        self.matched = back.matched;
        self.skipped = back.skipped;
        self.overdue = None;
        true
    }

    /// Whether the step holds: no error frame awaited, nothing out of order pending, and
    /// every event still ahead may be passed over.
    fn done(&self) -> bool {
        self.skipped.is_none()
            && self.error_wanted.is_none()
            && (self.next..self.events.len()).all(|j| self.skippable(j))
    }

    /// Whether `events[j]` may be passed over: optional, or a repeat already seen.
    fn skippable(&self, j: usize) -> bool {
        match &self.events[j] {
            EventExpectation::Type(_) => false,
            EventExpectation::Detailed(d) => d.optional || (d.repeat && self.matched[j]),
        }
    }

    /// The event awaited now, by type (`error` when the step expects an error frame).
    fn waiting_for(&self) -> &'s str {
        self.events.get(self.next).map_or("error", kind_of)
    }

    /// No frame came in time: the awaited event becomes overdue (and is awaited on until the
    /// deadline), or it is missing.
    fn timed_out(&mut self, per_event: Duration) -> Result<(), Failure> {
        let waiting_for = self.waiting_for();
        if let Some((missing, arrived)) = &self.skipped {
            return Err(fail(
                FailureClass::MissingEvent(missing.clone()),
                format!("`{arrived}` arrived but `{missing}` before it never did"),
            ));
        }
        if self.overdue.is_none() && Instant::now() < self.deadline {
            self.overdue = Some((waiting_for.to_owned(), per_event));
            return Ok(());
        }
        let waited = self.waiting_since.1.elapsed();
        Err(fail(
            FailureClass::MissingEvent(waiting_for.to_owned()),
            format!("`{waiting_for}` did not arrive within {waited:.1?}"),
        ))
    }

    /// An event arrived while an earlier one was out of order or overdue: that one was
    /// swapped with its neighbour, missing, or late.
    fn settle(&self, kind: &str) -> Result<(), Failure> {
        if let Some((missing, arrived)) = &self.skipped {
            // Two neighbours swapped: the missing event is the very next one of the run.
            // Anything else means it is missing (a later event of the same type belongs
            // to a later step).
            return Err(if kind == missing {
                fail(
                    FailureClass::OrderViolation,
                    format!("`{missing}` arrived after `{arrived}`, which must follow it"),
                )
            } else {
                fail(
                    FailureClass::MissingEvent(missing.clone()),
                    format!("`{arrived}` arrived but `{missing}` before it never did"),
                )
            });
        }
        if let Some((late, timeout)) = &self.overdue
            && kind == late
        {
            let waited = self.waiting_since.1.elapsed();
            return Err(fail(
                FailureClass::Timeout,
                format!("`{late}` arrived after {waited:.1?}, beyond its {timeout:?} timeout"),
            ));
        }
        Ok(())
    }

    /// Matches an event against the expectations from `next` on, passing over optional ones
    /// and finished repeats; `true` when it is the first match of its expectation.
    fn advance(&mut self, kind: &str, frame: &Value) -> Result<bool, Failure> {
        let mut j = self.next;
        loop {
            let Some(expected) = self.events.get(j) else {
                return Err(fail(
                    FailureClass::OrderViolation,
                    format!("unexpected `{kind}` after the expected events"),
                ));
            };
            if kind_of(expected) == kind {
                check_fields(expected, frame)?;
                let first = !self.counted[j];
                self.matched[j] = true;
                self.counted[j] = true;
                let repeat = matches!(expected, EventExpectation::Detailed(d) if d.repeat);
                self.next = if repeat { j } else { j + 1 };
                return Ok(first);
            }
            if self.skippable(j) {
                j += 1;
                continue;
            }
            let missing = kind_of(expected);
            if self.events[j + 1..].iter().any(|e| kind_of(e) == kind) {
                // Missing, or only out of order: the frames that follow tell.
                self.skipped = Some((missing.to_owned(), kind.to_owned()));
                return Ok(false);
            }
            return Err(fail(
                FailureClass::OrderViolation,
                format!("expected `{missing}`, received `{kind}`"),
            ));
        }
    }
}

fn transport_of(name: TransportName) -> Transport {
    match name {
        TransportName::Header => Transport::Header,
        TransportName::Subprotocol => Transport::Subprotocol,
        TransportName::Ticket => Transport::Ticket,
        TransportName::LbHeader => Transport::LbPreserved,
        TransportName::None => Transport::None,
    }
}

/// Runs the steps for one virtual user; `marker` is unique to this journey.
pub async fn run_journey(
    ctx: &JourneyContext<'_>,
    steps: &[Step],
    email: &str,
    password: &str,
    marker: &str,
) -> JourneyOutcome {
    run_journey_with(ctx, steps, email, password, marker, None).await
}

/// [`run_journey`], with the virtual user's kept session: a plain `login` step reuses it
/// while it is fresh, and keeps the session of a real login for the next journeys.
pub async fn run_journey_with(
    ctx: &JourneyContext<'_>,
    steps: &[Step],
    email: &str,
    password: &str,
    marker: &str,
    vu_session: Option<&mut VuSession>,
) -> JourneyOutcome {
    let mut journey = Journey {
        ctx,
        vu_session,
        password: password.to_owned(),
        outcome: JourneyOutcome::new(email, marker),
        started: Instant::now(),
        session: None,
        conn: None,
        transport: Transport::Header,
        token: None,
        messages: 0,
        message_id: None,
        run: None,
        last_seq: None,
        waiting_for: None,
    };
    for (index, step) in steps.iter().enumerate() {
        let result = tokio::select! {
            biased;
            result = journey.step(step) => result,
            cut = ctx.cutoff.wait() => Err(journey.cut(cut)),
        };
        if let Err(mut failure) = result {
            failure.message = format!("step {} ({}): {}", index + 1, step.name(), failure.message);
            journey.outcome.failures.push(failure);
            break;
        }
    }
    Box::pin(journey.disconnect()).await;
    journey.outcome.content_checked = steps.iter().any(|s| matches!(s, Step::ExpectResponse(_)));
    journey.outcome.chats =
        (steps.iter()).any(|s| matches!(s, Step::Send(s) if s.content.is_some()));
    // A reused session the server refused is not reused again: the next journey logs in.
    if journey.outcome.session_reused
        && journey
            .outcome
            .failures
            .iter()
            .any(|f| f.class == FailureClass::AuthRejected)
        && let Some(kept) = journey.vu_session.as_deref_mut()
    {
        kept.kept = None;
    }
    if journey.outcome.cut_short {
        // Stopped by --fail-fast: neither passed nor failed, and its transcript is partial.
        journey.outcome.failures.clear();
        return journey.outcome;
    }
    for transcript in &journey.outcome.transcripts {
        let found = check_connection(ctx.profile, transcript);
        journey.outcome.failures.extend(found);
    }
    journey.outcome.timings.total = journey.started.elapsed();
    journey.outcome
}

impl Journey<'_> {
    /// The run was cut while this journey was in a step: past `--max-duration` it failed as
    /// `timeout`, naming what it waited for; after `--fail-fast` it was only cut short.
    fn cut(&mut self, cut: Cut) -> Failure {
        if cut == Cut::FailFast {
            self.outcome.cut_short = true;
        }
        let waiting = self
            .waiting_for
            .as_ref()
            .map_or(String::new(), |w| format!(" while waiting for `{w}`"));
        fail(FailureClass::Timeout, format!("{cut}{waiting}"))
    }

    /// Runs one step. Each step's future is boxed, for as long as the step runs: a virtual
    /// user's task is then as large as its journey's state, not as the largest step's (the
    /// HTTP login and the WebSocket upgrade made an idle connected user's task ~15 KiB).
    async fn step(&mut self, step: &Step) -> Result<(), Failure> {
        self.waiting_for = None;
        match step {
            Step::Login(s) => Box::pin(self.login(s)).await,
            Step::Connect(s) => Box::pin(self.connect(s)).await,
            Step::Send(s) => Box::pin(self.send(s)).await,
            Step::Expect(s) => Box::pin(self.expect(s)).await,
            Step::ExpectResponse(s) => self.expect_response(s),
            Step::Disconnect(_) => {
                Box::pin(self.disconnect()).await;
                Ok(())
            }
            Step::Resume(s) => Box::pin(self.resume(s)).await,
            Step::Wait(d) => {
                Box::pin(tokio::time::sleep(*d)).await;
                Ok(())
            }
            Step::Http(s) => Box::pin(self.http(s)).await,
            Step::ExpectClose(s) => Box::pin(self.expect_close(s)).await,
            Step::Fault(s) => self
                .ctx
                .faults
                .ok_or_else(|| format!("no fault named `{}`: the scenario has no `faults`", s.name))
                .and_then(|f| f.switch(&s.name, s.enabled))
                .map_err(|e| fail(FailureClass::Harness("fault_step".into()), e)),
        }
    }

    fn conn(&mut self) -> Result<&mut Connection, Failure> {
        self.conn
            .as_mut()
            .ok_or_else(|| mismatch("no open connection: add a `connect` step first"))
    }

    async fn login(&mut self, step: &LoginStep) -> Result<(), Failure> {
        // Only a plain login is kept: one with its own password or an expected refusal tests
        // the login itself.
        let keepable = step.password.is_none() && step.expect_status.is_none();
        if keepable && let Some(session) = self.vu_session.as_deref().and_then(VuSession::fresh) {
            let session = session.clone();
            self.learn_user_id(session.user_id.clone());
            self.session = Some(session);
            self.outcome.session_reused = true;
            return Ok(());
        }
        let password = step
            .password
            .as_deref()
            .map_or_else(|| self.password.clone(), crate::runner::interpolate);
        let email = self.outcome.identity.email.clone();
        let result = login_with(
            self.ctx.http,
            self.ctx.target,
            &self.ctx.profile.target,
            &email,
            &password,
            self.ctx.timeout,
        )
        .await;
        match (result, step.expect_status) {
            (Ok(session), None) => {
                self.outcome
                    .timings
                    .login
                    .get_or_insert(self.started.elapsed());
                if keepable && let Some(kept) = self.vu_session.as_deref_mut() {
                    kept.keep(&session);
                    // Logging in once per virtual user measures the chat path: the journey's
                    // clock starts after its login (login_duration still has the login).
                    self.started = Instant::now();
                }
                self.learn_user_id(session.user_id.clone());
                self.session = Some(session);
                Ok(())
            }
            (Err(e), None) => Err(client_failure(e)),
            (Err(e), Some(want)) if e.status == Some(want) => Ok(()),
            (Err(e), Some(want)) => Err(mismatch(format!(
                "expected login to be refused with {want}: {}",
                e.message
            ))),
            (Ok(_), Some(want)) => Err(mismatch(format!(
                "login succeeded; expected it refused with {want}"
            ))),
        }
    }

    /// Opens a connection and reads its welcome frame; the failure keeps the HTTP status of
    /// a refused upgrade.
    async fn open(&mut self, extra_query: &str, timeout: Duration) -> Result<(), ClientFailure> {
        let token = self
            .token
            .clone()
            .or_else(|| self.session.as_ref().map(|s| s.access_token.clone()));
        let opened = connect_with(
            self.ctx.http,
            self.ctx.target,
            &self.ctx.profile.target,
            token.as_deref(),
            self.transport,
            timeout,
            extra_query,
        )
        .await;
        let mut conn = opened?;
        let Some(welcome) = self.ctx.profile.target.welcome() else {
            self.conn = Some(conn);
            return Ok(());
        };
        let profile = self.ctx.profile;
        let mut first = conn.next_frame(timeout).await;
        // Heartbeats and the like may come first; they stay in the transcript.
        while let Ok(Some(f)) = &first
            && let Some(kind) = profile.frame_type(f)
            && kind != welcome
            && profile.is_ignored(kind)
        {
            first = conn.next_frame(timeout).await;
        }
        if matches!(&first, Ok(Some(f)) if profile.frame_type(f) == Some(welcome)) {
            self.conn = Some(conn);
            return Ok(());
        }
        let failure = self.instead_of_welcome(&mut conn, welcome, first).await;
        // Whatever arrived instead of the welcome is kept for the diagnosis.
        self.outcome.transcripts.push(conn.close().await);
        Err(failure)
    }

    /// What the server did instead of welcoming: its frames verbatim (an error frame, say)
    /// and, when it closed right after, the close with its code and reason.
    async fn instead_of_welcome(
        &self,
        conn: &mut Connection,
        welcome: &str,
        first: Result<Option<Value>, ClientFailure>,
    ) -> ClientFailure {
        let failure = |class, message| ClientFailure {
            class,
            message,
            status: None,
        };
        let mut sent = Vec::new();
        let mut next = first;
        // A server that failed usually closes at once; wait a little for that close.
        let deadline = Instant::now() + self.ctx.timeout.min(Duration::from_secs(2));
        loop {
            match next {
                Ok(Some(frame)) => sent.push(frame.to_string()),
                Ok(None) => {
                    return failure(
                        FailureClass::ConnectionClosed,
                        format!(
                            "the server closed with {} before the welcome `{welcome}`{}",
                            conn.close_text(),
                            sent_text(&sent)
                        ),
                    );
                }
                Err(e) if e.class == FailureClass::Timeout && !sent.is_empty() => {
                    return failure(
                        FailureClass::HandshakeFailed,
                        format!(
                            "the first frame is not the welcome `{welcome}`{}",
                            sent_text(&sent)
                        ),
                    );
                }
                Err(mut e) => {
                    e.message = format!(
                        "{} before the welcome `{welcome}`{}",
                        e.message,
                        sent_text(&sent)
                    );
                    return e;
                }
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            next = conn.next_frame(wait).await;
        }
    }

    async fn connect(&mut self, step: &ConnectStep) -> Result<(), Failure> {
        self.transport = transport_of(step.transport);
        self.token = step.token.as_deref().map(crate::runner::interpolate);
        let timeout = step.timeout.unwrap_or(self.ctx.timeout);
        let result = self.open("", timeout).await;
        match (result, step.expect_status) {
            (Ok(()), None) => {
                self.outcome
                    .timings
                    .connect
                    .get_or_insert(self.started.elapsed());
                Ok(())
            }
            (Err(e), None) => Err(client_failure(e)),
            (Err(e), Some(want)) if e.status == Some(want) => Ok(()),
            (Err(e), Some(want)) => Err(mismatch(format!(
                "expected the upgrade refused with {want}: {}",
                e.message
            ))),
            (Ok(()), Some(want)) => Err(mismatch(format!(
                "the upgrade succeeded; expected it refused with {want}"
            ))),
        }
    }

    async fn send(&mut self, step: &SendStep) -> Result<(), Failure> {
        let text = match (&step.content, &step.frame, &step.raw, step.size) {
            (Some(content), None, None, None) => {
                self.messages += 1;
                let marker = &self.outcome.identity.marker;
                let message_id = format!("{marker}-m{}", self.messages);
                let frame = message_frame(
                    &self.ctx.profile.target.message(),
                    &format!("{content} [{marker}]"),
                    marker,
                    &message_id,
                );
                self.message_id = Some(message_id);
                self.run = None;
                frame.to_string()
            }
            (None, Some(frame), None, None) => frame.to_string(),
            (None, None, Some(raw), None) => raw.clone(),
            (None, None, None, Some(size)) => {
                let head = r#"{"type":"ping","payload":""#;
                format!(
                    "{head}{}\"}}",
                    "x".repeat(size.saturating_sub(head.len() + 2))
                )
            }
            _ => {
                return Err(mismatch(
                    "`send` takes exactly one of content, frame, raw, size",
                ));
            }
        };
        self.conn()?.send_text(text).await.map_err(client_failure)
    }

    /// Waits for the step's events in order (or for the error frame it expects instead).
    async fn expect(&mut self, step: &ExpectStep) -> Result<(), Failure> {
        let deadline = Instant::now() + step.timeout.unwrap_or(self.ctx.timeout * 3);
        let mut progress = Progress::new(step, deadline);
        let result = self.expect_in_order(step, &mut progress).await;
        // The awaited event never came (missing, too late, or the connection ended first): it
        // counts as not delivered in the event delivery rates. Events after it were never
        // judged and do not count either way.
        if let Err(failure) = &result
            && progress.error_wanted.is_none()
            && !progress.matched.get(progress.next).copied().unwrap_or(true)
            && matches!(
                failure.class,
                FailureClass::MissingEvent(_)
                    | FailureClass::Timeout
                    | FailureClass::ConnectionClosed
                    | FailureClass::ConnectionLost
                    | FailureClass::Ws1011
            )
        {
            let awaited = progress.waiting_for().to_owned();
            self.outcome.events.push((awaited, None));
        }
        result
    }

    async fn expect_in_order(
        &mut self,
        step: &ExpectStep,
        progress: &mut Progress<'_>,
    ) -> Result<(), Failure> {
        loop {
            if progress.done() {
                return Ok(());
            }
            let Some(frame) = self.next_awaited_frame(progress).await? else {
                continue;
            };
            if self.resynced(progress, &frame) {
                continue;
            }
            match self.screen(step, progress, &frame).await? {
                Screened::Skip => {}
                Screened::ErrorWanted => return Ok(()),
                Screened::Event(kind) => self.take_event(progress, kind, &frame)?,
            }
        }
    }

    /// The next frame within the awaited event's own timeout, or within the step's deadline
    /// once that event is overdue; `None` when it just became overdue and the wait goes on.
    async fn next_awaited_frame(
        &mut self,
        progress: &mut Progress<'_>,
    ) -> Result<Option<Value>, Failure> {
        let waiting_for = progress.waiting_for();
        if progress.waiting_since.0 != progress.next {
            progress.waiting_since = (progress.next, Instant::now());
            self.waiting_for = Some(waiting_for.to_owned());
        }
        let per_event = (progress.events.get(progress.next))
            .and_then(timeout_of)
            .unwrap_or(self.ctx.timeout);
        let until = match &progress.overdue {
            Some(_) => progress.deadline,
            None => progress.deadline.min(progress.waiting_since.1 + per_event),
        };
        let wait = until.saturating_duration_since(Instant::now());
        match self.conn()?.next_frame(wait).await {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => {
                let close = self.conn()?.close_text();
                Err(fail(
                    FailureClass::ConnectionClosed,
                    format!("the server closed with {close} before `{waiting_for}`"),
                ))
            }
            Err(e) if e.class == FailureClass::Timeout => {
                progress.timed_out(per_event).map(|()| None)
            }
            Err(mut e) => {
                e.message = format!("{} (waiting for `{waiting_for}`)", e.message);
                Err(client_failure(e))
            }
        }
    }

    /// Whether a frame counts for the step: frames without a type, ignored ones and other
    /// runs' pass by; an error frame ends the step (as expected, or as a mismatch). Acks
    /// every frame with a `seq` when the platform wants acks.
    async fn screen<'f>(
        &mut self,
        step: &ExpectStep,
        progress: &Progress<'_>,
        frame: &'f Value,
    ) -> Result<Screened<'f>, Failure> {
        let profile = self.ctx.profile;
        let Some(kind) = profile.frame_type(frame) else {
            return Ok(Screened::Skip);
        };
        if step.ignore.iter().any(|i| i == kind) {
            return Ok(Screened::Skip);
        }
        let settings = &profile.target;
        if settings.ack()
            && let Some(seq) = profile.seq(frame)
        {
            let ack = json!({ "type": "ack", "seq": seq });
            self.conn()?.send_json(&ack).await.map_err(client_failure)?;
        }
        if kind == settings.error_type() {
            let code = lookup(frame, settings.error_code())
                .and_then(Value::as_str)
                .unwrap_or_default();
            return match progress.error_wanted {
                Some(want) if want == code => Ok(Screened::ErrorWanted),
                _ => Err(mismatch(format!(
                    "error frame `{code}` while waiting for `{}`: {frame}",
                    progress.waiting_for()
                ))),
            };
        }
        let expected = progress.events.iter().any(|e| kind_of(e) == kind);
        if progress.error_wanted.is_some() || (profile.is_ignored(kind) && !expected) {
            return Ok(Screened::Skip);
        }
        // Only this journey's run counts; other runs of the same user may interleave.
        if self.place(kind, frame) != Place::Mine {
            return Ok(Screened::Skip);
        }
        if frame.get("redelivery") == Some(&Value::Bool(true)) {
            return Ok(Screened::Skip);
        }
        Ok(Screened::Event(kind))
    }

    /// A `resync {from_seq}` frame (docs/protocol.md §4.7), handled as a client must: the
    /// events after `from_seq` are void and arrive again, so the step goes back to before
    /// the first of its events above `from_seq` and matches them anew (what it counted of
    /// them stays counted, at their first arrival), and the journey's position for `resume`
    /// goes back to `from_seq`. The invariants check the stream itself (verify::invariants).
    /// `false` for any other frame.
    fn resynced(&mut self, progress: &mut Progress<'_>, frame: &Value) -> bool {
        if self.ctx.profile.frame_type(frame) != Some(crate::verify::RESYNC) {
            return false;
        }
        if let Some(from_seq) = crate::verify::resync_from(frame) {
            progress.resync(from_seq);
            self.last_seq = self.last_seq.map(|last| last.min(from_seq));
        }
        true
    }

    /// An event of this journey's run: its `seq` and time are kept, an earlier event that was
    /// late or out of order is settled by it, and it takes its place among the expected ones.
    fn take_event(
        &mut self,
        progress: &mut Progress<'_>,
        kind: &str,
        frame: &Value,
    ) -> Result<(), Failure> {
        let profile = self.ctx.profile;
        if let Some(seq) = profile.seq(frame) {
            self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
            progress.remember(seq);
        }
        self.outcome
            .timings
            .first_event
            .get_or_insert(self.started.elapsed());
        progress.settle(kind)?;
        if progress.advance(kind, frame)? {
            self.outcome
                .events
                .push((kind.to_owned(), Some(self.started.elapsed())));
        }
        if kind == "agent_completed" {
            self.outcome
                .timings
                .agent_completed
                .get_or_insert(self.started.elapsed());
            self.outcome.answer = lookup(frame, profile.target.answer_root()).cloned();
        }
        Ok(())
    }

    /// Where `frame` belongs. The run's ids are learnt from its first `agent_started` after
    /// the message (run id and thread id); on platforms with nested agents, a run started
    /// while this one is open is a sub-agent's and joins the family, and only the last
    /// `agent_completed` ends the run.
    fn place(&mut self, kind: &str, frame: &Value) -> Place {
        let profile = self.ctx.profile;
        let Some(id) = profile.run_id(frame) else {
            return Place::Mine;
        };
        let thread = profile.thread_id(frame);
        let nested = profile.nested_agents;
        let Some(run) = &mut self.run else {
            if kind != "agent_started" || !self.is_my_run(frame) {
                return Place::Other;
            }
            let ids: Vec<String> = [Some(id), thread]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            for new in &ids {
                self.learn_run(new);
            }
            self.run = Some(RunFamily { ids, depth: 1 });
            return Place::Mine;
        };
        let known = run.ids.iter().any(|i| i == id);
        match kind {
            "agent_started" if nested && (known || run.depth > 0) => {
                for new in [Some(id), thread].into_iter().flatten() {
                    if !run.ids.iter().any(|i| i == new) {
                        run.ids.push(new.to_owned());
                        self.outcome.identity.runs.push(new.to_owned());
                        if let Some(isolation) = self.ctx.isolation {
                            isolation.learn(new, &self.outcome.identity.email);
                        }
                    }
                }
                run.depth += 1;
                Place::Nested
            }
            _ if !known => Place::Other,
            "agent_completed" | "agent_error" if nested => {
                run.depth = run.depth.saturating_sub(1);
                if run.depth > 0 {
                    Place::Nested
                } else {
                    Place::Mine
                }
            }
            _ => Place::Mine,
        }
    }

    /// The user id a login answered with: the journey's, and no other user's frames may
    /// carry it.
    fn learn_user_id(&mut self, id: Option<String>) {
        if let (Some(isolation), Some(id)) = (self.ctx.isolation, &id) {
            isolation.learn(id, &self.outcome.identity.email);
        }
        self.outcome.identity.user_id = id;
    }

    /// A run or thread id of this journey's run: no other user's frames may carry it.
    fn learn_run(&mut self, id: &str) {
        if let Some(isolation) = self.ctx.isolation {
            isolation.learn(id, &self.outcome.identity.email);
        }
        self.outcome.identity.runs.push(id.to_owned());
    }

    fn is_my_run(&self, frame: &Value) -> bool {
        let echoed = lookup(frame, "payload.client_message_id")
            .or_else(|| lookup(frame, "data.client_message_id"));
        match (echoed, &self.message_id) {
            (Some(echoed), Some(mine)) => echoed == mine.as_str(),
            // A platform that does not echo message ids: the first run after the message.
            (None, _) => true,
            (Some(_), None) => false,
        }
    }

    /// Checks the `agent_completed` answer: its text, its fields, numbers near the fixture
    /// truth, its length, and that it leaks no internals.
    fn expect_response(&mut self, step: &ResponseStep) -> Result<(), Failure> {
        let answer = self
            .outcome
            .answer
            .clone()
            .ok_or_else(|| mismatch("no agent_completed answer to check: expect it first"))?;
        let text = self.answer_text(step, &answer)?;
        check_needles(step, text)?;
        for (path, want) in &step.json {
            let got = lookup(&answer, path);
            if got != Some(want) {
                return Err(mismatch(format!(
                    "`{path}` is {}, expected {want}",
                    got.map_or("absent".into(), Value::to_string)
                )));
            }
        }
        self.check_near_truth(step, &answer)?;
        if let Some(min) = step.min_length
            && text.chars().count() < min
        {
            return Err(mismatch(format!(
                "the answer has {} characters, fewer than {min}",
                text.chars().count()
            )));
        }
        if step.no_leaked_internals {
            // The text itself (unescaped) and the rest of the answer.
            for haystack in [text.to_owned(), answer.to_string()] {
                if let Some(leak) = leaked_internals(&haystack) {
                    return Err(mismatch(format!("the answer leaks internals: {leak}")));
                }
            }
        }
        Ok(())
    }

    /// The answer's text where the profile says it is; empty when absent and no check reads
    /// it, a mismatch when one does (an absent answer must not pass `not_contains`).
    fn answer_text<'v>(&self, step: &ResponseStep, answer: &'v Value) -> Result<&'v str, Failure> {
        let needs_text = !(step.contains.is_empty()
            && step.not_contains.is_empty()
            && step.regex.is_empty()
            && step.min_length.is_none());
        let paths = self.ctx.profile.target.answer_text();
        let found = paths
            .iter()
            .find_map(|p| lookup(answer, p).and_then(Value::as_str));
        match found {
            Some(text) => Ok(text),
            None if needs_text => Err(mismatch(format!(
                "the answer has no text at `{}`: {answer}",
                paths.join("` or `")
            ))),
            None => Ok(""),
        }
    }

    /// `near_truth`: numbers in the answer within their tolerance of the user's fixture
    /// truth.
    fn check_near_truth(&self, step: &ResponseStep, answer: &Value) -> Result<(), Failure> {
        for near in &step.near_truth {
            let truth = self
                .ctx
                .truth
                .and_then(|t| lookup(t, &near.truth))
                .and_then(Value::as_f64)
                .ok_or_else(|| {
                    mismatch(format!(
                        "no fixture truth `{}` for {}",
                        near.truth, self.outcome.identity.email
                    ))
                })?;
            let got = lookup(answer, &near.path)
                .and_then(Value::as_f64)
                .ok_or_else(|| {
                    mismatch(format!("`{}` is not a number in the answer", near.path))
                })?;
            if (got - truth).abs() > near.tolerance {
                return Err(mismatch(format!(
                    "`{}` is {got}, the truth is {truth} (tolerance {})",
                    near.path, near.tolerance
                )));
            }
        }
        Ok(())
    }

    async fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.outcome.transcripts.push(conn.close().await);
        }
    }

    async fn resume(&mut self, step: &ResumeStep) -> Result<(), Failure> {
        if !self.ctx.profile.target.resume() {
            return Err(fail(
                FailureClass::Harness("resume_unsupported".into()),
                format!(
                    "the `{}` profile says this platform does not resume streams",
                    self.ctx.profile.name
                ),
            ));
        }
        self.disconnect().await;
        let last = self.last_seq.unwrap_or(0);
        let query = match step.via {
            ResumeVia::Query => format!("last_seq={last}"),
            ResumeVia::Frame => String::new(),
        };
        self.open(&query, self.ctx.timeout)
            .await
            .map_err(client_failure)?;
        let conn = self.conn()?;
        conn.transcript.resumed_after = Some(last);
        if step.via == ResumeVia::Frame {
            conn.send_json(&json!({ "type": "resume", "last_seq": last }))
                .await
                .map_err(client_failure)?;
        }
        Ok(())
    }

    async fn http(&mut self, step: &HttpStep) -> Result<(), Failure> {
        let method = reqwest::Method::from_bytes(step.method.to_uppercase().as_bytes())
            .map_err(|_| mismatch(format!("unknown method `{}`", step.method)))?;
        let idempotent = method.is_idempotent();
        let mut request = self
            .ctx
            .http
            .request(
                method,
                self.ctx
                    .target
                    .http(&crate::runner::interpolate(&step.path)),
            )
            .timeout(self.ctx.timeout);
        if step.auth
            && let Some(session) = &self.session
        {
            request = request.bearer_auth(&session.access_token);
        }
        if let Some(body) = &step.body {
            request = request.json(body);
        }
        // Repeating a request that never got an answer is safe only for idempotent methods.
        let response = if idempotent {
            send_retrying(request).await
        } else {
            request.send().await
        };
        let response = response.map_err(|e| {
            let class = if e.is_timeout() {
                FailureClass::Timeout
            } else {
                FailureClass::HandshakeFailed
            };
            fail(class, format!("{} {}: {e}", step.method, step.path))
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for (metric, bound) in &step.metrics {
            check_metric(&text, metric, bound)
                .map_err(|e| mismatch(format!("{} {}: {e}", step.method, step.path)))?;
        }
        if let Some(want) = step.status
            && want != status
        {
            return Err(mismatch(format!(
                "{} {} answered {status}, expected {want}: {body}",
                step.method, step.path
            )));
        }
        for (path, want) in &step.json {
            let got = lookup(&body, path);
            if got != Some(want) {
                return Err(mismatch(format!(
                    "`{path}` of {} is {}, expected {want}",
                    step.path,
                    got.map_or("absent".into(), Value::to_string)
                )));
            }
        }
        Ok(())
    }

    async fn expect_close(&mut self, step: &CloseStep) -> Result<(), Failure> {
        let timeout = step.timeout.unwrap_or(self.ctx.timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.conn()?.next_frame(wait).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) if e.class == FailureClass::Ws1011 && step.code == 1011 => break,
                Err(e) => return Err(client_failure(e)),
            }
        }
        let code = self.conn()?.transcript.close_code;
        self.disconnect().await;
        if code == Some(step.code) {
            // An expected 1011 is not a failure of this journey.
            if let Some(last) = self.outcome.transcripts.last_mut()
                && step.code == 1011
            {
                last.close_code = None;
            }
            Ok(())
        } else {
            Err(mismatch(format!(
                "the connection closed with {code:?}, expected {}",
                step.code
            )))
        }
    }
}

/// `contains`, `not_contains` and `regex` over the answer's text.
fn check_needles(step: &ResponseStep, text: &str) -> Result<(), Failure> {
    for needle in &step.contains {
        if !text.contains(needle.as_str()) {
            return Err(mismatch(format!("the answer does not contain `{needle}`")));
        }
    }
    for needle in &step.not_contains {
        if text.contains(needle.as_str()) {
            return Err(mismatch(format!("the answer contains `{needle}`")));
        }
    }
    for pattern in &step.regex {
        let regex = regex::Regex::new(pattern)
            .map_err(|e| mismatch(format!("invalid regex `{pattern}`: {e}")))?;
        if !regex.is_match(text) {
            return Err(mismatch(format!("the answer does not match /{pattern}/")));
        }
    }
    Ok(())
}

/// Checks `metric` in a Prometheus or OpenMetrics text exposition against `bound` (`< 5e8`,
/// `>= 1`). Comment lines (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) are skipped.
fn check_metric(exposition: &str, metric: &str, bound: &str) -> Result<(), RunError> {
    let value: f64 = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == metric).then(|| value.parse().ok()).flatten()
        })
        .ok_or_else(|| RunError::NoMetric {
            metric: metric.to_owned(),
        })?;
    let bound = bound.trim();
    let (op, number) = ["<=", ">=", "<", ">", "=="]
        .iter()
        .find_map(|op| bound.strip_prefix(op).map(|n| (*op, n.trim())))
        .ok_or_else(|| RunError::BoundWithoutOperator {
            bound: bound.to_owned(),
        })?;
    let limit: f64 = number.parse().map_err(|_| RunError::BoundNotANumber {
        bound: bound.to_owned(),
        number: number.to_owned(),
    })?;
    let holds = match op {
        "<=" => value <= limit,
        ">=" => value >= limit,
        "<" => value < limit,
        ">" => value > limit,
        _ => value == limit,
    };
    if holds {
        Ok(())
    } else {
        Err(RunError::MetricOutOfBound {
            metric: metric.to_owned(),
            value,
            op,
            limit,
        })
    }
}

/// `: <frame>; <frame>` for a message, or nothing.
fn sent_text(frames: &[String]) -> String {
    if frames.is_empty() {
        String::new()
    } else {
        format!("; it sent: {}", frames.join("; "))
    }
}

fn kind_of(expectation: &EventExpectation) -> &str {
    match expectation {
        EventExpectation::Type(kind) => kind,
        EventExpectation::Detailed(d) => &d.kind,
    }
}

fn timeout_of(expectation: &EventExpectation) -> Option<Duration> {
    match expectation {
        EventExpectation::Type(_) => None,
        EventExpectation::Detailed(d) => d.timeout,
    }
}

fn check_fields(expectation: &EventExpectation, frame: &Value) -> Result<(), Failure> {
    if let EventExpectation::Detailed(d) = expectation {
        for (path, want) in &d.fields {
            let got = lookup(frame, path);
            if got != Some(want) {
                return Err(mismatch(format!(
                    "`{}`: `{path}` is {}, expected {want}",
                    d.kind,
                    got.map_or("absent".into(), Value::to_string)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{RunError, check_metric, leaked_internals};

    #[test]
    fn leaks_of_five_languages_are_recognised_and_plain_answers_are_not() {
        let leaks = [
            (
                "{'workflow_completed': True, 'data': AgentExecutionResult(success=False, error=\"x\")}",
                "a Python object repr",
            ),
            ("{'workflow_completed': True}", "a Python dict repr"),
            (
                "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>",
                "a Python traceback",
            ),
            (
                "TypeError: x is undefined\n    at handler (/srv/app.js:10:5)",
                "a JavaScript stack frame",
            ),
            (
                "java.lang.NullPointerException\n\tat com.netra.Chat.answer(Chat.java:42)",
                "a Java stack frame",
            ),
            (
                "panic: oops\n\ngoroutine 1 [running]:\nmain.main()",
                "a Go panic",
            ),
            ("thread 'main' panicked at src/main.rs:2:5", "a Rust panic"),
        ];
        for (text, name) in leaks {
            assert_eq!(leaked_internals(text), Some(name), "{text}");
        }
        let plain = "## Savings\nSwitch **gpt-4o** to gpt-4o-mini (saves $12.40/month); Cache \
                     repeated prompts (ttl=1h). See the table: {\"model\": \"gpt-4o\"}.";
        assert_eq!(leaked_internals(plain), None);
    }

    /// An excerpt of the bundled backend's `/metrics` (OpenMetrics, from prometheus-client):
    /// counter families named without `_total`, `# UNIT` lines, label sets, `# EOF`.
    const OPENMETRICS: &str = r#"# HELP apex_runs Agent runs, by agent and outcome.
# TYPE apex_runs counter
apex_runs_total{agent="supervisor",outcome="started"} 2
apex_runs_total{agent="supervisor",outcome="completed"} 2
# HELP apex_store_operation_duration_seconds Latency of store (database) calls, by operation.
# TYPE apex_store_operation_duration_seconds histogram
# UNIT apex_store_operation_duration_seconds seconds
apex_store_operation_duration_seconds_sum{operation="begin_run"} 0.008755118
apex_store_operation_duration_seconds_count{operation="begin_run"} 2
apex_store_operation_duration_seconds_bucket{le="0.005",operation="begin_run"} 1
apex_store_operation_duration_seconds_bucket{le="+Inf",operation="begin_run"} 2
# HELP process_resident_memory_bytes Resident memory of this process.
# TYPE process_resident_memory_bytes gauge
# UNIT process_resident_memory_bytes bytes
process_resident_memory_bytes 26099712
# EOF
"#;

    #[test]
    fn openmetrics_expositions_are_checked_like_prometheus_text() {
        let check = |metric, bound| check_metric(OPENMETRICS, metric, bound);
        assert!(check("process_resident_memory_bytes", "< 1e9").is_ok());
        assert!(
            check(
                "apex_runs_total{agent=\"supervisor\",outcome=\"completed\"}",
                "== 2"
            )
            .is_ok()
        );
        assert!(
            check(
                "apex_store_operation_duration_seconds_bucket{le=\"+Inf\",operation=\"begin_run\"}",
                ">= 2"
            )
            .is_ok()
        );
        assert!(
            check(
                "apex_store_operation_duration_seconds_sum{operation=\"begin_run\"}",
                "< 0.01"
            )
            .is_ok()
        );
        // Family names in comments are not samples.
        for metric in ["apex_runs", "apex_store_operation_duration_seconds", "EOF"] {
            assert!(
                matches!(check(metric, ">= 0"), Err(RunError::NoMetric { .. })),
                "{metric}"
            );
        }
    }

    #[test]
    fn prometheus_metrics_are_checked_against_bounds() {
        let text = "# HELP x y\n# TYPE x gauge\nprocess_resident_memory_bytes 52428800\n\
                    apex_ws_connections_closed_total{code=\"1000\"} 3\n";
        assert!(check_metric(text, "process_resident_memory_bytes", "< 1e9").is_ok());
        let over = check_metric(text, "process_resident_memory_bytes", "<= 1000").unwrap_err();
        assert!(
            matches!(over, RunError::MetricOutOfBound { value, .. } if value == 52428800.0),
            "{over}"
        );
        assert_eq!(
            over.to_string(),
            "`process_resident_memory_bytes` is 52428800, expected <= 1000"
        );
        assert!(
            check_metric(
                text,
                "apex_ws_connections_closed_total{code=\"1000\"}",
                "== 3"
            )
            .is_ok()
        );
        assert!(matches!(
            check_metric(text, "missing", "< 1"),
            Err(RunError::NoMetric { .. })
        ));
        assert!(matches!(
            check_metric(text, "process_resident_memory_bytes", "about 5"),
            Err(RunError::BoundWithoutOperator { .. })
        ));
    }
}
