//! The exit codes of `apex-harness`, in one place (documented in the README).

/// Every journey passed and every threshold held.
pub const PASS: u8 = 0;
/// A journey failed its assertions or invariants.
pub const JOURNEY_FAILED: u8 = 1;
/// Bad usage or a scenario file error; also a run in which nothing ran (every selected
/// scenario skipped: it verified nothing, so it must not pass).
pub const USAGE: u8 = 2;
/// A threshold was breached while the journeys themselves passed.
pub const THRESHOLD_BREACHED: u8 = 3;
/// Infrastructure: the bundled backend could not start, or no journey could reach the target
/// at all (refused, DNS, TLS). A server that answers, even with a 404, is not this.
pub const INFRASTRUCTURE: u8 = 4;
/// `compare --strict` or `run --baseline --strict`: a metric that decides regressed beyond
/// tolerance against the baseline.
pub const REGRESSION: u8 = 5;
/// `canary`: a rollback rule fired for the candidate.
pub const ROLLBACK: u8 = 6;
