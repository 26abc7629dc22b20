//! The loop that drops expired tokens at the purge interval. The purge itself is the
//! core's [`TokenStore::purge`](token_server_core::TokenStore::purge); only the timing is here.

use std::sync::Arc;
use std::time::Duration;

use token_server_core::protocol::Service;
use token_server_core::{Clock, TokenSource};

/// Stops the purge loop when dropped, so it cannot outlive the server.
pub struct PurgeGuard(tokio::task::JoinHandle<()>);

impl Drop for PurgeGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts purging `service`'s store every `interval`.
pub fn spawn<C, R>(service: Arc<Service<C, R>>, interval: Duration) -> PurgeGuard
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    PurgeGuard(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; nothing can have expired yet.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let service = service.clone();
            // A sweep of a large store takes milliseconds: keep it off the request workers.
            match tokio::task::spawn_blocking(move || service.store().purge()).await {
                Ok(report) if report.purged > 0 => log::info!(
                    "purge: {} expired tokens dropped, {} remaining",
                    report.purged,
                    report.remaining
                ),
                Ok(report) => log::debug!(
                    "purge: {} expired tokens dropped, {} remaining",
                    report.purged,
                    report.remaining
                ),
                Err(err) => log::error!("purge failed: {err}"),
            }
        }
    }))
}
