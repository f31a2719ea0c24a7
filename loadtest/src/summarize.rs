//! `loadtest summarize`: medians of repeated `run`/`connections --json` reports, per target, and the
//! relay's figures as ratios of the baseline's (what `compare.sh` prints).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use crate::stats::median;

/// Compared figures of a `run --json` report: name and JSON pointer.
const RUN_METRICS: [(&str, &str); 6] = [
    ("messages_per_sec", "/messages_per_sec"),
    ("deliveries_per_sec", "/deliveries_per_sec"),
    ("megabytes_per_sec", "/megabytes_per_sec"),
    ("p50_us", "/latency/p50_us"),
    ("p99_us", "/latency/p99_us"),
    ("errors_total", "/errors_total"),
];
/// Compared figures of a `connections --json` report.
const CONNECTIONS_METRICS: [(&str, &str); 4] = [
    ("rss_per_connection_bytes", "/rss_per_connection_bytes"),
    ("connections_open", "/connections_open"),
    ("connections_per_sec", "/connections_per_sec"),
    ("errors_total", "/errors_total"),
];
/// Ratios of these are not meaningful.
const NO_RATIO: [&str; 2] = ["errors_total", "connections_open"];

fn metrics_of(report: &serde_json::Value) -> &'static [(&'static str, &'static str)] {
    if report.get("rss_per_connection_bytes").is_some() {
        &CONNECTIONS_METRICS
    } else {
        &RUN_METRICS
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// Runs per target.
    pub runs: BTreeMap<String, usize>,
    /// target -> metric -> median.
    pub medians: BTreeMap<String, BTreeMap<&'static str, f64>>,
    /// metric -> relay median / baseline median, where both exist.
    pub relay_over_baseline: BTreeMap<&'static str, f64>,
    /// The compared figures, in print order.
    #[serde(skip)]
    metrics: Vec<&'static str>,
}

/// Summarizes JSON reports (all `run` or all `connections`), one per line, from `texts`.
///
/// # Errors
/// A line that is not such a report, or a mix of both kinds.
pub fn summarize(texts: &[String]) -> anyhow::Result<Summary> {
    let mut by_target: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut metrics = None;
    for (line_no, line) in texts.iter().flat_map(|t| t.lines()).enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let report: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("report {} is not JSON", line_no + 1))?;
        let target = report["target"]
            .as_str()
            .with_context(|| format!("report {} has no `target`", line_no + 1))?
            .to_string();
        let kind = metrics_of(&report);
        anyhow::ensure!(
            *metrics.get_or_insert(kind) == kind,
            "report {} is of another kind than the first",
            line_no + 1
        );
        by_target.entry(target).or_default().push(report);
    }
    let metrics = metrics.unwrap_or(&RUN_METRICS);
    let runs = by_target
        .iter()
        .map(|(t, v)| (t.clone(), v.len()))
        .collect();
    let mut medians: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    for (target, reports) in &by_target {
        for (name, pointer) in metrics {
            let column = reports
                .iter()
                .map(|r| {
                    r.pointer(pointer)
                        .and_then(serde_json::Value::as_f64)
                        .with_context(|| format!("a `{target}` report has no {pointer}"))
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            if let Some(m) = median(&column) {
                medians.entry(target.clone()).or_default().insert(name, m);
            }
        }
    }
    let mut relay_over_baseline = BTreeMap::new();
    if let (Some(relay), Some(baseline)) = (medians.get("relay"), medians.get("baseline")) {
        for (name, _) in metrics {
            if let (Some(r), Some(b)) = (relay.get(name), baseline.get(name))
                && *b > 0.0
                && !NO_RATIO.contains(name)
            {
                relay_over_baseline.insert(*name, r / b);
            }
        }
    }
    Ok(Summary {
        runs,
        medians,
        relay_over_baseline,
        metrics: metrics.iter().map(|(name, _)| *name).collect(),
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&String> = self.medians.keys().collect();
        write!(f, "{:<26}", "median of runs")?;
        for target in &targets {
            write!(f, "{:>16}", format!("{target} ({})", self.runs[*target]))?;
        }
        writeln!(f, "{:>16}", "relay/baseline")?;
        for name in &self.metrics {
            write!(f, "{name:<26}")?;
            for target in &targets {
                match self.medians[*target].get(*name) {
                    Some(v) => write!(f, "{v:>16.1}")?,
                    None => write!(f, "{:>16}", "-")?,
                }
            }
            match self.relay_over_baseline.get(*name) {
                Some(ratio) => writeln!(f, "{ratio:>16.2}")?,
                None => writeln!(f, "{:>16}", "-")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, rate: f64) -> String {
        format!(
            r#"{{"target":"{target}","messages_per_sec":{rate},"deliveries_per_sec":{rate},"megabytes_per_sec":1.0,"latency":{{"p50_us":10.0,"p99_us":20.0}},"errors_total":0,"other":1}}"#
        )
    }

    /// Medians are taken per target and the relay is divided by the baseline.
    #[test]
    fn medians_and_ratios() {
        let text = [
            report("baseline", 100.0),
            report("relay", 45.0),
            report("baseline", 300.0),
            report("relay", 90.0),
            report("baseline", 200.0),
            report("relay", 50.0),
        ]
        .join("\n");
        let summary = summarize(&[text]).unwrap();
        assert_eq!(summary.runs["relay"], 3);
        assert_eq!(summary.medians["baseline"]["messages_per_sec"], 200.0);
        assert_eq!(summary.medians["relay"]["messages_per_sec"], 50.0);
        assert_eq!(summary.relay_over_baseline["messages_per_sec"], 0.25);
        assert!(!summary.relay_over_baseline.contains_key("errors_total"));
        assert!(summarize(&["{}".to_string()]).is_err());
        let mixed = [report("relay", 1.0), r#"{"target":"relay","rss_per_connection_bytes":1,"connections_open":1,"connections_per_sec":1,"errors_total":0}"#.to_string()];
        assert!(summarize(&[mixed.join("\n")]).is_err());
    }
}
