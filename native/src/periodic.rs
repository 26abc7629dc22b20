//! Background jobs that run every interval, stopped by a guard.

use std::future::Future;
use std::time::Duration;

/// Stops its job when dropped, so a job cannot outlive the server that started it.
pub struct PeriodicGuard(tokio::task::JoinHandle<()>);

impl Drop for PeriodicGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `job` every `interval`, first after one interval. A run that overruns delays the
/// next instead of piling up. The job is awaited on the runtime, so one that blocks must
/// hand its blocking part to `spawn_blocking` itself.
pub fn spawn<F, Fut>(interval: Duration, mut job: F) -> PeriodicGuard
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    PeriodicGuard(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; there is nothing to do yet.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            job().await;
        }
    }))
}
