//! The loop that drops expired tokens at the purge interval. What expires, and how a
//! shard is swept, is the core's [`TokenStore::purge_shard`]; only the pacing is here.

use std::sync::Arc;
use std::time::Duration;

use token_server_core::protocol::Service;
use token_server_core::{Clock, PurgeReport, TokenSource, TokenStore};

use crate::observer::Observer;
use crate::periodic::{self, PeriodicGuard};
use crate::shards;

/// Starts purging `service`'s store every `interval`, counting what expired into the
/// observer's metrics; stops when the guard is dropped.
pub fn spawn<C, R>(
    service: Arc<Service<C, R>>,
    interval: Duration,
    observer: Arc<Observer>,
) -> PeriodicGuard
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    periodic::spawn(interval, move || {
        let (service, observer) = (service.clone(), observer.clone());
        async move {
            let report = purge(service.store()).await;
            if let Some(metrics) = observer.metrics() {
                metrics.expired(report.purged);
            }
            let level = if report.purged > 0 {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "purge: {} expired tokens dropped, {} remaining",
                report.purged,
                report.remaining
            );
        }
    })
}

/// Purges `store` one shard at a time, yielding to the runtime after each shard (see
/// [`shards`](crate::shards) for why).
pub async fn purge<C: Clock, R: TokenSource>(store: &TokenStore<C, R>) -> PurgeReport {
    purge_shards(store.shard_count(), |index| store.purge_shard(index)).await
}

/// [`purge`] with the per-shard step given: `purge_shard(index)` for every index below
/// `count`, paced by [`shards::each_shard`], the reports combined. Benchmarks pass a timed
/// step.
pub async fn purge_shards(
    count: usize,
    mut purge_shard: impl FnMut(usize) -> PurgeReport,
) -> PurgeReport {
    let mut report = PurgeReport::NOTHING;
    shards::each_shard(count, |index| report = report.combined(purge_shard(index))).await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_server_core::{ManualClock, Meta, SeededRandom};

    #[tokio::test(flavor = "current_thread")]
    async fn purge_drops_the_expired_and_lets_other_tasks_run_between_shards() {
        let clock = ManualClock::new(0);
        let store = TokenStore::new(Duration::from_secs(60), clock.clone(), SeededRandom::new(3));
        for _ in 0..3 {
            store.create(Meta::from_json("{}").unwrap()).unwrap();
        }
        clock.advance(Duration::from_secs(30));
        let survivor = store.create(Meta::from_json("{}").unwrap()).unwrap();
        clock.advance(Duration::from_secs(31));

        let (report, turns_during_purge) = shards::turns_while(purge(&store)).await;

        assert_eq!((report.purged, report.remaining), (3, 1));
        assert_eq!(
            report.next_expiry,
            Some(token_server_core::Timestamp(90_000))
        );
        assert!(store.rotate(survivor.as_str(), None).is_ok());
        assert!(
            turns_during_purge >= store.shard_count() - 1,
            "the purge yielded only {turns_during_purge} times over {} shards",
            store.shard_count()
        );
    }
}
