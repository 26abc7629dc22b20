//! The seed specification's ranges and defaults, shared by every host so they cannot differ.

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

/// Port when none is given.
pub const DEFAULT_PORT: u16 = 3666;

/// Largest request body accepted: 64 KiB. Metadata is a handful of keys; anything near
/// this is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
