//! The session rules, once: one pure [`transition`] from a session record and a presented
//! secret to the record that follows and the answer.
//!
//! Every store applies this function and nothing else: the in-memory store under its shard
//! lock, a shared store (Redis, a Durable Object) as read, transition, compare-and-set on
//! [`SessionRecord::version`]. So expiry, one-time use, the rotation grace period,
//! revocation on reuse, the absolute lifetime, the merge and the metadata limits cannot
//! drift between stores.
//!
//! ```
//! use std::time::Duration;
//! use token_server_core::session::{transition, Action, Outcome, SessionRecord, SessionRules};
//! use token_server_core::{Meta, Secret, Timestamp};
//!
//! let rules = SessionRules {
//!     rotation_grace: Some(Duration::from_secs(10)),
//!     ..SessionRules::new(Duration::from_secs(3600))
//! };
//! let a = Secret::from_bytes([1; 16]);
//! let b = Secret::from_bytes([2; 16]);
//! let record = SessionRecord::new(&a, Timestamp(0), Meta::default(), &rules);
//! // A is exchanged for B at t = 5 s...
//! let (record, outcome) = transition(record, &a, Action::Exchange(None), Timestamp(5_000), b.clone(), &rules);
//! assert_eq!(outcome, Outcome::Exchanged { successor: b.clone() });
//! // ...and presented again inside its grace: the same B, nothing new issued.
//! let fresh = Secret::from_bytes([3; 16]);
//! let (_, outcome) = transition(record.unwrap(), &a, Action::Exchange(None), Timestamp(14_999), fresh, &rules);
//! assert_eq!(outcome, Outcome::Replayed { successor: b });
//! ```

use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::meta::{Meta, MetaError, MetaLimits};
use crate::token::{Secret, SecretHash, SECRET_BYTES};

/// Most predecessors a session keeps in their grace period. A client exchanging faster
/// than 8 times per grace period loses the grace of its oldest tokens (a replay of those
/// is then a reuse); 8 covers any browser's burst of parallel requests and bounds what one
/// session can cost.
pub const MAX_PREDECESSORS: usize = 8;

/// The rules a store applies, from the command line (or the JS constructors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRules {
    /// How long a token works after its issue.
    pub token_lifetime: Duration,
    /// How long an exchanged token still answers with its successor; `None`: not at all.
    pub rotation_grace: Option<Duration>,
    /// Whether presenting an old token outside its grace ends its session.
    pub revoke_on_reuse: bool,
    /// How long a session lasts at most from its login, however often it rotates;
    /// `None`: no limit.
    pub max_session_lifetime: Option<Duration>,
    /// Bounds on the metadata an update may grow a session's metadata to.
    pub meta_limits: MetaLimits,
}

impl SessionRules {
    /// The seed's rules: tokens of `token_lifetime`, no grace, no revocation, no absolute
    /// lifetime, the default metadata limits.
    pub fn new(token_lifetime: Duration) -> SessionRules {
        SessionRules {
            token_lifetime,
            rotation_grace: None,
            revoke_on_reuse: false,
            max_session_lifetime: None,
            meta_limits: MetaLimits::default(),
        }
    }

    /// When a session started at `started` ends however often it rotates.
    pub fn session_end(&self, started: Timestamp) -> Timestamp {
        match self.max_session_lifetime {
            Some(max) => started.saturating_add(max),
            None => Timestamp(u64::MAX),
        }
    }
}

/// A token exchanged inside the last grace period, kept so a replay of it can be answered
/// with the same successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predecessor {
    /// The exchanged token's secret hash.
    pub secret_hash: SecretHash,
    /// The successor's secret, XORed with a pad derived from the exchanged token's secret
    /// (see [`seal`]): only a holder of the exchanged token can recover it, so nothing at
    /// rest is a usable token.
    pub sealed_successor: [u8; SECRET_BYTES],
    /// When the grace ends: the exchange time plus the grace period.
    pub deadline: Timestamp,
}

/// A session's predecessors still (possibly) in grace, oldest first, at most
/// [`MAX_PREDECESSORS`]. Unallocated while empty, as most sessions' are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Predecessors(Vec<Predecessor>);

impl Predecessors {
    /// No predecessors.
    pub const NONE: Predecessors = Predecessors(Vec::new());

    /// The predecessors, oldest first.
    pub fn as_slice(&self) -> &[Predecessor] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops those whose grace ended at or before `now`; returns whether any are left.
    pub fn prune(&mut self, now: Timestamp) -> bool {
        self.0.retain(|p| now < p.deadline);
        !self.0.is_empty()
    }

    fn push(&mut self, predecessor: Predecessor) {
        if self.0.capacity() == 0 {
            // Most sessions in grace hold one predecessor: no room for four.
            self.0.reserve_exact(1);
        }
        self.0.push(predecessor);
        if self.0.len() > MAX_PREDECESSORS {
            self.0.remove(0);
        }
    }
}

impl From<Vec<Predecessor>> for Predecessors {
    fn from(list: Vec<Predecessor>) -> Self {
        Predecessors(list)
    }
}

/// One session as a store keeps it (the session id is the store's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The current token's secret hash.
    pub secret_hash: SecretHash,
    /// The login time, from which the absolute lifetime counts.
    pub started: Timestamp,
    /// When the current token stops working: its issue plus the token lifetime, capped by
    /// the session's end.
    pub expires: Timestamp,
    /// The session's metadata; updates apply to the session, whichever token carries them.
    pub meta: Meta,
    /// Exchanged tokens still in their grace period.
    pub predecessors: Predecessors,
    /// Bumped by every change, so a shared store can compare-and-set (and skip the write
    /// when it did not change). 32 bits: a store compares it only between its own read and
    /// write, so wrapping is harmless. The in-memory store, deciding under its shard lock,
    /// does not keep it (its journal orders changes by a store-wide sequence instead).
    pub version: u32,
}

impl SessionRecord {
    /// A session logged in at `now` whose first token has `secret`.
    pub fn new(secret: &Secret, now: Timestamp, meta: Meta, rules: &SessionRules) -> Self {
        SessionRecord {
            secret_hash: secret.hash(),
            started: now,
            expires: now
                .saturating_add(rules.token_lifetime)
                .min(rules.session_end(now)),
            meta,
            predecessors: Predecessors::NONE,
            version: 0,
        }
    }

    /// Until when the session works under `rules`: its current token's expiry, or its
    /// absolute end if that comes first (the limit may be newer than the record).
    pub fn live_until(&self, rules: &SessionRules) -> Timestamp {
        self.expires.min(rules.session_end(self.started))
    }
}

/// What the presented token asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `PUT`: a successor, with this update merged into the session's metadata.
    Exchange(Option<Map<String, Value>>),
    /// `DELETE`: end the session.
    End,
}

/// The answer of a [`transition`]. The metadata to answer with is the returned record's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The current token was exchanged: `successor` is the new current secret.
    Exchanged {
        /// The secret of the token to hand out.
        successor: Secret,
    },
    /// A token inside its grace period was presented again: the successor it was
    /// exchanged for, the same for every replay; the update (if any) is applied.
    Replayed {
        /// The secret of the token to hand out (already issued once).
        successor: Secret,
    },
    /// The session ended on request (`DELETE`).
    Ended,
    /// The token does not work (expired, used, or never issued); nothing was revoked.
    Invalid,
    /// An old token of a live session was presented outside its grace, and
    /// revocation on reuse is on: the session is ended. Answered like [`Outcome::Invalid`];
    /// the host logs a warning (never with the token).
    Revoked,
    /// The update would take the metadata past a limit; the session is unchanged.
    Refused(MetaError),
}

/// Decides what `presented` does to the session `record` at `now` under `rules`.
///
/// Returns the record that follows (`None`: the session is over and must be removed) and
/// the answer. `fresh` is the secret a successor gets if one is issued; drawing it is the
/// caller's job, so a failing randomness source fails before anything changes. A returned
/// record with an unchanged [`SessionRecord::version`] needs no write.
pub fn transition(
    mut record: SessionRecord,
    presented: &Secret,
    action: Action,
    now: Timestamp,
    fresh: Secret,
    rules: &SessionRules,
) -> (Option<SessionRecord>, Outcome) {
    if now >= record.live_until(rules) {
        // Expired (or past its absolute end): gone, for every token of it.
        return (None, Outcome::Invalid);
    }
    let hash = presented.hash();
    if hash == record.secret_hash {
        let update = match action {
            Action::End => return (None, Outcome::Ended),
            Action::Exchange(update) => update,
        };
        let merged = match merge(&record.meta, update, rules) {
            Ok(merged) => merged,
            Err(err) => return (Some(record), Outcome::Refused(err)),
        };
        let SessionRecord {
            started,
            meta,
            mut predecessors,
            version,
            ..
        } = record;
        predecessors.prune(now);
        if let Some(grace) = rules.rotation_grace {
            predecessors.push(Predecessor {
                secret_hash: hash,
                sealed_successor: seal(&fresh, presented),
                deadline: now.saturating_add(grace),
            });
        }
        let next = SessionRecord {
            secret_hash: fresh.hash(),
            started,
            expires: now
                .saturating_add(rules.token_lifetime)
                .min(rules.session_end(started)),
            meta: merged.unwrap_or(meta),
            predecessors,
            version: version.wrapping_add(1),
        };
        return (Some(next), Outcome::Exchanged { successor: fresh });
    }
    let in_grace = record
        .predecessors
        .as_slice()
        .iter()
        .find(|p| p.secret_hash == hash && now < p.deadline);
    let Some(predecessor) = in_grace else {
        if rules.revoke_on_reuse {
            return (None, Outcome::Revoked);
        }
        return (Some(record), Outcome::Invalid);
    };
    let successor = Secret(seal(&Secret(predecessor.sealed_successor), presented));
    let successor_hash = successor.hash();
    // The successor must still work: the current token, or itself in its grace. Under one
    // grace and one clock a successor's grace outlasts its predecessor's; exchanges decided
    // under different graces (a restart, instances sharing a store) or clocks a little
    // apart can break that, and a successor past its grace would be handed out as a reuse.
    let usable = successor_hash == record.secret_hash
        || record
            .predecessors
            .as_slice()
            .iter()
            .any(|p| p.secret_hash == successor_hash && now < p.deadline);
    if !usable {
        // Answer nothing rather than a dead or wrong token (also for a corrupt record).
        return (Some(record), Outcome::Invalid);
    }
    let update = match action {
        Action::End => return (None, Outcome::Ended),
        Action::Exchange(update) => update,
    };
    match merge(&record.meta, update, rules) {
        Ok(Some(meta)) => {
            record.meta = meta;
            record.version = record.version.wrapping_add(1);
        }
        Ok(None) => {}
        Err(err) => return (Some(record), Outcome::Refused(err)),
    }
    (Some(record), Outcome::Replayed { successor })
}

/// The merged metadata, `None` when there is nothing to merge.
fn merge(
    meta: &Meta,
    update: Option<Map<String, Value>>,
    rules: &SessionRules,
) -> Result<Option<Meta>, MetaError> {
    match update {
        Some(update) if !update.is_empty() => {
            meta.merged_within(update, &rules.meta_limits).map(Some)
        }
        _ => Ok(None),
    }
}

/// `secret` XOR the first 16 bytes of SHA-256("token-server seal" ‖ `key`): seals a
/// successor with its predecessor's secret, and unseals it again.
///
/// A one-time pad: each predecessor seals exactly one successor, and the pad is as
/// unguessable as the predecessor's secret, of which the store keeps only a (different)
/// hash.
pub fn seal(secret: &Secret, key: &Secret) -> [u8; SECRET_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(b"token-server seal");
    hasher.update(key.0);
    let pad = hasher.finalize();
    let mut sealed = secret.0;
    for (byte, pad) in sealed.iter_mut().zip(pad.iter()) {
        *byte ^= pad;
    }
    sealed
}

#[cfg(test)]
mod tests;
