// Model-based property test: random op sequences against the real TokenStore and a plain reference model, compared after every op.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
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
    /// The n-th token ever issued (modulo how many there are): live, used, removed or expired.
    Issued(usize),
    /// An issued token with one character changed: right length and alphabet, never live.
    Mutated(usize, usize),
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

/// The reference: every token the store still holds (expired ones until a purge, rotate or
/// remove drops them), with its expiry and metadata.
#[derive(Default)]
struct Model {
    now: u64,
    held: HashMap<String, (u64, Map<String, Value>)>,
}

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
    fn create(&mut self, token: Option<&str>, meta: Map<String, Value>) -> Outcome {
        if self.held.len() >= MAX_TOKENS {
            return Outcome::Full;
        }
        let token = token.expect("model says create succeeds, so the store must issue one");
        self.held
            .insert(token.to_string(), (self.now + LIFETIME_MS, meta));
        Outcome::Created
    }

    fn rotate(
        &mut self,
        token: &str,
        update: Option<Map<String, Value>>,
        new_token: Option<&str>,
    ) -> Outcome {
        let Some((expires, meta)) = self.held.get(token).cloned() else {
            return Outcome::Invalid;
        };
        if self.now >= expires {
            self.held.remove(token);
            return Outcome::Invalid;
        }
        let mut merged = meta;
        if let Some(update) = update.filter(|update| !update.is_empty()) {
            merged.extend(update);
            if !within_limits(&merged) {
                // Refused: the presented token stays valid until its old expiry.
                return Outcome::MetaLimit;
            }
        }
        self.held.remove(token);
        let new_token = new_token.expect("model says rotate succeeds, so the store must issue one");
        self.held.insert(
            new_token.to_string(),
            (self.now + LIFETIME_MS, merged.clone()),
        );
        Outcome::Rotated(merged)
    }

    fn remove(&mut self, token: &str) -> Outcome {
        let live = self
            .held
            .remove(token)
            .is_some_and(|(expires, _)| self.now < expires);
        Outcome::Removed(live)
    }

    fn purge(&mut self) -> Outcome {
        let before = self.held.len();
        let now = self.now;
        self.held.retain(|_, (expires, _)| now < *expires);
        Outcome::Purged {
            purged: before - self.held.len(),
            remaining: self.held.len(),
            next_expiry: self.held.values().map(|(expires, _)| *expires).min(),
        }
    }

    /// Live entries as the store's dump shows them: (expiry, metadata), sorted.
    fn dump(&self) -> Vec<(u64, String)> {
        let mut live: Vec<_> = self
            .held
            .values()
            .filter(|(expires, _)| self.now < *expires)
            .map(|(expires, meta)| (*expires, Meta::from_map(meta).as_json().to_string()))
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
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, at)| Pick::Mutated(i, at)),
        1 => "[A-Za-z0-9_=-]{0,24}|\\PC{0,8}".prop_map(Pick::Garbage),
    ]
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
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

fn resolve(pick: &Pick, issued: &[String]) -> String {
    match pick {
        Pick::Issued(i) if !issued.is_empty() => issued[i % issued.len()].clone(),
        Pick::Mutated(i, at) if !issued.is_empty() => {
            let mut chars: Vec<char> = issued[i % issued.len()].chars().collect();
            let at = at % chars.len();
            chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
            chars.into_iter().collect()
        }
        Pick::Garbage(text) => text.clone(),
        _ => String::from("no-token-issued-yet"),
    }
}

fn run(ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(1_000_000);
    let store = TokenStore::new(
        Duration::from_millis(LIFETIME_MS),
        clock.clone(),
        SeededRandom::new(seed),
    )
    .with_max_tokens(MAX_TOKENS)
    .with_meta_limits(LIMITS);
    let mut model = Model {
        now: 1_000_000,
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
                let token = resolve(pick, &issued);
                let result = store.rotate(&token, update.clone());
                let new_token = result.as_ref().ok().map(|r| r.token.as_str().to_string());
                let real = store_outcome(&result, |r| Outcome::Rotated(r.meta.to_map()));
                let expected = model.rotate(&token, update.clone(), new_token.as_deref());
                issued.extend(new_token);
                (real, expected)
            }
            Op::Remove(pick) => {
                let token = resolve(pick, &issued);
                (Outcome::Removed(store.remove(&token)), model.remove(&token))
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
        prop_assert_eq!(store.len(), model.held.len(), "len after step {}", step);
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
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()) {
        run(&ops, seed)?;
    }
}
