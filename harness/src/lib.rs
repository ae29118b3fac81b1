//! `apex-harness`: the golden-path verification harness.
//!
//! The scenario runner, verdicts and reports arrive with the harness issue; until then this
//! crate only reserves its place in the workspace so the layout of the design card holds.
//!
//! # Layout
//!
//! Nothing yet.
