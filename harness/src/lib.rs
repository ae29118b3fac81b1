//! `apex-harness`: the golden-path verification harness.
//!
//! The harness drives real journeys against a chat backend and turns what it saw into a
//! verdict. It reads frames as JSON values through the documented protocol
//! (`docs/protocol.md`), never through the backend's types.
//!
//! # Layout
//!
//! - [`builder`]: the runner from Rust tests (`Harness::bundled().scenario(..).run()`).
//! - [`bundled`]: `--target bundled`, the reference backend in-process.
//! - [`cli`]: the command line (`run`, `merge`, `compare`, `canary`, `monitor`, `validate`, `list`) as clap types turned into library calls;
//!   [`exit_codes`] names every exit code in one place.
//! - [`client`]: login, a WebSocket connection by any transport (header, subprotocol,
//!   ticket, load-balancer-preserved header, none), frames recorded into a transcript,
//!   failures classified.
//! - [`profile`]: protocol profiles (`apex`, strict; `netra`, the real platform; profile
//!   files): the platform's routes, fields and frames ([`profile::TargetSettings`]), where a
//!   frame's type, `seq`, run and thread ids live, what to ignore.
//! - [`verify`]: the invariants every journey is held to, over a connection's transcript, and
//!   the failure classes they report.
//! - [`scenario`]: scenario files (YAML) parsed with line and column, and their diagnostics
//!   (`path:line:col`, a caret, a hint).
//! - [`runner`]: executes scenarios — a scenario is prepared once ([`runner::Prepared`]),
//!   virtual users run its steps under its load (one journey: [`runner::Prepared::journey`],
//!   also what the benches measure), isolation is checked across all users, thresholds make
//!   the verdict.
//! - [`report`]: what a run produced as data ([`report::model`]: scenario and run reports,
//!   the exit code), shared by the runner and the comparisons, and its renderings: the
//!   end-of-run summary, the versioned JSON report, JUnit XML and Markdown.
//! - [`metrics`]: latency trends (HDR histograms), rates and counters, mergeable across
//!   workers.
//! - [`threshold`]: k6-style thresholds (`journey_duration: p(99) < 3000`, or relative to a
//!   baseline report: `p(95) < baseline * 1.10`), their parse errors with columns, the
//!   stability protocol's defaults, and their evaluation.
//! - [`fault`]: a fault-injecting TCP proxy (latency, bandwidth, slicer, timeout, reset,
//!   data limit, close after N WebSocket frames, upgrade-header rewriting) for `faults:`.
//! - [`shard`]: `run --shard K/N --seed S`: the partition of every scenario's virtual users
//!   over N processes, and the seed markers derive from (every shard knows every marker).
//! - [`merge`]: shards' JSON reports merged exactly into one run's report (`merge`), refused
//!   when they are not the shards of one run; isolation across shards by run ids.
//! - [`compare`]: two runs compared metric by metric with confidence intervals, and the
//!   quadrilemma detector (`compare`, `run --baseline`).
//! - [`monitor`]: the scenarios in rounds against a target, with Prometheus `/metrics`, a
//!   status document and a live dashboard (`monitor`).
//! - [`canary`]: the same scenarios against a baseline and a candidate target, interleaved,
//!   and the stability protocol's rollback rules (`canary`).

pub mod builder;
pub mod bundled;
pub mod canary;
pub mod cli;
pub mod client;
pub mod compare;
pub mod exit_codes;
pub mod fault;
pub mod merge;
pub mod metrics;
pub mod monitor;
pub mod profile;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shard;
pub mod threshold;
pub mod verify;
