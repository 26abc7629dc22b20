//! The journal format: round trips, a torn last record is ignored, a corrupt middle one is
//! refused naming its line, and replay keeps each session's newest record.

use super::*;
use crate::clock::Timestamp;
use crate::meta::{Meta, MetaLimits};
use crate::session::Predecessors;
use crate::token::SecretHash;

const NOW: Timestamp = Timestamp(1_700_000_000_000);

fn checks() -> ReadChecks {
    ReadChecks {
        now: NOW,
        meta_limits: MetaLimits::default(),
    }
}

fn session(id: u8, meta: &str) -> StoredSession {
    StoredSession {
        id: SessionId([id; 8]),
        record: SessionRecord {
            secret_hash: SecretHash([id ^ 0x5a; 16]),
            started: Timestamp(NOW.0 - 5_000),
            expires: Timestamp(NOW.0 + 60_000),
            meta: Meta::from_json(meta).unwrap(),
            predecessors: Predecessors::NONE,
            version: 0,
        },
    }
}

/// An upsert of `session` as change `sequence`.
fn up(session: &StoredSession, sequence: u64) -> Change<'_> {
    Change::Upsert { session, sequence }
}

fn gone(id: u8, sequence: u64) -> Change<'static> {
    Change::Removal {
        id: SessionId([id; 8]),
        sequence,
    }
}

fn journal(changes: &[Change<'_>]) -> Vec<u8> {
    let mut out = HEADER.as_bytes().to_vec();
    for change in changes {
        write_change(&mut out, *change).unwrap();
    }
    out
}

fn replayed(bytes: &[u8], snapshot: Vec<StoredSession>) -> Vec<StoredSession> {
    let mut replay = Replay::default();
    replay.read(bytes, &checks()).unwrap();
    let mut sessions = replay.apply(snapshot);
    sessions.sort_by_key(|session| session.id.0);
    sessions
}

fn refused_at(bytes: &[u8]) -> (usize, String) {
    match Replay::default().read(bytes, &checks()) {
        Err(SnapshotError::Corrupt { line, reason }) => (line, reason),
        other => panic!("expected a corrupt line, got {other:?}"),
    }
}

#[test]
fn round_trips_upserts_and_removals() {
    let (a, b) = (session(1, r#"{"u":"a b"}"#), session(2, "{}"));
    let bytes = journal(&[up(&a, 1), up(&b, 3), gone(9, 4)]);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("token-server journal v1\n+ 1 0101010101010101 "));
    assert!(text.ends_with("\n- 4 0909090909090909\n"), "{text}");
    let mut replay = Replay::default();
    let read = replay.read(&bytes[..], &checks()).unwrap();
    assert_eq!(
        read,
        JournalRead {
            records: 3,
            readable_bytes: bytes.len() as u64,
            torn: None
        }
    );
    assert_eq!(replay.last_sequence(), 4);
    let mut sessions = replay.apply(Vec::new());
    sessions.sort_by_key(|session| session.id.0);
    assert_eq!(sessions, vec![a, b]);
}

#[test]
fn an_empty_journal_or_a_lone_header_replays_nothing() {
    for bytes in [&b""[..], HEADER.as_bytes(), b"token-ser"] {
        let mut replay = Replay::default();
        let read = replay.read(bytes, &checks()).unwrap();
        assert_eq!(read.records, 0);
        assert_eq!(replay.apply(vec![session(1, "{}")]).len(), 1);
    }
}

#[test]
fn a_torn_last_record_is_ignored_and_reported() {
    let (a, b) = (session(1, "{}"), session(2, r#"{"n":1}"#));
    let whole = journal(&[up(&a, 1), up(&b, 2)]);
    let good = journal(&[up(&a, 1)]);
    // Cut anywhere inside b's line, or garbage (a power loss) in its place.
    let mut garbage = good.clone();
    garbage.extend_from_slice(b"\0\0\0\0\n");
    for bytes in [
        &whole[..whole.len() - 1],
        &whole[..good.len() + 5],
        &garbage,
    ] {
        let mut replay = Replay::default();
        let read = replay.read(bytes, &checks()).unwrap();
        assert_eq!(read.torn, Some(3));
        assert_eq!(read.records, 1);
        assert_eq!(read.readable_bytes, good.len() as u64);
        assert_eq!(replay.apply(Vec::new()), vec![a.clone()]);
    }
}

#[test]
fn a_corrupt_record_before_the_last_is_refused_naming_its_line() {
    let (a, b) = (session(1, "{}"), session(2, "{}"));
    let good = journal(&[up(&a, 1)]);
    let tail = journal(&[up(&b, 2)]);
    let tail = &tail[HEADER.len()..];
    for bad in [
        &b"+ x 0202\n"[..],
        b"* 1 0202020202020202\n",
        b"- 1 02\n",
        b"+ 1 0202020202020202 nonsense\n",
        b"\xff\n",
    ] {
        let bytes = [&good[..], bad, tail].concat();
        assert_eq!(
            refused_at(&bytes).0,
            3,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A cut-short line is corrupt too once another follows it (the server cuts a torn
    // last line off before it appends again).
    let cut = [&good[..], &tail[..10], b"\n", tail].concat();
    assert_eq!(refused_at(&cut).0, 3);
    let (line, reason) = refused_at(b"token-server state v2\n- 1 0202020202020202\n");
    assert_eq!(line, 1);
    assert!(reason.contains("header"), "{reason}");
}

#[test]
fn records_are_checked_like_state_file_lines() {
    let mut far = session(1, "{}");
    far.record.expires = Timestamp(u64::MAX / 2);
    let bytes = journal(&[up(&far, 1), up(&session(2, "{}"), 2)]);
    let (line, reason) = refused_at(&bytes);
    assert_eq!(line, 2);
    assert!(reason.contains("expiry"), "{reason}");
}

#[test]
fn replay_keeps_the_highest_sequence_in_any_order() {
    let (old, new) = (session(1, r#"{"v":4}"#), session(1, r#"{"v":5}"#));
    for order in [[up(&old, 4), up(&new, 5)], [up(&new, 5), up(&old, 4)]] {
        let bytes = journal(&order);
        assert_eq!(replayed(&bytes, Vec::new()), vec![new.clone()]);
    }
}

#[test]
fn removals_win_over_older_upserts_and_lose_to_newer() {
    let upsert = session(1, "{}");
    for bytes in [
        journal(&[up(&upsert, 4), gone(1, 5)]),
        journal(&[gone(1, 5), up(&upsert, 4)]),
    ] {
        // Also over the snapshot's copy of the session.
        assert_eq!(replayed(&bytes, vec![session(1, "{}")]), vec![]);
    }
    for bytes in [
        journal(&[up(&upsert, 4), gone(1, 3)]),
        journal(&[gone(1, 3), up(&upsert, 4)]),
    ] {
        assert_eq!(replayed(&bytes, Vec::new()), vec![upsert.clone()]);
    }
}

#[test]
fn journal_records_replace_the_snapshot_and_add_to_it() {
    let snapshot = vec![session(1, r#"{"s":1}"#), session(2, r#"{"s":2}"#)];
    let changed = session(2, r#"{"s":"changed"}"#);
    let created = session(3, "{}");
    let bytes = journal(&[up(&changed, 1), up(&created, 2)]);
    assert_eq!(
        replayed(&bytes, snapshot.clone()),
        vec![snapshot[0].clone(), changed, created]
    );
    // Two journals (one sealed by a snapshot that did not finish) replay as one.
    let mut replay = Replay::default();
    replay.read(&bytes[..], &checks()).unwrap();
    let later = journal(&[gone(3, 3)]);
    replay.read(&later[..], &checks()).unwrap();
    assert_eq!(replay.apply(Vec::new()).len(), 1);
}

#[test]
fn a_store_reports_every_change_and_replay_rebuilds_it() {
    use crate::clock::ManualClock;
    use crate::random::SeededRandom;
    use crate::session::SessionRules;
    use crate::store::TokenStore;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl ChangeSink for Lines {
        fn changed(&self, change: Change<'_>) {
            write_change(&mut *self.0.lock().unwrap(), change).unwrap();
        }
    }

    let rules = SessionRules {
        rotation_grace: Some(Duration::from_secs(10)),
        ..SessionRules::new(Duration::from_secs(3600))
    };
    let clock = ManualClock::new(NOW.0);
    let lines = Lines::default();
    lines.0.lock().unwrap().extend_from_slice(HEADER.as_bytes());
    let store = TokenStore::new(
        Duration::from_secs(3600),
        clock.clone(),
        SeededRandom::new(3),
    )
    .with_rules(rules)
    .with_change_sink(Box::new(lines.clone()));
    let kept = store
        .create(Meta::from_json(r#"{"k":1}"#).unwrap())
        .unwrap();
    let rotated = store.rotate(kept.as_str(), None).unwrap();
    // A grace replay that changes the metadata is a change; one that does not is not.
    let update = serde_json::from_str(r#"{"r":2}"#).unwrap();
    store.rotate(kept.as_str(), Some(update)).unwrap();
    let before = lines.0.lock().unwrap().len();
    store.rotate(kept.as_str(), None).unwrap();
    assert_eq!(lines.0.lock().unwrap().len(), before);
    let ended = store.create(Meta::default()).unwrap();
    assert!(store.remove(ended.as_str()));
    // A refused request changes nothing and reports nothing.
    let before = lines.0.lock().unwrap().len();
    assert!(store
        .rotate(
            kept.as_str(),
            Some(serde_json::from_str(r#"{"k":2}"#).unwrap())
        )
        .is_ok());
    let after_replay = lines.0.lock().unwrap().len();
    assert!(after_replay > before);
    let huge = serde_json::json!({ "x": "y".repeat(100_000) });
    let huge = huge.as_object().unwrap().clone();
    assert!(store.rotate(rotated.token.as_str(), Some(huge)).is_err());
    assert_eq!(lines.0.lock().unwrap().len(), after_replay);

    let bytes = lines.0.lock().unwrap().clone();
    let mut replay = Replay::default();
    let read = replay.read(&bytes[..], &checks()).unwrap();
    assert_eq!(read.records, 6, "{}", String::from_utf8_lossy(&bytes));
    let restored =
        TokenStore::new(Duration::from_secs(3600), clock, SeededRandom::new(4)).with_rules(rules);
    restored.import(replay.apply(Vec::new()));
    let mut exported = restored.export();
    let mut original = store.export();
    exported.sort_by_key(|session| session.id.0);
    original.sort_by_key(|session| session.id.0);
    assert_eq!(exported, original);
    assert!(restored.rotate(ended.as_str(), None).is_err());
    let after = restored.rotate(rotated.token.as_str(), None).unwrap();
    assert_eq!(after.meta.as_json(), r#"{"k":2,"r":2}"#);
}

#[test]
fn concurrent_changes_of_one_session_replay_to_its_last_state_in_any_order() {
    use crate::clock::ManualClock;
    use crate::random::SeededRandom;
    use crate::session::SessionRules;
    use crate::store::TokenStore;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Keeps each change's line apart, to replay them in another order.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<Vec<u8>>>>);
    impl ChangeSink for Lines {
        fn changed(&self, change: Change<'_>) {
            let mut line = Vec::new();
            write_change(&mut line, change).unwrap();
            self.0.lock().unwrap().push(line);
        }
    }

    let rules = SessionRules {
        rotation_grace: Some(Duration::from_secs(60)),
        ..SessionRules::new(Duration::from_secs(3600))
    };
    let lines = Lines::default();
    let store = TokenStore::new(
        Duration::from_secs(3600),
        ManualClock::new(NOW.0),
        SeededRandom::new(5),
    )
    .with_rules(rules)
    .with_change_sink(Box::new(lines.clone()));
    let first = store.create(Meta::default()).unwrap();
    store.rotate(first.as_str(), None).unwrap();
    // Grace replays from four threads, each changing the metadata.
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (store, first) = (&store, &first);
            scope.spawn(move || {
                for n in 0..200 {
                    let update = serde_json::json!({ format!("t{thread}"): n });
                    let update = update.as_object().unwrap().clone();
                    store.rotate(first.as_str(), Some(update)).unwrap();
                }
            });
        }
    });
    let mut changes = lines.0.lock().unwrap().clone();
    assert_eq!(changes.len(), 2 + 4 * 200);
    let expected = store.export();
    for reversed in [false, true] {
        if reversed {
            changes.reverse();
        }
        let bytes = [HEADER.as_bytes().to_vec(), changes.concat()].concat();
        assert_eq!(
            replayed(&bytes, Vec::new()),
            expected,
            "reversed: {reversed}"
        );
    }
}
