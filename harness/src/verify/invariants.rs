//! The invariants every journey is held to unless its profile turns one off: `seq` strictly
//! increasing and gap-free, no duplicate unless marked as a redelivery, runs well formed
//! (`agent_started` first, `agent_completed` last, tools paired), no close 1011, and no frame
//! carrying another virtual user's identity or message marker.
//!
//! Checks look only at what the connection received, never at what the harness sent.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{Failure, FailureClass, Transcript};
use crate::profile::Profile;

/// The stream event types of the golden path.
const EVENT_TYPES: &[&str] = &[
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
];

#[derive(Default)]
struct RunState<'t> {
    /// Open `agent_started`s (nested agents count up).
    depth: u32,
    completed: bool,
    open_tools: Vec<String>,
    /// The run was already under way when this connection first saw it (another connection
    /// of the user started it before this one opened): its early events are not here.
    joined: bool,
    /// Its events that have a `seq`, as received (type, tool name): what a `resync` rolls the
    /// run back to.
    held: Vec<Held<'t>>,
}

/// One event of a run, as much of it as the run's structure and a `resync` need, borrowed
/// from the transcript.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Held<'t> {
    seq: u64,
    kind: &'t str,
    tool: &'t str,
    /// `agent_name`: with the type and tool, what tells a run's events apart.
    agent: &'t str,
}

fn is_redelivery(frame: &Value) -> bool {
    frame.get("redelivery") == Some(&Value::Bool(true))
}

/// The frame without fields that legitimately differ between two sends of one event.
fn identity_of(frame: &Value) -> String {
    let mut copy = frame.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("timestamp");
        map.remove("redelivery");
    }
    copy.to_string()
}

/// Checks one connection's transcript against the profile's invariants.
pub fn check_connection<'a>(profile: &'a Profile, transcript: &'a Transcript) -> Vec<Failure> {
    let mut check = Check::new(profile, transcript);
    for (index, frame) in transcript.frames.iter().enumerate() {
        let value = &frame.value;
        let Some(kind) = profile.frame_type(value) else {
            continue;
        };
        if kind == super::RESYNC {
            let found = check.failures.len();
            check.resync(super::resync_from(value), Some(index));
            check.found_at(found, None);
            continue;
        }
        let seq = profile.seq(value);
        if profile.is_ignored(kind) || !(EVENT_TYPES.contains(&kind) || seq.is_some()) {
            continue;
        }
        let at = Some(index);
        let found = check.failures.len();
        if check.sequence(kind, value, seq, at) {
            check.run_structure(kind, value, seq, at);
        }
        check.found_at(found, seq);
    }
    check.finish()
}

/// What [`check_connection`] has seen so far of one connection, and what it found.
struct Check<'a> {
    profile: &'a Profile,
    failures: Vec<Failure>,
    /// The highest `seq` so far (or where the stream stood when the connection opened).
    last_seq: Option<u64>,
    seen_seqs: HashSet<u64>,
    /// Events without a `seq`, by identity, to tell a duplicate.
    seen_frames: HashSet<String>,
    runs: HashMap<String, RunState<'a>>,
    /// Events a `resync` voided, by run, that have not arrived again yet (with the resync's
    /// `from_seq`); each left at the end is missing.
    owed: Vec<(String, Held<'a>, u64)>,
    /// The `seq` of the frame each of `failures` was found at (`None`: not at an event with
    /// a `seq`): a later `resync` from below that `seq` voids the frame, and what was found
    /// at it.
    failure_seqs: Vec<Option<u64>>,
}

impl<'a> Check<'a> {
    /// Starts with how the connection ended (a close 1011 fails it whatever it received) and
    /// where the stream stood when it opened: the first event must follow that.
    fn new(profile: &'a Profile, transcript: &Transcript) -> Self {
        let mut failures = Vec::new();
        if transcript.close_code == Some(1011) {
            failures.push(Failure::new(
                FailureClass::Ws1011,
                "the server closed the connection with 1011 (internal error)",
                None,
            ));
        }
        let last_seq = transcript.resumed_after.or_else(|| {
            transcript
                .frames
                .iter()
                .find(|f| profile.frame_type(&f.value) == Some("connection_established"))
                .and_then(|f| f.value.get("last_seq")?.as_u64())
        });
        Self {
            profile,
            failures,
            last_seq,
            seen_seqs: HashSet::new(),
            seen_frames: HashSet::new(),
            runs: HashMap::new(),
            owed: Vec::new(),
            failure_seqs: Vec::new(),
        }
    }

    fn fail(&mut self, class: FailureClass, message: String, at: Option<usize>) {
        self.failures.push(Failure::new(class, message, at));
    }

    /// Notes that the failures from index `from` on were found at the event with `seq`.
    fn found_at(&mut self, from: usize, seq: Option<u64>) {
        self.failure_seqs.resize(from, None);
        self.failure_seqs.resize(self.failures.len(), seq);
    }

    /// Sequence numbers and duplicates; `false` when the frame is a redelivery or a
    /// duplicate, which the run structure does not count again.
    fn sequence(&mut self, kind: &str, value: &Value, seq: Option<u64>, at: Option<usize>) -> bool {
        match seq {
            Some(seq) if is_redelivery(value) => {
                if !self.seen_seqs.contains(&seq) {
                    self.fail(
                        FailureClass::SeqGap,
                        format!("redelivery of seq {seq}, whose first send never arrived"),
                        at,
                    );
                    self.seen_seqs.insert(seq);
                }
                // A marked redelivery of a known event is allowed and not re-checked.
                false
            }
            Some(seq) => {
                if !self.seen_seqs.insert(seq) {
                    self.fail(
                        FailureClass::DuplicateEvent,
                        format!("seq {seq} arrived again without `redelivery: true`"),
                        at,
                    );
                    return false;
                }
                match self.last_seq {
                    Some(last) if seq <= last => self.fail(
                        FailureClass::OrderViolation,
                        format!("seq {seq} arrived after seq {last}"),
                        at,
                    ),
                    Some(last) if seq > last + 1 => self.fail(
                        FailureClass::SeqGap,
                        format!(
                            "seq {seq} follows seq {last}: {} event(s) missing",
                            seq - last - 1
                        ),
                        at,
                    ),
                    _ => {}
                }
                self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
                true
            }
            None => {
                if self.profile.require_seq {
                    self.fail(
                        FailureClass::SeqGap,
                        format!("`{kind}` event without a seq"),
                        at,
                    );
                }
                if !self.seen_frames.insert(identity_of(value)) {
                    self.fail(
                        FailureClass::DuplicateEvent,
                        format!("`{kind}` arrived twice, identical"),
                        at,
                    );
                    return false;
                }
                true
            }
        }
    }

    /// Run structure: an event belongs to a run that has not completed, `agent_started`
    /// opens it (once, unless agents nest), the other events go on in it.
    fn run_structure(
        &mut self,
        kind: &'a str,
        value: &'a Value,
        seq: Option<u64>,
        at: Option<usize>,
    ) {
        let profile = self.profile;
        let Some(run_id) = profile.run_id(value) else {
            if profile.require_seq {
                self.fail(
                    FailureClass::OrderViolation,
                    format!("`{kind}` event without a run_id"),
                    at,
                );
            }
            return;
        };
        let run = self.runs.entry(run_id.to_owned()).or_default();
        let tool = profile.tool_name(value).unwrap_or_default();
        if let Some(seq) = seq {
            let held = Held {
                seq,
                kind,
                tool,
                agent: (value.get("agent_name").and_then(Value::as_str)).unwrap_or_default(),
            };
            if let Some(owed) = (self.owed.iter())
                .position(|(run, voided, _)| run == run_id && voided.same_event(&held))
            {
                self.owed.remove(owed);
            }
            run.held.push(held);
        }
        run.take(kind, tool, run_id, profile, at, &mut self.failures);
    }

    /// A `resync {from_seq}` (docs/protocol.md §4.7): the events after `from_seq` are void.
    /// The `seq` invariants go on from `from_seq` (the next event is `from_seq + 1`; a `seq`
    /// above it may come again), each run is rolled back to its events up to `from_seq`, and
    /// every voided event is owed: it must arrive again (same run, type and tool, any new
    /// `seq`) before the connection ends. A `resync` without a whole-number `from_seq`, or
    /// one ahead of the last `seq` this connection holds, hides events: `seq_gap`.
    fn resync(&mut self, from_seq: Option<u64>, at: Option<usize>) {
        let Some(from_seq) = from_seq else {
            self.fail(
                FailureClass::SeqGap,
                "a `resync` without a whole-number `from_seq`: what to discard is unknown".into(),
                at,
            );
            return;
        };
        if let Some(last) = self.last_seq
            && from_seq > last
        {
            self.fail(
                FailureClass::SeqGap,
                format!("a `resync` from seq {from_seq}, ahead of the last seq held ({last})"),
                at,
            );
            return;
        }
        self.last_seq = Some(from_seq);
        self.seen_seqs.retain(|seq| *seq <= from_seq);
        // What was found at the voided events goes with them (a gap, a run seen twice):
        // everything after `from_seq` comes again and is judged then.
        self.failure_seqs.resize(self.failures.len(), None);
        let kept: Vec<bool> = (self.failure_seqs.iter())
            .map(|seq| seq.is_none_or(|seq| seq <= from_seq))
            .collect();
        let mut keep = kept.iter();
        self.failures.retain(|_| *keep.next().unwrap_or(&true));
        let mut keep = kept.iter();
        self.failure_seqs.retain(|_| *keep.next().unwrap_or(&true));
        let profile = self.profile;
        let mut runs = std::mem::take(&mut self.runs);
        for (run_id, run) in runs.iter_mut() {
            if run.held.iter().all(|h| h.seq <= from_seq) {
                continue;
            }
            let (kept, voided): (Vec<Held>, Vec<Held>) =
                run.held.drain(..).partition(|h| h.seq <= from_seq);
            for event in voided {
                // One copy is owed, however many were voided (a renumbered copy may have
                // arrived before the resync).
                if !(self.owed.iter())
                    .any(|(run, owed, _)| run == run_id && owed.same_event(&event))
                {
                    self.owed.push((run_id.clone(), event, from_seq));
                }
            }
            *run = RunState::rebuilt(kept, run_id, profile);
        }
        runs.retain(|_, run| !run.held.is_empty());
        self.runs = runs;
    }

    /// The failures, with every event a `resync` voided that never arrived again.
    fn finish(mut self) -> Vec<Failure> {
        for (run_id, voided, from_seq) in std::mem::take(&mut self.owed) {
            self.fail(
                FailureClass::MissingEvent(voided.kind.to_owned()),
                format!(
                    "`{}` of run {run_id} (seq {}) was voided by a `resync` from seq {from_seq} \
                     and never sent again",
                    voided.kind, voided.seq
                ),
                None,
            );
        }
        self.failures
    }
}

impl Held<'_> {
    /// The same event of a run, whatever its `seq`.
    fn same_event(&self, other: &Held) -> bool {
        self.kind == other.kind && self.tool == other.tool && self.agent == other.agent
    }
}

impl<'t> RunState<'t> {
    /// The state of a run after `held`, its events up to a `resync`'s `from_seq`, in the
    /// order received (they were checked when they arrived; nothing is reported again).
    fn rebuilt(held: Vec<Held<'t>>, run_id: &str, profile: &Profile) -> Self {
        let mut run = Self::default();
        let mut already_reported = Vec::new();
        for event in held {
            run.take(
                event.kind,
                event.tool,
                run_id,
                profile,
                None,
                &mut already_reported,
            );
            run.held.push(event);
        }
        run
    }

    /// Run structure for one event of this run (`tool`: its tool name, if any).
    fn take(
        &mut self,
        kind: &str,
        tool: &str,
        run_id: &str,
        profile: &Profile,
        at: Option<usize>,
        failures: &mut Vec<Failure>,
    ) {
        let run = self;
        if run.completed {
            failures.push(Failure::new(
                FailureClass::OrderViolation,
                format!("`{kind}` of run {run_id} after its agent_completed"),
                at,
            ));
            return;
        }
        match kind {
            "agent_started" => {
                if run.depth > 0 && !profile.nested_agents {
                    failures.push(Failure::new(
                        FailureClass::OrderViolation,
                        format!("second agent_started for run {run_id}"),
                        at,
                    ));
                }
                run.depth += 1;
            }
            // First sight of a run in the middle: joined late. A genuinely dropped
            // agent_started shows as a seq gap, and as the journey's own missing event.
            _ if run.depth == 0 => {
                run.joined = true;
                run.depth = 1;
                finish_event(kind, tool, run, run_id, at, failures);
            }
            _ => finish_event(kind, tool, run, run_id, at, failures),
        }
    }
}

/// Tool pairing and the end of a run, for an event of a run that has started.
fn finish_event(
    kind: &str,
    tool: &str,
    run: &mut RunState,
    run_id: &str,
    at: Option<usize>,
    failures: &mut Vec<Failure>,
) {
    match kind {
        "tool_executing" => run.open_tools.push(tool.to_owned()),
        "tool_completed" => {
            match run.open_tools.iter().rposition(|t| t == tool) {
                Some(open) => {
                    run.open_tools.remove(open);
                }
                // A joined run's tool may have started before this connection opened.
                None if run.joined => {}
                None => failures.push(Failure::new(
                    FailureClass::UnpairedTool,
                    format!("tool_completed `{tool}` of run {run_id} without its tool_executing"),
                    at,
                )),
            }
        }
        "agent_completed" | "agent_error" => {
            run.depth -= 1;
            if run.depth == 0 {
                run.completed = true;
                for tool in run.open_tools.drain(..) {
                    failures.push(Failure::new(
                        FailureClass::UnpairedTool,
                        format!("tool_executing `{tool}` of run {run_id} never completed"),
                        at,
                    ));
                }
            }
        }
        _ => {}
    }
}

/// Who a virtual user is, as far as leaks go: anything of it in another user's frames is a
/// breach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub email: String,
    /// The unique marker the harness puts in each of this user's messages.
    pub marker: String,
    /// Run and thread ids of this journey's runs, as their `agent_started` announced them: an
    /// event of this run on another user's connection is a breach (routing by thread id).
    pub runs: Vec<String>,
}

impl Identity {
    pub(super) fn needles(&self) -> impl Iterator<Item = &str> {
        self.user_id
            .iter()
            .map(String::as_str)
            .chain([self.email.as_str(), self.marker.as_str()])
            .chain(self.runs.iter().map(String::as_str))
            .filter(|n| !n.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::verify::isolation::{check_isolation, unchecked};

    const RUN: [(&str, &str); 11] = [
        ("agent_started", ""),
        ("agent_thinking", ""),
        ("tool_executing", "fetch_usage_data"),
        ("tool_completed", "fetch_usage_data"),
        ("agent_thinking", ""),
        ("tool_executing", "analyze_costs"),
        ("tool_completed", "analyze_costs"),
        ("agent_thinking", ""),
        ("tool_executing", "generate_report"),
        ("tool_completed", "generate_report"),
        ("agent_completed", ""),
    ];

    fn event(kind: &str, tool: &str, seq: u64, run: &str) -> Value {
        json!({ "type": kind, "seq": seq, "run_id": run, "payload": { "tool_name": tool } })
    }

    fn transcript(frames: Vec<Value>) -> Transcript {
        let mut t = Transcript::default();
        t.push(
            Duration::ZERO,
            json!({ "type": "connection_established", "last_seq": 0 }),
        );
        for frame in frames {
            t.push(Duration::ZERO, frame);
        }
        t
    }

    fn healthy_run(first_seq: u64, run: &str) -> Vec<Value> {
        RUN.iter()
            .enumerate()
            .map(|(i, (kind, tool))| event(kind, tool, first_seq + i as u64, run))
            .collect()
    }

    fn classes(failures: &[Failure]) -> Vec<String> {
        failures.iter().map(|f| f.class.to_string()).collect()
    }

    #[test]
    fn a_healthy_run_with_heartbeats_and_redeliveries_passes() {
        let mut frames = healthy_run(1, "r1");
        frames.insert(3, json!({ "type": "pong" }));
        let mut redelivered = frames[2].clone();
        redelivered["redelivery"] = json!(true);
        frames.push(redelivered);
        assert!(check_connection(&Profile::apex(), &transcript(frames)).is_empty());
    }

    #[test]
    fn interleaved_runs_of_one_user_pass() {
        let (a, b) = (healthy_run(1, "a"), healthy_run(100, "b"));
        let mut frames = Vec::new();
        for (seq, (x, y)) in a.into_iter().zip(b).enumerate() {
            let mut x = x;
            let mut y = y;
            x["seq"] = json!(2 * seq as u64 + 1);
            y["seq"] = json!(2 * seq as u64 + 2);
            frames.extend([x, y]);
        }
        assert!(check_connection(&Profile::apex(), &transcript(frames)).is_empty());
    }

    #[test]
    fn each_sabotage_is_caught_with_its_class() {
        let apex = Profile::apex();
        let check = |frames: Vec<Value>| classes(&check_connection(&apex, &transcript(frames)));

        let mut dropped = healthy_run(1, "r");
        dropped.remove(6); // tool_completed analyze_costs
        let found = check(dropped);
        assert!(
            found.contains(&"seq_gap".to_owned()) && found.contains(&"unpaired_tool".to_owned()),
            "{found:?}"
        );

        let mut renumbered = healthy_run(1, "r");
        renumbered.remove(6);
        for (i, frame) in renumbered.iter_mut().enumerate() {
            frame["seq"] = json!(i as u64 + 1);
        }
        assert_eq!(
            check(renumbered),
            ["unpaired_tool"],
            "a dropped event hidden by renumbering"
        );

        let mut swapped = healthy_run(1, "r");
        swapped.swap(2, 3);
        let found = check(swapped);
        assert!(found.contains(&"order_violation".to_owned()), "{found:?}");

        let mut duplicated = healthy_run(1, "r");
        duplicated.insert(5, duplicated[4].clone());
        assert_eq!(check(duplicated), ["duplicate_event"]);

        let mut late = healthy_run(1, "r");
        let last = late.pop().unwrap();
        late.insert(9, last);
        let found = check(late);
        assert!(found.contains(&"order_violation".to_owned()), "{found:?}");

        let mut unmarked_resend = healthy_run(1, "r");
        unmarked_resend.push(unmarked_resend[0].clone());
        assert_eq!(check(unmarked_resend), ["duplicate_event"]);

        let mut t = transcript(healthy_run(1, "r"));
        t.close_code = Some(1011);
        assert_eq!(classes(&check_connection(&apex, &t)), ["ws_1011"]);
    }

    /// A connection of the cut-off instance (docs/protocol.md §4.7): its own run `a` got seqs
    /// 5..=15 while cut off; the other instance's run `b` took 5..=15 meanwhile; after the
    /// `resync` from 4 come `b` (5..=15) and `a` again (16..=26).
    fn resynced_stream() -> Vec<Value> {
        let mut frames = healthy_run(1, "x")[..4].to_vec();
        for frame in &mut frames {
            frame["run_id"] = json!("x");
        }
        // Run `x` holds seqs 1..=4 and goes on (5..) after the resync.
        frames.extend(healthy_run(5, "a"));
        frames.push(json!({ "type": "resync", "from_seq": 4, "payload": { "from_seq": 4 } }));
        frames.extend(healthy_run(5, "b"));
        frames.extend(healthy_run(16, "a"));
        let mut rest = healthy_run(23, "x");
        rest.drain(..4);
        frames.extend(rest);
        frames
    }

    #[test]
    fn after_a_resync_the_voided_events_come_again_and_pass() {
        let apex = Profile::apex();
        let frames = resynced_stream();
        assert!(check_connection(&apex, &transcript(frames.clone())).is_empty());
        // A gap among the voided events is healed by the resync.
        let mut gapped = frames.clone();
        gapped.remove(5); // `a`'s first agent_thinking
        assert!(check_connection(&apex, &transcript(gapped)).is_empty());
        // So is `a` arriving a second time, renumbered, just before the resync (what the
        // bundled backend does when the new numbering reaches the connection first).
        let mut early = frames;
        let resync_at = 4 + 11;
        let copy = healthy_run(16, "a");
        early.splice(resync_at..resync_at, copy);
        assert!(check_connection(&apex, &transcript(early)).is_empty());
    }

    #[test]
    fn after_a_resync_a_loss_or_a_duplicate_is_still_caught() {
        let apex = Profile::apex();
        let check = |frames: Vec<Value>| classes(&check_connection(&apex, &transcript(frames)));
        let resync_at = 4 + 11;
        // The voided `a` is not sent again in full: its last three events are missing.
        let mut short = resynced_stream();
        short.truncate(resync_at + 1 + 11 + 8);
        assert_eq!(
            check(short),
            [
                "missing_event:tool_executing",
                "missing_event:tool_completed",
                "missing_event:agent_completed"
            ]
        );
        // One event of `b` left out after the resync: a gap.
        let mut dropped = resynced_stream();
        dropped.remove(resync_at + 1 + 3);
        assert!(check(dropped).contains(&"seq_gap".to_owned()));
        // The same seq twice after the resync: a duplicate.
        let mut doubled = resynced_stream();
        doubled.insert(resync_at + 3, doubled[resync_at + 2].clone());
        assert_eq!(check(doubled), ["duplicate_event"]);
        // Without the resync the same frames are a mess of repeated seqs and runs.
        let mut unannounced = resynced_stream();
        unannounced.remove(resync_at);
        let found = check(unannounced);
        assert!(found.contains(&"duplicate_event".to_owned()), "{found:?}");
        assert!(found.contains(&"order_violation".to_owned()), "{found:?}");
        // A resync that cannot be followed.
        let mut ahead = healthy_run(1, "r");
        ahead.push(json!({ "type": "resync", "from_seq": 30 }));
        assert_eq!(check(ahead), ["seq_gap"]);
        let mut blank = healthy_run(1, "r");
        blank.push(json!({ "type": "resync" }));
        assert_eq!(check(blank), ["seq_gap"]);
    }

    #[test]
    fn a_connection_that_joins_a_run_midway_is_not_blamed_for_its_start() {
        // Another connection of the user started the run; this one opened after seq 3.
        let mut t = Transcript::default();
        t.push(
            Duration::ZERO,
            json!({ "type": "connection_established", "last_seq": 3 }),
        );
        for frame in healthy_run(1, "r").into_iter().skip(3) {
            t.push(Duration::ZERO, frame);
        }
        assert!(check_connection(&Profile::apex(), &t).is_empty());
    }

    #[test]
    fn the_first_event_must_follow_the_announced_stream_head() {
        let mut t = Transcript::default();
        t.push(
            Duration::ZERO,
            json!({ "type": "connection_established", "last_seq": 10 }),
        );
        for frame in healthy_run(13, "r") {
            t.push(Duration::ZERO, frame);
        }
        assert_eq!(
            classes(&check_connection(&Profile::apex(), &t)),
            ["seq_gap"]
        );
    }

    #[test]
    fn netra_needs_no_seq_and_allows_sub_agents() {
        let netra = Profile::netra();
        let frames = vec![
            json!({ "type": "agent_started", "data": { "run_id": "r" } }),
            json!({ "type": "heartbeat" }),
            json!({ "type": "agent_started", "data": { "run_id": "r", "agent": "sub" } }),
            json!({ "type": "tool_executing", "data": { "run_id": "r", "tool": "t" } }),
            json!({ "type": "tool_completed", "data": { "run_id": "r", "tool": "t" } }),
            json!({ "type": "agent_completed", "data": { "run_id": "r", "agent": "sub" } }),
            json!({ "type": "agent_completed", "data": { "run_id": "r" } }),
        ];
        assert!(check_connection(&netra, &transcript(frames.clone())).is_empty());
        let mut doubled = frames;
        doubled.insert(4, doubled[3].clone());
        assert_eq!(
            classes(&check_connection(&netra, &transcript(doubled))),
            ["duplicate_event"]
        );
    }

    #[test]
    fn an_id_inside_a_longer_id_is_not_a_breach() {
        let identity = |email: &str, run: &str| Identity {
            user_id: None,
            email: email.into(),
            marker: format!("mk-{email}"),
            runs: vec![run.into()],
        };
        let (two, twenty_one) = (
            identity("a@x.test", "run-2"),
            identity("b@x.test", "run-21"),
        );
        let own = transcript(vec![json!({ "type": "agent_started", "run_id": "run-21" })]);
        let leaked = transcript(vec![json!({ "type": "agent_started", "run_id": "run-2" })]);
        let found = check_isolation(&[(&two, &transcript(Vec::new())), (&twenty_one, &own)]);
        assert!(found[1].is_empty(), "{:?}", found[1]);
        let found = check_isolation(&[(&two, &transcript(Vec::new())), (&twenty_one, &leaked)]);
        assert_eq!(classes(&found[1]), ["isolation_breach"]);
    }

    #[test]
    fn an_isolation_check_that_cannot_run_fails_every_transcript() {
        let failures = unchecked(3, "pattern set too large");
        assert_eq!(failures.len(), 3);
        for found in &failures {
            assert_eq!(classes(found), ["harness_error:isolation_check"]);
            assert!(found[0].message.contains("pattern set too large"));
        }
    }

    #[test]
    fn another_users_marker_or_identity_is_a_breach() {
        let alice = Identity {
            user_id: Some("u-alice".into()),
            email: "alice@apex.test".into(),
            marker: "mk-a1".into(),
            runs: Vec::new(),
        };
        let bob = Identity {
            user_id: Some("u-bob".into()),
            email: "bob@apex.test".into(),
            marker: "mk-b2".into(),
            runs: Vec::new(),
        };
        let own = transcript(vec![
            json!({ "type": "agent_started", "payload": { "echo": "mk-a1", "user": "u-alice" } }),
        ]);
        let leaked = transcript(vec![
            json!({ "type": "agent_thinking", "payload": { "thought": "about mk-a1" } }),
        ]);
        let results = check_isolation(&[(&alice, &own), (&bob, &leaked)]);
        assert!(
            results[0].is_empty(),
            "own marker is fine: {:?}",
            results[0]
        );
        assert_eq!(classes(&results[1]), ["isolation_breach"]);
        assert_eq!(results[1][0].frame, Some(1));
    }
}
