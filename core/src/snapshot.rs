//! The state file format: live sessions' ids, secret hashes, times, metadata and sealed
//! grace successors, versioned, so a restart logs nobody out. Never contains a usable
//! token: only SHA-256 prefixes of secrets, and successors sealed with a key derived from
//! their predecessor's secret (see [`crate::session::seal`]).
//!
//! Text, one session per line, so an operator can inspect it (`head`, `wc -l`):
//!
//! ```text
//! token-server state v2
//! <16 hex id> <32 hex secret hash> <start ms> <expiry ms> <predecessors> <metadata JSON>
//! …
//! end <number of session lines>
//! ```
//!
//! Times are milliseconds since the epoch. `<predecessors>` is `-`, or comma-separated
//! `<32 hex secret hash>:<32 hex sealed successor>:<grace deadline ms>`, oldest first.
//! The closing `end` line makes a truncated file detectable.
//!
//! Format v1 (written before sessions) still loads; its lines are
//! `<32 hex key hash> <expiry ms> <metadata JSON>`, each a legacy session whose id is the
//! first 8 bytes of the key hash and whose start is the time of loading (v1 did not record
//! it).
//!
//! The reader accepts only what a writer writes: see [`read_snapshot`].

use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, Read, Write};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::Timestamp;
use crate::config::{MAX_BODY_BYTES_RANGE, ROTATION_GRACE_RANGE, TOKEN_LIFETIME_RANGE};
use crate::meta::{Meta, MetaLimits};
use crate::session::{Predecessor, Predecessors, SessionRecord, MAX_PREDECESSORS};
use crate::token::{SecretHash, SessionId};

/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Longest line the reader accepts, in bytes: twice the largest request body a server can
/// be configured to take, as merges can grow metadata past one body; plus the fixed fields
/// and a full list of predecessors. Past it a line is refused unread, so a corrupt file
/// cannot make the reader buffer without bound.
pub const MAX_LINE_BYTES: usize = 2 * *MAX_BODY_BYTES_RANGE.end() + 4096;

const HEADER_PREFIX: &str = "token-server state v";

/// One live session as stored at rest: never a usable token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The session's id, the store's key.
    pub id: SessionId,
    /// Everything else the store keeps of it.
    pub record: SessionRecord,
}

/// What a state file is checked against while it is read.
#[derive(Debug, Clone, Copy)]
pub struct ReadChecks {
    /// The time of loading: no expiry may lie further ahead than the longest lifetime a
    /// server can give, and v1 sessions start now.
    pub now: Timestamp,
    /// The metadata bounds every session must respect, as at login.
    pub meta_limits: MetaLimits,
}

/// Why a state file could not be read.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The file is of another format version (or not a state file at all).
    Version {
        /// The start of its first line.
        found: String,
    },
    /// A line is not what this format writes.
    Corrupt {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file ends before its `end` line: it was cut short.
    Truncated,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(err) => write!(f, "{err}"),
            SnapshotError::Version { found } => write!(
                f,
                "not a state file of format version {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION} (it starts with {found:?})"
            ),
            SnapshotError::Corrupt { line, reason } => {
                write!(f, "line {line} is corrupt: {reason}")
            }
            SnapshotError::Truncated => f.write_str("the file is truncated (no end line)"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<std::io::Error> for SnapshotError {
    fn from(err: std::io::Error) -> Self {
        SnapshotError::Io(err)
    }
}

/// Writes `sessions` in the state file format (the current version).
pub fn write_snapshot<'a, W: Write>(
    out: &mut W,
    sessions: impl IntoIterator<Item = &'a StoredSession>,
) -> Result<usize, SnapshotError> {
    let mut writer = SnapshotWriter::new(out)?;
    for session in sessions {
        writer.write(session)?;
    }
    Ok(writer.finish()?.1)
}

/// Writes the state file format one session at a time: the header when created, a line per
/// [`write`](SnapshotWriter::write), the `end` line at [`finish`](SnapshotWriter::finish).
/// For a host that streams a large store to disk rather than collecting it first; the
/// bytes are exactly those of [`write_snapshot`].
///
/// ```
/// use token_server_core::snapshot::SnapshotWriter;
///
/// let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
/// // Sessions would be written here, one `writer.write(&session)` each; the bytes so far
/// // can be taken out and sent on, and the count carries over.
/// let mut file = std::mem::take(writer.get_mut());
/// let (rest, count) = writer.finish().unwrap();
/// file.extend_from_slice(&rest);
/// assert_eq!(count, 0);
/// assert_eq!(file, b"token-server state v2\nend 0\n");
/// ```
#[derive(Debug)]
pub struct SnapshotWriter<W> {
    out: W,
    /// Session lines written so far, for the `end` line.
    count: usize,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a state file in `out` by writing its header line.
    pub fn new(mut out: W) -> Result<Self, SnapshotError> {
        writeln!(out, "{HEADER_PREFIX}{FORMAT_VERSION}")?;
        Ok(SnapshotWriter { out, count: 0 })
    }

    /// Appends `session`'s line.
    pub fn write(&mut self, session: &StoredSession) -> Result<(), SnapshotError> {
        write_session(&mut self.out, session)?;
        self.count += 1;
        Ok(())
    }

    /// Session lines written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The sink, e.g. to take the bytes written so far out of a `Vec<u8>`.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Ends the file with its `end` line; returns the sink and the number of sessions.
    pub fn finish(mut self) -> Result<(W, usize), SnapshotError> {
        writeln!(self.out, "end {}", self.count)?;
        Ok((self.out, self.count))
    }
}

/// Writes one session line.
pub fn write_session<W: Write>(out: &mut W, session: &StoredSession) -> std::io::Result<()> {
    let record = &session.record;
    write_hex(out, &session.id.0)?;
    out.write_all(b" ")?;
    write_hex(out, &record.secret_hash.0)?;
    write!(
        out,
        " {} {} ",
        record.started.as_millis(),
        record.expires.as_millis()
    )?;
    let predecessors = record.predecessors.as_slice();
    if predecessors.is_empty() {
        out.write_all(b"-")?;
    }
    for (i, predecessor) in predecessors.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_hex(out, &predecessor.secret_hash.0)?;
        out.write_all(b":")?;
        write_hex(out, &predecessor.sealed_successor)?;
        write!(out, ":{}", predecessor.deadline.as_millis())?;
    }
    writeln!(out, " {}", record.meta.as_json())
}

/// One session as a state-file line (the current format), without its newline: how a
/// host that keeps each session apart (a Durable Object's storage) keeps a record, so both
/// are read by one reader.
pub fn session_line(session: &StoredSession) -> String {
    let mut line = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_session(&mut line, session);
    line.pop();
    // Hex, digits and serialized JSON: UTF-8 by construction.
    String::from_utf8(line).unwrap_or_default()
}

/// Reads one session line of the current format (as [`session_line`] writes it) with
/// the checks [`read_snapshot`] applies to each line.
pub fn read_session_line(line: &str, checks: &ReadChecks) -> Result<StoredSession, SnapshotError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(SnapshotError::Corrupt {
            line: 1,
            reason: format!("longer than the limit of {MAX_LINE_BYTES} bytes"),
        });
    }
    parse_v2(line, checks).map_err(|reason| SnapshotError::Corrupt { line: 1, reason })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn write_hex<W: Write>(out: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let mut hex = [0u8; 64];
    for (i, byte) in bytes.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(byte >> 4)];
        hex[2 * i + 1] = HEX[usize::from(byte & 15)];
    }
    out.write_all(&hex[..2 * bytes.len()])
}

/// Reads a whole state file of format v1 or v2; any deviation from what a writer writes
/// is an error naming the line, never a silently shorter or different list.
///
/// Refused: another header, a line longer than [`MAX_LINE_BYTES`], a malformed field, a
/// duplicate session id, an expiry (or grace deadline) further from `checks.now` than the
/// longest lifetime (or grace) a server can give, a start after the expiry, more than
/// [`MAX_PREDECESSORS`] predecessors, metadata over `checks.meta_limits`, an `end` count
/// that does not match, anything after the `end` line, and no `end` line at all.
pub fn read_snapshot<R: BufRead>(
    mut input: R,
    checks: &ReadChecks,
) -> Result<Vec<StoredSession>, SnapshotError> {
    let mut line = Vec::new();
    let mut number = 1;
    let header: &str = read_line(&mut input, &mut line, number)?.unwrap_or_default();
    let version = match header.strip_prefix(HEADER_PREFIX) {
        Some("1") => 1,
        Some("2") => 2,
        _ => {
            let found: String = header.chars().take(40).collect();
            return Err(SnapshotError::Version { found });
        }
    };
    let mut sessions = Vec::new();
    let mut ids = HashSet::new();
    loop {
        number += 1;
        let Some(text) = read_line(&mut input, &mut line, number)? else {
            return Err(SnapshotError::Truncated);
        };
        let corrupt = |reason: String| SnapshotError::Corrupt {
            line: number,
            reason,
        };
        if let Some(count) = text.strip_prefix("end ") {
            let count: usize = count.parse().map_err(|_| corrupt("bad end line".into()))?;
            if count != sessions.len() {
                return Err(corrupt(format!(
                    "the end line counts {count} sessions, the file holds {}",
                    sessions.len()
                )));
            }
            let mut rest = [0u8; 1];
            if input.read(&mut rest)? != 0 {
                return Err(SnapshotError::Corrupt {
                    line: number + 1,
                    reason: "data after the end line".into(),
                });
            }
            return Ok(sessions);
        }
        let session = if version == 1 {
            parse_v1(text, checks)
        } else {
            parse_v2(text, checks)
        }
        .map_err(corrupt)?;
        if !ids.insert(session.id) {
            return Err(corrupt("a second session with the same id".into()));
        }
        sessions.push(session);
    }
}

/// Reads line `number` into `buffer` without its newline; `None` at the end of input.
fn read_line<'a, R: BufRead>(
    input: &mut R,
    buffer: &'a mut Vec<u8>,
    number: usize,
) -> Result<Option<&'a str>, SnapshotError> {
    buffer.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = input.by_ref().take(limit).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(None);
    }
    let corrupt = |reason: String| SnapshotError::Corrupt {
        line: number,
        reason,
    };
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
    } else if buffer.len() > MAX_LINE_BYTES {
        return Err(corrupt(format!(
            "longer than the limit of {MAX_LINE_BYTES} bytes"
        )));
    }
    std::str::from_utf8(buffer)
        .map(Some)
        .map_err(|_| corrupt("not UTF-8".into()))
}

fn parse_v1(line: &str, checks: &ReadChecks) -> Result<StoredSession, String> {
    let mut fields = line.splitn(3, ' ');
    let (Some(hash), Some(expires), Some(meta)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("expected: key expiry metadata".into());
    };
    let secret_hash = SecretHash(parse_hex(hash).ok_or("bad key hash")?);
    let expires = parse_time(expires, checks, TOKEN_LIFETIME_RANGE.end(), "expiry")?;
    Ok(StoredSession {
        id: secret_hash.legacy_session_id(),
        record: SessionRecord {
            secret_hash,
            started: checks.now.min(expires),
            expires,
            meta: check_meta(meta, checks)?,
            predecessors: Predecessors::NONE,
            version: 0,
        },
    })
}

pub(crate) fn parse_v2(line: &str, checks: &ReadChecks) -> Result<StoredSession, String> {
    let mut fields = line.splitn(6, ' ');
    let (Some(id), Some(hash), Some(started), Some(expires), Some(predecessors), Some(meta)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err("expected: id secret-hash start expiry predecessors metadata".into());
    };
    let id = SessionId(parse_hex(id).ok_or("bad session id")?);
    let secret_hash = SecretHash(parse_hex(hash).ok_or("bad secret hash")?);
    let started = Timestamp(started.parse().map_err(|_| "bad start time")?);
    let expires = parse_time(expires, checks, TOKEN_LIFETIME_RANGE.end(), "expiry")?;
    if started > expires {
        return Err("the session starts after its expiry".into());
    }
    let predecessors = if predecessors == "-" {
        Predecessors::NONE
    } else {
        let list = predecessors
            .split(',')
            .map(|text| parse_predecessor(text, checks))
            .collect::<Result<Vec<_>, _>>()?;
        if list.len() > MAX_PREDECESSORS {
            return Err(format!(
                "more than {MAX_PREDECESSORS} predecessors in grace"
            ));
        }
        Predecessors::from(list)
    };
    Ok(StoredSession {
        id,
        record: SessionRecord {
            secret_hash,
            started,
            expires,
            meta: check_meta(meta, checks)?,
            predecessors,
            version: 0,
        },
    })
}

fn parse_predecessor(text: &str, checks: &ReadChecks) -> Result<Predecessor, String> {
    let mut parts = text.split(':');
    let (Some(hash), Some(sealed), Some(deadline), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("bad predecessor: expected hash:sealed:deadline".into());
    };
    Ok(Predecessor {
        secret_hash: SecretHash(parse_hex(hash).ok_or("bad predecessor hash")?),
        sealed_successor: parse_hex(sealed).ok_or("bad sealed successor")?,
        deadline: parse_time(
            deadline,
            checks,
            ROTATION_GRACE_RANGE.end(),
            "grace deadline",
        )?,
    })
}

/// A time in milliseconds, at most `longest` after `checks.now`: no server writes one
/// further ahead.
fn parse_time(
    text: &str,
    checks: &ReadChecks,
    longest: &Duration,
    what: &str,
) -> Result<Timestamp, String> {
    let time = Timestamp(text.parse().map_err(|_| format!("bad {what}"))?);
    check_time(time, checks, longest, what)?;
    Ok(time)
}

/// How far another server's clock may run ahead of the reader's, or the reader's own clock
/// have stepped back since it wrote: a record written then is still read. The same
/// tolerance as Kerberos's customary 5 minutes.
///
/// Without it a session written at the longest lifetime (or grace) by an instance whose
/// clock ran 1 ms ahead read as corrupt on the others (an unknown token over Redis, an
/// error in a Durable Object), and a state file saved just before the clock stepped back
/// failed to load.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Refuses `time` if it lies more than `longest` (plus [`CLOCK_SKEW_ALLOWANCE`]) after
/// `checks.now`: no server writes one further ahead.
pub(crate) fn check_time(
    time: Timestamp,
    checks: &ReadChecks,
    longest: &Duration,
    what: &str,
) -> Result<(), String> {
    if time > checks.now.saturating_add(*longest + CLOCK_SKEW_ALLOWANCE) {
        return Err(format!(
            "the {what} {time} lies further ahead than any server gives ({}, and {} for \
             clocks that differ)",
            crate::duration::format_duration(*longest),
            crate::duration::format_duration(CLOCK_SKEW_ALLOWANCE)
        ));
    }
    Ok(())
}

/// Metadata as a writer writes it: a JSON object within `checks.meta_limits`, in its
/// compact form.
pub(crate) fn check_meta(text: &str, checks: &ReadChecks) -> Result<Meta, String> {
    let map: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("metadata is not a JSON object".into()),
        Err(err) => return Err(format!("metadata is not valid JSON: {err}")),
    };
    checks
        .meta_limits
        .check(&map)
        .map_err(|err| err.to_string())?;
    let meta = Meta::from_map(&map);
    if meta.as_json() != text {
        return Err("metadata is not in the compact form a writer writes".into());
    }
    Ok(meta)
}

pub(crate) fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| HEX.iter().position(|&h| h == c).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (digit(hex[2 * i])? << 4) | digit(hex[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;

/// What the tests of the stored formats (this state file, the shared record) build their
/// sample sessions from.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The time the samples are read at.
    pub(crate) const NOW: Timestamp = Timestamp(1_700_000_000_000);

    /// The checks of a read at [`NOW`] with the default metadata limits.
    pub(crate) fn checks() -> ReadChecks {
        ReadChecks {
            now: NOW,
            meta_limits: MetaLimits::default(),
        }
    }

    /// `count` distinct predecessors, their grace deadlines just after [`NOW`].
    pub(crate) fn predecessors(count: u8) -> Predecessors {
        Predecessors::from(
            (0..count)
                .map(|p| Predecessor {
                    secret_hash: SecretHash([p; 16]),
                    sealed_successor: [p.wrapping_add(100); 16],
                    deadline: Timestamp(NOW.0 + u64::from(p)),
                })
                .collect::<Vec<_>>(),
        )
    }
}
