//! Session rules on a manual clock, through the store that applies them: grace boundaries a
//! millisecond either side, chains with replays, revocation on reuse, the absolute end,
//! `DELETE` in grace, legacy tokens, and sealing.

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::random::SeededRandom;
use crate::store::{StoreError, TokenStore};
use crate::token::{legacy_token, Presented};
use serde_json::json;

const LIFETIME: Duration = Duration::from_secs(30 * 60);
const GRACE: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

fn rules() -> SessionRules {
    SessionRules {
        rotation_grace: Some(GRACE),
        revoke_on_reuse: true,
        ..SessionRules::new(LIFETIME)
    }
}

fn store_with(rules: SessionRules) -> (ManualClock, TokenStore<ManualClock, SeededRandom>) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(17)).with_rules(rules);
    (clock, store)
}

fn update(value: serde_json::Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => panic!("update must be an object"),
    }
}

fn token_of(store: &TokenStore<ManualClock, SeededRandom>, token: &str) -> String {
    store
        .rotate(token, None)
        .unwrap_or_else(|err| panic!("rotate failed: {err}"))
        .token
        .into_string()
}

#[test]
fn a_replay_inside_the_grace_answers_the_same_successor_until_the_last_millisecond() {
    let (clock, store) = store_with(rules());
    let a = store.create(Meta::default()).unwrap();
    let b = token_of(&store, a.as_str());
    clock.advance(GRACE - MS);
    assert_eq!(token_of(&store, a.as_str()), b);
    assert_eq!(token_of(&store, a.as_str()), b, "every replay, the same");
    clock.advance(MS);
    // At the deadline the grace is over: a reuse, and the session ends.
    assert_eq!(store.rotate(a.as_str(), None), Err(StoreError::Revoked));
    assert_eq!(store.rotate(&b, None), Err(StoreError::InvalidToken));
    assert!(store.is_empty());
}

#[test]
fn without_revocation_a_token_past_its_grace_is_just_invalid() {
    let (clock, store) = store_with(SessionRules {
        revoke_on_reuse: false,
        ..rules()
    });
    let a = store.create(Meta::default()).unwrap();
    let b = token_of(&store, a.as_str());
    clock.advance(GRACE);
    assert_eq!(
        store.rotate(a.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    assert!(store.rotate(&b, None).is_ok(), "the session goes on");
}

#[test]
fn a_replay_applies_its_update_to_the_session() {
    let (_clock, store) = store_with(rules());
    let a = store
        .create(Meta::from_json(r#"{"user":"ann"}"#).unwrap())
        .unwrap();
    let b = token_of(&store, a.as_str());
    let replay = store.rotate(a.as_str(), update(json!({"tab": 2}))).unwrap();
    assert_eq!(replay.token.as_str(), b);
    assert_eq!(replay.meta.as_json(), r#"{"tab":2,"user":"ann"}"#);
    let c = store.rotate(&b, update(json!({"page": 1}))).unwrap();
    assert_eq!(c.meta.as_json(), r#"{"page":1,"tab":2,"user":"ann"}"#);
}

#[test]
fn a_chain_answers_each_predecessor_with_its_own_successor() {
    let (clock, store) = store_with(rules());
    let a = store.create(Meta::default()).unwrap().into_string();
    let b = token_of(&store, &a);
    clock.advance(Duration::from_secs(3));
    let c = token_of(&store, &b);
    clock.advance(Duration::from_secs(3));
    // A in grace answers B; B in grace answers C; C is current and gives D.
    assert_eq!(token_of(&store, &a), b);
    assert_eq!(token_of(&store, &b), c);
    let d = token_of(&store, &c);
    assert_eq!(token_of(&store, &b), c);
    assert_eq!(token_of(&store, &c), d);
    // A's grace ends 10 s after its exchange (t = 0), B's at t = 13 s.
    clock.advance(Duration::from_secs(4) - MS);
    assert_eq!(token_of(&store, &a), b);
    clock.advance(MS);
    assert_eq!(store.rotate(&a, None), Err(StoreError::Revoked));
    assert_eq!(store.rotate(&d, None), Err(StoreError::InvalidToken));
}

#[test]
fn reuse_detection_ends_the_session_but_unknown_tokens_revoke_nothing() {
    let (_clock, store) = store_with(SessionRules {
        rotation_grace: None,
        ..rules()
    });
    let a = store.create(Meta::default()).unwrap();
    let b = token_of(&store, a.as_str());
    let other = store.create(Meta::default()).unwrap();
    // Made-up tokens and a legacy-shaped one, whose ids name no session: none of them
    // touches a session. (A made-up secret on a live session's id is a reuse, as the
    // README says: nothing kept tells it from an old secret of that session.)
    for made_up in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAQ",
        "not a token",
    ] {
        assert_eq!(store.rotate(made_up, None), Err(StoreError::InvalidToken));
    }
    assert_eq!(store.len(), 2);
    // Without a grace, presenting A again is a reuse at once.
    assert_eq!(store.rotate(a.as_str(), None), Err(StoreError::Revoked));
    assert_eq!(store.rotate(&b, None), Err(StoreError::InvalidToken));
    assert!(
        store.rotate(other.as_str(), None).is_ok(),
        "other sessions live on"
    );
}

#[test]
fn an_expired_session_revokes_nothing_and_is_just_invalid() {
    let (clock, store) = store_with(rules());
    let a = store.create(Meta::default()).unwrap();
    let b = token_of(&store, a.as_str());
    clock.advance(LIFETIME);
    assert_eq!(
        store.rotate(a.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    assert_eq!(store.rotate(&b, None), Err(StoreError::InvalidToken));
}

#[test]
fn the_absolute_lifetime_ends_a_session_however_often_it_rotates() {
    let max = Duration::from_secs(3600);
    let (clock, store) = store_with(SessionRules {
        max_session_lifetime: Some(max),
        ..rules()
    });
    let mut token = store.create(Meta::default()).unwrap().into_string();
    // Rotating every 20 minutes; the token lifetime (30 min) alone would go on forever.
    for _ in 0..2 {
        clock.advance(Duration::from_secs(20 * 60));
        token = token_of(&store, &token);
    }
    // At 40 min: the token's own expiry would be 70 min, capped at the session's 60 min.
    let dump = store.dump();
    assert_eq!(
        dump[0].expires,
        Timestamp(1_700_000_000_000).saturating_add(max)
    );
    clock.advance(Duration::from_secs(20 * 60) - MS);
    token = token_of(&store, &token);
    clock.advance(MS);
    assert_eq!(store.rotate(&token, None), Err(StoreError::InvalidToken));
    assert!(store.is_empty(), "the ended session is dropped");
}

#[test]
fn delete_ends_the_session_also_from_a_token_in_grace() {
    let (_clock, store) = store_with(rules());
    let a = store.create(Meta::default()).unwrap();
    let b = token_of(&store, a.as_str());
    let c = token_of(&store, &b);
    assert!(
        store.remove(a.as_str()),
        "A is in grace: it ends the session"
    );
    for token in [a.as_str(), &b, &c] {
        assert_eq!(store.rotate(token, None), Err(StoreError::InvalidToken));
    }
    assert!(store.is_empty());
    // And from the current token, of course.
    let x = store.create(Meta::default()).unwrap();
    let y = token_of(&store, x.as_str());
    assert!(store.remove(&y));
    assert_eq!(
        store.rotate(x.as_str(), None),
        Err(StoreError::InvalidToken)
    );
}

#[test]
fn a_refused_update_in_grace_changes_nothing() {
    let limits = MetaLimits {
        max_depth: 2,
        max_keys: 2,
        ..MetaLimits::default()
    };
    let (_clock, store) = store_with(SessionRules {
        meta_limits: limits,
        ..rules()
    });
    let a = store
        .create(Meta::from_json(r#"{"a":1}"#).unwrap())
        .unwrap();
    let b = token_of(&store, a.as_str());
    let too_many = update(json!({"b": 2, "c": 3}));
    assert!(matches!(
        store.rotate(a.as_str(), too_many.clone()),
        Err(StoreError::MetaLimit(_))
    ));
    assert!(matches!(
        store.rotate(&b, too_many),
        Err(StoreError::MetaLimit(_))
    ));
    assert_eq!(token_of(&store, a.as_str()), b);
    assert_eq!(store.rotate(&b, None).unwrap().meta.as_json(), r#"{"a":1}"#);
}

#[test]
fn a_session_keeps_at_most_eight_predecessors() {
    let (_clock, store) = store_with(rules());
    let mut tokens = vec![store.create(Meta::default()).unwrap().into_string()];
    for _ in 0..MAX_PREDECESSORS + 1 {
        let next = token_of(&store, tokens.last().unwrap());
        tokens.push(next);
    }
    // The oldest fell off the list: presenting it is a reuse.
    assert_eq!(token_of(&store, &tokens[1]), tokens[2]);
    assert_eq!(store.rotate(&tokens[0], None), Err(StoreError::Revoked));
}

#[test]
fn a_legacy_token_works_once_and_its_exchange_yields_the_new_form() {
    let (clock, store) = store_with(rules());
    let secret = Secret([9; 16]);
    let legacy = legacy_token(&secret);
    let hash = secret.hash();
    let expires = clock.now().saturating_add(LIFETIME);
    let imported = store.import([crate::snapshot::StoredSession {
        id: hash.legacy_session_id(),
        record: SessionRecord {
            secret_hash: hash,
            started: clock.now(),
            expires,
            meta: Meta::from_json(r#"{"v":1}"#).unwrap(),
            predecessors: Predecessors::NONE,
            version: 0,
        },
    }]);
    assert_eq!(imported, 1);
    let next = store.rotate(&legacy, None).unwrap();
    assert_eq!(next.token.as_str().len(), crate::token::TOKEN_LEN);
    assert_eq!(next.meta.as_json(), r#"{"v":1}"#);
    // In grace it answers the same; past it, a reuse.
    assert_eq!(token_of(&store, &legacy), next.token.as_str());
    clock.advance(GRACE);
    assert_eq!(store.rotate(&legacy, None), Err(StoreError::Revoked));
}

#[test]
fn without_the_flags_the_seeds_rules_hold() {
    let (_clock, store) = store_with(SessionRules::new(LIFETIME));
    let a = store.create(Meta::default()).unwrap();
    let b = token_of(&store, a.as_str());
    assert_eq!(
        store.rotate(a.as_str(), None),
        Err(StoreError::InvalidToken)
    );
    assert!(
        store.rotate(&b, None).is_ok(),
        "no revocation without the flag"
    );
}

#[test]
fn nothing_the_store_keeps_is_a_usable_secret() {
    let (_clock, store) = store_with(rules());
    let a = store.create(Meta::default()).unwrap();
    let b = store.rotate(a.as_str(), None).unwrap().token;
    let b_secret = Presented::parse(b.as_str()).unwrap().secret;
    let a_secret = Presented::parse(a.as_str()).unwrap().secret;
    let exported = store.export();
    let record = &exported[0].record;
    let predecessor = &record.predecessors.as_slice()[0];
    assert_eq!(predecessor.secret_hash, a_secret.hash());
    assert_ne!(predecessor.sealed_successor, b_secret.0);
    assert_ne!(record.secret_hash.0, b_secret.0);
    // Only A's holder can unseal B.
    assert_eq!(
        seal(&Secret(predecessor.sealed_successor), &a_secret),
        b_secret.0
    );
    assert_ne!(
        seal(&Secret(predecessor.sealed_successor), &Secret([0; 16])),
        b_secret.0
    );
}

/// A session started at 0 with secret A (returned) and exchanged once, at 1, for B.
fn exchanged_once(rules: &SessionRules) -> (Secret, SessionRecord) {
    let a = Secret([1; 16]);
    let record = SessionRecord::new(&a, Timestamp(0), Meta::default(), rules);
    let (record, _) = transition(
        record,
        &a,
        Action::Exchange(None),
        Timestamp(1),
        Secret([2; 16]),
        rules,
    );
    (a, record.expect("an exchange keeps the session"))
}

#[test]
fn a_corrupt_sealed_successor_is_answered_with_nothing() {
    let rules = rules();
    let (a, mut record) = exchanged_once(&rules);
    let mut list = record.predecessors.as_slice().to_vec();
    list[0].sealed_successor[0] ^= 1;
    record.predecessors = Predecessors::from(list);
    let (kept, outcome) = transition(
        record.clone(),
        &a,
        Action::Exchange(None),
        Timestamp(2),
        Secret([3; 16]),
        &rules,
    );
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(kept, Some(record));
}

#[test]
fn transition_versions_every_change_and_only_changes() {
    let rules = rules();
    let (a, record) = exchanged_once(&rules);
    assert_eq!(record.version, 1);
    // A replay without an update changes nothing; with one it is a change.
    let (same, _) = transition(
        record.clone(),
        &a,
        Action::Exchange(None),
        Timestamp(2),
        Secret([3; 16]),
        &rules,
    );
    assert_eq!(same.as_ref(), Some(&record));
    let (changed, _) = transition(
        record,
        &a,
        Action::Exchange(update(json!({"k": 1}))),
        Timestamp(2),
        Secret([3; 16]),
        &rules,
    );
    assert_eq!(changed.unwrap().version, 2);
}

#[test]
fn a_replay_never_answers_a_successor_whose_own_grace_is_over() {
    // A's grace outlasts B's when the exchanges were decided under different graces (a
    // restart with a shorter --rotation-grace, or instances sharing Redis configured
    // differently) or on clocks a little apart (each instance reads its own). Handing out
    // B then gives the client a token that is already a reuse: its next request would end
    // the session (or fail) although the client held the live successor C.
    let long = rules();
    let short = SessionRules {
        rotation_grace: Some(Duration::from_secs(1)),
        ..rules()
    };
    let (a, record) = exchanged_once(&long); // A -> B at t = 1 ms, A's grace until 10.001 s
    let b = Secret([2; 16]);
    let (record, outcome) = transition(
        record,
        &b,
        Action::Exchange(None),
        Timestamp(2_000),
        Secret([3; 16]),
        &short,
    ); // B -> C at t = 2 s, B's grace until 3 s
    assert!(matches!(outcome, Outcome::Exchanged { .. }));
    let record = record.expect("the session goes on");
    // While B is still in its grace, A answers B as always.
    let (_, outcome) = transition(
        record.clone(),
        &a,
        Action::Exchange(None),
        Timestamp(2_999),
        Secret([4; 16]),
        &short,
    );
    assert_eq!(outcome, Outcome::Replayed { successor: b });
    // At 5 s A is still in its grace, B is not: B is no answer.
    let (kept, outcome) = transition(
        record.clone(),
        &a,
        Action::Exchange(None),
        Timestamp(5_000),
        Secret([4; 16]),
        &short,
    );
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(kept, Some(record), "nothing revoked, nothing changed");
}
