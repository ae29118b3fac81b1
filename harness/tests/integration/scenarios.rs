//! Scenario files: the shipped ones and the valid fixtures parse; each invalid fixture gives
//! its diagnostic, compared with the snapshot beside it (`<case>.expected`). Missing or
//! mismatched snapshots fail; `APEX_UPDATE_SNAPSHOTS=1` rewrites them.

use std::path::{Path, PathBuf};

use apex_harness::scenario::{discover, load};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Paths in diagnostics are shown relative to the workspace, as a user running from it sees
/// them.
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(workspace()).unwrap_or(path).to_owned()
}

#[test]
fn shipped_scenarios_and_valid_fixtures_parse() {
    let root = workspace();
    let files = discover(&[
        root.join("scenarios"),
        root.join("fixtures/scenarios/valid"),
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

#[test]
fn each_invalid_fixture_points_at_its_mistake() {
    let root = workspace();
    let update = std::env::var("APEX_UPDATE_SNAPSHOTS").as_deref() == Ok("1");
    let cases = discover(&[root.join("fixtures/scenarios/invalid")]).unwrap();
    assert!(cases.len() >= 9, "{cases:?}");
    let mut mismatches = Vec::new();
    for case in cases {
        let source = std::fs::read_to_string(&case).unwrap();
        let diagnostics = apex_harness::scenario::parse(&relative(&case), &source)
            .expect_err("an invalid fixture must not parse");
        let rendered: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
        let snapshot = case.with_extension("expected");
        if update {
            std::fs::write(&snapshot, &rendered).unwrap();
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{rendered}",
                case.display()
            )),
            Err(_) => mismatches.push(format!(
                "{}: no snapshot {}; got\n{rendered}",
                case.display(),
                snapshot.display()
            )),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn validate_and_list_exit_with_the_documented_codes() {
    use apex_harness::cli::{Cli, execute};
    use apex_harness::exit_codes;
    use clap::Parser;

    let root = workspace();
    let run = |args: &[&str]| {
        let cli = Cli::try_parse_from(args).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = execute(cli, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let valid = root.join("fixtures/scenarios/valid");
    let (code, out, _) = run(&["apex-harness", "validate", valid.to_str().unwrap()]);
    assert_eq!(code, exit_codes::PASS);
    assert!(out.contains("every_step.yaml"), "{out}");

    let invalid = root.join("fixtures/scenarios/invalid/unknown_step.yaml");
    let (code, _, err) = run(&["apex-harness", "validate", invalid.to_str().unwrap()]);
    assert_eq!(code, exit_codes::USAGE);
    assert!(err.contains("unknown_step.yaml:4:5"), "{err}");

    let shipped = root.join("scenarios");
    let (code, out, _) = run(&[
        "apex-harness",
        "list",
        shipped.to_str().unwrap(),
        "--tag",
        "golden",
    ]);
    assert_eq!(code, exit_codes::PASS);
    assert!(out.starts_with("Golden path\t[golden, smoke]"), "{out}");
    let (_, out, _) = run(&[
        "apex-harness",
        "list",
        shipped.to_str().unwrap(),
        "--tag",
        "nothing-has-this",
    ]);
    assert!(out.is_empty());

    let (code, _, err) = run(&["apex-harness", "validate", "/no/such/folder"]);
    assert_eq!(code, exit_codes::USAGE);
    assert!(err.contains("cannot read the file"), "{err}");
}

#[test]
fn field_paths_in_the_file_override_the_profile() {
    let file = load(&workspace().join("fixtures/scenarios/valid/every_step.yaml")).unwrap();
    let frame = serde_json::json!({ "event": { "kind": "tool_completed" }, "meta": { "sequence": 7 }, "data": { "run": "r9", "tool": "t" } });
    assert_eq!(file.profile.name, "netra");
    assert_eq!(file.profile.frame_type(&frame), Some("tool_completed"));
    assert_eq!(file.profile.seq(&frame), Some(7));
    assert_eq!(file.profile.run_id(&frame), Some("r9"));
    assert_eq!(file.profile.tool_name(&frame), Some("t"));
    assert!(file.profile.is_ignored("keepalive") && file.profile.is_ignored("heartbeat"));
}
