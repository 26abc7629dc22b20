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

    /// Reads an RFC 3339 date-time (`2026-01-01T00:00:00Z`, fractions of a second and a
    /// `+hh:mm`/`-hh:mm` offset allowed), truncated to the millisecond. Instants before the
    /// epoch are refused: the store has none.
    ///
    /// ```
    /// use token_server_core::Timestamp;
    /// assert_eq!(Timestamp::parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(Timestamp(1_500)));
    /// assert_eq!(
    ///     Timestamp::parse_rfc3339("2000-02-29T02:00:00+02:00"),
    ///     Timestamp::parse_rfc3339("2000-02-29T00:00:00Z")
    /// );
    /// assert!(Timestamp::parse_rfc3339("2000-02-30T00:00:00Z").is_err());
    /// ```
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let bad = || TimestampError {
            input: text.chars().take(64).collect(),
        };
        let bytes = text.as_bytes();
        let number = |range: std::ops::Range<usize>| -> Result<u64, TimestampError> {
            let digits = bytes.get(range).ok_or_else(bad)?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
        };
        let separator = |at: usize, allowed: &[u8]| match bytes.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad()),
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        separator(4, b"-")?;
        separator(7, b"-")?;
        separator(10, b"Tt ")?;
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        separator(13, b":")?;
        separator(16, b":")?;
        let mut at = 19;
        let mut millis = 0;
        if bytes.get(at) == Some(&b'.') {
            let digits = bytes[at + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 {
                return Err(bad());
            }
            // Milliseconds are the store's resolution; finer digits are dropped.
            let kept = digits.min(3);
            millis = number(at + 1..at + 1 + kept)? * 10u64.pow((3 - kept) as u32);
            at += 1 + digits;
        }
        let offset_minutes: i64 = match bytes.get(at) {
            Some(b'Z' | b'z') if at + 1 == bytes.len() => 0,
            Some(sign @ (b'+' | b'-')) if at + 6 == bytes.len() => {
                separator(at + 3, b":")?;
                let (hours, minutes) = (number(at + 1..at + 3)?, number(at + 4..at + 6)?);
                if hours > 23 || minutes > 59 {
                    return Err(bad());
                }
                let offset = (hours * 60 + minutes) as i64;
                if *sign == b'-' {
                    -offset
                } else {
                    offset
                }
            }
            _ => return Err(bad()),
        };
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let month_days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap(year) => 29,
            2 => 28,
            _ => return Err(bad()),
        };
        // 60 seconds would be a leap second, which Unix time does not count.
        if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        let local = ((days * 24 + hour) * 60 + minute) as i64 * 60 + second as i64;
        let utc = local - offset_minutes * 60;
        let utc = u64::try_from(utc).map_err(|_| bad())?;
        Ok(Timestamp(utc * 1000 + millis))
    }
}

/// Text that is not an RFC 3339 date-time at or after the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError {
    /// The text given (its first 64 characters).
    pub input: String,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z",
            self.input
        )
    }
}

impl std::error::Error for TimestampError {}

/// (year, month, day) of the proleptic Gregorian calendar, on or after 1970-01-01, to days
/// since the epoch: the inverse of [`civil_from_days`] (also Howard Hinnant's).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    /// Sets the clock to `to` only if that is not earlier than its time; otherwise leaves
    /// it and returns its time. One atomic step, so two racing calls cannot move it back.
    ///
    /// ```
    /// use token_server_core::{Clock, ManualClock, Timestamp};
    /// let clock = ManualClock::new(100);
    /// assert_eq!(clock.set_forward(Timestamp(150)), Ok(()));
    /// assert_eq!(clock.set_forward(Timestamp(120)), Err(Timestamp(150)));
    /// assert_eq!(clock.now(), Timestamp(150));
    /// ```
    pub fn set_forward(&self, to: Timestamp) -> Result<(), Timestamp> {
        self.millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (to.0 >= t).then_some(to.0)
            })
            .map(drop)
            .map_err(Timestamp)
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
    fn rfc3339_parsing_inverts_formatting_and_refuses_what_is_not_a_date() {
        for millis in [0, 951_782_400_001, 1_667_653_449_250, 4_102_444_800_000] {
            let text = Timestamp(millis).to_string();
            assert_eq!(
                Timestamp::parse_rfc3339(&text),
                Ok(Timestamp(millis)),
                "{text}"
            );
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2022-11-05T14:04:09.25+01:00"),
            Ok(Timestamp(1_667_653_449_250))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2022-11-05t13:04:09.250999z"),
            Ok(Timestamp(1_667_653_449_250))
        );
        for bad in [
            "",
            "2022-11-05",
            "2022-11-05T13:04:09",
            "2022-13-05T13:04:09Z",
            "2023-02-29T00:00:00Z",
            "2022-11-05T24:00:00Z",
            "2022-11-05T13:60:00Z",
            "2022-11-05T13:04:60Z",
            "2022-11-05T13:04:09.Z",
            "2022-11-05T13:04:09Zjunk",
            "2022-11-05T13:04:09+1:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "+2022-11-05T13:04:09Z",
            "२०२२-11-05T13:04:09Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
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
