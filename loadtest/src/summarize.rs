//! `loadtest summarize`: medians of repeated `run --json` reports, per target, and the
//! relay's figures as ratios of the baseline's (what `compare.sh` prints).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::stats::median;

/// The figures of one `run --json` report that are compared.
#[derive(Debug, Deserialize)]
struct Figures {
    target: String,
    messages_per_sec: f64,
    deliveries_per_sec: f64,
    megabytes_per_sec: f64,
    latency: Latency,
    errors_total: u64,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
}

const METRICS: [&str; 6] = [
    "messages_per_sec",
    "deliveries_per_sec",
    "megabytes_per_sec",
    "p50_us",
    "p99_us",
    "errors_total",
];

impl Figures {
    fn values(&self) -> [f64; 6] {
        [
            self.messages_per_sec,
            self.deliveries_per_sec,
            self.megabytes_per_sec,
            self.latency.p50_us,
            self.latency.p99_us,
            self.errors_total as f64,
        ]
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
}

/// Summarizes JSON reports, one per line, from `texts`.
///
/// # Errors
/// A line that is not a `run` report.
pub fn summarize(texts: &[String]) -> anyhow::Result<Summary> {
    let mut by_target: BTreeMap<String, Vec<[f64; 6]>> = BTreeMap::new();
    for (line_no, line) in texts.iter().flat_map(|t| t.lines()).enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let figures: Figures = serde_json::from_str(line)
            .with_context(|| format!("report {} is not a `run --json` report", line_no + 1))?;
        by_target
            .entry(figures.target.clone())
            .or_default()
            .push(figures.values());
    }
    let runs = by_target
        .iter()
        .map(|(t, v)| (t.clone(), v.len()))
        .collect();
    let medians: BTreeMap<String, BTreeMap<&'static str, f64>> = by_target
        .iter()
        .map(|(target, runs)| {
            let per_metric = METRICS
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let column: Vec<f64> = runs.iter().map(|r| r[i]).collect();
                    median(&column).map(|m| (*name, m))
                })
                .collect();
            (target.clone(), per_metric)
        })
        .collect();
    let mut relay_over_baseline = BTreeMap::new();
    if let (Some(relay), Some(baseline)) = (medians.get("relay"), medians.get("baseline")) {
        for name in METRICS {
            if let (Some(r), Some(b)) = (relay.get(name), baseline.get(name))
                && *b > 0.0
            {
                relay_over_baseline.insert(name, r / b);
            }
        }
    }
    Ok(Summary {
        runs,
        medians,
        relay_over_baseline,
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&String> = self.medians.keys().collect();
        write!(f, "{:<20}", "median of runs")?;
        for target in &targets {
            write!(f, "{:>16}", format!("{target} ({})", self.runs[*target]))?;
        }
        writeln!(f, "{:>16}", "relay/baseline")?;
        for name in METRICS {
            write!(f, "{name:<20}")?;
            for target in &targets {
                match self.medians[*target].get(name) {
                    Some(v) => write!(f, "{v:>16.1}")?,
                    None => write!(f, "{:>16}", "-")?,
                }
            }
            match self.relay_over_baseline.get(name) {
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
    }
}
