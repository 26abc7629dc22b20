//! Time as the store sees it: a [`Timestamp`] read from a [`Clock`] the host plugs in.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Milliseconds since the Unix epoch (UTC).
///
/// Milliseconds are what both hosts have at hand (`SystemTime` natively, `Date.now()` in
/// JS) and are finer than any lifetime the service allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant moved forward by `duration`, saturating instead of overflowing.
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2022-11-05T13:04:00.250Z`.
    ///
    /// ```
    /// use token_server_core::Timestamp;
    /// assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    /// assert_eq!(Timestamp(951_782_400_001).to_rfc3339(), "2000-02-29T00:00:00.001Z");
    /// ```
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Timestamp {
    /// Formats as RFC 3339 UTC; see [`Timestamp::to_rfc3339`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = secs / 86_400;
        let secs_of_day = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`, restricted to dates on or after the epoch; a
/// dependency on a calendar crate for one conversion is not worth it.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Where the store reads the current time.
///
/// One method, so a host can implement it over whatever time it has: the OS clock
/// ([`SystemClock`]), a hand-driven clock for tests ([`ManualClock`]), or a JS function.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
///
/// Wall-clock time rather than a monotonic `Instant`, because expiry instants are shown to
/// operators (the dump) and must mean the same after a restart.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use token_server_core::{Clock, ManualClock, Timestamp};
/// let clock = ManualClock::new(1_000);
/// let handle = clock.clone();
/// handle.advance(Duration::from_millis(500));
/// assert_eq!(clock.now(), Timestamp(1_500));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    /// Shared so the test keeps a handle while the store owns a clone.
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `millis` since the epoch.
    pub fn new(millis: u64) -> Self {
        ManualClock {
            millis: Arc::new(AtomicU64::new(millis)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Sets the clock to an absolute time, backwards included.
    pub fn set(&self, to: Timestamp) {
        self.millis.store(to.0, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::Relaxed))
    }
}

/// A clock that never goes back: it reads `inner` and returns the latest time it has
/// returned so far if `inner` now says earlier.
///
/// For a host whose only time source is a wall clock that can be stepped (NTP, an
/// operator, a VM resume): a step back must not revive tokens that had already expired.
/// After a step back the time stands still until `inner` catches up; a step forward cannot
/// be undone this way, which is why the native host reads a monotonic clock instead.
///
/// ```
/// use std::time::Duration;
/// use token_server_core::{Clock, ManualClock, Monotonic, Timestamp};
/// let wall = ManualClock::new(5_000);
/// let clock = Monotonic::new(wall.clone());
/// assert_eq!(clock.now(), Timestamp(5_000));
/// wall.set(Timestamp(1_000)); // stepped back
/// assert_eq!(clock.now(), Timestamp(5_000));
/// wall.set(Timestamp(6_000));
/// assert_eq!(clock.now(), Timestamp(6_000));
/// ```
#[derive(Debug, Default)]
pub struct Monotonic<C> {
    inner: C,
    /// The latest time returned, in milliseconds; only ever raised.
    latest: AtomicU64,
}

impl<C: Clock> Monotonic<C> {
    /// `inner`, kept from going back.
    pub fn new(inner: C) -> Self {
        Monotonic {
            inner,
            latest: AtomicU64::new(0),
        }
    }

    /// The clock inside.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: Clock> Clock for Monotonic<C> {
    fn now(&self) -> Timestamp {
        let now = self.inner.now().0;
        let before = self.latest.fetch_max(now, Ordering::Relaxed);
        Timestamp(before.max(now))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2022-11-05T13:04:09.250Z, checked with `date -u -d @1667653449`.
        assert_eq!(
            Timestamp(1_667_653_449_250).to_string(),
            "2022-11-05T13:04:09.250Z"
        );
        assert_eq!(
            Timestamp(1_709_164_799_999).to_string(),
            "2024-02-28T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp(1_709_164_800_000).to_string(),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp(4_102_444_800_000).to_string(),
            "2100-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(5);
        let other = clock.clone();
        other.advance(Duration::from_millis(10));
        assert_eq!(clock.now(), Timestamp(15));
        clock.set(Timestamp(3));
        assert_eq!(other.now(), Timestamp(3));
    }

    #[test]
    fn monotonic_holds_through_a_step_back_then_follows_again() {
        let wall = ManualClock::new(10_000);
        let clock = Monotonic::new(wall.clone());
        assert_eq!(clock.now(), Timestamp(10_000));
        wall.set(Timestamp(2_000));
        assert_eq!(clock.now(), Timestamp(10_000));
        wall.set(Timestamp(9_999));
        assert_eq!(clock.now(), Timestamp(10_000));
        wall.set(Timestamp(10_001));
        assert_eq!(clock.now(), Timestamp(10_001));
    }

    #[test]
    fn a_clock_stepping_back_revives_no_expired_token_behind_monotonic() {
        use crate::{Meta, SeededRandom, StoreError, TokenStore};
        let lifetime = Duration::from_secs(60);
        let start = Timestamp(1_700_000_000_000);
        /// Rotations of a token expired and a token live when the wall clock stepped back
        /// an hour, on a store reading the wall clock through `store_clock`.
        fn run<C: Clock>(
            lifetime: Duration,
            start: Timestamp,
            store_clock: impl Fn(ManualClock) -> C,
        ) -> (Result<(), StoreError>, Result<(), StoreError>) {
            let wall = ManualClock::new(start.0);
            let store = TokenStore::new(lifetime, store_clock(wall.clone()), SeededRandom::new(5));
            let expired = store.create(Meta::default()).unwrap();
            wall.advance(Duration::from_secs(61));
            let live = store.create(Meta::default()).unwrap();
            wall.set(Timestamp(start.0 - 3_600_000));
            (
                store.rotate(expired.as_str(), None).map(|_| ()),
                store.rotate(live.as_str(), None).map(|_| ()),
            )
        }
        let (expired, live) = run(lifetime, start, Monotonic::new);
        assert_eq!(expired, Err(StoreError::InvalidToken));
        assert_eq!(live, Ok(()));
        // What the guard prevents: on the bare wall clock the expired token works again.
        let (expired, _) = run(lifetime, start, |wall| wall);
        assert_eq!(expired, Ok(()));
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(
            Timestamp(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
        assert_eq!(
            Timestamp(1).saturating_duration_since(Timestamp(5)),
            Duration::ZERO
        );
    }
}
