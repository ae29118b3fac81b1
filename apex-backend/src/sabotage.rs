//! Deliberate breakage for the harness's self-test: each mode reproduces one failure that
//! really happened to the platform (docs/failure-modes.md), so a test can prove the harness catches it
//! with the right failure class. Compiled in, **refused at start-up unless
//! `--allow-sabotage` is also given**, never on by default (docs/failure-modes.md).

use std::sync::Mutex;

use uuid::Uuid;

/// One way to break the golden path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sabotage {
    /// The optimizer's `tool_completed` is never published.
    DropEvent,
    /// The data helper's `tool_completed` is published before its `tool_executing`.
    SwapEvents,
    /// The data helper's `tool_completed` is written twice on the wire, unmarked.
    DuplicateEvent,
    /// The report generator's `agent_thinking` also goes to the stream of another user with a
    /// run in flight.
    CrossUser,
    /// Every WebSocket connection is authenticated as one identity (the first fixture user).
    DemoIdentity,
    /// The connection closes with 1011 after the optimizer's `tool_executing`.
    Close1011,
    /// The run stops after the optimizer's `tool_executing` and never finishes.
    HangAfterToolExecuting,
    /// `agent_completed` is held back for `--sabotage-delay-ms` (default 6 s).
    DelayEvent,
    /// The answer's numbers are inflated by half (the stored result stays right).
    CorruptNumbers,
    /// The report generator's thought quotes another user's last message.
    LeakText,
    /// Every `seq` from the optimizer's first event on is written one higher: a gap.
    SkipSeq,
}

/// What some modes need to remember across runs.
#[derive(Debug, Default)]
pub struct SabotageState {
    /// The identity every connection collapses into (`demo-identity`): the first fixture user.
    pub demo_identity: Option<Uuid>,
    /// The last message another run received: its user and text (`leak-text`).
    last_message: Mutex<Option<(Uuid, String)>>,
}

impl SabotageState {
    pub fn new(demo_identity: Option<Uuid>) -> Self {
        Self {
            demo_identity,
            last_message: Mutex::default(),
        }
    }

    /// Records `user`'s message and returns the previous message of a different user.
    pub fn exchange(&self, user: Uuid, content: &str) -> Option<(Uuid, String)> {
        let mut last = self.last_message.lock().unwrap_or_else(|e| e.into_inner());
        let other = last.clone().filter(|(u, _)| *u != user);
        *last = Some((user, content.to_owned()));
        other
    }
}
