//! Rate limit for a log line that can repeat without bound (a refused login on a full
//! store, a failing accept, a failing snapshot): the first occurrence is logged, the rest
//! are counted and reported at most once per interval.
//!
//! Sans-IO like the rest of the core: the caller passes `now`, so a test drives it with a
//! [`ManualClock`](crate::ManualClock) and the wasm host uses it unchanged.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;

/// How often a throttled line is logged at most, when none is given: 10 s.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One rate-limited log line. Shareable between threads.
///
/// ```
/// use std::time::Duration;
/// use token_server_core::throttle::Throttle;
/// use token_server_core::Timestamp;
///
/// let throttle = Throttle::new(Duration::from_secs(10));
/// assert_eq!(throttle.check(Timestamp(0)), Some(0)); // the first one: log it
/// assert_eq!(throttle.check(Timestamp(1)), None); // counted, not logged
/// assert_eq!(throttle.check(Timestamp(2)), None);
/// // An interval later: log again, saying how many were held back meanwhile.
/// assert_eq!(throttle.check(Timestamp(10_000)), Some(2));
/// ```
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// A std mutex: held for a comparison and an addition, never across anything slow,
    /// and it works unchanged on wasm32.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the next occurrence may be logged; `None` before the first.
    next_log: Option<Timestamp>,
    /// Occurrences counted but not logged since the last logged one.
    suppressed: u64,
}

impl Throttle {
    /// A throttle that logs at most once per `interval`.
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            state: Mutex::new(State {
                next_log: None,
                suppressed: 0,
            }),
        }
    }

    /// Records one occurrence at `now`. `Some(n)`: log it now, and say that `n` more
    /// occurred since the last logged one; `None`: it was counted, stay quiet.
    pub fn check(&self, now: Timestamp) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.next_log {
            Some(next) if now < next => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.next_log = Some(now.saturating_add(self.interval));
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }

    /// Forgets the occurrences so far, so the next one is logged at once; returns how
    /// many were counted but never logged. For a condition that has ended (a snapshot
    /// that succeeds again) and whose next failure is news.
    pub fn reset(&self) -> u64 {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.next_log = None;
        std::mem::take(&mut state.suppressed)
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(DEFAULT_LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_one_count_per_interval() {
        let throttle = Throttle::new(Duration::from_millis(100));
        let logged: Vec<(u64, u64)> = (0..1000u64)
            .filter_map(|ms| throttle.check(Timestamp(ms)).map(|n| (ms, n)))
            .collect();
        // Logged at 0, 100, …, 900; each after the first reports the 99 held back.
        assert_eq!(logged.len(), 10);
        assert_eq!(logged[0], (0, 0));
        assert!(
            logged[1..].iter().all(|&(_, held)| held == 99),
            "{logged:?}"
        );
        assert_eq!(logged[9].0, 900);
    }

    #[test]
    fn reset_reports_the_unlogged_and_rearms() {
        let throttle = Throttle::new(Duration::from_secs(60));
        assert_eq!(throttle.check(Timestamp(0)), Some(0));
        assert_eq!(throttle.check(Timestamp(5)), None);
        assert_eq!(throttle.check(Timestamp(6)), None);
        assert_eq!(throttle.reset(), 2);
        assert_eq!(throttle.check(Timestamp(7)), Some(0));
    }
}
