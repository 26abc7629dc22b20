//! Prometheus metrics of the native host, served on `GET /metrics` in the text format.
//!
//! Every count is a plain atomic bumped on the request path (no lock, no map lookup): the
//! counters of each label value are created once at start and kept in arrays indexed by
//! the core's [`Endpoint`] and [`Rotation`] discriminants. prometheus-client encodes them
//! at scrape time from its own registry (never the global one). No metric carries a token
//! or metadata: labels are endpoint names, rotation outcomes and status codes.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use token_server_core::protocol::{Endpoint, Event, Reply, Rotation};

/// The `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The statuses a refusal can have (those the core's `RequestError` maps to); each gets
/// its counter at start so the hot path never creates one.
const REFUSAL_STATUSES: [u16; 7] = [400, 404, 405, 413, 415, 422, 503];

/// Upper bounds of the request-duration buckets, in seconds: 100 µs (a rotation on an idle
/// server) to 10 s (a client dribbling its body), a factor 2.5 apart or so.
const REQUEST_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// Which request a duration belongs to: one of the core's endpoints, or this host's own
/// `/metrics`, which the core does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// An endpoint the core answered.
    Service(Endpoint),
    /// `/metrics`.
    Metrics,
}

impl Route {
    const COUNT: usize = Endpoint::ALL.len() + 1;

    fn index(self) -> usize {
        match self {
            Route::Service(endpoint) => endpoint as usize,
            Route::Metrics => Endpoint::ALL.len(),
        }
    }

    fn label(index: usize) -> &'static str {
        Endpoint::ALL
            .get(index)
            .map_or("metrics", |endpoint| endpoint.label())
    }
}

/// The host's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    logins: Counter,
    logouts: Counter,
    expired: Counter,
    /// Indexed by `Rotation as usize`.
    rotations: Vec<Counter>,
    /// Parallel to [`REFUSAL_STATUSES`].
    refusals: Vec<Counter>,
    /// For a status outside [`REFUSAL_STATUSES`], should the core ever answer one: found
    /// or created under the family's lock, which the usual statuses never take.
    refusal_family: Family<[(&'static str, String); 1], Counter>,
    durations: Arc<RequestDurations>,
    snapshots: Option<SnapshotMetrics>,
}

struct SnapshotMetrics {
    last_success: Gauge<f64, AtomicU64>,
    duration: Histogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of every server; with `snapshots`, the state-file metrics too (only a
    /// server with `--state-file` writes snapshots). The session gauge is added by
    /// [`Metrics::with_sessions`], where the store can count its sessions.
    pub fn new(snapshots: bool) -> Self {
        let mut registry = Registry::with_prefix("token_server");
        let logins = Counter::default();
        registry.register("logins", "Tokens issued by POST /token", logins.clone());
        let logouts = Counter::default();
        registry.register(
            "logouts",
            "DELETE /token requests accepted, whether or not the token was live",
            logouts.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "expired",
            "Expired tokens dropped by the purge loop",
            expired.clone(),
        );
        let rotation_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "rotations",
            "PUT /token answers by outcome",
            rotation_family.clone(),
        );
        let rotations = Rotation::ALL
            .iter()
            .map(|rotation| {
                rotation_family
                    .get_or_create(&[("outcome", rotation.label())])
                    .clone()
            })
            .collect();
        let refusal_family = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "refusals",
            "Requests refused, by HTTP status",
            refusal_family.clone(),
        );
        let refusals = REFUSAL_STATUSES
            .iter()
            .map(|status| {
                refusal_family
                    .get_or_create(&[("status", status.to_string())])
                    .clone()
            })
            .collect();
        let durations = Arc::new(RequestDurations::default());
        registry.register_collector(Box::new(durations.clone()));
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let snapshots = snapshots.then(|| {
            let last_success = Gauge::<f64, AtomicU64>::default();
            registry.register(
                "snapshot_last_success_timestamp_seconds",
                "When the state file was last written successfully, in seconds since the epoch",
                last_success.clone(),
            );
            // 1 ms to ~65 s: a few tokens to tens of millions.
            let duration = Histogram::new(exponential_buckets(0.001, 4.0, 9));
            registry.register(
                "snapshot_duration_seconds",
                "Time to copy the store and write the state file",
                duration.clone(),
            );
            SnapshotMetrics {
                last_success,
                duration,
            }
        });
        Metrics {
            registry,
            logins,
            logouts,
            expired,
            rotations,
            refusals,
            refusal_family,
            durations,
            snapshots,
        }
    }

    /// Adds `token_server_sessions`, read from `sessions` at each scrape. Only for a store
    /// that can tell cheaply: the in-memory store keeps the count anyway, while Redis
    /// would need a `DBSIZE` (which counts every key of the database, not this prefix's
    /// sessions) or a full `SCAN`; so a server with `--redis` exports no such gauge rather
    /// than a wrong 0.
    pub fn with_sessions(mut self, sessions: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        self.registry.register_collector(Box::new(GaugeFn {
            name: "sessions",
            help: "Tokens held, including expired ones the purge has not dropped yet",
            read: Box::new(sessions),
        }));
        self
    }

    /// Adds `token_server_requests_in_flight`, read from `in_flight` at each scrape.
    pub fn with_in_flight(mut self, in_flight: Arc<AtomicUsize>) -> Self {
        self.registry.register_collector(Box::new(GaugeFn {
            name: "requests_in_flight",
            help: "Requests arrived and not answered yet (a scrape counts itself)",
            read: Box::new(move || in_flight.load(Ordering::Relaxed)),
        }));
        self
    }

    /// Counts one answered request and its duration. Atomics only, for the usual statuses.
    pub fn record(&self, reply: &Reply, elapsed: Duration) {
        match reply.event {
            Event::LoggedIn => {
                self.logins.inc();
            }
            Event::Rotated(rotation) => {
                if let Some(counter) = self.rotations.get(rotation as usize) {
                    counter.inc();
                }
            }
            Event::LoggedOut => {
                self.logouts.inc();
            }
            Event::Refused(status) => self.refused(status),
            Event::Dumped | Event::Probed | Event::TestClock => {}
        }
        self.durations
            .observe(Route::Service(reply.endpoint), elapsed);
    }

    /// Counts a request answered by the host itself, e.g. a scrape.
    pub fn record_route(&self, route: Route, elapsed: Duration) {
        self.durations.observe(route, elapsed);
    }

    /// Counts a refusal with `status`.
    pub fn refused(&self, status: u16) {
        match REFUSAL_STATUSES.iter().position(|known| *known == status) {
            Some(index) => {
                self.refusals[index].inc();
            }
            None => {
                self.refusal_family
                    .get_or_create(&[("status", status.to_string())])
                    .inc();
            }
        }
    }

    /// Counts tokens the purge loop dropped.
    pub fn expired(&self, count: usize) {
        self.expired.inc_by(count as u64);
    }

    /// Records a state file written in `duration`, now.
    pub fn snapshot_written(&self, duration: Duration) {
        if let Some(snapshots) = &self.snapshots {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            snapshots.last_success.set(now.as_secs_f64());
            snapshots.duration.observe(duration.as_secs_f64());
        }
    }

    /// The exposition in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a metric
        // name, so say so in the exposition rather than answer nothing.
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            out.push_str(&format!("# encoding failed: {err}\n"));
        }
        out
    }
}

/// A gauge read when scraped from a count kept anyway (the store's sessions, the
/// requests in flight), so nothing is updated twice on the request path.
struct GaugeFn {
    name: &'static str,
    help: &'static str,
    read: Box<dyn Fn() -> usize + Send + Sync>,
}

impl fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GaugeFn").field("name", &self.name).finish()
    }
}

impl Collector for GaugeFn {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = ConstGauge::new(i64::try_from((self.read)()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

/// `token_server_request_duration_seconds{endpoint}`: one histogram per [`Route`], kept in
/// atomics (prometheus-client's own histogram takes a lock per observation).
#[derive(Debug)]
struct RequestDurations {
    routes: [RouteHistogram; Route::COUNT],
}

impl Default for RequestDurations {
    fn default() -> Self {
        RequestDurations {
            routes: std::array::from_fn(|_| RouteHistogram::default()),
        }
    }
}

#[derive(Debug, Default)]
struct RouteHistogram {
    /// Observations per bucket, not cumulated (the last one is +Inf); the encoder
    /// cumulates them at scrape.
    buckets: [AtomicU64; REQUEST_BUCKETS.len() + 1],
    /// Sum in nanoseconds: an integer adds atomically, and 2^64 ns is 584 years.
    sum_nanos: AtomicU64,
}

impl RequestDurations {
    fn observe(&self, route: Route, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = REQUEST_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(REQUEST_BUCKETS.len());
        let histogram = &self.routes[route.index()];
        histogram.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        histogram.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Collector for RequestDurations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by endpoint",
            None,
            MetricType::Histogram,
        )?;
        for (index, histogram) in self.routes.iter().enumerate() {
            // Per-bucket counts: the encoder cumulates them and names the last one +Inf.
            let buckets: Vec<(f64, u64)> = REQUEST_BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(&histogram.buckets)
                .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
                .collect();
            let count = buckets.iter().map(|(_, count)| count).sum();
            let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let labels = [("endpoint", Route::label(index))];
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_server_core::protocol::RequestError;

    fn reply(endpoint: Endpoint, event: Event) -> Reply {
        let mut reply = RequestError::NotFound.reply();
        reply.endpoint = endpoint;
        reply.event = event;
        reply
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
    }

    #[test]
    fn requests_are_counted_by_event_and_timed_by_endpoint() {
        let metrics = Metrics::new(false).with_sessions(|| 7);
        let ms = Duration::from_millis(1);
        metrics.record(&reply(Endpoint::Login, Event::LoggedIn), ms);
        metrics.record(
            &reply(Endpoint::Rotate, Event::Rotated(Rotation::Ok)),
            ms * 3,
        );
        metrics.record(
            &reply(Endpoint::Rotate, Event::Rotated(Rotation::Invalid)),
            ms,
        );
        metrics.record(&reply(Endpoint::Rotate, Event::Refused(400)), ms);
        metrics.record(&reply(Endpoint::Other, Event::Refused(418)), ms);
        metrics.expired(5);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "token_server_logins_total "),
            "token_server_logins_total 1"
        );
        assert_eq!(
            line(&text, "token_server_expired_total "),
            "token_server_expired_total 5"
        );
        assert!(
            text.contains("token_server_rotations_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("token_server_rotations_total{outcome=\"invalid\"} 1"));
        assert!(text.contains("token_server_refusals_total{status=\"400\"} 1"));
        assert!(text.contains("token_server_refusals_total{status=\"418\"} 1"));
        assert!(text.contains("token_server_refusals_total{status=\"503\"} 0"));
        assert!(text.contains("token_server_sessions 7"));
        assert!(text.contains("token_server_build_info{version=\""));
        let rotate = "token_server_request_duration_seconds";
        assert!(text.contains(&format!("{rotate}_count{{endpoint=\"rotate\"}} 3")));
        assert!(text.contains(&format!(
            "{rotate}_bucket{{endpoint=\"rotate\",le=\"0.001\"}} 2"
        )));
        assert!(text.contains(&format!(
            "{rotate}_bucket{{endpoint=\"rotate\",le=\"0.005\"}} 3"
        )));
        assert!(text.contains(&format!(
            "{rotate}_bucket{{endpoint=\"rotate\",le=\"+Inf\"}} 3"
        )));
        assert!(text.contains(&format!("{rotate}_sum{{endpoint=\"rotate\"}} 0.005")));
        assert!(
            !text.contains("snapshot"),
            "no state file, no snapshot metrics"
        );
    }

    #[test]
    fn snapshots_record_their_time_and_duration() {
        let metrics = Metrics::new(true);
        metrics.snapshot_written(Duration::from_millis(20));
        let text = metrics.encode();
        let stamp: f64 = line(
            &text,
            "token_server_snapshot_last_success_timestamp_seconds ",
        )
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap();
        assert!(stamp > 1.7e9, "{stamp}");
        assert!(
            text.contains("token_server_snapshot_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("token_server_snapshot_duration_seconds_bucket{le=\"0.064\"} 1"));
    }

    #[test]
    fn a_store_that_cannot_count_its_sessions_exports_no_session_gauge() {
        let text = Metrics::new(false).encode();
        assert!(text.contains("token_server_logins_total 0"), "{text}");
        assert!(!text.contains("token_server_sessions"), "{text}");
    }
}
