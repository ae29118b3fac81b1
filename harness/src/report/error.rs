//! What goes wrong reading a report back (a baseline for `compare`, `run --baseline`,
//! `canary`) or writing one out.

use std::path::PathBuf;

/// A report that cannot be read as a baseline, or cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not JSON: {error}", path.display())]
    NotJson {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("not an apex-harness JSON report (schema_version 1)")]
    NotAReport,
    /// A trend without its histogram: written before comparisons needed one.
    #[error(
        "trend `{trend}` has no `histogram_us`: the report predates comparisons; run again to \
         write a new one"
    )]
    NoHistogram { trend: String },
    /// What is wrong with the report in the file at `path`.
    #[error("{}: {error}", path.display())]
    In {
        path: PathBuf,
        error: Box<ReportError>,
    },
}
