//! Background jobs that run every interval off the request workers, stopped by a guard.

use std::sync::Arc;
use std::time::Duration;

/// Stops its job when dropped, so a job cannot outlive the server that started it.
pub struct PeriodicGuard(tokio::task::JoinHandle<()>);

impl Drop for PeriodicGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `job` every `interval`, first after one interval, each run on tokio's blocking
/// pool: purges and snapshots take milliseconds on a large store and must not occupy a
/// request worker. A run that overruns delays the next instead of piling up.
pub fn spawn(interval: Duration, job: impl Fn() + Send + Sync + 'static) -> PeriodicGuard {
    let job = Arc::new(job);
    PeriodicGuard(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; there is nothing to do yet.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let job = job.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || job()).await {
                log::error!("background job failed: {err}");
            }
        }
    }))
}
