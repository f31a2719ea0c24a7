//! `loadtest summarize`: medians of repeated `run`/`connections --json` reports, per
//! workload and target, the relay's figures as ratios of the baseline's, and one table of
//! the ratios that matter (throughput, tail latency, CPU per message, memory per
//! connection) with a row per workload (what `compare.sh` and `suite.sh` print).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use crate::stats::median;

/// Compared figures of a `run --json` report: name and JSON pointer. A figure absent
/// from every report of a target (CPU without `--relay-pid`) is left out.
const RUN_METRICS: [(&str, &str); 10] = [
    ("messages_per_sec", "/messages_per_sec"),
    ("deliveries_per_sec", "/deliveries_per_sec"),
    ("megabytes_per_sec", "/megabytes_per_sec"),
    ("p50_us", "/latency/p50_us"),
    ("p99_us", "/latency/p99_us"),
    ("p99_9_us", "/latency/p99_9_us"),
    ("max_us", "/latency/max_us"),
    (
        "server_cpu_us_per_message",
        "/server_cpu/cpu_us_per_message",
    ),
    (
        "server_cpu_us_per_delivery",
        "/server_cpu/cpu_us_per_delivery",
    ),
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
/// The columns of the ratio table: heading and the metric whose ratio it shows.
const RATIO_COLUMNS: [(&str, &str); 6] = [
    ("throughput", "deliveries_per_sec"),
    ("p99", "p99_us"),
    ("p99.9", "p99_9_us"),
    ("max", "max_us"),
    ("CPU/delivery", "server_cpu_us_per_delivery"),
    ("memory/conn", "rss_per_connection_bytes"),
];

fn is_connections(report: &serde_json::Value) -> bool {
    report.get("rss_per_connection_bytes").is_some()
}

fn metrics_of(report: &serde_json::Value) -> &'static [(&'static str, &'static str)] {
    if is_connections(report) {
        &CONNECTIONS_METRICS
    } else {
        &RUN_METRICS
    }
}

/// The workload a report measured, as a row name: the same for the relay and the
/// baseline, different for any other parameter.
fn workload_of(report: &serde_json::Value) -> String {
    let n = |key: &str| report[key].as_u64().unwrap_or(0);
    if is_connections(report) {
        return format!("idle {} conns", n("connections_requested"));
    }
    let mode = report["mode"].as_str().unwrap_or("?");
    let publishers = if mode == "fanout" {
        format!(" {} pub", n("publishers"))
    } else {
        String::new()
    };
    format!(
        "{mode} {} conns{publishers} {} B x{}",
        n("connections_requested"),
        n("size_bytes"),
        n("in_flight")
    )
}

/// One workload's medians per target and ratios.
#[derive(Debug, Serialize)]
pub struct Workload {
    pub workload: String,
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

#[derive(Debug, Serialize)]
pub struct Summary {
    /// In the order each workload first appears.
    pub workloads: Vec<Workload>,
    /// The machine's 1-minute load average: lowest and highest over the reports.
    pub load_average_1m: Option<(f64, f64)>,
}

/// Summarizes JSON reports (`run` and `connections`, one per line) from `texts`.
///
/// # Errors
/// A line that is not such a report.
pub fn summarize(texts: &[String]) -> anyhow::Result<Summary> {
    let mut order: Vec<String> = Vec::new();
    let mut grouped: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>> = BTreeMap::new();
    let mut loads = Vec::new();
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
        let workload = workload_of(&report);
        if !grouped.contains_key(&workload) {
            order.push(workload.clone());
        }
        if let Some(load) = report["load_average_1m"].as_f64() {
            loads.push(load);
        }
        grouped
            .entry(workload)
            .or_default()
            .entry(target)
            .or_default()
            .push(report);
    }
    let workloads = order
        .into_iter()
        .map(|name| {
            let by_target = grouped.remove(&name).expect("grouped above");
            summarize_workload(name, &by_target)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load_average_1m = (!loads.is_empty()).then(|| {
        let low = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let high = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (low, high)
    });
    Ok(Summary {
        workloads,
        load_average_1m,
    })
}

fn summarize_workload(
    workload: String,
    by_target: &BTreeMap<String, Vec<serde_json::Value>>,
) -> anyhow::Result<Workload> {
    let metrics = metrics_of(&by_target.values().next().expect("not empty")[0]);
    let runs = by_target
        .iter()
        .map(|(t, v)| (t.clone(), v.len()))
        .collect();
    let mut medians: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    for (target, reports) in by_target {
        for (name, pointer) in metrics {
            let values: Vec<Option<f64>> = reports
                .iter()
                .map(|r| r.pointer(pointer).and_then(serde_json::Value::as_f64))
                .collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            let column = values
                .into_iter()
                .collect::<Option<Vec<f64>>>()
                .with_context(|| format!("{workload}: some `{target}` reports lack {pointer}"))?;
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
    Ok(Workload {
        workload,
        runs,
        medians,
        relay_over_baseline,
        metrics: metrics.iter().map(|(name, _)| *name).collect(),
    })
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&String> = self.medians.keys().collect();
        writeln!(f, "{}", self.workload)?;
        write!(f, "  {:<28}", "median of runs")?;
        for target in &targets {
            write!(f, "{:>16}", format!("{target} ({})", self.runs[*target]))?;
        }
        writeln!(f, "{:>16}", "relay/baseline")?;
        for name in &self.metrics {
            if targets.iter().all(|t| !self.medians[*t].contains_key(name)) {
                continue;
            }
            write!(f, "  {name:<28}")?;
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

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for workload in &self.workloads {
            writeln!(f, "{workload}")?;
        }
        writeln!(f, "relay / baseline (medians)")?;
        write!(f, "  {:<34}", "workload")?;
        for (heading, _) in RATIO_COLUMNS {
            write!(f, "{heading:>14}")?;
        }
        writeln!(f)?;
        for workload in &self.workloads {
            write!(f, "  {:<34}", workload.workload)?;
            for (_, metric) in RATIO_COLUMNS {
                match workload.relay_over_baseline.get(metric) {
                    Some(ratio) => write!(f, "{ratio:>14.2}")?,
                    None => write!(f, "{:>14}", "-")?,
                }
            }
            writeln!(f)?;
        }
        if let Some((low, high)) = self.load_average_1m {
            writeln!(
                f,
                "load average (1 min) over the runs: {low:.2} to {high:.2}"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, connections: u64, rate: f64, cpu: bool) -> String {
        let cpu = if cpu {
            format!(
                r#","server_cpu":{{"cpu_us_per_message":{0},"cpu_us_per_delivery":{0}}}"#,
                1e6 / rate
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"target":"{target}","mode":"ping","connections_requested":{connections},"size_bytes":64,"in_flight":1,"messages_per_sec":{rate},"deliveries_per_sec":{rate},"megabytes_per_sec":1.0,"latency":{{"p50_us":10.0,"p99_us":20.0,"p99_9_us":{rate},"max_us":40.0}},"errors_total":0,"load_average_1m":2.5{cpu}}}"#
        )
    }

    fn idle(target: &str, bytes: f64) -> String {
        format!(
            r#"{{"target":"{target}","connections_requested":10000,"rss_per_connection_bytes":{bytes},"connections_open":10000,"connections_per_sec":5000,"errors_total":0,"load_average_1m":4.0}}"#
        )
    }

    /// Medians are taken per workload and target, the relay is divided by the baseline,
    /// and several workloads give one row each in the ratio table.
    #[test]
    fn medians_and_ratios_per_workload() {
        let text = [
            report("baseline", 100, 100.0, true),
            report("relay", 100, 45.0, true),
            report("baseline", 100, 300.0, true),
            report("relay", 100, 90.0, true),
            report("baseline", 100, 200.0, true),
            report("relay", 100, 50.0, true),
            report("baseline", 1000, 10.0, false),
            report("relay", 1000, 20.0, false),
            idle("baseline", 6000.0),
            idle("relay", 6600.0),
        ]
        .join("\n");
        let summary = summarize(&[text]).unwrap();
        let names: Vec<&str> = summary
            .workloads
            .iter()
            .map(|w| w.workload.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "ping 100 conns 64 B x1",
                "ping 1000 conns 64 B x1",
                "idle 10000 conns"
            ]
        );
        let ping = &summary.workloads[0];
        assert_eq!(ping.runs["relay"], 3);
        assert_eq!(ping.medians["baseline"]["messages_per_sec"], 200.0);
        assert_eq!(ping.medians["relay"]["messages_per_sec"], 50.0);
        assert_eq!(ping.relay_over_baseline["messages_per_sec"], 0.25);
        assert_eq!(ping.relay_over_baseline["p99_9_us"], 0.25);
        assert_eq!(ping.relay_over_baseline["server_cpu_us_per_delivery"], 4.0);
        assert!(!ping.relay_over_baseline.contains_key("errors_total"));
        // No CPU figures in these reports: left out, not an error.
        let ping_1000 = &summary.workloads[1];
        assert_eq!(ping_1000.relay_over_baseline["deliveries_per_sec"], 2.0);
        assert!(!ping_1000.medians["relay"].contains_key("server_cpu_us_per_message"));
        let idle = &summary.workloads[2];
        assert_eq!(idle.relay_over_baseline["rss_per_connection_bytes"], 1.1);
        assert_eq!(summary.load_average_1m, Some((2.5, 4.0)));
        let table = summary.to_string();
        assert!(table.contains("relay / baseline"), "{table}");
        assert!(table.contains("memory/conn"), "{table}");
        assert!(summarize(&["{}".to_string()]).is_err());
    }

    /// A figure some runs of a target have and others lack is an error (mixed tools).
    #[test]
    fn a_figure_missing_from_some_runs_is_an_error() {
        let text = [
            report("relay", 100, 45.0, true),
            report("relay", 100, 45.0, false),
        ];
        let error = summarize(&[text.join("\n")]).unwrap_err().to_string();
        assert!(error.contains("lack"), "{error}");
    }
}
