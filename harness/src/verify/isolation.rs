//! Isolation: no frame a user receives may carry another user's identity, message marker,
//! or the ids of another user's runs.
//!
//! What is known before a run (every user's email and fixture id, every virtual user's
//! marker, on every shard) is one automaton built once per scenario; what is learnt while it
//! goes on (the user ids logins answer with, the run and thread ids of each journey's runs)
//! is added as it is learnt. Each journey's frames are checked when it ends, against
//! everything known by then, so its transcript need not be kept after that.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Failure, FailureClass, Identity, Transcript};

/// The needles of a run's isolation check, each with the email of the user it belongs to.
pub struct Isolation {
    /// Known before the run.
    known: Vec<(Box<str>, Arc<str>)>,
    /// One automaton over `known`, or why it could not be built.
    automaton: Result<aho_corasick::AhoCorasick, String>,
    learnt: Mutex<Learnt>,
}

impl std::fmt::Debug for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolation")
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// Needles learnt during the run.
#[derive(Default)]
struct Learnt {
    /// Needles that are one token (ASCII letters, digits, `_`, `-`: the ids), found by looking
    /// up each token of a frame; with every owner that announced one.
    tokens: HashMap<Box<str>, Vec<Arc<str>>>,
    /// The shortest and longest of `tokens`: a frame's tokens of other lengths (most of its
    /// words) are not looked up.
    lengths: (usize, usize),
    /// Any other needle, searched for in each frame.
    others: Vec<(Box<str>, Arc<str>)>,
}

/// A character that continues an id: a needle found with one of these right before or after
/// it is part of a longer id, not the needle.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `text[start..end]` stands on its own: not part of a longer id (`run-2` inside
/// `run-21`, `a@x.test` inside `ba@x.test`), which would be another user's, or nobody's.
fn whole_token(text: &str, start: usize, end: usize) -> bool {
    !text[..start].chars().next_back().is_some_and(id_char)
        && !text[end..].chars().next().is_some_and(id_char)
}

fn same_user(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Isolation {
    /// The check over `known` (needle, owner's email) pairs; empty needles are left out.
    pub fn new<'a>(known: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut owners: HashMap<&str, Arc<str>> = HashMap::new();
        let mut seen: HashSet<(&str, String)> = HashSet::new();
        let mut needles = Vec::new();
        for (needle, owner) in known {
            if needle.is_empty() || !seen.insert((needle, owner.to_ascii_lowercase())) {
                continue;
            }
            let owner = owners.entry(owner).or_insert_with(|| Arc::from(owner));
            needles.push((Box::from(needle), owner.clone()));
        }
        let automaton = aho_corasick::AhoCorasick::new(needles.iter().map(|(n, _)| &**n))
            .map_err(|e| e.to_string());
        Self {
            known: needles,
            automaton,
            learnt: Mutex::new(Learnt::default()),
        }
    }

    /// Adds a needle learnt during the run (a user id, a run or thread id) of `owner`: from
    /// now on, a frame of another user carrying it is a breach.
    pub fn learn(&self, needle: &str, owner: &str) {
        if needle.is_empty() {
            return;
        }
        let mut learnt = self.learnt.lock().unwrap_or_else(PoisonError::into_inner);
        if needle.chars().all(id_char) {
            let first = learnt.tokens.is_empty();
            let (shortest, longest) = &mut learnt.lengths;
            if first || needle.len() < *shortest {
                *shortest = needle.len();
            }
            *longest = (*longest).max(needle.len());
            let owners = learnt.tokens.entry(Box::from(needle)).or_default();
            if !owners.iter().any(|o| same_user(o, owner)) {
                owners.push(Arc::from(owner));
            }
        } else if !(learnt.others.iter()).any(|(n, o)| &**n == needle && same_user(o, owner)) {
            learnt.others.push((Box::from(needle), Arc::from(owner)));
        }
    }

    /// The users who announced learnt needle `needle` (a run id, say).
    pub fn owners_of(&self, needle: &str) -> Vec<Arc<str>> {
        let learnt = self.learnt.lock().unwrap_or_else(PoisonError::into_inner);
        let mut owners = learnt.tokens.get(needle).cloned().unwrap_or_default();
        owners.extend(
            (learnt.others.iter())
                .filter(|(n, _)| &**n == needle)
                .map(|(_, o)| o.clone()),
        );
        owners
    }

    /// The breaches in what a connection of `own` (an email) received: each frame carrying a
    /// needle of another user, once per frame and user. A check that could not be built is a
    /// failure of its own, never a pass.
    pub fn check(&self, own: &str, transcript: &Transcript) -> Vec<Failure> {
        let automaton = match &self.automaton {
            Ok(automaton) => automaton,
            Err(why) => return unchecked(1, why).remove(0),
        };
        let mut failures = Vec::new();
        let mut text = String::new();
        for (index, frame) in transcript.frames.iter().enumerate() {
            use std::fmt::Write as _;
            text.clear();
            let _ = write!(text, "{}", frame.value);
            let mut reported: HashSet<String> = HashSet::new();
            let mut breach = |needle: &str, owner: &str| {
                if !same_user(owner, own) && reported.insert(owner.to_ascii_lowercase()) {
                    failures.push(Failure::new(
                        FailureClass::IsolationBreach,
                        format!("frame received by {own} carries `{needle}` of {owner}"),
                        Some(index),
                    ));
                }
            };
            for found in automaton.find_overlapping_iter(&text) {
                if whole_token(&text, found.start(), found.end()) {
                    let (needle, owner) = &self.known[found.pattern().as_usize()];
                    breach(needle, owner);
                }
            }
            let learnt = self.learnt.lock().unwrap_or_else(PoisonError::into_inner);
            if !learnt.tokens.is_empty() {
                let (shortest, longest) = learnt.lengths;
                let tokens = text.split(|c: char| !id_char(c));
                for token in tokens.filter(|t| (shortest..=longest).contains(&t.len())) {
                    for owner in learnt.tokens.get(token).into_iter().flatten() {
                        breach(token, owner);
                    }
                }
            }
            for (needle, owner) in &learnt.others {
                let mut at = text.match_indices(&**needle);
                if at.any(|(start, n)| whole_token(&text, start, start + n.len())) {
                    breach(needle, owner);
                }
            }
        }
        failures
    }
}

/// Checks every user's transcripts for other users' identities and markers (all known in
/// advance: one [`Isolation`] over every identity's needles).
///
/// Returns, per input transcript (same order), the breaches found in it.
pub fn check_isolation(transcripts: &[(&Identity, &Transcript)]) -> Vec<Vec<Failure>> {
    let isolation = Isolation::new(
        (transcripts.iter()).flat_map(|(id, _)| id.needles().map(|n| (n, id.email.as_str()))),
    );
    if let Err(why) = &isolation.automaton {
        return unchecked(transcripts.len(), why);
    }
    (transcripts.iter())
        .map(|(identity, transcript)| isolation.check(&identity.email, transcript))
        .collect()
}

/// The isolation check could not run: every transcript fails with the reason, so a run is
/// never declared isolated without having been checked.
pub(super) fn unchecked(transcripts: usize, why: &str) -> Vec<Vec<Failure>> {
    let failure = Failure::new(
        FailureClass::Harness("isolation_check".into()),
        format!("the isolation check could not run: {why}"),
        None,
    );
    vec![vec![failure]; transcripts]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn transcript(frames: Vec<serde_json::Value>) -> Transcript {
        let mut t = Transcript::default();
        for frame in frames {
            t.push(Duration::ZERO, frame);
        }
        t
    }

    #[test]
    fn needles_learnt_during_the_run_are_breaches_from_then_on() {
        let isolation = Isolation::new([("mk1v0", "a@x.test"), ("mk1v1", "b@x.test")]);
        let leaked = transcript(vec![
            json!({ "type": "agent_thinking", "run_id": "run-7", "thread": "t:9" }),
            json!({ "type": "pong" }),
        ]);
        assert!(isolation.check("b@x.test", &leaked).is_empty());
        isolation.learn("user-0000001", "c@x.test");
        isolation.learn("run-7", "A@x.test");
        isolation.learn("t:9", "a@x.test");
        // Its owner may carry it, whatever the case of its email.
        assert!(isolation.check("a@X.test", &leaked).is_empty());
        let found = isolation.check("b@x.test", &leaked);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].class, FailureClass::IsolationBreach);
        assert_eq!(found[0].frame, Some(0));
        // A learnt id inside a longer id is not it.
        let longer = transcript(vec![json!({ "run_id": "run-77", "t": "xt:9" })]);
        assert!(isolation.check("b@x.test", &longer).is_empty());
        assert_eq!(isolation.owners_of("run-7").len(), 1);
        assert!(isolation.owners_of("run-8").is_empty());
    }
}
