//! The harness's checks against the real bundled backend: a healthy backend must pass them.

mod invariants;
