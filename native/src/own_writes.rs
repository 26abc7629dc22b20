//! The session records this instance wrote to Redis last, so the next request of such a
//! session can decide on the copy and skip reading it back.
//!
//! Only a hint: a decision made on a copy is written with a compare-and-set on the copy's
//! stamp, which Redis refuses (answering the record it holds) if any instance changed the
//! session since; and a decision that writes nothing is not trusted on a copy at all (see
//! `RedisStore`). So a copy that is stale, or gone, costs a round trip, never a wrong
//! answer.
//!
//! Bounded: [`SLOTS`] slots, each holding at most one session's record (a session takes
//! the slot its random id points to, evicting whichever session held it), and only
//! records whose metadata is at most [`MAX_META_BYTES`]: at most ~6 MiB, whatever the
//! number of sessions. A session rotated again before some thousands of other sessions
//! were written by this instance finds its copy; behind a load balancer that spreads one
//! session's requests over N instances, only the requests arriving where the session was
//! last written do.

use std::sync::Mutex;

use token_server_core::session::SessionRecord;
use token_server_core::SessionId;

/// Slots: enough for every session a busy instance is rotating at once, small enough to
/// not matter beside the process (~100 bytes each when empty).
pub const SLOTS: usize = 4096;

/// Records with larger metadata are not copied, which bounds a slot (a record holds at
/// most 8 predecessors of 38 bytes besides): 4096 slots of at most ~1.5 KiB.
pub const MAX_META_BYTES: usize = 1024;

/// See the module's documentation.
pub struct OwnWrites {
    slots: Box<[Slot]>,
}

/// One session's copy, or none.
type Slot = Mutex<Option<(SessionId, SessionRecord)>>;

impl Default for OwnWrites {
    fn default() -> Self {
        OwnWrites {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl OwnWrites {
    /// This instance's copy of the last record it wrote for session `id`, if it still
    /// holds one.
    pub fn get(&self, id: &SessionId) -> Option<SessionRecord> {
        match &*self.slot(id).lock().ok()? {
            Some((held, record)) if held == id => Some(record.clone()),
            _ => None,
        }
    }

    /// Notes that this instance wrote `record` for session `id` (`None`: removed it).
    /// Keeps a later record of the session already held: two requests of one session
    /// may finish in either order.
    pub fn wrote(&self, id: &SessionId, record: Option<SessionRecord>) {
        let Ok(mut slot) = self.slot(id).lock() else {
            return;
        };
        let Some(record) = record.filter(|r| r.meta.as_json().len() <= MAX_META_BYTES) else {
            if slot.as_ref().is_some_and(|(held, _)| held == id) {
                *slot = None;
            }
            return;
        };
        if let Some((held, copy)) = slot.as_ref() {
            // Versions count writes, wrapping: a copy up to 2^31 writes ahead is later.
            if held == id && (copy.version.wrapping_sub(record.version) as i32) > 0 {
                return;
            }
        }
        *slot = Some((*id, record));
    }

    /// Drops the copy of session `id`: Redis holds something else (or the outcome of a
    /// write is unknown).
    pub fn forget(&self, id: &SessionId) {
        if let Ok(mut slot) = self.slot(id).lock() {
            if slot.as_ref().is_some_and(|(held, _)| held == id) {
                *slot = None;
            }
        }
    }

    fn slot(&self, id: &SessionId) -> &Slot {
        // Session ids are random: their low bits spread sessions evenly.
        let index = u64::from_le_bytes(id.0) as usize % self.slots.len();
        &self.slots[index]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use token_server_core::session::SessionRules;
    use token_server_core::{Meta, Secret, Timestamp};

    use super::*;

    fn record(version: u32, meta: &str) -> SessionRecord {
        let rules = SessionRules::new(Duration::from_secs(60));
        let mut record = SessionRecord::new(
            &Secret::from_bytes([1; 16]),
            Timestamp(0),
            Meta::from_json(meta).unwrap(),
            &rules,
        );
        record.version = version;
        record
    }

    /// A session id landing in slot `slot`, distinct for each `n`.
    fn id_in_slot(slot: usize, n: u64) -> SessionId {
        SessionId(((n * SLOTS as u64) + slot as u64).to_le_bytes())
    }

    #[test]
    fn a_copy_is_found_until_forgotten_removed_or_evicted() {
        let writes = OwnWrites::default();
        let (a, b) = (id_in_slot(3, 0), id_in_slot(3, 1));
        assert_eq!(writes.get(&a), None);
        writes.wrote(&a, Some(record(1, "{}")));
        assert_eq!(writes.get(&a), Some(record(1, "{}")));
        assert_eq!(writes.get(&b), None, "another session in the same slot");
        writes.forget(&b);
        assert_eq!(writes.get(&a), Some(record(1, "{}")), "b's forget spares a");
        writes.forget(&a);
        assert_eq!(writes.get(&a), None);

        writes.wrote(&a, Some(record(2, "{}")));
        writes.wrote(&a, None);
        assert_eq!(writes.get(&a), None, "a removed session has no copy");

        writes.wrote(&a, Some(record(3, "{}")));
        writes.wrote(&b, Some(record(0, "{}")));
        assert_eq!(writes.get(&a), None, "evicted by b");
        assert_eq!(writes.get(&b), Some(record(0, "{}")));
    }

    #[test]
    fn a_later_copy_is_kept_when_an_earlier_write_finishes_last() {
        let writes = OwnWrites::default();
        let a = id_in_slot(9, 0);
        writes.wrote(&a, Some(record(5, "{}")));
        writes.wrote(&a, Some(record(4, "{}")));
        assert_eq!(writes.get(&a).map(|r| r.version), Some(5));
        writes.wrote(&a, Some(record(6, "{}")));
        assert_eq!(writes.get(&a).map(|r| r.version), Some(6));
        // Across the wrap of the version.
        let b = id_in_slot(10, 0);
        writes.wrote(&b, Some(record(u32::MAX, "{}")));
        writes.wrote(&b, Some(record(0, "{}")));
        assert_eq!(writes.get(&b).map(|r| r.version), Some(0));
        writes.wrote(&b, Some(record(u32::MAX, "{}")));
        assert_eq!(writes.get(&b).map(|r| r.version), Some(0));
    }

    #[test]
    fn records_with_large_metadata_are_not_copied() {
        let writes = OwnWrites::default();
        let a = id_in_slot(1, 0);
        writes.wrote(&a, Some(record(1, "{}")));
        let large = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_META_BYTES));
        writes.wrote(&a, Some(record(2, &large)));
        assert_eq!(writes.get(&a), None, "and the older copy is gone");
    }
}
