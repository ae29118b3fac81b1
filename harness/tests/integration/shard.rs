//! Sharded runs (`run --shard K/N`) as CI matrices and Kubernetes Jobs run them: N harness
//! processes on loopback against one bundled backend, their JSON reports merged with
//! `merge`. The merge must equal one run; a leak from a user on another shard must be
//! caught; reports of different runs must be refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use apex_backend::sabotage::Sabotage;
use apex_harness::exit_codes;
use serde_json::{Value, json};

use crate::{start_backend, start_backend_with};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh folder for one test's files.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apex-shard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A golden-path scenario of `vus` virtual users, `iterations` journeys each.
fn scenario(dir: &Path, name: &str, vus: u32, iterations: u32) -> String {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\nusers: [{{ pool: vu }}]\nload: {{ vus: {vus}, iterations: {iterations} }}\n\
         steps:\n  - login: {{}}\n  - connect: {{ transport: header }}\n  \
         - send: {{ content: \"Where am I wasting money on LLM calls?\" }}\n  \
         - expect: {{ events: [agent_started, agent_thinking, tool_executing, tool_completed, \
         agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, \
         tool_completed, agent_completed] }}\n  - disconnect: {{}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `apex-harness run` as a process, in the workspace (for `fixtures/`); its exit code.
fn harness(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_apex-harness"))
        .current_dir(workspace())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the shards 1..=n at once (or one unsharded run when `n` is 0); each one's exit code
/// and JSON report.
async fn run_shards(n: u32, common: Vec<String>, dir: PathBuf) -> Vec<(i32, Value)> {
    tokio::task::spawn_blocking(move || {
        let runs: Vec<(std::process::Child, PathBuf)> = (if n == 0 { 0..=0 } else { 1..=n })
            .map(|k| {
                let json = dir.join(format!("shard-{k}.json"));
                let mut args = common.clone();
                args.extend(["--json".into(), json.display().to_string()]);
                if n > 0 {
                    args.extend(["--shard".into(), format!("{k}/{n}")]);
                }
                (harness(&args), json)
            })
            .collect();
        runs.into_iter()
            .map(|(mut child, json)| {
                let code = child.wait().unwrap().code().unwrap_or(-1);
                let text = std::fs::read_to_string(&json).unwrap();
                (code, serde_json::from_str(&text).unwrap())
            })
            .collect()
    })
    .await
    .unwrap()
}

/// `apex-harness merge ARGS...` through the library: exit code, stdout, stderr.
fn merge(args: &[String]) -> (u8, String, String) {
    use clap::Parser;
    let argv = ["apex-harness", "merge"]
        .into_iter()
        .map(str::to_owned)
        .chain(args.iter().cloned());
    let cli = apex_harness::cli::Cli::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = apex_harness::cli::execute(cli, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// The shards' report files, for `merge`.
fn shard_files(dir: &Path, n: u32) -> Vec<String> {
    (1..=n)
        .map(|k| dir.join(format!("shard-{k}.json")).display().to_string())
        .collect()
}

/// Bucket-wise sum of histograms `[[value_us, count], ...]`.
fn bucket_sum<'a>(histograms: impl Iterator<Item = &'a Value>) -> Vec<(u64, u64)> {
    let mut sum = std::collections::BTreeMap::new();
    for bucket in histograms.flat_map(|h| h.as_array().unwrap()) {
        *sum.entry(bucket[0].as_u64().unwrap()).or_insert(0) += bucket[1].as_u64().unwrap();
    }
    sum.into_iter().collect()
}

fn buckets(histogram: &Value) -> Vec<(u64, u64)> {
    bucket_sum(std::iter::once(histogram))
}

/// Four shard processes against one backend merge into what one run does: the same journeys
/// per scenario, each virtual user on exactly one shard, the histograms the sum of the
/// shards'.
#[tokio::test(flavor = "multi_thread")]
async fn four_shards_merge_into_what_one_run_does() {
    let (_, backend) = start_backend().await;
    let dir = folder("four");
    let mut common = vec!["run".to_owned()];
    common.push(scenario(&dir, "a_one", 1, 1));
    common.push(scenario(&dir, "b_many", 6, 2));
    common.extend(["--target", &backend.base_url(), "--seed", "11"].map(str::to_owned));
    std::fs::create_dir_all(dir.join("single")).unwrap();
    let single = run_shards(0, common.clone(), dir.join("single")).await;
    let shards = run_shards(4, common, dir.clone()).await;
    assert_eq!(single[0].0, 0, "{:#}", single[0].1);
    for (k, (code, report)) in shards.iter().enumerate() {
        assert_eq!(*code, 0, "shard {}: {report:#}", k + 1);
        assert_eq!(report["seed"], 11);
        assert_eq!(report["shard"], json!({ "index": k + 1, "count": 4 }));
    }
    for (s, vus) in [(0, 1), (1, 6)] {
        let mut ran: Vec<u64> = (shards.iter())
            .flat_map(|(_, r)| {
                r["scenarios"][s]["shard"]["vus"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|v| v.as_u64().unwrap())
            .collect();
        ran.sort_unstable();
        assert_eq!(ran, (0..vus).collect::<Vec<u64>>(), "scenario {s}");
    }
    let merged_json = dir.join("merged.json");
    let merged_html = dir.join("merged.html");
    let mut args = shard_files(&dir, 4);
    args.extend(["--json".into(), merged_json.display().to_string()]);
    args.extend(["--html".into(), merged_html.display().to_string()]);
    let (code, out, err) = merge(&args);
    assert_eq!(code, exit_codes::PASS, "{out}\n{err}");
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(&merged_json).unwrap()).unwrap();
    let single = &single[0].1;
    assert_eq!(merged["totals"]["journeys"], single["totals"]["journeys"]);
    assert_eq!(merged["totals"]["journeys"], 13);
    assert_eq!(merged["shard"], json!({ "count": 4, "merged": true }));
    for s in 0..2 {
        assert_eq!(
            merged["scenarios"][s]["journeys"],
            single["scenarios"][s]["journeys"]
        );
        let shard_histograms = (shards.iter())
            .map(|(_, r)| &r["scenarios"][s]["trends"]["journey_duration"]["histogram_us"])
            .filter(|h| h.is_array());
        assert_eq!(
            buckets(&merged["scenarios"][s]["trends"]["journey_duration"]["histogram_us"]),
            bucket_sum(shard_histograms),
            "scenario {s}"
        );
        assert_eq!(
            merged["scenarios"][s]["rates"]["chat_completion_rate"],
            single["scenarios"][s]["rates"]["chat_completion_rate"]
        );
        // The slowest passed journey of all shards, its waterfall carried through the merge.
        let slowest = (shards.iter())
            .map(|(_, r)| &r["scenarios"][s]["slowest"])
            .filter(|t| !t.is_null())
            .max_by(|a, b| {
                a["total_ms"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["total_ms"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(&merged["scenarios"][s]["slowest"], slowest, "scenario {s}");
        assert_eq!(
            slowest["events"].as_array().unwrap().len(),
            11,
            "{slowest:#}"
        );
    }
    let html = std::fs::read_to_string(&merged_html).unwrap();
    assert_eq!(
        html.matches("aria-label=\"waterfall\"").count(),
        2,
        "{html}"
    );
    let user = merged["scenarios"][1]["slowest"]["user"].as_str().unwrap();
    assert!(html.contains(&format!("{user} · total ")), "{html}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two users, one on each of two shards, against a backend that leaks events across users:
/// `leak-text` puts the other user's message (with its marker) in a frame, which the shard
/// that receives it catches alone, knowing the other shard's markers from the seed;
/// `cross-user` leaks an event that carries only its run's ids, which the merge catches from
/// the shards' ledgers.
#[tokio::test(flavor = "multi_thread")]
async fn a_leak_from_a_user_on_another_shard_is_caught() {
    for (mode, by_shard) in [(Sabotage::LeakText, true), (Sabotage::CrossUser, false)] {
        let (_, backend) = start_backend_with(|c| {
            c.sabotage = Some(mode);
            c.allow_sabotage = true;
            // Runs long enough that the two users' runs overlap.
            c.think_time_ms = 15;
        })
        .await;
        let dir = folder(&format!("{mode:?}"));
        let mut common = vec!["run".to_owned(), scenario(&dir, "pair", 2, 5)];
        common.extend(["--target", &backend.base_url(), "--seed", "5"].map(str::to_owned));
        let shards = run_shards(2, common, dir.clone()).await;
        let breaches =
            |r: &Value| r["scenarios"][0]["failures_by_class"]["isolation_breach"].as_u64();
        if by_shard {
            assert!(
                shards
                    .iter()
                    .any(|(code, r)| *code == 1 && breaches(r).is_some()),
                "{mode:?}: no shard caught the other shard's marker: {shards:#?}"
            );
        }
        let (code, out, err) = merge(&shard_files(&dir, 2));
        assert_eq!(code, exit_codes::JOURNEY_FAILED, "{mode:?}: {out}\n{err}");
        assert!(out.contains("isolation_breach"), "{mode:?}: {out}");
        if !by_shard {
            assert!(out.contains("found by merge"), "{mode:?}: {out}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A minimal shard report: enough for the merge's checks.
fn report(seed: u64, shard: (u32, u32), scenarios: &[&str]) -> Value {
    json!({
        "schema_version": 1,
        "target": "127.0.0.1:1",
        "seed": seed,
        "shard": { "index": shard.0, "count": shard.1 },
        "scenarios": scenarios.iter().map(|name| json!({
            "name": name, "path": format!("{name}.yaml"), "journeys": 0,
            "trends": {}, "rates": {}, "counters": {}, "failed": [], "thresholds": [],
        })).collect::<Vec<_>>(),
    })
}

/// Reports of different runs are refused with exit 2, naming the difference.
#[test]
fn merge_refuses_reports_of_different_runs() {
    let dir = folder("refuse");
    let write = |name: &str, value: Value| {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.display().to_string()
    };
    let a = write("a.json", report(5, (1, 2), &["a", "b"]));
    let mut v2 = report(5, (2, 2), &["a", "b"]);
    v2["schema_version"] = json!(2);
    let not_sharded = {
        let mut r = report(5, (2, 2), &["a", "b"]);
        r["shard"] = Value::Null;
        r
    };
    let cases = [
        (
            write("seed.json", report(6, (2, 2), &["a", "b"])),
            "seed 5 in",
        ),
        (
            write("set.json", report(5, (2, 2), &["a", "c"])),
            "scenario 2 is `b`",
        ),
        (
            write("fewer.json", report(5, (2, 2), &["a"])),
            "2 scenarios against 1",
        ),
        (
            write("count.json", report(5, (2, 3), &["a", "b"])),
            "shard 1/2 in",
        ),
        (write("v2.json", v2), "schema_version 2"),
        (write("plain.json", not_sharded), "not a shard's report"),
        (a.clone(), "shard 1/2 is given twice"),
    ];
    for (other, named) in cases {
        let (code, _, err) = merge(&[a.clone(), other.clone()]);
        assert_eq!(code, exit_codes::USAGE, "{other}: {err}");
        assert!(err.contains(named), "{other}: expected `{named}` in: {err}");
    }
    // Shards run with different --vus: not one run.
    let with_vus = |shard: u32, vus: Value, total: u32| {
        let mut r = report(5, (shard, 2), &["a"]);
        r["scenarios"][0]["shard"] =
            json!({ "vus": vus, "vus_total": total, "runs": {}, "seen": [] });
        write(&format!("vus-{shard}-{total}.json"), r)
    };
    let (code, _, err) = merge(&[with_vus(1, json!([0]), 2), with_vus(2, json!([1]), 3)]);
    assert_eq!(code, exit_codes::USAGE, "{err}");
    assert!(
        err.contains("`a` has 2 virtual users on shard 1/2, 3 on shard 2/2"),
        "{err}"
    );
    let (code, _, err) = merge(&[with_vus(1, json!([0]), 3), with_vus(2, json!([1]), 3)]);
    assert_eq!(code, exit_codes::USAGE, "{err}");
    assert!(
        err.contains("did not run each of its 3 virtual users once"),
        "{err}"
    );
    // A shard without the run's seed could not know the other shards' markers.
    use clap::Parser;
    let unseeded =
        apex_harness::cli::Cli::try_parse_from(["apex-harness", "run", "--shard", "1/2"]);
    let error = unseeded.expect_err("--shard without --seed");
    assert_eq!(
        error.kind(),
        clap::error::ErrorKind::MissingRequiredArgument
    );
    let (code, _, err) = merge(std::slice::from_ref(&a));
    assert_eq!(code, exit_codes::USAGE);
    assert!(err.contains("shard(s) 2 of 2 missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `demo-identity` collapses every connection into the first fixture user (alice), whose
/// virtual user runs on shard 1. Shard 2 runs bob alone: the only trace of the leak on its
/// connections is alice's user id in `connection_established`, which it knows in advance
/// from the fixtures. Against the healthy backend the same shard passes: the fixture users'
/// ids as needles raise no false alarm.
#[tokio::test(flavor = "multi_thread")]
async fn another_shards_user_id_alone_is_caught() {
    const ALICE_ID: &str = "7b0c6a0e-4c1f-4f6e-9a51-0a11ce000001";
    for mode in [Some(Sabotage::DemoIdentity), None] {
        let (_, backend) = start_backend_with(|c| {
            c.sabotage = mode;
            c.allow_sabotage = mode.is_some();
        })
        .await;
        let dir = folder(&format!("id-{mode:?}"));
        let path = dir.join("pair.yaml");
        std::fs::write(
            &path,
            "name: pair\nusers: [{ email: alice@apex.test }, { email: bob@apex.test }]\n\
             load: { vus: 2, iterations: 1 }\nsteps:\n  - login: {}\n  \
             - connect: { transport: header }\n  - send: { content: \"Where am I wasting money?\" }\n  \
             - expect: { events: [agent_started, agent_thinking, tool_executing, tool_completed, \
             agent_thinking, tool_executing, tool_completed, agent_thinking, tool_executing, \
             tool_completed, agent_completed] }\n  - disconnect: {}\n",
        )
        .unwrap();
        let json = dir.join("shard-2.json");
        let args: Vec<String> = [
            "run",
            &path.display().to_string(),
            "--target",
            &backend.base_url(),
            "--seed",
            "3",
            "--shard",
            "2/2",
            "--json",
            &json.display().to_string(),
        ]
        .map(str::to_owned)
        .into();
        let code = tokio::task::spawn_blocking(move || harness(&args).wait().unwrap().code())
            .await
            .unwrap();
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let scenario = &report["scenarios"][0];
        assert_eq!(scenario["shard"]["vus"], json!([1]), "{report:#}");
        if mode.is_none() {
            assert_eq!(code, Some(0), "{report:#}");
            continue;
        }
        assert_eq!(code, Some(1), "{report:#}");
        assert!(
            scenario["failures_by_class"]["isolation_breach"].as_u64() >= Some(1),
            "{report:#}"
        );
        let text = scenario["failed"].to_string();
        assert!(
            text.contains(&format!("carries `{ALICE_ID}` of alice@apex.test")),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
