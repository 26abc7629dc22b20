//! Helpers shared by the benchmark binaries: RSS readings, latency percentiles and the
//! servers' command-line options.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use token_server::tls::{Tls, TlsFiles};
use token_server_core::{Clock, PurgeReport, TokenSource, TokenStore};

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

/// CPU time this thread has run, which unlike wall time leaves out the time the thread was
/// preempted: on a shared two-core machine a lock holder can lose the CPU for several
/// milliseconds, which says nothing about the work done under the lock.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel
    // has supported since Linux 2.6.12.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Purges `store` shard by shard on this thread, timing each step as
/// [`PurgeTimes::step`] does.
pub fn purge_timed<C: Clock, R: TokenSource>(store: &TokenStore<C, R>) -> PurgeTimes {
    let mut times = PurgeTimes::default();
    for index in 0..store.shard_count() {
        times.step(store, index);
    }
    times
}

/// What a timed purge measured, one entry per shard.
#[derive(Debug, Default)]
pub struct PurgeTimes {
    /// Tokens purged.
    pub purged: usize,
    /// Wall time of each lock hold (the sweep).
    pub hold: Vec<Duration>,
    /// CPU time of each lock hold.
    pub hold_cpu: Vec<Duration>,
    /// Wall time of freeing each shard's swept metadata, after unlocking.
    pub free: Vec<Duration>,
}

impl PurgeTimes {
    /// Purges shard `index` of `store` as `purge_shard` does, timing the lock hold (the
    /// sweep, before the swept metadata is freed) in wall time and in this thread's CPU
    /// time, and the frees after it in wall time.
    pub fn step<C: Clock, R: TokenSource>(
        &mut self,
        store: &TokenStore<C, R>,
        index: usize,
    ) -> PurgeReport {
        let (wall_start, cpu_start) = (Instant::now(), thread_cpu_time());
        let (report, swept) = store.sweep_shard(index);
        self.hold_cpu
            .push(thread_cpu_time().saturating_sub(cpu_start));
        self.hold.push(wall_start.elapsed());
        let free_start = Instant::now();
        drop(swept);
        self.free.push(free_start.elapsed());
        self.purged += report.purged;
        report
    }
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

/// The value after `flag` in `args` (`--flag VALUE`), if the flag is there.
pub fn value_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .map(String::as_str)
}

/// The TLS settings of `--tls-cert PEM --tls-key PEM` in `args`, loaded by the shipped
/// loader (`token_server::tls`) so a benchmark serves HTTPS as `token-server` does; `None`
/// unless both are given. Panics on files that do not load: a benchmark has no one to
/// answer.
pub fn tls_from_args(args: &[String]) -> Option<Tls> {
    let cert = value_after(args, "--tls-cert")?;
    let key = value_after(args, "--tls-key")?;
    let files = TlsFiles {
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
        client_ca: None,
    };
    Some(Tls::load(files).expect("load the certificate"))
}
