//! What the host sees of every request it serves, beside the protocol: how many are in
//! flight (a stop waits for them to finish) and the metrics they feed. `GET /metrics`,
//! which only this host has, is answered here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_server_core::protocol::{Endpoint, Event, Reply, RequestError};

use crate::metrics::{self, Metrics, Route};

/// The path of the metrics exposition.
pub const METRICS_PATH: &str = "/metrics";

/// Shared by all request workers; every update is one atomic.
#[derive(Debug)]
pub struct Observer {
    /// Shared with the metrics' `requests_in_flight` gauge.
    in_flight: Arc<AtomicUsize>,
    /// `None` serves no `/metrics` (it is then an unknown path) and counts nothing; the
    /// benchmark compares both.
    metrics: Option<Metrics>,
}

impl Default for Observer {
    /// An observer that counts requests in flight and records no metrics.
    fn default() -> Self {
        Observer::new(None)
    }
}

impl Observer {
    /// An observer that records into `metrics`, if any.
    pub fn new(metrics: Option<Metrics>) -> Self {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let metrics = metrics.map(|metrics| metrics.with_in_flight(in_flight.clone()));
        Observer { in_flight, metrics }
    }

    /// The metrics, for the purge and snapshot loops to record into.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Records a state file written in `duration` (see [`Metrics::snapshot_written`]).
    pub fn snapshot_written(&self, duration: Duration) {
        if let Some(metrics) = &self.metrics {
            metrics.snapshot_written(duration);
        }
    }

    /// Requests begun and not yet answered (or abandoned).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks a request as arrived; it stays in flight until the guard is finished or
    /// dropped (a client that hangs up mid-body drops it).
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            observer: self,
            // Read only for the duration histogram.
            started: self.metrics.is_some().then(Instant::now),
        }
    }

    /// The host's own answer to `method` on `path`, if the path is the host's own
    /// (`/metrics` with metrics on); `None` hands the request to the protocol.
    pub fn answer(&self, method: &str, path: &str) -> Option<Reply> {
        let metrics = self.metrics.as_ref().filter(|_| path == METRICS_PATH)?;
        if method != "GET" && method != "HEAD" {
            return Some(RequestError::MethodNotAllowed { allow: "GET, HEAD" }.reply());
        }
        Some(Reply {
            status: 200,
            content_type: Some(metrics::CONTENT_TYPE),
            body: metrics.encode(),
            allow: None,
            www_authenticate: None,
            endpoint: Endpoint::Other,
            // A scrape changes nothing and counts as no session event.
            event: Event::Probed,
        })
    }
}

/// A request in flight; see [`Observer::begin`].
#[must_use = "the request stops counting as in flight when this is dropped"]
pub struct InFlight<'a> {
    observer: &'a Observer,
    /// When the request arrived; `None` without metrics, which are all that read it.
    started: Option<Instant>,
}

impl InFlight<'_> {
    /// Records the answer the core gave, with the time since the request arrived.
    pub fn finish(self, reply: &Reply) {
        if let Some(metrics) = &self.observer.metrics {
            metrics.record(reply, self.elapsed());
        }
    }

    /// Records an answer of the host's own, e.g. to `/metrics`.
    pub fn finish_host(self, reply: &Reply) {
        if let Some(metrics) = &self.observer.metrics {
            if let Event::Refused(status) = reply.event {
                metrics.refused(status);
            }
            metrics.record_route(Route::Metrics, self.elapsed());
        }
    }

    fn elapsed(&self) -> Duration {
        self.started
            .map_or(Duration::ZERO, |started| started.elapsed())
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.observer.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_until_finished_or_dropped() {
        let observer = Observer::new(None);
        let first = observer.begin();
        let second = observer.begin();
        assert_eq!(observer.in_flight(), 2);
        drop(first);
        assert_eq!(observer.in_flight(), 1);
        second.finish(&RequestError::NotFound.reply());
        assert_eq!(observer.in_flight(), 0);
        assert!(observer.answer("GET", METRICS_PATH).is_none());
    }

    #[test]
    fn metrics_answer_get_and_head_only() {
        let observer = Observer::new(Some(Metrics::new(false).with_sessions(|| 0)));
        let scrape = observer.answer("GET", METRICS_PATH).unwrap();
        assert_eq!(scrape.status, 200);
        assert!(
            scrape.body.contains("token_server_sessions 0"),
            "{}",
            scrape.body
        );
        let held = observer.begin();
        let scrape = observer.answer("GET", METRICS_PATH).unwrap();
        assert!(
            scrape.body.contains("token_server_requests_in_flight 1"),
            "{}",
            scrape.body
        );
        drop(held);
        let post = observer.answer("POST", METRICS_PATH).unwrap();
        assert_eq!((post.status, post.allow), (405, Some("GET, HEAD")));
        assert!(observer.answer("GET", "/token").is_none());
    }
}
