//! The clock the server runs on: the wall clock read once at start and advanced by the
//! monotonic clock, so no step of the wall clock moves token expiry; or, with
//! `--test-clock`, a manual clock that only the `/test-clock` endpoints move.

use std::time::Instant;

use token_server_core::{Clock, ManualClock, SystemClock, Timestamp};

/// One type for both, so the store, the protocol and the purge loop are built once.
///
/// An enum rather than a boxed trait object: `now` is on every request's path, and a match
/// on two variants costs less than an indirect call.
#[derive(Debug, Clone)]
pub enum ServerClock {
    /// Real time, on the monotonic clock.
    Anchored(AnchoredClock),
    /// Time that moves only through `POST /test-clock/...`; starts at the real time.
    Test(ManualClock),
}

impl ServerClock {
    /// The clock `--test-clock` asks for: a manual one starting at the system time, or
    /// the anchored monotonic clock.
    pub fn new(test_clock: bool) -> ServerClock {
        if test_clock {
            ServerClock::Test(ManualClock::new(SystemClock.now().as_millis()))
        } else {
            ServerClock::Anchored(AnchoredClock::start())
        }
    }

    /// The manual clock to hand to the protocol's `/test-clock` endpoints, if this is one.
    pub fn test_clock(&self) -> Option<ManualClock> {
        match self {
            ServerClock::Test(clock) => Some(clock.clone()),
            ServerClock::Anchored(_) => None,
        }
    }
}

impl Clock for ServerClock {
    fn now(&self) -> Timestamp {
        match self {
            ServerClock::Anchored(clock) => clock.now(),
            ServerClock::Test(clock) => clock.now(),
        }
    }
}

/// Wall time at start plus the monotonic time elapsed since.
///
/// Expiry decisions compare against this: an NTP or operator step of the wall clock
/// neither revives expired tokens (step back) nor kills live ones (step forward). Its
/// readings are still wall-clock timestamps, so the absolute expiries written to the state
/// file and shown in the dump mean what they say; they drift from the wall clock only by
/// the steps it took while the server ran (and, on Linux, by time spent suspended, which
/// the monotonic clock does not count), and a restart re-anchors.
#[derive(Debug, Clone, Copy)]
pub struct AnchoredClock {
    /// The wall clock when the server started.
    wall_at_start: Timestamp,
    /// The monotonic clock at the same moment.
    start: Instant,
}

impl AnchoredClock {
    /// Anchored to the OS wall clock now.
    pub fn start() -> AnchoredClock {
        AnchoredClock::anchored_at(SystemClock.now())
    }

    /// Anchored to `wall_at_start` as the wall time now; for tests.
    pub fn anchored_at(wall_at_start: Timestamp) -> AnchoredClock {
        AnchoredClock {
            wall_at_start,
            start: Instant::now(),
        }
    }
}

impl Clock for AnchoredClock {
    fn now(&self) -> Timestamp {
        self.wall_at_start.saturating_add(self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_test_clock_starts_at_the_real_time_and_moves_only_when_told() {
        let before = SystemClock.now();
        let clock = ServerClock::new(true);
        let handle = clock.test_clock().expect("a test clock");
        let start = clock.now();
        assert!(start >= before && start <= SystemClock.now());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), start);
        handle.advance(Duration::from_secs(3600));
        assert_eq!(clock.now(), start.saturating_add(Duration::from_secs(3600)));
        assert!(ServerClock::new(false).test_clock().is_none());
    }

    #[test]
    fn reads_the_anchor_plus_elapsed_time_never_the_wall_clock_again() {
        // Anchored in 2000, far from the OS wall clock: a reading near the anchor shows
        // the wall clock is not consulted after the start.
        let anchor = Timestamp(946_684_800_000);
        let clock = AnchoredClock::anchored_at(anchor);
        let first = clock.now();
        std::thread::sleep(Duration::from_millis(30));
        let second = clock.now();
        assert!(first >= anchor && second >= first, "{first:?} {second:?}");
        let elapsed = second.saturating_duration_since(anchor);
        assert!(
            elapsed >= Duration::from_millis(30) && elapsed < Duration::from_secs(60),
            "{elapsed:?}"
        );
    }

    #[test]
    fn starts_at_the_wall_clock() {
        let wall = SystemClock.now();
        let clock = AnchoredClock::start();
        let drift = clock.now().saturating_duration_since(wall);
        assert!(drift < Duration::from_secs(5), "{drift:?}");
        assert!(clock.now() >= wall);
    }
}
