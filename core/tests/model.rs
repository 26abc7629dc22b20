// Model-based property test: random op sequences against the real TokenStore and a plain reference model of sessions (grace, revocation on reuse, absolute lifetime drawn per case), compared after every op.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use token_server_core::session::SessionRules;
use token_server_core::{
    ManualClock, Meta, MetaLimits, SeededRandom, StoreError, Timestamp, TokenStore,
};

/// Short lifetime so boundary advances are cheap to hit.
const LIFETIME_MS: u64 = 30 * 60 * 1000;
/// Small cap so `Full` shows up within a few creates.
const MAX_TOKENS: usize = 5;
/// Small metadata bounds so `MetaLimit` shows up with small generated updates.
const LIMITS: MetaLimits = MetaLimits {
    max_depth: 2,
    max_keys: 4,
    max_bytes: 40,
};

/// Which token an op presents.
#[derive(Debug, Clone)]
enum Pick {
    /// The n-th token ever issued (modulo how many there are): current, in grace, used,
    /// removed or expired.
    Issued(usize),
    /// An issued token with one character of its secret changed: its session's id with a
    /// secret the session never had.
    WrongSecret(usize, usize),
    /// An issued token with one character of its session id changed: no session's.
    WrongId(usize, usize),
    /// Any string at all.
    Garbage(String),
}

#[derive(Debug, Clone)]
enum Op {
    Create(Map<String, Value>),
    Rotate(Pick, Option<Map<String, Value>>),
    Remove(Pick),
    Purge,
    Advance(u64),
}

/// What the caller can see of a store result, comparable between store and model.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Created,
    Rotated(Map<String, Value>),
    Invalid,
    Revoked,
    Full,
    MetaLimit,
    Removed(bool),
    Purged {
        purged: usize,
        remaining: usize,
        next_expiry: Option<u64>,
    },
    Advanced,
}

/// The session rules a case runs under, drawn per case.
#[derive(Debug, Clone, Copy)]
struct Rules {
    grace_ms: Option<u64>,
    revoke_on_reuse: bool,
    max_session_ms: Option<u64>,
}

/// One session as the reference sees it: plain token strings, no hashes, no sealing.
#[derive(Debug, Clone)]
struct SessionModel {
    current: String,
    started: u64,
    expires: u64,
    meta: Map<String, Value>,
    /// (exchanged token, the successor it got, grace deadline), oldest first.
    predecessors: Vec<(String, String, u64)>,
}

/// The reference: every session the store still holds (expired ones until a purge, rotate
/// or remove drops them), and which session each token ever issued belongs to.
#[derive(Default)]
struct Model {
    now: u64,
    rules: Option<Rules>,
    sessions: HashMap<usize, SessionModel>,
    session_of: HashMap<String, usize>,
    next_session: usize,
}

/// How many predecessors a session keeps (the documented cap).
const MAX_PREDECESSORS: usize = 8;

/// Nesting levels of a value, counted the documented way: the top object is level 1, each
/// object or array inside adds one; scalars add none.
fn levels(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(levels).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(levels).max().unwrap_or(0),
        _ => 0,
    }
}

/// Keys of every object, nested ones included.
fn keys(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.len() + map.values().map(keys).sum::<usize>(),
        Value::Array(items) => items.iter().map(keys).sum(),
        _ => 0,
    }
}

fn within_limits(map: &Map<String, Value>) -> bool {
    let value = Value::Object(map.clone());
    levels(&value) <= LIMITS.max_depth
        && keys(&value) <= LIMITS.max_keys
        && value.to_string().len() <= LIMITS.max_bytes
}

impl Model {
    fn rules(&self) -> Rules {
        self.rules.expect("rules are set before the first op")
    }

    fn live_until(&self, session: &SessionModel) -> u64 {
        let end = self
            .rules()
            .max_session_ms
            .map_or(u64::MAX, |max| session.started + max);
        session.expires.min(end)
    }

    fn create(&mut self, token: Option<&str>, meta: Map<String, Value>) -> Outcome {
        if self.sessions.len() >= MAX_TOKENS {
            return Outcome::Full;
        }
        let token = token.expect("model says create succeeds, so the store must issue one");
        let id = self.next_session;
        self.next_session += 1;
        let session = SessionModel {
            current: token.to_string(),
            started: self.now,
            expires: 0,
            meta,
            predecessors: Vec::new(),
        };
        let expires = (self.now + LIFETIME_MS).min(self.live_until(&SessionModel {
            expires: u64::MAX,
            ..session.clone()
        }));
        self.sessions
            .insert(id, SessionModel { expires, ..session });
        self.session_of.insert(token.to_string(), id);
        Outcome::Created
    }

    /// The session `token` names and whether it is live; drops it when expired.
    fn live_session(&mut self, session: Option<usize>) -> Option<usize> {
        let id = session?;
        let live = self.live_until(self.sessions.get(&id)?) > self.now;
        if !live {
            self.sessions.remove(&id);
            return None;
        }
        Some(id)
    }

    fn rotate(
        &mut self,
        token: &str,
        session: Option<usize>,
        update: Option<Map<String, Value>>,
        answered: Option<&str>,
    ) -> Outcome {
        let Some(id) = self.live_session(session) else {
            return Outcome::Invalid;
        };
        let rules = self.rules();
        let now = self.now;
        let session = self.sessions.get(&id).cloned().expect("live session");
        let in_grace = session
            .predecessors
            .iter()
            .find(|(old, _, deadline)| old == token && now < *deadline)
            .cloned();
        if token != session.current && in_grace.is_none() {
            if rules.revoke_on_reuse {
                self.sessions.remove(&id);
                return Outcome::Revoked;
            }
            return Outcome::Invalid;
        }
        let mut merged = session.meta.clone();
        if let Some(update) = update.filter(|update| !update.is_empty()) {
            merged.extend(update);
            if !within_limits(&merged) {
                // Refused: the session is unchanged, the token presented still works.
                return Outcome::MetaLimit;
            }
        }
        let entry = self.sessions.get_mut(&id).expect("live session");
        entry.meta = merged.clone();
        if let Some((_, successor, _)) = in_grace {
            assert_eq!(
                answered,
                Some(successor.as_str()),
                "a replay in grace answers the successor the token was exchanged for"
            );
            return Outcome::Rotated(merged);
        }
        let new_token = answered.expect("model says rotate succeeds, so the store must issue one");
        entry
            .predecessors
            .retain(|(_, _, deadline)| now < *deadline);
        if let Some(grace) = rules.grace_ms {
            entry
                .predecessors
                .push((token.to_string(), new_token.to_string(), now + grace));
            if entry.predecessors.len() > MAX_PREDECESSORS {
                entry.predecessors.remove(0);
            }
        }
        entry.current = new_token.to_string();
        let end = rules
            .max_session_ms
            .map_or(u64::MAX, |max| entry.started + max);
        entry.expires = (now + LIFETIME_MS).min(end);
        self.session_of.insert(new_token.to_string(), id);
        Outcome::Rotated(merged)
    }

    fn remove(&mut self, token: &str, session: Option<usize>) -> Outcome {
        let Some(id) = self.live_session(session) else {
            return Outcome::Removed(false);
        };
        let now = self.now;
        let session = &self.sessions[&id];
        let known = token == session.current
            || session
                .predecessors
                .iter()
                .any(|(old, _, deadline)| old == token && now < *deadline);
        if known || self.rules().revoke_on_reuse {
            self.sessions.remove(&id);
            return Outcome::Removed(true);
        }
        Outcome::Removed(false)
    }

    fn purge(&mut self) -> Outcome {
        let before = self.sessions.len();
        let now = self.now;
        let live: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, session)| now < self.live_until(session))
            .map(|(id, _)| *id)
            .collect();
        self.sessions.retain(|id, _| live.contains(id));
        Outcome::Purged {
            purged: before - self.sessions.len(),
            remaining: self.sessions.len(),
            next_expiry: self.sessions.values().map(|s| self.live_until(s)).min(),
        }
    }

    /// Live sessions as the store's dump shows them: (expiry, metadata), sorted.
    fn dump(&self) -> Vec<(u64, String)> {
        let mut live: Vec<_> = self
            .sessions
            .values()
            .filter(|session| self.now < self.live_until(session))
            .map(|session| {
                (
                    self.live_until(session),
                    Meta::from_map(&session.meta).as_json().to_string(),
                )
            })
            .collect();
        live.sort();
        live
    }
}

fn store_outcome<T>(result: &Result<T, StoreError>, ok: impl FnOnce(&T) -> Outcome) -> Outcome {
    match result {
        Ok(value) => ok(value),
        Err(StoreError::InvalidToken) => Outcome::Invalid,
        Err(StoreError::Full) => Outcome::Full,
        Err(StoreError::MetaLimit(_)) => Outcome::MetaLimit,
        Err(StoreError::Revoked) => Outcome::Revoked,
        Err(err) => panic!("unexpected store error {err:?}"),
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
    ]
}

/// Small values, some nested past `LIMITS.max_depth` (the object at top is level 1).
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => scalar().prop_map(|v| json!({ "x": v })),
        1 => scalar().prop_map(|v| json!([v])),
        1 => scalar().prop_map(|v| json!({ "x": { "y": v } })),
        1 => scalar().prop_map(|v| json!([[v]])),
    ]
}

/// Small objects over a few shared keys, so updates replace as well as add.
fn meta() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("e")],
        value(),
        0..4,
    )
    .prop_map(|map| map.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<usize>().prop_map(Pick::Issued),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, at)| Pick::WrongSecret(i, at)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, at)| Pick::WrongId(i, at)),
        1 => "[A-Za-z0-9_=-]{0,24}|\\PC{0,8}".prop_map(Pick::Garbage),
    ]
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(999),
        Just(1_000),
        Just(LIFETIME_MS - 1),
        Just(LIFETIME_MS),
        Just(LIFETIME_MS + 1),
        Just(LIFETIME_MS / 2),
        0..2 * LIFETIME_MS,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => meta().prop_map(Op::Create),
        4 => (pick(), proptest::option::of(meta())).prop_map(|(p, u)| Op::Rotate(p, u)),
        1 => pick().prop_map(Op::Remove),
        1 => Just(Op::Purge),
        2 => advance().prop_map(Op::Advance),
    ]
}

fn rules() -> impl Strategy<Value = Rules> {
    (
        proptest::option::of(prop_oneof![Just(1_000u64), Just(LIFETIME_MS / 2)]),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(LIFETIME_MS), Just(2 * LIFETIME_MS + 7)]),
    )
        .prop_map(|(grace_ms, revoke_on_reuse, max_session_ms)| Rules {
            grace_ms,
            revoke_on_reuse,
            max_session_ms,
        })
}

/// Characters 0..10 of a token spell only session id bits (6 bits each, 60 of the 64);
/// characters 11.. only secret bits.
const ID_CHARS: usize = 10;
const SECRET_CHARS_FROM: usize = 11;

/// The text an op presents, and the session the model files it under (`None`: no
/// session's).
fn resolve(pick: &Pick, issued: &[String], model: &Model) -> (String, Option<usize>) {
    let flip = |token: &str, at: usize| -> String {
        let mut chars: Vec<char> = token.chars().collect();
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    };
    let original = |i: usize| issued[i % issued.len()].clone();
    match pick {
        Pick::Issued(i) if !issued.is_empty() => {
            let token = original(*i);
            let session = model.session_of.get(&token).copied();
            (token, session)
        }
        Pick::WrongSecret(i, at) if !issued.is_empty() => {
            let token = original(*i);
            let at = SECRET_CHARS_FROM + at % (token.len() - SECRET_CHARS_FROM);
            let session = model.session_of.get(&token).copied();
            (flip(&token, at), session)
        }
        Pick::WrongId(i, at) if !issued.is_empty() => {
            let token = original(*i);
            (flip(&token, at % ID_CHARS), None)
        }
        Pick::Garbage(text) => (text.clone(), None),
        _ => (String::from("no-token-issued-yet"), None),
    }
}

fn run(ops: &[Op], seed: u64, rules: Rules) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(1_000_000);
    let session_rules = SessionRules {
        rotation_grace: rules.grace_ms.map(Duration::from_millis),
        revoke_on_reuse: rules.revoke_on_reuse,
        max_session_lifetime: rules.max_session_ms.map(Duration::from_millis),
        meta_limits: LIMITS,
        ..SessionRules::new(Duration::from_millis(LIFETIME_MS))
    };
    let store = TokenStore::new(
        Duration::from_millis(LIFETIME_MS),
        clock.clone(),
        SeededRandom::new(seed),
    )
    .with_rules(session_rules)
    .with_max_tokens(MAX_TOKENS);
    let mut model = Model {
        now: 1_000_000,
        rules: Some(rules),
        ..Model::default()
    };
    let mut issued: Vec<String> = Vec::new();

    for (step, op) in ops.iter().enumerate() {
        let (real, expected) = match op {
            Op::Create(meta) => {
                let result = store.create(Meta::from_map(meta));
                let token = result.as_ref().ok().map(|t| t.as_str().to_string());
                let real = store_outcome(&result, |_| Outcome::Created);
                let expected = model.create(token.as_deref(), meta.clone());
                issued.extend(token);
                (real, expected)
            }
            Op::Rotate(pick, update) => {
                let (token, session) = resolve(pick, &issued, &model);
                let result = store.rotate(&token, update.clone());
                let answered = result.as_ref().ok().map(|r| r.token.as_str().to_string());
                let real = store_outcome(&result, |r| Outcome::Rotated(r.meta.to_map()));
                let expected = model.rotate(&token, session, update.clone(), answered.as_deref());
                if let Some(answered) = answered.filter(|a| !issued.contains(a)) {
                    issued.push(answered);
                }
                (real, expected)
            }
            Op::Remove(pick) => {
                let (token, session) = resolve(pick, &issued, &model);
                (
                    Outcome::Removed(store.remove(&token)),
                    model.remove(&token, session),
                )
            }
            Op::Purge => {
                let report = store.purge();
                let real = Outcome::Purged {
                    purged: report.purged,
                    remaining: report.remaining,
                    next_expiry: report.next_expiry.map(|t: Timestamp| t.0),
                };
                (real, model.purge())
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(*ms));
                model.now += ms;
                (Outcome::Advanced, Outcome::Advanced)
            }
        };
        prop_assert_eq!(&real, &expected, "step {}: {:?}", step, op);
        prop_assert_eq!(store.len(), model.sessions.len(), "len after step {}", step);
        let mut dump: Vec<(u64, String)> = store
            .dump()
            .into_iter()
            .map(|e| (e.expires.0, e.meta.as_json().to_string()))
            .collect();
        // The store orders by expiry only; ties come in any order.
        dump.sort();
        prop_assert_eq!(dump, model.dump(), "dump after step {}", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_matches_model(
        ops in proptest::collection::vec(op(), 1..60),
        seed in any::<u64>(),
        rules in rules(),
    ) {
        run(&ops, seed, rules)?;
    }
}
