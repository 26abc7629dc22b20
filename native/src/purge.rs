//! The loop that drops expired tokens at the purge interval. The purge itself is the
//! core's [`TokenStore::purge`](token_server_core::TokenStore::purge); only the timing is here.

use std::sync::Arc;
use std::time::Duration;

use token_server_core::protocol::Service;
use token_server_core::{Clock, TokenSource};

use crate::periodic::{self, PeriodicGuard};

/// Starts purging `service`'s store every `interval`; stops when the guard is dropped.
pub fn spawn<C, R>(service: Arc<Service<C, R>>, interval: Duration) -> PeriodicGuard
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    periodic::spawn(interval, move || {
        let report = service.store().purge();
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
    })
}
