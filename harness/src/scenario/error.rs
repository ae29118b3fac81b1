//! What goes wrong reading scenario and profile input that is not a file with lines to point
//! at: a duration, `--target-setting`s, or a whole file's diagnostics handed on as one error.

use super::Diagnostic;

/// A scenario, profile or setting that cannot be used as written.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("`{text}` is not a duration: use a number and a unit, like 500ms, 2s or 1m")]
    NotADuration { text: String },
    #[error("`{text}` has no known unit: use ms, s, m or h")]
    UnknownUnit { text: String },
    /// A duration that must bound something (`--max-duration`) was zero.
    #[error("must be longer than zero")]
    ZeroDuration,
    #[error("--target-setting '{spec}': expected KEY=VALUE")]
    SettingNotKeyValue { spec: String },
    #[error("--target-setting '{spec}': `{part}` is not a section")]
    SettingNotSection { spec: String, part: String },
    #[error("--target-setting: {0} (docs/scenarios.md lists the settings)")]
    InvalidSettings(serde_json::Error),
    /// A scenario file with mistakes, each a diagnostic pointing into it.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

/// The diagnostics, rendered, one after the other.
fn render(diagnostics: &[Diagnostic]) -> String {
    (diagnostics.iter())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
