//! Scenario files: the shipped ones and the valid fixtures parse. (Each invalid fixture's
//! diagnostic is a snapshot in `snapshots.rs`.)

use std::path::PathBuf;

use apex_harness::scenario::{discover, load};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn shipped_scenarios_and_valid_fixtures_parse() {
    let root = workspace();
    let files = discover(&[
        root.join("scenarios"),
        root.join("fixtures/scenarios/valid"),
        root.join("fixtures/scenarios/report"),
    ])
    .unwrap();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        if let Err(diagnostics) = load(&file) {
            let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("{}:\n{}", file.display(), text.join("\n"));
        }
    }
}

/// Every scenario input the fuzzer ever saved (`fuzz/regressions/scenario/`) gives diagnostics
/// that point into the source: a real line (lines end at `\r\n`, `\n` or a lone `\r`, as in
/// YAML), its text as `source_line`, and a column at most one past the line's end.
#[test]
fn fuzz_findings_point_into_the_source() {
    let dir = workspace().join("fuzz/regressions/scenario");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(source) = std::fs::read_to_string(&path) else {
            continue;
        };
        seen += 1;
        let unix = source.replace("\r\n", "\n").replace('\r', "\n");
        let lines: Vec<&str> = unix.split_terminator('\n').collect();
        let diagnostics = apex_harness::scenario::parse(&path, &source)
            .expect_err("every saved finding is an invalid scenario");
        for d in diagnostics {
            let shown = d.to_string();
            assert!(
                d.line >= 1 && d.line <= lines.len() + 1,
                "{}: {shown}",
                path.display()
            );
            let line = lines.get(d.line - 1).copied().unwrap_or_default();
            assert_eq!(d.source_line, line, "{}: {shown}", path.display());
            assert!(
                d.column >= 1 && d.column <= line.chars().count() + 1,
                "{}: column {} on a {}-character line\n{shown}",
                path.display(),
                d.column,
                line.chars().count()
            );
            assert!(!d.message.contains(" at line "), "{shown}");
        }
    }
    assert!(seen >= 4, "the saved findings are in {}", dir.display());
}
