//! The journal format: the session records a store changed since its last snapshot, one
//! line per change, so a crash between snapshots loses no answered change. Read/Write
//! only; the host owns the file (see the native host's `journal` module).
//!
//! ```text
//! token-server journal v1
//! + <sequence> <a v2 state file session line>
//! - <sequence> <16 hex session id>
//! …
//! ```
//!
//! `+` upserts a session as the state file stores it ([`crate::snapshot::write_session`]);
//! `-` removes one (logged out, revoked, or found expired). Replay applies records, it does
//! not re-run requests: of each session's records the one with the highest sequence number
//! wins. The store numbers its changes from one counter, under the lock of the session
//! changed, and reports them after releasing it (see [`crate::TokenStore::with_change_sink`]);
//! so records of one session appended concurrently, in either order, replay the same, and
//! replaying a record twice changes nothing. The numbers are the store's, not the record's
//! [`SessionRecord::version`]: one counter costs no memory per session (a version kept per
//! session cost 20 bytes per session at a million), and a restarted store continues after
//! the highest number replayed ([`Replay::last_sequence`]).
//!
//! Every record of a session written after a snapshot started is newer than anything the
//! snapshot holds of it, so a session with any record in the journals replayed is that
//! record, and a session without one is what the snapshot holds ([`Replay::apply`]).
//!
//! A crash can cut the last record short (a power loss may also leave garbage there): an
//! unreadable last line is reported, not refused ([`JournalRead::torn`]); any other
//! unreadable line refuses the journal, naming the line, as the state file reader does.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};

use crate::session::SessionRecord;
use crate::snapshot::{
    parse_hex, parse_v2, write_hex, write_session, ReadChecks, SnapshotError, StoredSession,
    MAX_LINE_BYTES,
};
use crate::token::SessionId;

/// The first line of every journal.
pub const HEADER: &str = "token-server journal v1\n";

/// One change of a session, as a store reports it to its [`ChangeSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The session was created or changed; this is its record now.
    Upsert {
        /// The session as it is now.
        session: &'a StoredSession,
        /// The change's number: later changes of one session have higher ones.
        sequence: u64,
    },
    /// The session is over.
    Removal {
        /// The session's id.
        id: SessionId,
        /// The change's number: later changes of one session have higher ones.
        sequence: u64,
    },
}

/// Where a [`crate::TokenStore`] reports its changes, set with
/// [`crate::TokenStore::with_change_sink`]: a native host appends them to its journal.
///
/// Called after the shard lock is released and before the store's operation returns, so a
/// host answering after the operation answers only changes the sink has taken. Changes of
/// one session may reach the sink in either order when made concurrently; their sequence
/// numbers order them.
pub trait ChangeSink: Send + Sync {
    /// Takes one change. A sink that fails to keep it can only log: the change is made.
    fn changed(&self, change: Change<'_>);
}

/// A shared sink is a sink: the host keeps an `Arc` of its journal to rotate it.
impl<S: ChangeSink + ?Sized> ChangeSink for std::sync::Arc<S> {
    fn changed(&self, change: Change<'_>) {
        (**self).changed(change);
    }
}

/// Appends `change`'s line to `out`; one `write_all` of a line built whole is best for a
/// file opened to append, so concurrent writers never interleave within a line.
///
/// ```
/// use token_server_core::journal::{write_change, Change};
/// use token_server_core::SessionId;
///
/// let mut line = Vec::new();
/// write_change(&mut line, Change::Removal { id: SessionId([0xab; 8]), sequence: 7 }).unwrap();
/// assert_eq!(line, b"- 7 abababababababab\n");
/// ```
pub fn write_change<W: Write>(out: &mut W, change: Change<'_>) -> std::io::Result<()> {
    match change {
        Change::Upsert { session, sequence } => {
            write!(out, "+ {sequence} ")?;
            write_session(out, session)
        }
        Change::Removal { id, sequence } => {
            write!(out, "- {sequence} ")?;
            write_hex(out, &id.0)?;
            out.write_all(b"\n")
        }
    }
}

/// What reading one journal found, besides its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRead {
    /// Records applied.
    pub records: usize,
    /// Length of the journal's readable part in bytes: a host that goes on appending to
    /// the file cuts a torn last line off first, or it would become a corrupt middle one.
    pub readable_bytes: u64,
    /// The number of the last line, when it was unreadable and ignored as torn.
    pub torn: Option<usize>,
}

/// The newest record of each session in the journals read so far.
///
/// ```
/// use token_server_core::journal::{write_change, Change, Replay};
/// use token_server_core::snapshot::ReadChecks;
/// use token_server_core::{MetaLimits, SessionId, Timestamp};
///
/// let mut journal = token_server_core::journal::HEADER.as_bytes().to_vec();
/// write_change(&mut journal, Change::Removal { id: SessionId([1; 8]), sequence: 1 }).unwrap();
/// let checks = ReadChecks { now: Timestamp(0), meta_limits: MetaLimits::default() };
/// let mut replay = Replay::default();
/// let read = replay.read(&journal[..], &checks).unwrap();
/// assert_eq!((read.records, read.torn), (1, None));
/// assert_eq!(replay.last_sequence(), 1);
/// assert!(replay.apply(Vec::new()).is_empty());
/// ```
#[derive(Debug, Default)]
pub struct Replay {
    /// Per session: the highest sequence number seen and the record it left (`None`:
    /// removed).
    newest: HashMap<SessionId, (u64, Option<SessionRecord>)>,
    /// The highest sequence number of any record read.
    last_sequence: u64,
}

impl Replay {
    /// Reads one journal's records into the replay, checked like a state file's lines
    /// (`checks`). The last line, if unreadable, is ignored and its number reported as
    /// torn; any other unreadable line is an error naming it.
    pub fn read<R: BufRead>(
        &mut self,
        mut input: R,
        checks: &ReadChecks,
    ) -> Result<JournalRead, SnapshotError> {
        let mut read = JournalRead {
            records: 0,
            readable_bytes: 0,
            torn: None,
        };
        let mut buffer = Vec::new();
        // An unreadable line is an error only once a line follows it.
        let mut pending: Option<SnapshotError> = None;
        let mut number = 0;
        loop {
            buffer.clear();
            // A record is a state file line and at most 23 bytes of kind and sequence number.
            let limit = MAX_LINE_BYTES as u64 + 24;
            let length = input.by_ref().take(limit).read_until(b'\n', &mut buffer)?;
            if length == 0 {
                if pending.is_some() {
                    read.torn = Some(number);
                }
                return Ok(read);
            }
            if let Some(err) = pending.take() {
                return Err(err);
            }
            number += 1;
            let parsed = if buffer.pop() != Some(b'\n') {
                Err("no newline at its end (cut short)".to_string())
            } else if number == 1 {
                if buffer == HEADER.trim_end().as_bytes() {
                    Ok(None)
                } else {
                    Err("not a token-server journal v1 header".to_string())
                }
            } else {
                std::str::from_utf8(&buffer)
                    .map_err(|_| "not UTF-8".to_string())
                    .and_then(|line| parse_record(line, checks))
                    .map(Some)
            };
            match parsed {
                Ok(record) => {
                    if let Some((id, sequence, record)) = record {
                        self.apply_record(id, sequence, record);
                        read.records += 1;
                    }
                    read.readable_bytes += length as u64;
                }
                Err(reason) => {
                    pending = Some(SnapshotError::Corrupt {
                        line: number,
                        reason,
                    })
                }
            }
        }
    }

    /// The highest sequence number read: a store reporting changes after the replay
    /// continues after it ([`crate::TokenStore::continue_changes_after`]).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Records change `sequence` of a session (`None`: removed), unless a later one is known.
    fn apply_record(&mut self, id: SessionId, sequence: u64, record: Option<SessionRecord>) {
        self.last_sequence = self.last_sequence.max(sequence);
        match self.newest.get_mut(&id) {
            Some((known, _)) if *known > sequence => {}
            // A removal and an upsert of one number cannot both be written; were they,
            // the removal wins, as reviving a session is the worse mistake.
            Some((known, None)) if *known == sequence => {}
            Some(newest) => *newest = (sequence, record),
            None => {
                self.newest.insert(id, (sequence, record));
            }
        }
    }

    /// The sessions after the journals: `snapshot`'s, each replaced by its newest journal
    /// record or dropped by a removal, and the sessions only the journals hold.
    pub fn apply(mut self, snapshot: Vec<StoredSession>) -> Vec<StoredSession> {
        let mut sessions: Vec<StoredSession> = snapshot
            .into_iter()
            .filter(|session| !self.newest.contains_key(&session.id))
            .collect();
        sessions.extend(
            self.newest
                .drain()
                .filter_map(|(id, (_, record))| record.map(|record| StoredSession { id, record })),
        );
        sessions
    }
}

/// Parses a record line: its session id, sequence number and record (`None`: a removal).
fn parse_record(
    line: &str,
    checks: &ReadChecks,
) -> Result<(SessionId, u64, Option<SessionRecord>), String> {
    let (kind, rest) = line
        .split_once(' ')
        .ok_or("expected: + or -, sequence number, record")?;
    let (sequence, rest) = rest
        .split_once(' ')
        .ok_or("expected: a sequence number, then a record")?;
    let sequence: u64 = sequence.parse().map_err(|_| "bad sequence number")?;
    match kind {
        "+" => {
            let session = parse_v2(rest, checks)?;
            Ok((session.id, sequence, Some(session.record)))
        }
        "-" => {
            let id = SessionId(parse_hex(rest).ok_or("bad session id")?);
            Ok((id, sequence, None))
        }
        _ => Err("a record starts with + or -".into()),
    }
}

#[cfg(test)]
mod tests;
