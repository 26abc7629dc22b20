//! Work over every shard of the store, paced for the request workers: one shard per step,
//! a yield to the runtime between steps.
//!
//! The purge and the snapshot copy run this way rather than on a thread of their own: a
//! thread the OS preempts while it holds a shard lock stalls every worker that touches that
//! shard for a whole time slice, while here a request waits at most for one shard's step
//! (~1,000 tokens at 1M).

/// Calls `step(index)` for every shard index below `count`, yielding after each.
pub async fn each_shard(count: usize, mut step: impl FnMut(usize)) {
    for index in 0..count {
        step(index);
        tokio::task::yield_now().await;
    }
}
