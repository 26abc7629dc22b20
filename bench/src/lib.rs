//! Helpers shared by the benchmark binaries: RSS readings and latency percentiles.

use std::time::Duration;

/// The metadata every benchmark binds to its tokens, as in issue 4.
pub const BENCH_META: &str = r#"{"name":"bench user","year":2026,"period":11}"#;

/// Resident set size of this process in KiB, from `/proc/self/status` (`VmRSS`).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `p`-th percentile (0..=100) of `samples`, sorting them in place.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Prints one figure in the line format `bench/run.sh` parses: `FIGURE name value unit`.
pub fn figure(name: &str, value: f64, unit: &str) {
    println!("FIGURE {name} {value:.1} {unit}");
}
