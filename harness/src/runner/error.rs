//! What stops a scenario or a run before its journeys: users that cannot be found, a target,
//! file or threshold the builder cannot use, a backend that cannot start; and a step's
//! Prometheus check that does not hold.

use crate::client::ClientError;
use crate::scenario::ScenarioError;
use crate::threshold::ThresholdError;

/// Why a run, or one scenario of it, cannot start; or why an `http` step's metric check
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no fixture user is in the pool `{pool}` (users.yaml under --fixtures)")]
    NoPoolMember { pool: String },
    #[error("{email} has no `password` and is not a fixture user")]
    NoPassword { email: String },
    #[error(transparent)]
    Target(#[from] ClientError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{0} (column {col}): {hint}", col = .0.column, hint = .0.hint)]
    Threshold(#[from] ThresholdError),
    /// The scenario's faults could not be placed.
    #[error("faults: {0}")]
    Faults(String),
    #[error(transparent)]
    Bundled(#[from] crate::bundled::BundledError),
    #[error("no metric `{metric}`")]
    NoMetric { metric: String },
    #[error("bound `{bound}` must start with < <= > >= or ==")]
    BoundWithoutOperator { bound: String },
    #[error("bound `{bound}`: `{number}` is not a number")]
    BoundNotANumber { bound: String, number: String },
    #[error("`{metric}` is {value}, expected {op} {limit}")]
    MetricOutOfBound {
        metric: String,
        value: f64,
        op: &'static str,
        limit: f64,
    },
}
