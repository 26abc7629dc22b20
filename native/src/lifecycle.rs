//! The server's life once its listener is bound: loading, ready, draining. Each step is
//! told to the probes (the service's [`Readiness`]) and to systemd (`sd_notify`, a no-op
//! when not started by systemd).
//!
//! The listener is bound before the state file loads, so probes answer (503) during a long
//! load instead of the port refusing connections; after a stop signal the server keeps
//! accepting, with `/readyz` at 503, until the requests in flight have finished, so a load
//! balancer sees it leave rather than a refused connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use token_server_core::protocol::{Readiness, Service};
use token_server_core::{Clock, TokenSource};
use tokio::sync::Notify;

use crate::connections::StopDeadline;
use crate::observer::Observer;

/// How often the drain looks at the in-flight count: it only runs once, at a stop.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Marks `service` ready, and tells systemd and the log; does nothing if a stop began
/// while it was loading.
pub fn ready<C: Clock, R: TokenSource>(service: &Service<C, R>) {
    service.set_readiness(Readiness::Ready);
    if service.readiness() == Readiness::Ready {
        notify(&[NotifyState::Ready]);
        log::info!("ready: serving sessions");
    }
}

/// The shutdown future for [`server::run`](crate::server::run): resolves once
/// `signal` has resolved and the requests in flight have finished, with the service
/// draining meanwhile (still accepting, `/readyz` 503), but no later than `budget` after
/// the signal, which it records in `deadline` so the server's own graceful close gets only
/// what is left of `--shutdown-timeout`; or at once when `abort` is notified (start-up
/// failed, nothing to drain).
pub async fn drain_after<C: Clock, R: TokenSource>(
    signal: impl Future<Output = ()>,
    abort: Arc<Notify>,
    service: Arc<Service<C, R>>,
    observer: Arc<Observer>,
    budget: Duration,
    deadline: StopDeadline,
) {
    tokio::select! {
        () = signal => {}
        () = abort.notified() => return,
    }
    let deadline = *deadline.get_or_init(|| tokio::time::Instant::now() + budget);
    service.set_readiness(Readiness::Draining);
    notify(&[NotifyState::Stopping]);
    while observer.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    log::info!("drained: no longer accepting connections");
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {err}");
    }
}
