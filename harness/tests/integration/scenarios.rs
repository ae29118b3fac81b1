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
