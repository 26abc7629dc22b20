//! The ranges and defaults of every option, shared by every host so they cannot differ.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Allowed token lifetimes: 30min to 96h.
pub const TOKEN_LIFETIME_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(30 * 60)..=Duration::from_secs(96 * 3600);

/// Token lifetime when none is given: 2h.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// Allowed purge intervals: 1s to 90min.
pub const PURGE_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(90 * 60);

/// Purge interval when none is given: 1min.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Allowed rotation grace periods (`--rotation-grace`): 1s to 5min. Long enough for a
/// page's parallel requests and a flaky network's retry; short enough that a stolen token
/// replayed later is caught as a reuse. (Ory Hydra allows up to 5min too.)
pub const ROTATION_GRACE_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(5 * 60);

/// Allowed absolute session lifetimes (`--max-session-lifetime`): 30min to 400d, and
/// never shorter than the token lifetime (see [`check_session_lifetimes`]).
pub const MAX_SESSION_LIFETIME_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(30 * 60)..=Duration::from_secs(400 * 24 * 3600);

/// Why a maximum session lifetime cannot go with a token lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionShorterThanToken {
    /// The maximum session lifetime asked for.
    pub max_session_lifetime: Duration,
    /// The token lifetime it is shorter than.
    pub token_lifetime: Duration,
}

impl std::fmt::Display for SessionShorterThanToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--max-session-lifetime ({}) must not be shorter than --token-lifetime ({})",
            crate::duration::format_duration(self.max_session_lifetime),
            crate::duration::format_duration(self.token_lifetime)
        )
    }
}

impl std::error::Error for SessionShorterThanToken {}

/// Refuses a maximum session lifetime shorter than the token lifetime: every token would
/// then be cut short by its session, and the token lifetime would be a lie.
///
/// ```
/// use std::time::Duration;
/// use token_server_core::config::check_session_lifetimes;
/// let hour = Duration::from_secs(3600);
/// assert!(check_session_lifetimes(Some(2 * hour), hour).is_ok());
/// assert!(check_session_lifetimes(None, hour).is_ok());
/// let err = check_session_lifetimes(Some(hour), 2 * hour).unwrap_err();
/// assert_eq!(err.to_string(), "--max-session-lifetime (1h) must not be shorter than --token-lifetime (2h)");
/// ```
pub fn check_session_lifetimes(
    max_session_lifetime: Option<Duration>,
    token_lifetime: Duration,
) -> Result<(), SessionShorterThanToken> {
    match max_session_lifetime {
        Some(max) if max < token_lifetime => Err(SessionShorterThanToken {
            max_session_lifetime: max,
            token_lifetime,
        }),
        _ => Ok(()),
    }
}

/// Port when none is given.
pub const DEFAULT_PORT: u16 = 3666;

/// Largest request body accepted: 64 KiB. Metadata is a handful of keys; anything near
/// this is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Allowed `--max-body`: from 1 KiB (a login with a little metadata) to 16 MiB.
pub const MAX_BODY_BYTES_RANGE: RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// Deepest nesting of metadata accepted: the object itself is level 1.
pub const MAX_META_DEPTH: usize = 32;

/// Most keys accepted in one token's metadata, counting the keys of nested objects too.
pub const MAX_META_KEYS: usize = 1_000;

/// Longest metadata of one token, as compact JSON text, when none is given: 64 KiB.
/// Checked at login and on the merged result of every update, so rotations cannot grow a
/// token's metadata without end.
pub const DEFAULT_MAX_META_BYTES: usize = 64 * 1024;

/// Allowed `--max-meta-bytes`: from 1 KiB (a handful of keys) to 16 MiB.
pub const MAX_META_BYTES_RANGE: RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// Most tokens held at once when none is given; past it, logins are refused with 503 so
/// memory stays bounded (about 160 bytes each: 1.6 GB at this default).
pub const DEFAULT_MAX_TOKENS: usize = 10_000_000;

/// Allowed `--max-tokens`.
pub const MAX_TOKENS_RANGE: RangeInclusive<usize> = 1..=1_000_000_000;

/// Allowed `--redis-timeout`: a Redis call on a local network takes well under a
/// millisecond; past a minute a client has long given up.
pub const REDIS_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);

/// `--redis-timeout` when not given.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Allowed `--snapshot-interval`: at most this much is lost to a crash.
pub const SNAPSHOT_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Snapshot interval when a state file is set and no interval given.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// Allowed `--header-timeout`: long enough for a slow link, short enough that a client
/// sending half a request cannot hold a connection for long.
pub const HEADER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(600);

/// `--header-timeout` when not given: as nginx's `client_header_timeout` is 60s, but a
/// request head to this service is a few hundred bytes from a nearby web server.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Allowed `--idle-timeout`.
pub const IDLE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// `--idle-timeout` when not given: long enough for a web server's connection pool to
/// reuse connections between bursts.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Allowed `--body-timeout`.
pub const BODY_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// `--body-timeout` when not given: the largest body (16 MiB) still arrives at about
/// 0.5 MiB/s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Allowed `--shutdown-timeout`: 0s drops in-flight requests at once.
pub const SHUTDOWN_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(0)..=Duration::from_secs(3600);

/// `--shutdown-timeout` when not given: below the usual supervisor grace periods
/// (systemd 90s, Kubernetes 30s), so the state file is written before a SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Allowed `--max-connections`.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// `--max-connections` when not given: far above what a few web servers' pools open,
/// far below the usual hard open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
