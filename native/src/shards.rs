//! Work over every shard of the store, paced for the request workers: one shard per step,
//! a yield to the runtime between steps.
//!
//! The purge and the snapshot copy run this way rather than on a thread of their own: a
//! thread the OS preempts while it holds a shard lock stalls every worker that touches that
//! shard for a whole time slice, while here a request waits at most for one shard's step
//! (~1,000 tokens at 1M).

/// Calls `step(index)` for every shard index below `count`, yielding after each.
pub async fn each_shard(count: usize, mut step: impl FnMut(usize)) {
    let mut shards = paced(count);
    while let Some(index) = shards.next().await {
        step(index);
    }
}

/// The shard indices below `count`, handed out one at a time with a yield to the runtime
/// before each but the first: [`each_shard`] for a loop whose step must itself await
/// (the snapshot waits for room in its queue to the file writer).
pub fn paced(count: usize) -> PacedShards {
    PacedShards { next: 0, count }
}

/// See [`paced`].
#[derive(Debug)]
pub struct PacedShards {
    next: usize,
    count: usize,
}

impl PacedShards {
    /// The next shard index, after a yield (none before the first); `None` when done.
    pub async fn next(&mut self) -> Option<usize> {
        if self.next >= self.count {
            return None;
        }
        if self.next > 0 {
            tokio::task::yield_now().await;
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

/// How many turns another task got while `work` ran, with `work`'s output: on a one-thread
/// runtime that task runs only when `work` yields, so this counts the yields of a paced
/// loop. For the tests of the loops paced here.
#[cfg(test)]
pub(crate) async fn turns_while<F: std::future::Future>(work: F) -> (F::Output, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let turns = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let turns = turns.clone();
        async move {
            loop {
                turns.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    let output = work.await;
    let turns = turns.load(Ordering::Relaxed);
    ticker.abort();
    (output, turns)
}
