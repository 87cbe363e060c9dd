//! Benchmark results: a readable table and, with `--json`, one JSON object per scenario
//! (scenario, parameters, figures, server backend, git commit, machine cores, and the
//! host's speed at the start of the run: `calibrate.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies in microseconds.
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram (1 µs to 10 min, 3 significant digits).
    pub(crate) fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.0.record(micros);
    }

    /// Adds another histogram.
    pub(crate) fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// Percentile in milliseconds.
    pub(crate) fn ms(&self, percentile: f64) -> f64 {
        self.0.value_at_quantile(percentile / 100.0) as f64 / 1000.0
    }

    /// p50/p95/p99/max as JSON (milliseconds).
    pub(crate) fn summary(&self) -> Value {
        json!({
            "p50_ms": round(self.ms(50.0)), "p95_ms": round(self.ms(95.0)), "p99_ms": round(self.ms(99.0)),
            "max_ms": round(self.0.max() as f64 / 1000.0), "samples": self.count(),
        })
    }
}

/// Rounds to 3 decimals for display.
pub(crate) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One scenario's result.
pub(crate) struct Report {
    /// Scenario name.
    pub(crate) scenario: String,
    /// Parameters it ran with.
    pub(crate) parameters: BTreeMap<String, Value>,
    /// Measured figures.
    pub(crate) figures: BTreeMap<String, Value>,
    /// `sqlite`, `postgres` or `external`.
    pub(crate) backend: String,
    /// Milliseconds of the calibration work before the run (lower is a faster host).
    pub(crate) host_speed: Option<Value>,
}

impl Report {
    /// An empty report.
    pub(crate) fn new(scenario: &str, backend: &str) -> Self {
        Self {
            scenario: scenario.into(),
            parameters: BTreeMap::new(),
            figures: BTreeMap::new(),
            backend: backend.into(),
            host_speed: None,
        }
    }

    /// Adds a parameter.
    pub(crate) fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.parameters.insert(name.into(), value.into());
        self
    }

    /// Adds a figure.
    pub(crate) fn figure(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.figures.insert(name.into(), value.into());
        self
    }

    /// The JSON form.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "parameters": self.parameters,
            "figures": self.figures,
            "backend": self.backend,
            "git_commit": git_commit(),
            "machine_cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "host_speed": self.host_speed,
        })
    }

    /// Prints a readable table.
    pub(crate) fn print(&self) {
        println!("\n== {} ({})", self.scenario, self.backend);
        if let Some(speed) = &self.host_speed {
            let ms = |name: &str| speed[name].as_f64().map_or("-".into(), |ms| format!("{ms:.1} ms"));
            println!(
                "   {:<28} cpu {}  syscalls {} (lower is a faster host)",
                "host_speed",
                ms("cpu_ms"),
                ms("syscall_ms")
            );
        }
        for (k, v) in &self.parameters {
            println!("   {k:<28} {v}");
        }
        println!("   {}", "-".repeat(40));
        for (k, v) in &self.figures {
            match v {
                Value::Object(map) => {
                    let parts: Vec<String> = map.iter().map(|(k2, v2)| format!("{k2}={v2}")).collect();
                    println!("   {k:<28} {}", parts.join("  "));
                }
                other => println!("   {k:<28} {other}"),
            }
        }
    }
}

/// The commit the run was made from, with `-dirty` when tracked files had changes.
fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
