//! One session record as a shared store (Redis) keeps it: compact binary, led by its
//! [`stamp`] (version, format, secret hash) so a compare-and-set script compares those
//! 21 bytes alone.
//!
//! A shared store holds millions of these, so every byte counts (Redis adds ~145 bytes of
//! its own per key): hashes and times as bytes, not hex or decimal, and no session id (the
//! key holds it). Like a state file it holds no usable token: hashes of secrets, and
//! successors sealed with their predecessor's secret (see [`crate::session::seal`]).
//!
//! ```text
//! offset  bytes  field
//! 0       4      version, u32 big-endian  ┐
//! 4       1      format, 1                │ the stamp: what a compare-and-set compares
//! 5       16     secret hash              ┘
//! 21      6      start, ms since the epoch, big-endian
//! 27      6      expiry, likewise
//! 33      1      n, the predecessors in grace (at most 8), oldest first; each:
//!                16 secret hash, 16 sealed successor, 6 grace deadline
//! 34+38n  rest   the metadata, as compact JSON
//! ```
//!
//! Times take 48 bits: milliseconds since the epoch until the year 10889.
//!
//! The stamp changes with every write: each change bumps the version. It holds the secret
//! hash too, so two records with one stamp are one record even when versions repeat (a
//! version wrapped after 2^32 writes, or a Redis restored from a backup while instances
//! remembered later records): a compare-and-set on the stamp never takes one for the
//! other.
//!
//! ```
//! use std::time::Duration;
//! use token_server_core::session::{SessionRecord, SessionRules};
//! use token_server_core::shared_record::{decode, encode, stamp};
//! use token_server_core::snapshot::ReadChecks;
//! use token_server_core::{Meta, MetaLimits, Secret, Timestamp};
//!
//! let rules = SessionRules::new(Duration::from_secs(3600));
//! let meta = Meta::from_json(r#"{"user":"ann"}"#).unwrap();
//! let mut record = SessionRecord::new(&Secret::from_bytes([7; 16]), Timestamp(1_000), meta, &rules);
//! record.version = 3;
//! let bytes = encode(&record);
//! assert_eq!(bytes.len(), 34 + r#"{"user":"ann"}"#.len());
//! assert_eq!(bytes[..21], stamp(&record));
//! let checks = ReadChecks { now: Timestamp(1_000), meta_limits: MetaLimits::default() };
//! assert_eq!(decode(&bytes, &checks).unwrap(), record);
//! ```

use std::fmt;

use crate::clock::Timestamp;
use crate::config::{ROTATION_GRACE_RANGE, TOKEN_LIFETIME_RANGE};
use crate::session::{Predecessor, Predecessors, SessionRecord, MAX_PREDECESSORS};
use crate::snapshot::{check_meta, check_time, ReadChecks};
use crate::token::{SecretHash, SECRET_BYTES, SECRET_HASH_BYTES};

/// Bytes of the version at the start of a record.
const VERSION_BYTES: usize = 4;

/// Bytes of a record's [`stamp`], its first: what a compare-and-set compares.
pub const STAMP_BYTES: usize = VERSION_BYTES + 1 + SECRET_HASH_BYTES;

/// The format byte this build writes (and the only one it reads).
pub const FORMAT: u8 = 1;

/// Bytes of a time: milliseconds since the epoch in 48 bits.
const TIME_BYTES: usize = 6;

/// Bytes before the predecessors: the stamp, start, expiry, count.
const FIXED_BYTES: usize = STAMP_BYTES + 2 * TIME_BYTES + 1;

/// Bytes of one predecessor: its secret hash, the sealed successor, the grace deadline.
const PREDECESSOR_BYTES: usize = SECRET_HASH_BYTES + SECRET_BYTES + TIME_BYTES;

/// Why bytes are not a record this build writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end inside a field.
    Truncated,
    /// Another format (its format byte).
    Format(u8),
    /// A field holds what no writer writes.
    Invalid(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("the record is cut short"),
            RecordError::Format(format) => {
                write!(f, "record format {format}, this build reads {FORMAT}")
            }
            RecordError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for RecordError {}

/// The first [`STAMP_BYTES`] bytes of `record` encoded: its version, the format and its
/// secret hash. What a compare-and-set compares: they differ between any two records
/// one session had (see the module's documentation).
pub fn stamp(record: &SessionRecord) -> [u8; STAMP_BYTES] {
    let mut stamp = [0u8; STAMP_BYTES];
    stamp[..VERSION_BYTES].copy_from_slice(&record.version.to_be_bytes());
    stamp[VERSION_BYTES] = FORMAT;
    stamp[VERSION_BYTES + 1..].copy_from_slice(&record.secret_hash.0);
    stamp
}

/// `record` in the shared store's format.
pub fn encode(record: &SessionRecord) -> Vec<u8> {
    let predecessors = record.predecessors.as_slice();
    let meta = record.meta.as_json().as_bytes();
    let mut out =
        Vec::with_capacity(FIXED_BYTES + PREDECESSOR_BYTES * predecessors.len() + meta.len());
    out.extend_from_slice(&stamp(record));
    put_time(&mut out, record.started);
    put_time(&mut out, record.expires);
    // At most MAX_PREDECESSORS (8): the session keeps no more.
    out.push(predecessors.len().min(usize::from(u8::MAX)) as u8);
    for predecessor in predecessors {
        out.extend_from_slice(&predecessor.secret_hash.0);
        out.extend_from_slice(&predecessor.sealed_successor);
        put_time(&mut out, predecessor.deadline);
    }
    out.extend_from_slice(meta);
    out
}

/// Reads what [`encode`] wrote, with the checks of a state file's line: times no further
/// ahead than a server gives, a start before the expiry, at most [`MAX_PREDECESSORS`],
/// metadata within `checks.meta_limits` and in its compact form.
pub fn decode(bytes: &[u8], checks: &ReadChecks) -> Result<SessionRecord, RecordError> {
    let mut reader = Reader(bytes);
    let version = u32::from_be_bytes(reader.take()?);
    let [format] = reader.take()?;
    if format != FORMAT {
        return Err(RecordError::Format(format));
    }
    let secret_hash = SecretHash(reader.take()?);
    let started = reader.time()?;
    let expires = reader.time()?;
    check_time(expires, checks, TOKEN_LIFETIME_RANGE.end(), "expiry").map_err(invalid)?;
    if started > expires {
        return Err(invalid("the session starts after its expiry".into()));
    }
    let [count] = reader.take()?;
    let count = usize::from(count);
    if count > MAX_PREDECESSORS {
        return Err(invalid(format!(
            "more than {MAX_PREDECESSORS} predecessors in grace"
        )));
    }
    let mut list = Vec::with_capacity(count);
    for _ in 0..count {
        let secret_hash = SecretHash(reader.take()?);
        let sealed_successor = reader.take()?;
        let deadline = reader.time()?;
        check_time(
            deadline,
            checks,
            ROTATION_GRACE_RANGE.end(),
            "grace deadline",
        )
        .map_err(invalid)?;
        list.push(Predecessor {
            secret_hash,
            sealed_successor,
            deadline,
        });
    }
    let meta = std::str::from_utf8(reader.0)
        .map_err(|_| invalid("metadata is not UTF-8".into()))
        .and_then(|text| check_meta(text, checks).map_err(invalid))?;
    Ok(SessionRecord {
        secret_hash,
        started,
        expires,
        meta,
        predecessors: Predecessors::from(list),
        version,
    })
}

fn invalid(reason: String) -> RecordError {
    RecordError::Invalid(reason)
}

fn put_time(out: &mut Vec<u8>, time: Timestamp) {
    // Saturates past the year 10889, which no clock reaches.
    let millis = time.as_millis().min((1 << (8 * TIME_BYTES)) - 1);
    out.extend_from_slice(&millis.to_be_bytes()[8 - TIME_BYTES..]);
}

/// What is left of a record to read.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn time(&mut self) -> Result<Timestamp, RecordError> {
        let bytes: [u8; TIME_BYTES] = self.take()?;
        let mut wide = [0u8; 8];
        wide[8 - TIME_BYTES..].copy_from_slice(&bytes);
        Ok(Timestamp(u64::from_be_bytes(wide)))
    }
}

#[cfg(test)]
mod tests;
