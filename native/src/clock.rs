//! The clock the server runs on: the system's, or with `--test-clock` a manual one that
//! only the `/test-clock` endpoints move.

use token_server_core::{Clock, ManualClock, SystemClock, Timestamp};

/// One type for both, so the store, the protocol and the purge loop are built once.
///
/// An enum rather than a boxed trait object: `now` is on every request's path, and a match
/// on two variants costs less than an indirect call.
#[derive(Debug, Clone)]
pub enum ServerClock {
    /// Real time.
    System(SystemClock),
    /// Time that moves only through `POST /test-clock/...`; starts at the real time.
    Test(ManualClock),
}

impl ServerClock {
    /// The clock `--test-clock` asks for: a manual one starting at the system time, or
    /// the system clock.
    pub fn new(test_clock: bool) -> ServerClock {
        if test_clock {
            ServerClock::Test(ManualClock::new(SystemClock.now().as_millis()))
        } else {
            ServerClock::System(SystemClock)
        }
    }

    /// The manual clock to hand to the protocol's `/test-clock` endpoints, if this is one.
    pub fn test_clock(&self) -> Option<ManualClock> {
        match self {
            ServerClock::Test(clock) => Some(clock.clone()),
            ServerClock::System(_) => None,
        }
    }
}

impl Clock for ServerClock {
    fn now(&self) -> Timestamp {
        match self {
            ServerClock::System(clock) => clock.now(),
            ServerClock::Test(clock) => clock.now(),
        }
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
}
