//! Shared benchmark plumbing: sample timing, summaries, and the report file.
//!
//! Benchmarks measure wall-clock time on purpose (tests never do). Each one
//! runs its baseline in the same process and run, and reports the ratio.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Summary of a set of timed samples.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Fastest sample.
    pub min: Duration,
}

impl Summary {
    /// Summarises samples (at least one).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let n = samples.len();
        let rank = |q: f64| samples[(((n as f64) * q).ceil() as usize).clamp(1, n) - 1];
        Self {
            n,
            median: rank(0.5),
            p99: rank(0.99),
            min: samples[0],
        }
    }

    /// As JSON, in microseconds.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.n,
            "median_us": micros(self.median),
            "p99_us": micros(self.p99),
            "min_us": micros(self.min),
        })
    }
}

/// The `q` quantile (nearest rank, as [`Summary`]) of samples sorted
/// ascending; for ranks `Summary` does not carry (p99.9).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    assert!(!sorted.is_empty(), "no samples");
    let n = sorted.len();
    sorted[(((n as f64) * q).ceil() as usize).clamp(1, n) - 1]
}

/// The release `griffin` binary `cargo xtask bench` built (`$GRIFFIN_BIN`).
pub fn griffin_bin() -> PathBuf {
    let p = std::env::var_os("GRIFFIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/griffin")
        });
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask bench`",
        p.display()
    );
    p
}

/// Microseconds as a float with two decimals.
pub fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e8).round() / 100.0
}

/// Runs `f` `warmup` times untimed, then `n` times timed.
pub fn time<T>(warmup: usize, n: usize, mut f: impl FnMut() -> T) -> Summary {
    for _ in 0..warmup {
        std::hint::black_box(f());
    }
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    Summary::of(samples)
}

/// Where reports go: `$GRIFFIN_BENCH_REPORT` (set by `cargo xtask bench`),
/// else `target/bench-report` under the workspace.
pub fn report_dir() -> PathBuf {
    std::env::var_os("GRIFFIN_BENCH_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-report"))
}

/// Writes `NAME.json` and `NAME.md` into [`report_dir`] and prints the
/// Markdown.
pub fn write_report(name: &str, json: &serde_json::Value, markdown: &str) -> std::io::Result<()> {
    let dir = report_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)? + "\n",
    )?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    println!("{markdown}");
    println!("report: {}", dir.join(format!("{name}.md")).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_ranks() {
        let s = Summary::of((1..=100).map(Duration::from_micros).collect());
        assert_eq!(s.median, Duration::from_micros(50));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.min, Duration::from_micros(1));
        let one = Summary::of(vec![Duration::from_micros(7)]);
        assert_eq!(
            (one.median, one.p99),
            (Duration::from_micros(7), Duration::from_micros(7))
        );
    }

    #[test]
    fn percentile_matches_summary_ranks() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 0.999), Duration::from_micros(999));
        assert_eq!(percentile(&v, 0.99), Summary::of(v.clone()).p99);
        assert_eq!(percentile(&v, 0.0), Duration::from_micros(1));
        assert_eq!(percentile(&v, 1.0), Duration::from_micros(1000));
    }
}
