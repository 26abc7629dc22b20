//! Store behaviour on a manual clock: every rule of expiry, rotation, merge and purge.

use super::*;
use crate::clock::ManualClock;
use crate::meta::{MetaError, MetaLimits};
use crate::random::SeededRandom;
use serde_json::json;
use std::sync::Arc;

const LIFETIME: Duration = Duration::from_secs(30 * 60);
const MS: Duration = Duration::from_millis(1);

fn store() -> (ManualClock, TokenStore<ManualClock, SeededRandom>) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(99));
    (clock, store)
}

fn meta(value: Value) -> Meta {
    match value {
        Value::Object(map) => Meta::from_map(&map),
        _ => panic!("meta must be an object"),
    }
}

fn update(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => panic!("update must be an object"),
    }
}

#[test]
fn token_is_valid_until_one_millisecond_before_its_lifetime_ends() {
    let (clock, store) = store();
    let token = store.create(meta(json!({"n": 1}))).unwrap();
    clock.advance(LIFETIME - MS);
    assert!(store.rotate(token.as_str(), None).is_ok());
}

#[test]
fn token_is_invalid_at_and_after_its_lifetime_even_before_purge() {
    let (clock, store) = store();
    let at_boundary = store.create(meta(json!({}))).unwrap();
    let after_boundary = store.create(meta(json!({}))).unwrap();
    clock.advance(LIFETIME);
    assert_eq!(
        store.rotate(at_boundary.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    clock.advance(MS);
    assert_eq!(
        store.rotate(after_boundary.as_str(), None),
        Err(StoreError::InvalidToken)
    );
}

#[test]
fn rotation_gives_a_full_fresh_lifetime() {
    let (clock, store) = store();
    let mut token = store.create(meta(json!({"user": "ann"}))).unwrap();
    // Three rotations, each just before expiry: the session outlives three lifetimes.
    for _ in 0..3 {
        clock.advance(LIFETIME - MS);
        token = store.rotate(token.as_str(), None).unwrap().token;
    }
    clock.advance(LIFETIME - MS);
    let last = store.rotate(token.as_str(), None).unwrap();
    clock.advance(LIFETIME);
    assert_eq!(
        store.rotate(last.token.as_str(), None),
        Err(StoreError::InvalidToken)
    );
}

#[test]
fn each_token_works_once() {
    let (_clock, store) = store();
    let first = store.create(meta(json!({"user": "ann"}))).unwrap();
    let second = store.rotate(first.as_str(), None).unwrap();
    assert_ne!(first, second.token);
    assert_eq!(
        store.rotate(first.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    // The replacement still works after the failed replay.
    assert!(store.rotate(second.token.as_str(), None).is_ok());
    assert_eq!(store.len(), 1);
}

#[test]
fn rotation_merges_top_level_keys_and_keeps_the_rest() {
    let (_clock, store) = store();
    let token = store
        .create(meta(
            json!({"name": "My user", "year": 2022, "period": {"m": 11, "q": 4}}),
        ))
        .unwrap();
    let rotated = store
        .rotate(
            token.as_str(),
            update(json!({"year": 2023, "unit": "sales", "period": {"m": 1}})),
        )
        .unwrap();
    let expected = json!({"name": "My user", "year": 2023, "unit": "sales", "period": {"m": 1}});
    assert_eq!(Value::Object(rotated.meta.to_map()), expected);
    // The merged metadata is what the next rotation sees.
    let again = store.rotate(rotated.token.as_str(), None).unwrap();
    assert_eq!(Value::Object(again.meta.to_map()), expected);
}

#[test]
fn remove_kills_a_token_and_reports_whether_it_was_live() {
    let (clock, store) = store();
    let token = store.create(meta(json!({}))).unwrap();
    let other = store.create(meta(json!({"keep": true}))).unwrap();
    assert!(store.remove(token.as_str()));
    assert!(!store.remove(token.as_str()));
    assert_eq!(
        store.rotate(token.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    assert!(!store.remove("not a token"));
    clock.advance(LIFETIME);
    assert!(!store.remove(other.as_str()), "expired tokens are not live");
    assert!(store.is_empty());
}

#[test]
fn unknown_used_removed_and_expired_tokens_are_indistinguishable() {
    let (clock, store) = store();
    let used = store.create(meta(json!({}))).unwrap();
    store.rotate(used.as_str(), None).unwrap();
    let removed = store.create(meta(json!({}))).unwrap();
    store.remove(removed.as_str());
    let expired = store.create(meta(json!({}))).unwrap();
    clock.advance(LIFETIME);
    for token in [
        used.as_str(),
        removed.as_str(),
        expired.as_str(),
        "AAAAAAAAAAAAAAAAAAAAAA",
        "garbage",
        "",
    ] {
        assert_eq!(store.rotate(token, None), Err(StoreError::InvalidToken));
    }
}

#[test]
fn purge_drops_only_expired_tokens_and_counts() {
    let (clock, store) = store();
    for _ in 0..5 {
        store.create(meta(json!({"old": true}))).unwrap();
    }
    clock.advance(Duration::from_secs(60));
    let young: Vec<Token> = (0..3)
        .map(|_| store.create(meta(json!({"old": false}))).unwrap())
        .collect();
    let young_expiry = clock.now().saturating_add(LIFETIME);

    let report = store.purge();
    assert_eq!((report.purged, report.remaining), (0, 8));

    clock.advance(LIFETIME - Duration::from_secs(60));
    let report = store.purge();
    assert_eq!((report.purged, report.remaining), (5, 3));
    assert_eq!(report.next_expiry, Some(young_expiry));
    assert_eq!(store.len(), 3);
    for token in &young {
        assert!(store.rotate(token.as_str(), None).is_ok());
    }

    clock.advance(LIFETIME);
    let report = store.purge();
    assert_eq!((report.purged, report.remaining), (3, 0));
    assert_eq!(report.next_expiry, None);
}

#[test]
fn dump_lists_expiry_and_meta_of_live_tokens_only() {
    let (clock, store) = store();
    let start = clock.now();
    store.create(meta(json!({"user": "old"}))).unwrap();
    clock.advance(Duration::from_secs(10));
    let token = store.create(meta(json!({"user": "new"}))).unwrap();
    clock.advance(LIFETIME - Duration::from_secs(5));

    let dump = store.dump();
    assert_eq!(
        dump,
        vec![DumpEntry {
            expires: start.saturating_add(LIFETIME + Duration::from_secs(10)),
            meta: meta(json!({"user": "new"})),
        }]
    );
    let shown = format!("{dump:?}");
    assert!(!shown.contains(token.as_str()));
}

#[test]
fn seeded_sources_give_the_same_tokens() {
    let make = || {
        let store = TokenStore::new(LIFETIME, ManualClock::new(0), SeededRandom::new(5));
        (0..4)
            .map(|_| store.create(Meta::default()).unwrap().into_string())
            .collect::<Vec<_>>()
    };
    let first = make();
    assert_eq!(first, make());
    let other = TokenStore::new(LIFETIME, ManualClock::new(0), SeededRandom::new(6));
    assert_ne!(
        first[0],
        other.create(Meta::default()).unwrap().into_string()
    );
}

#[test]
fn a_session_id_collision_draws_another_id() {
    // The source is rewound: the second session's first id is the first's.
    let clock = ManualClock::new(0);
    let random = Arc::new(SeededRandom::new(3));
    let store = TokenStore::new(LIFETIME, clock.clone(), random.clone());
    let first = store.create(Meta::default()).unwrap();
    random.state.store(3, std::sync::atomic::Ordering::Relaxed);
    let second = store.create(Meta::default()).unwrap();
    assert_ne!(first, second);
    assert_eq!(store.len(), 2);
}

struct FailingRandom;

impl TokenSource for FailingRandom {
    fn fill(&self, _dest: &mut [u8]) -> Result<(), RandomError> {
        Err(RandomError {
            reason: "no entropy".into(),
        })
    }
}

#[test]
fn a_failing_randomness_source_costs_no_session() {
    let clock = ManualClock::new(0);
    let good = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(1));
    let token = good.create(Meta::default()).unwrap();
    // Move the entry into a store whose randomness fails, keeping its key.
    let broken = TokenStore::new(LIFETIME, clock, FailingRandom);
    let id = Presented::parse(token.as_str()).unwrap().id;
    let record = good.shard(&id).take(&id).unwrap();
    broken.shard(&id).put(id, record);

    assert!(matches!(
        broken.create(Meta::default()),
        Err(StoreError::Random(_))
    ));
    assert!(matches!(
        broken.rotate(token.as_str(), None),
        Err(StoreError::Random(_))
    ));
    assert_eq!(broken.len(), 1, "the old token must survive");
}

#[test]
fn concurrent_rotations_of_one_token_succeed_exactly_once() {
    let store = Arc::new(TokenStore::new(
        LIFETIME,
        ManualClock::new(0),
        crate::random::OsRandom,
    ));
    let token = store.create(Meta::default()).unwrap().into_string();
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (store, token, barrier) = (store.clone(), token.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.rotate(&token, None).is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(store.len(), 1);
}

#[test]
fn purging_shard_by_shard_adds_up_to_a_whole_purge() {
    let (clock, store) = store();
    for _ in 0..300 {
        store.create(meta(json!({"old": true}))).unwrap();
    }
    clock.advance(Duration::from_secs(60));
    for _ in 0..50 {
        store.create(meta(json!({"old": false}))).unwrap();
    }
    let young_expiry = clock.now().saturating_add(LIFETIME);
    clock.advance(LIFETIME - Duration::from_secs(60));

    let (mut purged, mut remaining, mut next) = (0, 0, None::<Timestamp>);
    for index in 0..store.shard_count() {
        let part = store.purge_shard(index);
        purged += part.purged;
        remaining += part.remaining;
        next = match (next, part.next_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    assert_eq!((purged, remaining), (300, 50));
    assert_eq!(next, Some(young_expiry));
    assert_eq!(store.len(), 50);
    let past_the_end = store.purge_shard(store.shard_count());
    assert_eq!((past_the_end.purged, past_the_end.remaining), (0, 0));
}

#[test]
fn sweeping_a_shard_hands_back_what_purging_it_drops() {
    let (clock, store) = store();
    for _ in 0..200 {
        store.create(meta(json!({"old": true}))).unwrap();
    }
    clock.advance(LIFETIME);
    let mut purged = 0;
    for index in 0..store.shard_count() {
        let (report, swept) = store.sweep_shard(index);
        assert_eq!(report.remaining, 0);
        assert_eq!(swept.0.len(), report.purged);
        purged += report.purged;
    }
    assert_eq!(purged, 200);
    assert!(store.is_empty());
}

#[test]
fn a_full_store_refuses_logins_but_keeps_rotating() {
    let (clock, store) = store();
    let store = store.with_max_tokens(2);
    let first = store.create(meta(json!({"n": 1}))).unwrap();
    store.create(meta(json!({"n": 2}))).unwrap();
    assert_eq!(store.create(meta(json!({"n": 3}))), Err(StoreError::Full));
    // Rotation replaces a token, so a full store still serves existing sessions.
    let rotated = store.rotate(first.as_str(), None).unwrap();
    assert_eq!(store.create(meta(json!({}))), Err(StoreError::Full));
    // Removing, expiring or purging frees room again.
    assert!(store.remove(rotated.token.as_str()));
    let third = store.create(meta(json!({"n": 3}))).unwrap();
    clock.advance(LIFETIME);
    assert_eq!(
        store.rotate(third.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    assert!(
        store.create(meta(json!({}))).is_ok(),
        "expired-and-rotated frees a slot"
    );
    store.purge();
    assert!(store.create(meta(json!({}))).is_ok());
    assert_eq!(store.len(), 2);
}

#[test]
fn an_update_past_the_meta_limits_is_refused_and_the_token_kept() {
    let (_clock, store) = store();
    let store = store.with_meta_limits(MetaLimits {
        max_depth: 3,
        max_keys: 3,
        max_bytes: 1024,
    });
    let token = store.create(meta(json!({"a": 1, "b": 2}))).unwrap();
    assert_eq!(
        store.rotate(token.as_str(), update(json!({"c": 3, "d": 4}))),
        Err(StoreError::MetaLimit(MetaError::TooManyKeys { limit: 3 }))
    );
    assert_eq!(
        store.rotate(token.as_str(), update(json!({"a": [[[1]]]}))),
        Err(StoreError::MetaLimit(MetaError::TooDeep { limit: 3 }))
    );
    // Replacing a key keeps the count: allowed, and the token presented was still valid.
    let rotated = store
        .rotate(token.as_str(), update(json!({"a": 9, "c": 3})))
        .unwrap();
    assert_eq!(
        Value::Object(rotated.meta.to_map()),
        json!({"a": 9, "b": 2, "c": 3})
    );
    assert_eq!(store.len(), 1);
}

#[test]
fn export_and_import_carry_live_tokens_to_a_new_store() {
    let (clock, store) = store();
    let kept = store.create(meta(json!({"user": "kept"}))).unwrap();
    let expiring = store.create(meta(json!({"user": "expiring"}))).unwrap();
    clock.advance(Duration::from_secs(60));
    let young = store.create(meta(json!({"user": "young"}))).unwrap();
    let exported = store.export();
    assert_eq!(exported.len(), 3);
    let shown = format!("{exported:?}");
    for token in [&kept, &expiring, &young] {
        assert!(!shown.contains(token.as_str()), "export leaks a token");
    }

    // The restart happens later: the first two tokens have 1 minute left, then none.
    clock.advance(LIFETIME - Duration::from_secs(120));
    let restarted = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(1));
    assert_eq!(restarted.import(exported.clone()), 3);
    let rotated = restarted.rotate(kept.as_str(), None).unwrap();
    assert_eq!(rotated.meta, meta(json!({"user": "kept"})));
    clock.advance(Duration::from_secs(60));
    // Valid until its original expiry, not a fresh lifetime from the restart.
    assert_eq!(
        restarted.rotate(expiring.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    assert!(restarted.rotate(young.as_str(), None).is_ok());

    // Importing after everything expired files nothing.
    clock.advance(LIFETIME);
    let late = TokenStore::new(LIFETIME, clock, SeededRandom::new(2));
    assert_eq!(late.import(exported), 0);
    assert!(late.is_empty());
}

#[test]
fn export_shard_by_shard_adds_up_to_the_whole_export() {
    let (clock, store) = store();
    for user in 0..50 {
        store.create(meta(json!({ "user": user }))).unwrap();
    }
    clock.advance(LIFETIME - Duration::from_secs(1));
    for user in 50..60 {
        store.create(meta(json!({ "user": user }))).unwrap();
    }
    clock.advance(Duration::from_secs(1));
    // The first 50 have just expired; only the last 10 are live.
    let mut by_shard = Vec::new();
    for index in 0..store.shard_count() {
        store.export_shard(index, &mut by_shard);
    }
    store.export_shard(store.shard_count(), &mut by_shard);
    let key = |session: &StoredSession| (session.id, session.record.expires);
    let mut whole: Vec<_> = store.export().iter().map(key).collect();
    let mut pieced: Vec<_> = by_shard.iter().map(key).collect();
    whole.sort_unstable();
    pieced.sort_unstable();
    assert_eq!(pieced.len(), 10);
    assert_eq!(pieced, whole);
}

/// A session whose metadata sits at the key limit, so that any update adding a key is
/// refused after a merge that takes a while (hundreds of keys to parse and check).
fn store_at_the_key_limit() -> (Arc<TokenStore<ManualClock, crate::random::OsRandom>>, Meta) {
    let limits = MetaLimits {
        max_depth: 4,
        max_keys: 600,
        ..MetaLimits::default()
    };
    let store = TokenStore::new(LIFETIME, ManualClock::new(0), crate::random::OsRandom)
        .with_meta_limits(limits);
    let full: Map<String, Value> = (0..600).map(|i| (format!("key {i}"), json!(i))).collect();
    (Arc::new(store), Meta::from_map(&full))
}

/// Runs `refused` (an update over the limits) and `other` on one token at the same instant,
/// `rounds` times; returns the failures `check` reports for each round.
fn race_a_refused_update<T: Send>(
    rounds: usize,
    other: impl Fn(&TokenStore<ManualClock, crate::random::OsRandom>, &str) -> T + Sync,
    check: impl Fn(&TokenStore<ManualClock, crate::random::OsRandom>, &str, T) -> bool,
) -> usize {
    let (store, full) = store_at_the_key_limit();
    let mut failures = 0;
    for _ in 0..rounds {
        let token = store.create(full.clone()).unwrap().into_string();
        let barrier = std::sync::Barrier::new(2);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                // Refused for the limit, or InvalidToken when the other op came first.
                let refused = store.rotate(&token, update(json!({"one key too many": 1})));
                assert!(refused.is_err());
            });
            let other = scope.spawn(|| {
                barrier.wait();
                other(&store, &token)
            });
            other.join().unwrap()
        });
        if !check(&store, &token, result) {
            failures += 1;
        }
    }
    failures
}

#[test]
fn a_refused_update_racing_a_delete_never_revives_the_token() {
    // Before the rule was decided under the shard lock, the refused update took the token
    // out and put it back: a DELETE in between found nothing, and the token worked again.
    let revived = race_a_refused_update(
        300,
        |store, token| store.remove(token),
        |store, token, _removed| store.rotate(token, None) == Err(StoreError::InvalidToken),
    );
    assert_eq!(revived, 0, "{revived} of 300 deleted tokens worked again");
}

#[test]
fn a_refused_update_racing_an_exchange_never_fails_the_exchange() {
    // The same window made a valid concurrent exchange answer InvalidToken.
    let failed = race_a_refused_update(
        300,
        |store, token| store.rotate(token, None).is_ok(),
        |_store, _token, exchanged| exchanged,
    );
    assert_eq!(failed, 0, "{failed} of 300 valid exchanges failed");
}

#[test]
fn held_follows_every_operation_that_adds_or_drops_a_token() {
    let (clock, store) = store();
    let first = store.create(meta(json!({"u": 1}))).unwrap();
    let second = store.create(meta(json!({"u": 2}))).unwrap();
    assert_eq!(store.held(), 2);
    let rotated = store.rotate(first.as_str(), None).unwrap();
    assert_eq!(store.held(), 2);
    store.remove(second.as_str());
    assert_eq!(store.held(), 1);
    store.import(store.export());
    assert_eq!(store.held(), store.len());
    clock.advance(LIFETIME);
    store.purge();
    assert_eq!((store.held(), store.len()), (0, 0));
    assert!(store.rotate(rotated.token.as_str(), None).is_err());
}
