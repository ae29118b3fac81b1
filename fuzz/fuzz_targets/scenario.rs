//! `apex_harness::scenario::parse` on arbitrary text.
//!
//! Properties: it never panics; every diagnostic points into the source (1-based line within
//! the file, or one past its last line for "end of input"; 1-based column within that line,
//! or one past its end), its `source_line` is that line, and it renders without panicking.
//!
//! Lines end at `\r\n`, `\n` or a lone `\r`, as in YAML. Findings so far (both fixed; inputs
//! in fuzz/regressions/scenario/, replayed by `cargo test` in
//! harness/tests/integration/scenarios.rs): a lone `\r` put every diagnostic past the end of
//! the file, and a threshold in a quoted scalar spanning lines got a column past the end of
//! its first line.

#![no_main]

use std::path::Path;

use apex_harness::scenario::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Scenario files are read with `read_to_string`, so only UTF-8 reaches the parser.
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    let Err(diagnostics) = parse(path, source) else {
        return;
    };
    assert!(!diagnostics.is_empty(), "Err with no diagnostics");
    for d in &diagnostics {
        let _ = d.to_string();
    }
    let unix = source.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = unix.split_terminator('\n').collect();
    for d in &diagnostics {
        let rendered = d.to_string();
        assert!(d.line >= 1, "line 0: {d:?}");
        assert!(
            d.line <= lines.len() + 1,
            "line {} past the end of a {}-line source: {d:?}",
            d.line,
            lines.len()
        );
        let expected_line = lines.get(d.line - 1).copied().unwrap_or_default();
        assert_eq!(
            d.source_line, expected_line,
            "source_line is not line {}",
            d.line
        );
        assert!(d.column >= 1, "column 0: {d:?}");
        let width = expected_line.chars().count();
        assert!(
            d.column <= width + 1,
            "column {} past the end of line {} ({width} chars): {d:?}\n{rendered}",
            d.column,
            d.line
        );
        assert_eq!(d.path, path);
        assert!(!d.message.is_empty(), "empty message: {d:?}");
        assert!(!d.hint.is_empty(), "empty hint: {d:?}");
    }
});
