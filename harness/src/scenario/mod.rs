//! Scenario files: YAML, parsed with line and column kept, so every mistake in a user's file
//! is reported as `path:line:col`, the line with a caret, and one line on how to fix it.
//! Parsing does no I/O beyond reading the file and never touches the network.

mod error;
pub(crate) mod model;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

pub use error::ScenarioError;
pub use model::*;

use crate::profile::Profile;
use crate::threshold;

/// A mistake in a scenario file, pointing into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
    /// The offending line of the file, for the caret display.
    pub source_line: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(f, "error: {}", self.message)?;
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            self.path.display(),
            self.line,
            self.column
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        writeln!(f, "{pad} | {}^", " ".repeat(self.column.saturating_sub(1)))?;
        write!(f, "{pad} = hint: {}", self.hint)
    }
}

/// The source's lines as YAML counts them: a line ends at `\r\n`, `\n` or a lone `\r`
/// (`str::lines` does not split at a lone `\r`, so a file with classic-Mac line endings would
/// point past its end; found by fuzzing).
fn source_lines(source: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        match rest.find(['\r', '\n']) {
            Some(at) => {
                lines.push(&rest[..at]);
                let width = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + width..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    lines
}

fn diagnostic(
    path: &Path,
    source: &str,
    line: usize,
    column: usize,
    message: String,
    hint: &str,
) -> Diagnostic {
    Diagnostic {
        path: path.to_owned(),
        line: line.max(1),
        column: column.max(1),
        message,
        hint: hint.to_owned(),
        source_line: source_lines(source)
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or_default()
            .to_owned(),
    }
}

const STEP_NAMES: &str = "login, connect, send, expect, expect_response, disconnect, resume, wait, http, expect_close, fault";

/// One line on how to fix a parse error, by what kind of error it is.
fn hint_for(message: &str) -> &'static str {
    if message.contains("unknown variant") && message.contains("expected one of login") {
        "a step is one of: login, connect, send, expect, expect_response, disconnect, resume, \
         wait, http, expect_close, fault (see docs/scenarios.md)"
    } else if message.contains("unknown variant") {
        "use one of the values listed above (docs/scenarios.md describes each)"
    } else if message.contains("unknown field") {
        "check the spelling; the keys this section accepts are listed above and in docs/scenarios.md"
    } else if message.contains("missing field") {
        "add the missing key; docs/scenarios.md shows every required key with an example"
    } else if message.contains("duration") || message.contains("unit") {
        "durations are a number and a unit: 500ms, 2s, 1m"
    } else if message.contains("unexpected") {
        "check the YAML here: indentation, brackets, quotes and colons"
    } else if message.contains("whole number")
        || message.contains("expected")
        || message.contains("did not match")
    {
        "this value has the wrong type for its key; docs/scenarios.md gives the type of each key"
    } else {
        "check the YAML here: indentation, brackets, quotes and colons"
    }
}

/// Clearer words for serde's type errors.
fn reword(message: String) -> String {
    for kind in ["u8", "u16", "u32", "u64", "usize"] {
        if message == format!("invalid {kind}") {
            return "expected a whole number".into();
        }
    }
    if message == "invalid f64" {
        return "expected a number".into();
    }
    message
}

/// serde-saphyr's message without its own `line N column M:` prefix and snippet.
fn bare_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") && prefix.contains(" column ") => rest,
        _ => first,
    };
    // The YAML scanner's own "… at line N, column M" ending repeats the location we show.
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(", column ") => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

/// Where the `offset`-th character (1-based) of a scalar's value is in the source, given where
/// the scalar starts: after an opening quote, and across line breaks of a scalar that spans
/// lines (each break and the next line's indentation fold into one space of the value). The
/// result is always on a real line, at most one past its end.
fn scalar_position(source: &str, line: usize, column: usize, offset: usize) -> (usize, usize) {
    let lines = source_lines(source);
    let width = |l: usize| lines.get(l - 1).map_or(0, |t| t.chars().count());
    let text = lines
        .get(line.saturating_sub(1))
        .copied()
        .unwrap_or_default();
    let mut column = match text.chars().nth(column.saturating_sub(1)) {
        Some('"' | '\'') => column + 1,
        _ => column,
    };
    let (mut line, mut remaining) = (line.max(1), offset.saturating_sub(1));
    while column + remaining > width(line) + 1 && line < lines.len() {
        // The rest of this line, then one folded space for the break.
        remaining = remaining.saturating_sub(width(line) + 1 - column + 1);
        line += 1;
        let next = lines[line - 1];
        column = next.len() - next.trim_start().len() + 1;
    }
    (line, (column + remaining).min(width(line) + 1))
}

fn location<T>(spanned: &Spanned<T>) -> (usize, usize) {
    (
        spanned.referenced.line() as usize,
        spanned.referenced.column() as usize,
    )
}

/// The profile with the scenario's field paths applied.
fn with_fields(mut profile: Profile, fields: &FieldPaths) -> Profile {
    let paths = |list: &[String]| {
        list.iter()
            .map(|p| p.split('.').map(str::to_owned).collect())
            .collect()
    };
    if !fields.kind.is_empty() {
        profile.type_paths = paths(&fields.kind);
    }
    if !fields.seq.is_empty() {
        profile.seq_paths = paths(&fields.seq);
    }
    if !fields.run_id.is_empty() {
        profile.run_id_paths = paths(&fields.run_id);
    }
    if !fields.thread_id.is_empty() {
        profile.thread_id_paths = paths(&fields.thread_id);
    }
    if !fields.tool_name.is_empty() {
        profile.tool_name_paths = paths(&fields.tool_name);
    }
    profile.ignored_types.extend(fields.ignore.iter().cloned());
    if let Some(require) = fields.require_seq {
        profile.require_seq = require;
    }
    profile
}

/// Where each step starts in the source, and where the next begins (the step's extent).
fn step_extents(source: &str, steps: usize) -> Vec<(usize, usize, usize)> {
    #[derive(serde::Deserialize)]
    struct Located {
        #[serde(default)]
        steps: Vec<Spanned<serde::de::IgnoredAny>>,
    }
    let starts: Vec<(usize, usize)> = serde_saphyr::from_str::<Located>(source)
        .map(|l| l.steps.iter().map(location).collect())
        .unwrap_or_default();
    let end = source_lines(source).len() + 1;
    (0..steps)
        .map(|i| {
            let (line, column) = starts.get(i).copied().unwrap_or((1, 1));
            let next = starts.get(i + 1).map_or(end, |n| n.0);
            (line, column, next)
        })
        .collect()
}

/// The first place `needle` appears in lines `from..to` (1-based), or `fallback`.
fn find_in(
    source: &str,
    (from, to): (usize, usize),
    needle: &str,
    fallback: (usize, usize),
) -> (usize, usize) {
    source_lines(source)
        .iter()
        .enumerate()
        .skip(from.saturating_sub(1))
        .take(to.saturating_sub(from).max(1))
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, l[..c].chars().count() + 1)))
        .unwrap_or(fallback)
}

/// A problem of one step: the text to point at, the message, the hint.
type StepProblem = (&'static str, String, &'static str);

/// Steps that could never fail: they check nothing, so a run would pass by accident.
fn vacuous_checks(path: &Path, source: &str, scenario: &Scenario) -> Vec<Diagnostic> {
    // Located only when there is something to say, since locating re-reads the file.
    let mut found: Vec<(usize, StepProblem)> = Vec::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        let problems = match step {
            Step::Expect(e) => vacuous_expect(e),
            Step::ExpectResponse(r) => vacuous_response(r),
            _ => continue,
        };
        found.extend(problems.into_iter().map(|p| (index, p)));
    }
    if found.is_empty() {
        return Vec::new();
    }
    let extents = step_extents(source, scenario.steps.len());
    found
        .into_iter()
        .map(|(index, (needle, message, hint))| {
            let (line, column, next) = extents[index];
            let (l, c) = find_in(source, (line, next), needle, (line, column));
            diagnostic(path, source, l, c, message, hint)
        })
        .collect()
}

/// An `expect` that awaits nothing, or expects an event it also ignores.
fn vacuous_expect(e: &ExpectStep) -> Vec<StepProblem> {
    let mut found = Vec::new();
    if e.events.is_empty() && e.error.is_none() {
        found.push((
            "expect",
            "this `expect` step expects no event and no error: it checks nothing".into(),
            "list the events that must arrive (`events: [agent_started, …]`) or the error code \
             (`error: INVALID_JSON`)",
        ));
    }
    for event in &e.events {
        let kind = match event {
            EventExpectation::Type(kind) => kind,
            EventExpectation::Detailed(d) => &d.kind,
        };
        if e.ignore.contains(kind) {
            found.push((
                "ignore",
                format!("`{kind}` is both expected and in `ignore`"),
                "an ignored frame type can never match: remove it from one list",
            ));
        }
    }
    found
}

/// An `expect_response` without a check, or with a tolerance that cannot hold.
fn vacuous_response(r: &ResponseStep) -> Vec<StepProblem> {
    let mut found = Vec::new();
    let checks_nothing = r.contains.is_empty()
        && r.not_contains.is_empty()
        && r.regex.is_empty()
        && r.json.is_empty()
        && r.near_truth.is_empty()
        && r.min_length.is_none()
        && !r.no_leaked_internals;
    if checks_nothing {
        found.push((
            "expect_response",
            "this `expect_response` step has no check: it passes any answer".into(),
            "add at least one of contains, not_contains, regex, json, near_truth, min_length, \
             no_leaked_internals",
        ));
    }
    for near in &r.near_truth {
        if !(near.tolerance.is_finite() && near.tolerance >= 0.0) {
            found.push((
                "tolerance",
                format!(
                    "tolerance {} of `{}` is not a number ≥ 0",
                    near.tolerance, near.path
                ),
                "a tolerance is the largest allowed difference from the truth: 0 or more, e.g. \
                 0.01",
            ));
        }
    }
    found
}

/// `near_truth` keys that no fixture truth has, found before the run (they would fail every
/// journey at run time). `truth_keys` are the dotted keys of `fixtures/expected/*.yaml`.
pub fn unknown_truths(
    file: &ScenarioFile,
    source: &str,
    truth_keys: &std::collections::BTreeSet<String>,
) -> Vec<Diagnostic> {
    let unknown = |step: &Step| match step {
        Step::ExpectResponse(r) => r.near_truth.iter().any(|n| !truth_keys.contains(&n.truth)),
        _ => false,
    };
    if !file.scenario.steps.iter().any(unknown) {
        return Vec::new();
    }
    let extents = step_extents(source, file.scenario.steps.len());
    let mut problems = Vec::new();
    for (step, &(line, column, next)) in file.scenario.steps.iter().zip(&extents) {
        let Step::ExpectResponse(r) = step else {
            continue;
        };
        for near in r
            .near_truth
            .iter()
            .filter(|n| !truth_keys.contains(&n.truth))
        {
            let (l, c) = find_in(source, (line, next), &near.truth, (line, column));
            problems.push(diagnostic(
                &file.path,
                source,
                l,
                c,
                format!("no fixture truth has the key `{}`", near.truth),
                "near_truth compares with a key of fixtures/expected/<dataset>.yaml: check \
                 the spelling, or --fixtures",
            ));
        }
    }
    problems
}

/// A scenario file, parsed and checked.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    pub path: PathBuf,
    pub scenario: Scenario,
    /// The scenario's profile with its `fields:` and `target:` applied.
    pub profile: Profile,
    pub thresholds: Vec<threshold::Threshold>,
}

impl ScenarioFile {
    /// `base` (a `--profile`) in place of the scenario's own profile; the scenario's
    /// `fields:` and `target:` still apply over it, being this scenario's own details.
    pub fn profile_over(&self, base: Profile) -> Profile {
        let mut profile = with_fields(base, &self.scenario.fields);
        profile.target = profile.target.over(&self.scenario.target);
        profile
    }
}

/// A built-in profile by name, or a profile file (a name with a `/` or ending in `.yaml`,
/// relative to the scenario's folder). `Ok(None)`: an unknown name.
fn resolve_profile(scenario_path: &Path, name: &str) -> Result<Option<Profile>, Vec<Diagnostic>> {
    if let Some(profile) = Profile::by_name(name) {
        return Ok(Some(profile));
    }
    if !(name.contains('/') || name.ends_with(".yaml") || name.ends_with(".yml")) {
        return Ok(None);
    }
    let file = scenario_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name);
    load_profile(&file).map(Some)
}

/// Reads a profile file (docs/scenarios.md, "Testing another platform").
pub fn load_profile(path: &Path) -> Result<Profile, Vec<Diagnostic>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            path: path.to_owned(),
            line: 1,
            column: 1,
            message: format!("cannot read the profile file: {e}"),
            hint: "the path is relative to the scenario file's folder".into(),
            source_line: String::new(),
        }]
    })?;
    let file: ProfileFile = serde_saphyr::from_str(&source).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
        let message = reword(bare_message(&e));
        let hint = hint_for(&message);
        vec![diagnostic(path, &source, line, column, message, hint)]
    })?;
    let base = match &file.base {
        None => Profile::apex(),
        Some(name) => Profile::by_name(&name.value).ok_or_else(|| {
            let (line, column) = location(name);
            vec![diagnostic(
                path,
                &source,
                line,
                column,
                format!("unknown base profile `{}`", name.value),
                "a profile file starts from `apex` or `netra`",
            )]
        })?,
    };
    let mut profile = with_fields(base, &file.fields);
    profile.name = file.name;
    if let Some(nested) = file.nested_agents {
        profile.nested_agents = nested;
    }
    profile.target = profile.target.over(&file.target);
    Ok(profile)
}

/// Parses scenario text; `path` is only for the diagnostics.
pub fn parse(path: &Path, source: &str) -> Result<ScenarioFile, Vec<Diagnostic>> {
    let scenario: Scenario = serde_saphyr::from_str(source).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
        let message = reword(bare_message(&e));
        let hint = hint_for(&message);
        vec![diagnostic(path, source, line, column, message, hint)]
    })?;
    let mut problems = Vec::new();
    let profile = scenario_profile(path, source, &scenario, &mut problems);
    let thresholds = scenario_thresholds(path, source, &scenario, &mut problems);
    problems.extend(unknown_faults(path, source, &scenario));
    if scenario.steps.is_empty() {
        problems.push(diagnostic(
            path,
            source,
            source_lines(source)
                .iter()
                .position(|l| l.starts_with("steps"))
                .map_or(1, |i| i + 1),
            1,
            "a scenario needs at least one step".into(),
            &format!("add steps; they are: {STEP_NAMES}"),
        ));
    }
    problems.extend(vacuous_checks(path, source, &scenario));
    problems.extend(load_problems(path, source, &scenario));
    problems.extend(instance_problems(path, source, &scenario));
    if problems.is_empty() {
        Ok(ScenarioFile {
            path: path.to_owned(),
            scenario,
            profile,
            thresholds,
        })
    } else {
        Err(problems)
    }
}

/// The scenario's profile with its `fields:` and `target:` over it; an unknown or broken
/// profile is a problem, and `apex` stands in so the rest of the file is still checked.
fn scenario_profile(
    path: &Path,
    source: &str,
    scenario: &Scenario,
    problems: &mut Vec<Diagnostic>,
) -> Profile {
    let profile = match &scenario.profile {
        None => Profile::apex(),
        Some(name) => match resolve_profile(path, &name.value) {
            Ok(Some(profile)) => profile,
            Ok(None) => {
                let (line, column) = location(name);
                problems.push(diagnostic(
                    path,
                    source,
                    line,
                    column,
                    format!("unknown profile `{}`", name.value),
                    "use `apex` (the bundled backend, strict), `netra` (the real platform) or \
                     a profile file (`./my-platform.yaml`)",
                ));
                Profile::apex()
            }
            Err(diagnostics) => {
                problems.extend(diagnostics);
                Profile::apex()
            }
        },
    };
    let mut profile = with_fields(profile, &scenario.fields);
    profile.target = profile.target.over(&scenario.target);
    profile
}

/// The scenario's thresholds; each one that does not parse is a problem pointing at the
/// column inside its expression.
fn scenario_thresholds(
    path: &Path,
    source: &str,
    scenario: &Scenario,
    problems: &mut Vec<Diagnostic>,
) -> Vec<threshold::Threshold> {
    let mut thresholds = Vec::new();
    for (metric, expressions) in &scenario.thresholds {
        for expression in expressions {
            match threshold::parse(metric, &expression.value) {
                Ok(t) => thresholds.push(t),
                Err(e) => {
                    let (line, column) = location(expression);
                    let (line, column) = scalar_position(source, line, column, e.column);
                    problems.push(diagnostic(path, source, line, column, e.message, &e.hint));
                }
            }
        }
    }
    thresholds
}

/// `fault` steps naming a fault that `faults:` does not declare.
fn unknown_faults(path: &Path, source: &str, scenario: &Scenario) -> Vec<Diagnostic> {
    let names: Vec<&str> = scenario
        .faults
        .iter()
        .filter_map(|f| f.name.as_deref())
        .collect();
    let mut problems = Vec::new();
    for step in &scenario.steps {
        if let Step::Fault(f) = step
            && !names.contains(&f.name.as_str())
        {
            let line = source_lines(source)
                .iter()
                .position(|l| l.contains("fault:") && l.contains(f.name.as_str()))
                .map_or(1, |i| i + 1);
            problems.push(diagnostic(
                path,
                source,
                line,
                1,
                format!("no fault named `{}` in `faults`", f.name),
                "a `fault` step switches a fault declared under `faults:` with that `name`",
            ));
        }
    }
    problems
}

/// A `load` that would start no journey, or that says both how many and how long.
fn load_problems(path: &Path, source: &str, scenario: &Scenario) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    if scenario.load.iterations == Some(0) || scenario.load.vus == 0 {
        let key = if scenario.load.vus == 0 {
            "vus"
        } else {
            "iterations"
        };
        let (line, column) = source_lines(source)
            .iter()
            .enumerate()
            .find(|(_, l)| l.trim_start().starts_with(key))
            .map_or((1, 1), |(i, l)| (i + 1, l.len() - l.trim_start().len() + 1));
        problems.push(diagnostic(
            path,
            source,
            line,
            column,
            format!("`load.{key}` is 0: no journey would run"),
            "a run that starts no journey verifies nothing; give at least 1",
        ));
    }
    if scenario.load.iterations.is_some() && scenario.load.duration.is_some() {
        let line = source_lines(source)
            .iter()
            .position(|l| l.trim_start().starts_with("duration"))
            .map_or(1, |i| i + 1);
        problems.push(diagnostic(
            path,
            source,
            line,
            1,
            "`load` has both `iterations` and `duration`".into(),
            "give one: a number of journeys per virtual user, or how long to keep starting them",
        ));
    }
    problems
}

/// `instances` of 0, a fault's `instance` that is not one of them or that sits between the
/// harness and the target, and target faults with several instances (the proxy stands in
/// front of instance 0 only).
fn instance_problems(path: &Path, source: &str, scenario: &Scenario) -> Vec<Diagnostic> {
    let lines = source_lines(source);
    let at = |key: &str, nth: usize| {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(key))
            .nth(nth)
            .map_or((1, 1), |(i, l)| (i + 1, l.find(key).unwrap_or(0) + 1))
    };
    let mut problems = Vec::new();
    let mut push = |(line, column): (usize, usize), message: String, hint: &str| {
        problems.push(diagnostic(path, source, line, column, message, hint));
    };
    if scenario.instances == 0 {
        push(
            at("instances:", 0),
            "`instances` is 0: no backend to run against".into(),
            "give at least 1 (the default); 2 or more start bundled backends side by side",
        );
    }
    let (mut nth, mut targets) = (0, 0);
    for fault in &scenario.faults {
        if fault.between == FaultPlace::Target {
            targets += 1;
        }
        let Some(instance) = fault.instance else {
            if fault.between == FaultPlace::Target && scenario.instances > 1 {
                push(
                    at("between: target", targets - 1),
                    "a `between: target` fault with several `instances`".into(),
                    "the target proxy stands in front of instance 0 only; fault the instances' \
                     services (`between: redis` or `postgres` with `instance`) instead",
                );
            }
            continue;
        };
        let place = at("instance:", nth);
        nth += 1;
        if fault.between == FaultPlace::Target {
            push(
                place,
                "`instance` on a `between: target` fault".into(),
                "`instance` says which bundled instance's Redis or Postgres a fault cuts; a \
                 target fault takes `vus` instead",
            );
        } else if instance >= scenario.instances {
            push(
                place,
                format!(
                    "`instance: {instance}`, but the scenario has `instances: {}` (counted from 0)",
                    scenario.instances
                ),
                "give an instance below `instances`, or raise `instances`",
            );
        }
    }
    problems
}

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<ScenarioFile, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(source) => parse(path, &source),
        Err(e) => Err(vec![Diagnostic {
            path: path.to_owned(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
            hint: "check the path".into(),
            source_line: String::new(),
        }]),
    }
}

/// The scenario files under `paths` (files as given, folders searched for `*.yaml`/`*.yml`),
/// sorted.
pub fn discover(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?.path();
                    if entry.is_dir() {
                        stack.push(entry);
                    } else if matches!(
                        entry.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml")
                    ) {
                        found.push(entry);
                    }
                }
            }
        } else {
            found.push(path.clone());
        }
    }
    found.sort();
    Ok(found)
}
