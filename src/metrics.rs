//! A run's numbers in the Prometheus text exposition format, for node_exporter's textfile
//! collector: one file, replaced atomically at the end of a run, so the collector never reads
//! half of one.
//!
//! Every sample is a gauge: the textfile collector exposes the file as it stands, and a cron job
//! that runs hourly wants "what the last run did", not counters that restart with each process.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::fsutil;

/// Samples to write, grouped by metric name in the order first given.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    families: Vec<Family>,
}

#[derive(Clone, Debug)]
struct Family {
    name: String,
    help: String,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Metrics {
    /// No samples yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds the gauge `name{labels} value`; `help` describes the metric (given once per name;
    /// later ones are ignored). `name` must be a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`),
    /// which the names of this crate are; label values may hold any text.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(is_metric_name(name), "{name}");
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, value)),
            None => self.families.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                samples: vec![(labels, value)],
            }),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} gauge", f.name);
            for (labels, value) in &f.samples {
                out.push_str(&f.name);
                if !labels.is_empty() {
                    let inner: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                        .collect();
                    let _ = write!(out, "{{{}}}", inner.join(","));
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }

    /// Writes the samples to `path`, replacing it atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        fsutil::atomic_write(path, self.render().as_bytes())
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_and_labels_escaped() {
        let mut m = Metrics::new();
        m.gauge("nixipfs_a", "What a is.", &[("channel", "x\"y\\z\n")], 1.0);
        m.gauge("nixipfs_b", "B", &[], 0.5);
        m.gauge("nixipfs_a", "ignored", &[("channel", "c")], 2.0);
        assert_eq!(
            m.render(),
            "# HELP nixipfs_a What a is.\n# TYPE nixipfs_a gauge\n\
             nixipfs_a{channel=\"x\\\"y\\\\z\\n\"} 1\nnixipfs_a{channel=\"c\"} 2\n\
             # HELP nixipfs_b B\n# TYPE nixipfs_b gauge\nnixipfs_b 0.5\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(is_metric_name("nixipfs_run_seconds"));
        assert!(!is_metric_name("1abc"));
        assert!(!is_metric_name("a-b"));
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(3.25), "3.25");
    }
}
