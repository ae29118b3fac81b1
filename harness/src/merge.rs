//! `apex-harness merge`: the JSON reports of every shard of a sharded run (`run --shard K/N`)
//! merged exactly into the report one run would have written — journeys and failures added,
//! histograms bucket by bucket, rates and counters summed, thresholds re-evaluated on the
//! merged totals — so the existing renderings and exit code apply to it unchanged.
//!
//! Reports of different runs are refused, naming the difference: schema version, seed,
//! shard count, scenario set, thresholds, a shard missing or given twice.
//!
//! Isolation across shards: each shard checked its frames against every other shard's
//! emails and markers (known in advance from the seed). A leaked event may carry only its
//! run's ids, which no shard knows in advance; each shard's report lists the run ids its
//! journeys started and the ids of other runs their frames carried, and the merge fails the
//! journey that received a run another user's journey started on another shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::compare::Baseline;
use crate::metrics::Metrics;
use crate::report::{
    Cut, FailedJourney, JSON_SCHEMA_VERSION, ReportError, RunReport, RunShard, ScenarioReport,
    ScenarioShard, SeenRuns, Skipped,
};
use crate::shard::Shard;
use crate::threshold::{self, Threshold};
use crate::verify::{Failure, FailureClass};

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("no reports to merge")]
    NoReports,
    #[error(
        "{} has schema_version {found}, this harness merges {JSON_SCHEMA_VERSION}",
        path.display()
    )]
    SchemaVersion { path: PathBuf, found: Value },
    #[error("{} is not a shard's report (no `shard`: run with --shard K/N)", path.display())]
    NotAShard { path: PathBuf },
    #[error("different runs: {}", difference)]
    Different { difference: String },
    #[error("shard {index}/{count} is given twice: {} and {}", first.display(), second.display())]
    Duplicate {
        index: u32,
        count: u32,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("incomplete run: shard(s) {missing} of {count} missing")]
    Missing { missing: String, count: u32 },
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
}

/// One shard's report as read.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub path: PathBuf,
    pub shard: Shard,
    pub seed: u64,
    pub value: Value,
}

/// Reads a shard's JSON report.
pub fn read(path: &Path) -> Result<ShardReport, MergeError> {
    from_json(path, crate::report::read_json(path)?)
}

/// A shard's report from its JSON (`path` names it in errors).
pub fn from_json(path: &Path, value: Value) -> Result<ShardReport, MergeError> {
    let path = path.to_owned();
    if value["schema_version"] != JSON_SCHEMA_VERSION {
        let found = value["schema_version"].clone();
        return Err(MergeError::SchemaVersion { path, found });
    }
    let number = |key: &str| {
        value["shard"][key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
    };
    let (Some(index), Some(count)) = (number("index"), number("count")) else {
        return Err(MergeError::NotAShard { path });
    };
    let Some(seed) = value["seed"].as_u64() else {
        let what = "no `seed`".to_owned();
        return Err(MergeError::Invalid { path, what });
    };
    Ok(ShardReport {
        path,
        shard: Shard { index, count },
        seed,
        value,
    })
}

/// The scenarios of a report as (name, path), in order.
fn scenario_set(report: &ShardReport) -> Vec<(String, String)> {
    (report.value["scenarios"].as_array().into_iter().flatten())
        .map(|s| {
            let text = |key: &str| s[key].as_str().unwrap_or_default().to_owned();
            (text("name"), text("path"))
        })
        .collect()
}

/// The first difference between two scenario sets, in words.
fn set_difference(a: &[(String, String)], b: &[(String, String)]) -> Option<String> {
    for (index, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            return Some(format!(
                "scenario {} is `{}` ({}) in one and `{}` ({}) in the other",
                index + 1,
                x.0,
                x.1,
                y.0,
                y.1
            ));
        }
    }
    (a.len() != b.len()).then(|| format!("{} scenarios against {}", a.len(), b.len()))
}

/// Refuses reports that are not the shards of one run, naming the difference.
pub fn check(reports: &[ShardReport]) -> Result<(), MergeError> {
    let first = reports.first().ok_or(MergeError::NoReports)?;
    let different = |what: String| Err(MergeError::Different { difference: what });
    let (first_set, name) = (scenario_set(first), first.path.display());
    for other in &reports[1..] {
        let other_name = other.path.display();
        if other.seed != first.seed {
            let (a, b) = (first.seed, other.seed);
            return different(format!("seed {a} in {name}, seed {b} in {other_name}"));
        }
        if other.shard.count != first.shard.count {
            let (a, b) = (first.shard, other.shard);
            return different(format!("shard {a} in {name}, shard {b} in {other_name}"));
        }
        if let Some(what) = set_difference(&first_set, &scenario_set(other)) {
            return different(format!("scenario sets: {what} ({name}, {other_name})"));
        }
    }
    let count = first.shard.count;
    let mut by_index: BTreeMap<u32, &Path> = BTreeMap::new();
    for report in reports {
        if let Some(earlier) = by_index.insert(report.shard.index, &report.path) {
            return Err(MergeError::Duplicate {
                index: report.shard.index,
                count,
                first: earlier.to_owned(),
                second: report.path.clone(),
            });
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        let missing = missing.join(", ");
        return Err(MergeError::Missing { missing, count });
    }
    Ok(())
}

/// A part of the merge: one shard's report of one scenario, rebuilt, with its thresholds.
struct Part {
    shard: Shard,
    report: ScenarioReport,
    thresholds: Vec<String>,
}

/// The shards' reports merged into one run's report, and the target(s) they ran against.
/// `baseline` resolves `baseline * F` thresholds.
pub fn merge(
    reports: &[ShardReport],
    baseline: Option<&Baseline>,
) -> Result<(RunReport, String), MergeError> {
    check(reports)?;
    let mut by_scenario: Vec<Vec<Part>> = Vec::new();
    for report in reports {
        let scenarios = report.value["scenarios"].as_array().into_iter().flatten();
        for (index, value) in scenarios.enumerate() {
            let part = Part {
                shard: report.shard,
                report: scenario_of(value).map_err(|what| MergeError::Invalid {
                    path: report.path.clone(),
                    what,
                })?,
                thresholds: thresholds_of(value),
            };
            if by_scenario.len() <= index {
                by_scenario.push(Vec::new());
            }
            by_scenario[index].push(part);
        }
    }
    let owners = owners(&by_scenario);
    for (index, parts) in by_scenario.iter_mut().enumerate() {
        cross_shard_isolation(index, parts, &owners);
    }
    let scenarios = (by_scenario.into_iter())
        .map(|parts| merge_scenario(parts, baseline))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &reports[0];
    let report = RunReport {
        scenarios,
        secrets: Vec::new(),
        cut: reports
            .iter()
            .find_map(|r| cut_of(&r.value["stopped_early"])),
        seed: Some(first.seed),
        shard: Some(RunShard::Merged {
            count: first.shard.count,
        }),
    };
    Ok((report, targets(reports)))
}

/// The target every shard ran against (or each of them, when they differ).
fn targets(reports: &[ShardReport]) -> String {
    let mut targets: Vec<&str> = (reports.iter())
        .filter_map(|r| r.value["target"].as_str())
        .collect();
    targets.dedup();
    targets.join(", ")
}

/// Why a shard stopped early, from its report's `stopped_early`.
fn cut_of(stopped: &Value) -> Option<Cut> {
    let text = stopped.as_str()?;
    if text.contains("--fail-fast") {
        return Some(Cut::FailFast);
    }
    let duration = (text.strip_prefix("--max-duration "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|d| crate::scenario::parse_duration(d).ok())
        .unwrap_or_default();
    Some(Cut::Deadline(duration))
}

/// The thresholds a scenario's report evaluated, as written.
fn thresholds_of(scenario: &Value) -> Vec<String> {
    (scenario["thresholds"].as_array().into_iter().flatten())
        .filter_map(|t| t["threshold"].as_str().map(str::to_owned))
        .collect()
}

/// A threshold as the report writes it (`metric: expression`; a metric may hold `:`).
fn parse_threshold(text: &str) -> Result<Threshold, String> {
    let (metric, expression) = (text.rsplit_once(": "))
        .ok_or_else(|| format!("threshold `{text}` is not `metric: expression`"))?;
    threshold::parse(metric.trim(), expression.trim())
        .map_err(|e| format!("threshold `{text}`: {e}"))
}

/// Where a run started: the email of its journey, its shard and its scenario's index.
type Owner = (String, Shard, usize);

/// Run and thread ids of every journey of every part, with who started it and where.
fn owners(by_scenario: &[Vec<Part>]) -> BTreeMap<String, Owner> {
    let mut owners = BTreeMap::new();
    for (index, parts) in by_scenario.iter().enumerate() {
        for part in parts {
            for (id, email) in (part.report.shard.iter()).flat_map(|s| &s.runs) {
                owners.insert(id.clone(), (email.clone(), part.shard, index));
            }
        }
    }
    owners
}

/// Fails every journey of the scenario at `index` that received a frame of a run another
/// user's journey started elsewhere (another shard, or another scenario, which may run at
/// the same time on another shard). Leaks within one shard's scenario its own check found.
fn cross_shard_isolation(index: usize, parts: &mut [Part], owners: &BTreeMap<String, Owner>) {
    for part in parts.iter_mut() {
        let Some(ledger) = part.report.shard.take() else {
            continue;
        };
        for seen in &ledger.seen {
            let mut found: Vec<(&str, String)> = Vec::new();
            for id in &seen.ids {
                let Some((owner, shard, scenario)) = owners.get(id) else {
                    continue;
                };
                let here = *shard == part.shard && *scenario == index;
                if *owner == seen.email || here || found.iter().any(|(o, _)| o == owner) {
                    continue;
                }
                let message = format!(
                    "frame received by {} on shard {} carries run `{id}` of {owner}, whose \
                     journey ran on shard {shard} (found by merge)",
                    seen.email, part.shard
                );
                found.push((owner, message));
            }
            if !found.is_empty() {
                add_breaches(&mut part.report, seen, found.into_iter().map(|(_, m)| m));
            }
        }
        part.report.shard = Some(ledger);
    }
}

/// Adds isolation breaches to the journey `seen` describes (failed already, or not yet).
fn add_breaches(
    report: &mut ScenarioReport,
    seen: &SeenRuns,
    messages: impl Iterator<Item = String>,
) {
    let failures = messages.map(|m| Failure::new(FailureClass::IsolationBreach, m, None));
    match seen.failed.and_then(|i| report.failed.get_mut(i)) {
        Some(journey) => journey.failures.extend(failures),
        None => report.failed.push(FailedJourney {
            email: seen.email.clone(),
            failures: failures.collect(),
            last_frames: Vec::new(),
            close: None,
            timeline: Default::default(),
        }),
    }
}

/// One scenario of one shard's report, rebuilt (without its verdicts: the merge evaluates
/// the thresholds again on the merged metrics).
fn scenario_of(value: &Value) -> Result<ScenarioReport, String> {
    let metrics = crate::compare::summary_of(value)
        .map_err(|e| e.to_string())?
        .metrics;
    let failed = (value["failed"].as_array().into_iter().flatten())
        .map(failed_of)
        .collect::<Result<Vec<_>, _>>()?;
    let shard = ledger_of(&value["shard"]);
    let skipped = match (&shard, value["skipped"].as_str()) {
        (Some(s), _) if s.vus.is_empty() => Some(Skipped::Unsupported("not on this shard".into())),
        (_, Some(reason)) => Some(Skipped::Unsupported(reason.to_owned())),
        (_, None) => None,
    };
    Ok(ScenarioReport {
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        path: PathBuf::from(value["path"].as_str().unwrap_or_default()),
        journeys: value["journeys"].as_u64().unwrap_or(0),
        failures_by_class: crate::runner::count_classes(&failed),
        failed,
        metrics,
        verdicts: Vec::new(),
        duration: Duration::from_secs_f64(value["duration_s"].as_f64().unwrap_or(0.0).max(0.0)),
        skipped,
        cut_short: value["cut_short"].as_u64().unwrap_or(0),
        slowest: crate::report::timeline_of(&value["slowest"]),
        shard,
    })
}

/// A failed journey as the report writes it.
fn failed_of(value: &Value) -> Result<FailedJourney, String> {
    let failures = (value["failures"].as_array().into_iter().flatten())
        .map(|f| {
            let class = f["class"].as_str().unwrap_or_default().parse()?;
            let message = f["message"].as_str().unwrap_or_default();
            Ok(Failure::new(class, message, None))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let last_frames = (value["last_frames"].as_array().into_iter().flatten())
        .map(|f| {
            let at = Duration::from_secs_f64(f["at_ms"].as_f64().unwrap_or(0.0).max(0.0) / 1000.0);
            (at, f["frame"].clone())
        })
        .collect();
    Ok(FailedJourney {
        email: value["user"].as_str().unwrap_or("-").to_owned(),
        failures,
        last_frames,
        close: value["close"].as_str().map(str::to_owned),
        timeline: crate::report::timeline_of(&value["timeline"]).unwrap_or_default(),
    })
}

/// A scenario's `shard` section: what the shard ran and its ledger of run ids.
fn ledger_of(value: &Value) -> Option<ScenarioShard> {
    let vus = (value["vus"].as_array()?.iter())
        .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
        .collect();
    let runs = (value["runs"].as_object().into_iter().flatten())
        .filter_map(|(id, email)| Some((id.clone(), email.as_str()?.to_owned())))
        .collect();
    let seen = (value["seen"].as_array().into_iter().flatten())
        .map(|s| SeenRuns {
            email: s["user"].as_str().unwrap_or_default().to_owned(),
            failed: s["failed"].as_u64().and_then(|i| usize::try_from(i).ok()),
            ids: (s["ids"].as_array().into_iter().flatten())
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
        })
        .collect();
    Some(ScenarioShard {
        vus,
        vus_total: value["vus_total"].as_u64().unwrap_or(0) as u32,
        runs,
        seen,
    })
}

/// One scenario's parts merged: journeys and failures added, metrics merged, the longest
/// shard's duration (they ran at once), thresholds evaluated again on the merged metrics.
fn merge_scenario(
    parts: Vec<Part>,
    baseline: Option<&Baseline>,
) -> Result<ScenarioReport, MergeError> {
    check_coverage(&parts)?;
    let ran: Vec<Part> = (parts.into_iter())
        .filter(|p| p.report.shard.as_ref().is_none_or(|s| !s.vus.is_empty()))
        .collect();
    let Some(first) = ran
        .iter()
        .find(|p| p.report.skipped.is_none())
        .or(ran.first())
    else {
        let what = "a scenario that no shard ran (its shards' reports are inconsistent)";
        return Err(MergeError::Different {
            difference: what.into(),
        });
    };
    let thresholds = first.thresholds.clone();
    if let Some(other) = ran
        .iter()
        .find(|p| p.report.skipped.is_none() && p.thresholds != thresholds)
    {
        let difference = format!(
            "thresholds of `{}`: [{}] on shard {}, [{}] on shard {}",
            first.report.name,
            thresholds.join("; "),
            first.shard,
            other.thresholds.join("; "),
            other.shard
        );
        return Err(MergeError::Different { difference });
    }
    let mut merged = ScenarioReport {
        metrics: Metrics::default(),
        failed: Vec::new(),
        journeys: 0,
        cut_short: 0,
        duration: Duration::ZERO,
        slowest: None,
        shard: None,
        ..first.report.clone()
    };
    for part in ran.iter().filter(|p| p.report.skipped.is_none()) {
        merged.journeys += part.report.journeys;
        merged.cut_short += part.report.cut_short;
        merged.failed.extend(part.report.failed.iter().cloned());
        merged.metrics.merge(&part.report.metrics);
        merged.duration = merged.duration.max(part.report.duration);
        if let Some(slowest) = &part.report.slowest
            && merged
                .slowest
                .as_ref()
                .is_none_or(|s| s.total < slowest.total)
        {
            merged.slowest = Some(slowest.clone());
        }
    }
    merged.failures_by_class = crate::runner::count_classes(&merged.failed);
    if merged.skipped.is_none() {
        let base = baseline.map(|b| b.metrics_for(&merged.name));
        merged.verdicts = (thresholds.iter())
            .map(|t| parse_threshold(t).map(|t| threshold::evaluate(&t, &merged.metrics, base)))
            .collect::<Result<_, _>>()
            .map_err(|what| MergeError::Invalid {
                path: first_path(&ran),
                what,
            })?;
    }
    Ok(merged)
}

/// Every virtual user of the scenario ran on exactly one shard (when every shard says which
/// it ran): shards run with different `--vus` are not one run.
fn check_coverage(parts: &[Part]) -> Result<(), MergeError> {
    let ledgers: Vec<(Shard, &ScenarioShard)> = (parts.iter())
        .filter_map(|p| p.report.shard.as_ref().map(|s| (p.shard, s)))
        .collect();
    if ledgers.len() != parts.len() || ledgers.is_empty() {
        return Ok(());
    }
    let total = ledgers[0].1.vus_total;
    let mut ran: Vec<u32> = ledgers.iter().flat_map(|(_, s)| s.vus.clone()).collect();
    ran.sort_unstable();
    let name = parts.first().map_or("", |p| p.report.name.as_str());
    if let Some((shard, other)) = ledgers.iter().find(|(_, s)| s.vus_total != total) {
        let difference = format!(
            "`{name}` has {total} virtual users on shard {}, {} on shard {shard}",
            ledgers[0].0, other.vus_total
        );
        return Err(MergeError::Different { difference });
    }
    if !ran.iter().copied().eq(0..total) {
        let difference =
            format!("the shards of `{name}` did not run each of its {total} virtual users once");
        return Err(MergeError::Different { difference });
    }
    Ok(())
}

/// The scenario's path, to name it in an error.
fn first_path(parts: &[Part]) -> PathBuf {
    parts
        .first()
        .map(|p| p.report.path.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_back_as_written_even_on_metrics_with_a_colon() {
        for spec in [
            "journey_duration: p(99) < 3000",
            "event_delivery_rate:agent_completed: rate > 0.99",
        ] {
            let parsed = crate::threshold::parse_spec(spec)
                .or_else(|_| parse_threshold(spec))
                .unwrap();
            assert_eq!(parse_threshold(&parsed.to_string()).unwrap(), parsed);
        }
    }

    #[test]
    fn a_shards_stop_reads_back() {
        assert_eq!(
            cut_of(&Value::from(
                "--fail-fast stopped the run at the first failed journey"
            )),
            Some(Cut::FailFast)
        );
        let deadline = format!("{}", Cut::Deadline(Duration::from_secs(90)));
        assert_eq!(
            cut_of(&Value::from(deadline)),
            Some(Cut::Deadline(Duration::from_secs(90)))
        );
        assert_eq!(cut_of(&Value::Null), None);
    }
}
