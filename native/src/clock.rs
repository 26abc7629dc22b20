//! The native host's clock: the wall clock read once at start, advanced by the monotonic
//! clock, so no step of the wall clock moves token expiry.

use std::time::Instant;

use token_server_core::{Clock, SystemClock, Timestamp};

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
