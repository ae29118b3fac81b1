//! `run --html`: one self-contained HTML page of a run, readable offline — the verdict, each
//! scenario's latency histogram and percentiles, the waterfall (phases and the five events
//! in time) of the slowest journey and of each failed one, and the failures with their last
//! frames. Charts are inline SVG drawn here; no script, no external resource.

use std::fmt::Write as _;
use std::time::Duration;

use super::{FailedJourney, RunReport, ScenarioReport, Standing, Timeline, observed_text};
use crate::exit_codes;
use crate::metrics::Trend;

/// Failed journeys drawn in full per scenario; the rest are counted.
const FAILED_SHOWN: usize = 20;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f8fa;color:#1f2328}\
main{max-width:1100px;margin:0 auto;padding:16px}h1{font-size:20px}h2{font-size:17px;margin-top:28px}\
h3{font-size:15px}section.scenario{background:#fff;border:1px solid #d0d7de;border-left:6px solid #1a7f37;\
border-radius:6px;padding:8px 16px;margin:12px 0}section.fail{border-left-color:#cf222e}\
section.skip{border-left-color:#8c959f}.verdict{display:inline-block;padding:4px 12px;border-radius:999px;\
font-weight:700;color:#fff;background:#1a7f37}.verdict.bad{background:#cf222e}table{border-collapse:collapse;\
margin:8px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}\
td:first-child,th:first-child{text-align:left}code,pre{font:12px ui-monospace,monospace}\
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:360px}.class{color:#cf222e;font-weight:600}\
svg text{font:11px system-ui,sans-serif;fill:#57606a}.muted{color:#57606a}";

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The run's verdict in words, by its exit code.
fn verdict_text(code: u8) -> &'static str {
    match code {
        exit_codes::PASS => "PASSED",
        exit_codes::JOURNEY_FAILED => "FAILED: a journey failed",
        exit_codes::USAGE => "FAILED: nothing ran",
        exit_codes::THRESHOLD_BREACHED => "FAILED: a threshold was breached",
        exit_codes::INFRASTRUCTURE => "FAILED: the target could not be reached",
        _ => "FAILED",
    }
}

/// The whole page. Secrets are redacted as they appear escaped in it; the caller redacts the
/// page like every other report too.
pub fn html(report: &RunReport, target: &str) -> String {
    let code = report.exit_code();
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>apex-harness: {}</title><style>{STYLE}</style></head><body><main>\
         <h1>apex-harness run against {}</h1><p><span class=\"verdict{}\" data-exit=\"{code}\">{}</span> \
         <span class=\"muted\">exit code {code}</span></p>",
        verdict_text(code),
        esc(target),
        if code == exit_codes::PASS { "" } else { " bad" },
        verdict_text(code),
    );
    out.push_str(&summary_table(report));
    for scenario in &report.scenarios {
        out.push_str(&scenario_section(scenario));
    }
    out.push_str("</main></body></html>\n");
    super::model::redact(
        &report.secrets.iter().map(|s| esc(s)).collect::<Vec<_>>(),
        &out,
    )
}

fn summary_table(report: &RunReport) -> String {
    let mut out = String::from(
        "<table><tr><th>scenario</th><th>verdict</th><th>journeys</th><th>failed</th>\
         <th>p95 ms</th><th>p99 ms</th><th>completion</th></tr>",
    );
    for s in &report.scenarios {
        let (p95, p99, completion) = super::table_cells(s);
        let _ = write!(
            out,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{p95}</td>\
             <td>{p99}</td><td>{completion}</td></tr>",
            anchor(&s.name),
            esc(&s.name),
            word(s),
            s.journeys,
            s.failed.len()
        );
    }
    out.push_str("</table>");
    out
}

fn word(s: &ScenarioReport) -> &'static str {
    match s.standing() {
        Standing::Skipped => "skipped",
        Standing::Passed => "pass",
        Standing::Failed => "FAIL",
    }
}

fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn scenario_section(s: &ScenarioReport) -> String {
    let class = match s.standing() {
        Standing::Passed => "scenario",
        Standing::Skipped => "scenario skip",
        Standing::Failed => "scenario fail",
    };
    let mut out = format!(
        "<section class=\"{class}\" id=\"{}\" data-scenario=\"{}\"><h2>{} — {}</h2>\
         <p class=\"muted\">{} · {} journeys, {} failed, {:.1} s</p>",
        anchor(&s.name),
        esc(&s.name),
        esc(&s.name),
        word(s),
        esc(&s.path.display().to_string()),
        s.journeys,
        s.failed.len(),
        s.duration.as_secs_f64()
    );
    if let Some(skipped) = &s.skipped {
        let _ = write!(out, "<p>{}</p></section>", esc(&skipped.to_string()));
        return out;
    }
    out.push_str(&percentiles(s));
    if let Some(trend) = s.metrics.trends.get("journey_duration") {
        out.push_str("<h3>Journey duration (passed journeys)</h3>");
        out.push_str(&histogram_svg(trend));
    }
    out.push_str(&verdicts(s));
    if let Some(slowest) = &s.slowest {
        out.push_str("<h3>Slowest passed journey</h3>");
        out.push_str(&waterfall_svg(slowest));
    }
    if !s.failed.is_empty() {
        out.push_str("<h3>Failed journeys</h3>");
        for journey in s.failed.iter().take(FAILED_SHOWN) {
            out.push_str(&failed_journey(journey));
        }
        if s.failed.len() > FAILED_SHOWN {
            let _ = write!(
                out,
                "<p class=\"muted\">… and {} more failed journeys (the JSON report has their classes).</p>",
                s.failed.len() - FAILED_SHOWN
            );
        }
    }
    out.push_str("</section>");
    out
}

fn percentiles(s: &ScenarioReport) -> String {
    let mut out = String::from(
        "<table><tr><th>latency (ms)</th><th>n</th><th>p50</th><th>p90</th><th>p95</th>\
         <th>p99</th><th>max</th></tr>",
    );
    for (name, trend) in &s.metrics.trends {
        if !name.ends_with("_duration") || trend.count() == 0 {
            continue;
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(name),
            trend.count(),
            trend.percentile_ms(50.0),
            trend.percentile_ms(90.0),
            trend.percentile_ms(95.0),
            trend.percentile_ms(99.0),
            trend.max_ms()
        );
    }
    let mut rates = String::new();
    for (name, rate) in &s.metrics.rates {
        if let Some(value) = rate.value().filter(|_| !name.contains(':')) {
            let _ = write!(
                rates,
                "<tr><td>{}</td><td>{:.2} %</td><td>{} / {}</td></tr>",
                esc(name),
                value * 100.0,
                rate.passes,
                rate.total
            );
        }
    }
    out.push_str("</table>");
    if !rates.is_empty() {
        let _ = write!(
            out,
            "<table><tr><th>rate</th><th>value</th><th>passes / attempts</th></tr>{rates}</table>"
        );
    }
    out
}

fn verdicts(s: &ScenarioReport) -> String {
    if s.verdicts.is_empty() {
        return String::new();
    }
    let mut out = String::from("<table><tr><th>threshold</th><th>observed</th><th></th></tr>");
    for v in &s.verdicts {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&v.threshold.to_string()),
            esc(&observed_text(v)),
            if v.passed {
                "held"
            } else {
                "<span class=\"class\">BREACHED</span>"
            }
        );
    }
    out.push_str("</table>");
    out
}

/// Bars of the latency distribution: 24 equal-width buckets from the minimum to the maximum.
fn histogram_svg(trend: &Trend) -> String {
    const BARS: usize = 24;
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let (min, max) = (trend.min_ms(), trend.max_ms().max(trend.min_ms() + 0.001));
    let width = (max - min) / BARS as f64;
    let mut counts = [0u64; BARS];
    for (micros, count) in trend.buckets() {
        let ms = micros as f64 / 1000.0;
        let i = (((ms - min) / width) as usize).min(BARS - 1);
        counts[i] += count;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bar = (W - 60.0) / BARS as f64;
    let mut out = format!(
        "<svg role=\"img\" aria-label=\"journey duration histogram\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\">",
        H + 30.0,
        H + 30.0
    );
    for (i, count) in counts.iter().enumerate() {
        let h = (*count as f64 / top) * (H - 10.0);
        let x = 50.0 + i as f64 * bar;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#0969da\"><title>{:.1}–{:.1} ms: {count}</title></rect>",
            H - h,
            bar - 2.0,
            min + i as f64 * width,
            min + (i + 1) as f64 * width
        );
    }
    let _ = write!(
        out,
        "<line x1=\"48\" y1=\"{H}\" x2=\"{}\" y2=\"{H}\" stroke=\"#8c959f\"/>\
         <text x=\"50\" y=\"{}\">{min:.1} ms</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.1} ms</text>\
         <text x=\"44\" y=\"12\" text-anchor=\"end\">{top}</text><text x=\"44\" y=\"{H}\" text-anchor=\"end\">0</text></svg>",
        W - 10.0,
        H + 16.0,
        W - 10.0,
        H + 16.0
    );
    out
}

/// The journey's phases and events as rows of bars from the start: login, connect, then
/// each expected event from the one before it to its arrival; an event that never came is a
/// red row that says so.
fn waterfall_svg(timeline: &Timeline) -> String {
    let mut rows: Vec<(String, Option<Duration>)> = vec![
        ("login".to_owned(), timeline.login),
        ("connect".to_owned(), timeline.connect),
    ];
    rows.extend(timeline.events.iter().cloned());
    rows.retain(|(name, at)| at.is_some() || !matches!(name.as_str(), "login" | "connect"));
    let end = rows
        .iter()
        .filter_map(|(_, at)| *at)
        .chain([timeline.total])
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(0.000_001);
    const W: f64 = 720.0;
    const ROW: f64 = 18.0;
    const LEFT: f64 = 150.0;
    let scale = |d: Duration| LEFT + d.as_secs_f64() / end * (W - LEFT - 70.0);
    let height = ROW * (rows.len() as f64 + 1.0) + 6.0;
    let mut out = format!(
        "<p class=\"muted\">{} · total {:.1} ms</p><svg role=\"img\" aria-label=\"waterfall\" \
         width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\">",
        esc(&timeline.email),
        timeline.total.as_secs_f64() * 1000.0
    );
    let mut previous = Duration::ZERO;
    for (i, (name, at)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * ROW;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y + 12.0,
            esc(name)
        );
        match at {
            Some(at) => {
                let (x0, x1) = (scale(previous), scale(*at));
                let _ = write!(
                    out,
                    "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#1a7f37\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\">{:.1} ms</text>",
                    (x1 - x0).max(1.5),
                    ROW - 5.0,
                    x1 + 4.0,
                    y + 12.0,
                    at.as_secs_f64() * 1000.0
                );
                previous = (*at).max(previous);
            }
            None => {
                let x = scale(previous).min(W - 90.0);
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"86\" height=\"{:.1}\" fill=\"#ffebe9\" stroke=\"#cf222e\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:#cf222e\">never arrived</text>",
                    ROW - 5.0,
                    x + 4.0,
                    y + 12.0
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

fn failed_journey(journey: &FailedJourney) -> String {
    let mut out = String::from("<div class=\"failed\"><ul>");
    for failure in &journey.failures {
        let _ = write!(
            out,
            "<li><span class=\"class\">{}</span> {}</li>",
            esc(&failure.class.to_string()),
            esc(&failure.message)
        );
    }
    out.push_str("</ul>");
    if let Some(close) = &journey.close {
        let _ = write!(
            out,
            "<p class=\"muted\">connection closed: {}</p>",
            esc(close)
        );
    }
    out.push_str(&waterfall_svg(&journey.timeline));
    if !journey.last_frames.is_empty() {
        let frames: Vec<String> = journey
            .last_frames
            .iter()
            .map(|(at, frame)| {
                let pretty = serde_json::to_string_pretty(frame).unwrap_or_default();
                format!("+{:.1} ms {pretty}", at.as_secs_f64() * 1000.0)
            })
            .collect();
        let _ = write!(
            out,
            "<details><summary>last {} frames</summary><pre>{}</pre></details>",
            frames.len(),
            esc(&frames.join("\n"))
        );
    }
    out.push_str("</div>");
    out
}
