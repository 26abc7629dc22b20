//! The token store: sessions of one-time tokens, in memory, each decided under its shard's
//! lock by [`crate::session::transition`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::{Clock, Timestamp};
use crate::journal::{Change, ChangeSink};
use crate::meta::{Meta, MetaError, MetaLimits};
use crate::random::{RandomError, TokenSource};
use crate::session::{transition, Action, Outcome, Predecessors, SessionRecord, SessionRules};
use crate::snapshot::StoredSession;
use crate::token::{
    BuildKeyHasher, Presented, Secret, SecretHash, SessionId, Token, SECRET_BYTES, SESSION_ID_BYTES,
};

/// Number of independently locked parts of the store.
///
/// A power of two indexed by the session id's first two random bytes. 1024 keeps each lock's
/// hold and each map's rehash small (a million tokens are ~1,000 per shard, swept in well
/// under a millisecond) while costing only some 50 KiB when empty.
const SHARDS: usize = 1024;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The token is unknown, already used, removed or expired; callers cannot tell which,
    /// so a guesser learns nothing.
    InvalidToken,
    /// No randomness was available for a new token.
    Random(RandomError),
    /// The store holds its maximum number of tokens; existing tokens are untouched.
    Full,
    /// The metadata (after merging an update) exceeds a [`MetaLimits`] bound; the token
    /// presented is untouched.
    MetaLimit(MetaError),
    /// An old token of a live session was presented outside its grace period and
    /// revocation on reuse is on: the session is ended. Clients are answered exactly as
    /// for [`StoreError::InvalidToken`]; the host logs a warning, never with the token.
    Revoked,
    /// A store kept elsewhere (Redis) did not answer within its timeout, or refused; no
    /// session was changed by this request.
    Unavailable,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidToken => f.write_str("InvalidToken"),
            StoreError::Random(err) => err.fmt(f),
            StoreError::Full => f.write_str("token store is full"),
            StoreError::MetaLimit(err) => err.fmt(f),
            StoreError::Revoked => {
                f.write_str("an old token was reused outside its grace: its session is ended")
            }
            StoreError::Unavailable => f.write_str("session store unavailable"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<RandomError> for StoreError {
    fn from(err: RandomError) -> Self {
        StoreError::Random(err)
    }
}

/// The outcome of a successful [`TokenStore::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The token that replaces the one presented (the same for every replay of it
    /// inside its grace period).
    pub token: Token,
    /// The session's metadata after merging the update.
    pub meta: Meta,
    /// Whether this answered a replay inside the grace period (the successor was issued
    /// before) rather than exchanging the current token.
    pub replayed: bool,
}

/// What a [`TokenStore::purge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Expired tokens dropped by this purge.
    pub purged: usize,
    /// Tokens left in the store.
    pub remaining: usize,
    /// When the earliest remaining token expires, if any remain: the host need not purge
    /// before then.
    pub next_expiry: Option<Timestamp>,
}

impl PurgeReport {
    /// Nothing purged, nothing remaining: where a sum of per-shard reports starts.
    pub const NOTHING: PurgeReport = PurgeReport {
        purged: 0,
        remaining: 0,
        next_expiry: None,
    };

    /// The report of two disjoint parts of a store (e.g. two shards) taken together.
    ///
    /// ```
    /// use token_server_core::{PurgeReport, Timestamp};
    /// let a = PurgeReport { purged: 2, remaining: 1, next_expiry: Some(Timestamp(50)) };
    /// let b = PurgeReport { purged: 0, remaining: 3, next_expiry: Some(Timestamp(40)) };
    /// let both = a.combined(b);
    /// assert_eq!((both.purged, both.remaining), (2, 4));
    /// assert_eq!(both.next_expiry, Some(Timestamp(40)));
    /// assert_eq!(PurgeReport::NOTHING.combined(a), a);
    /// ```
    pub fn combined(self, other: PurgeReport) -> PurgeReport {
        PurgeReport {
            purged: self.purged + other.purged,
            remaining: self.remaining + other.remaining,
            next_expiry: match (self.next_expiry, other.next_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// One live token as the dump shows it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    /// When the token stops working.
    pub expires: Timestamp,
    /// Its metadata.
    pub meta: Meta,
}

/// A session begun by [`TokenStore::begin_session`] and not filed yet: a store kept
/// elsewhere files `record` under `id` if the id is free, else begins another.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The key to file the record under.
    pub id: SessionId,
    /// The session's first token, to answer once the record is filed.
    pub token: Token,
    /// The record to file.
    pub record: SessionRecord,
}

/// What [`TokenStore::decide`] made of a presented token and its session's record.
#[derive(Debug, Clone)]
pub struct Decision<T> {
    /// The record to write back: `None` removes the session. Needs no write when it is
    /// `Some` with the version read ([`Decision::changes`] says so).
    pub next: Option<SessionRecord>,
    /// The answer, once the write (if any) has been accepted.
    pub answer: T,
    /// The version of the record decided on, to compare-and-set against.
    pub read_version: u32,
}

impl<T> Decision<T> {
    /// Whether the record must be written back (or removed).
    pub fn changes(&self) -> bool {
        self.next
            .as_ref()
            .is_none_or(|next| next.version != self.read_version)
    }
}

/// The metadata of the tokens a [`TokenStore::sweep_shard`] dropped, freed when this is
/// dropped.
#[must_use = "dropping it frees the swept metadata; keep it only to free it later"]
pub struct Swept(Vec<Meta>);

impl fmt::Debug for Swept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Swept({} entries)", self.0.len())
    }
}

/// One session as this store keeps it: a [`SessionRecord`] without its predecessors (kept
/// in the shard's grace map, only while it has any) and without a version (every decision
/// is taken under the shard lock, so there is nothing to compare-and-set; a journal orders
/// changes by the store's change sequence instead, which costs no byte per session).
///
/// 48 bytes, a third of them the metadata's pointer: a million of these, in hash tables
/// that are between half and seven eighths full, are most of the store's memory, and most
/// sessions have no predecessor to keep.
struct Entry {
    secret_hash: SecretHash,
    started: Timestamp,
    expires: Timestamp,
    meta: Meta,
}

impl Entry {
    fn live_until(&self, rules: &SessionRules) -> Timestamp {
        self.expires.min(rules.session_end(self.started))
    }
}

/// One independently locked part of the store.
#[derive(Default)]
struct Shard {
    sessions: HashMap<SessionId, Entry, BuildKeyHasher>,
    /// The predecessors of the sessions that have any in grace; usually empty.
    grace: HashMap<SessionId, Predecessors, BuildKeyHasher>,
}

impl Shard {
    /// Takes session `id` out, as the record [`transition`] decides on.
    fn take(&mut self, id: &SessionId) -> Option<SessionRecord> {
        let entry = self.sessions.remove(id)?;
        let predecessors = if self.grace.is_empty() {
            Predecessors::NONE
        } else {
            self.grace.remove(id).unwrap_or_default()
        };
        Some(SessionRecord {
            secret_hash: entry.secret_hash,
            started: entry.started,
            expires: entry.expires,
            meta: entry.meta,
            predecessors,
            version: 0,
        })
    }

    /// Files `record` under `id`; the slot must be free (just taken, or checked vacant).
    fn put(&mut self, id: SessionId, record: SessionRecord) {
        if !record.predecessors.is_empty() {
            self.grace.insert(id, record.predecessors);
        }
        self.sessions.insert(
            id,
            Entry {
                secret_hash: record.secret_hash,
                started: record.started,
                expires: record.expires,
                meta: record.meta,
            },
        );
    }

    /// A copy of session `id`'s record, for a state file.
    fn record(&self, id: &SessionId, entry: &Entry) -> SessionRecord {
        SessionRecord {
            secret_hash: entry.secret_hash,
            started: entry.started,
            expires: entry.expires,
            meta: entry.meta.clone(),
            predecessors: self.grace.get(id).cloned().unwrap_or_default(),
            version: 0,
        }
    }
}

/// Sessions of one-time tokens bound to metadata, each token valid for a fixed lifetime
/// from its issue; the rules are [`crate::session::transition`]'s.
///
/// Safe to share between threads (`&self` everywhere) when the clock and token source
/// are: the store is split in independently locked shards, and every decision about a
/// session is taken under its shard's lock.
///
/// ```
/// use std::time::Duration;
/// use token_server_core::{ManualClock, Meta, SeededRandom, StoreError, TokenStore};
///
/// let clock = ManualClock::new(0);
/// let store = TokenStore::new(Duration::from_secs(60), clock.clone(), SeededRandom::new(1));
/// let token = store.create(Meta::from_json(r#"{"user":"ann"}"#).unwrap()).unwrap();
/// clock.advance(Duration::from_secs(59));
/// let update = serde_json::from_str(r#"{"year":2022}"#).unwrap();
/// let next = store.rotate(token.as_str(), Some(update)).unwrap();
/// assert_eq!(next.meta.as_json(), r#"{"user":"ann","year":2022}"#);
/// assert_eq!(store.rotate(token.as_str(), None), Err(StoreError::InvalidToken));
/// ```
pub struct TokenStore<C, R> {
    /// Std mutexes, not async ones: no lock is ever held across an await or for more than
    /// one session's transition, and they work unchanged on wasm32.
    shards: Box<[Mutex<Shard>]>,
    rules: SessionRules,
    clock: C,
    random: R,
    max_tokens: usize,
    /// Sessions held, kept beside the shards so `create` can enforce `max_tokens` without
    /// locking every shard to count.
    held: AtomicUsize,
    /// Told of every change before the operation returns (a native host's journal); `None`
    /// costs one branch per change.
    changes: Option<Box<dyn ChangeSink>>,
    /// The sequence number of the last change reported. Drawn under the shard lock of the
    /// session changed, so one session's changes are numbered in the order they were
    /// decided, and reported after the lock is released: a journal's replay keeps each
    /// session's highest number, whatever order concurrent appends landed in.
    change_sequence: AtomicU64,
}

impl<C: Clock, R: TokenSource> TokenStore<C, R> {
    /// An empty store whose tokens live for `lifetime`, under the seed's rules otherwise
    /// (see [`SessionRules::new`]).
    pub fn new(lifetime: Duration, clock: C, random: R) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        TokenStore {
            shards,
            rules: SessionRules::new(lifetime),
            clock,
            random,
            max_tokens: crate::config::DEFAULT_MAX_TOKENS,
            held: AtomicUsize::new(0),
            changes: None,
            change_sequence: AtomicU64::new(0),
        }
    }

    /// Reports every change of a session (login, exchange, a grace replay that changed the
    /// metadata, end, revocation, removal of an expired session found on use) to `sink`,
    /// after the shard lock is released and before the operation returns, so a host that
    /// answers after the call answers only what `sink` has been told. Purges are not
    /// reported: expiry follows from the recorded times. [`import`](TokenStore::import)
    /// is not reported either: it files what was already recorded.
    pub fn with_change_sink(mut self, sink: Box<dyn ChangeSink>) -> Self {
        self.changes = Some(sink);
        self
    }

    /// Numbers the changes reported from now on after `sequence`, e.g. the highest a
    /// replayed journal holds, so new records are newer than every replayed one.
    pub fn continue_changes_after(&self, sequence: u64) {
        self.change_sequence.fetch_max(sequence, Ordering::Relaxed);
    }

    /// The next change's sequence number; called under the changed session's shard lock.
    fn next_change(&self) -> u64 {
        self.change_sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Caps the sessions held at once; past it [`create`](TokenStore::create) fails with
    /// [`StoreError::Full`] while rotations of existing tokens go on.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Bounds the metadata that an update may grow a session's metadata to.
    pub fn with_meta_limits(mut self, limits: MetaLimits) -> Self {
        self.rules.meta_limits = limits;
        self
    }

    /// Applies `rules` (grace, revocation on reuse, absolute lifetime, limits) instead
    /// of the seed's.
    pub fn with_rules(mut self, rules: SessionRules) -> Self {
        self.rules = rules;
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> &SessionRules {
        &self.rules
    }

    /// The metadata bounds in force.
    pub fn meta_limits(&self) -> MetaLimits {
        self.rules.meta_limits
    }

    /// How long a token stays valid after its issue.
    pub fn lifetime(&self) -> Duration {
        self.rules.token_lifetime
    }

    /// The clock the store reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Starts a session bound to `meta`; returns its first token, valid for the store's
    /// lifetime from now.
    ///
    /// Fails with [`StoreError::Full`] when the store holds its maximum of sessions.
    pub fn create(&self, meta: Meta) -> Result<Token, StoreError> {
        // Reserve the slot first, so concurrent creates cannot overshoot the cap.
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max_tokens {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Full);
        }
        let created = self
            .fresh_secret()
            .map_err(StoreError::from)
            .and_then(|secret| {
                let record = SessionRecord::new(&secret, self.clock.now(), meta, &self.rules);
                self.insert_fresh(&secret, record)
            });
        if created.is_err() {
            // The slot this create was counted for stays empty.
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        created
    }

    /// Exchanges `token` for its successor, the session's metadata merged with `update`
    /// (see [`Meta::merged`]).
    ///
    /// Fails with [`StoreError::InvalidToken`] for a token that is unknown, used, removed
    /// or expired, even if a purge has not dropped it yet. Of several concurrent rotations
    /// of one token exactly one issues a successor; with a rotation grace the others get
    /// that same successor, without one they fail. A refused update
    /// ([`StoreError::MetaLimit`]) leaves the session exactly as it was, at every instant.
    pub fn rotate(
        &self,
        token: &str,
        update: Option<Map<String, Value>>,
    ) -> Result<Rotated, StoreError> {
        let presented = Presented::parse(token).ok_or(StoreError::InvalidToken)?;
        // Drawn before anything is decided: a failing randomness source must not cost the
        // client its session.
        let fresh = self.fresh_secret()?;
        let mut shard = self.shard(&presented.id);
        let record = shard.take(&presented.id).ok_or(StoreError::InvalidToken)?;
        let decision = self.decide_exchange(&presented, record, update, fresh);
        self.file_decided(shard, presented.id, decision.read_version, decision.next);
        decision.answer
    }

    /// Ends the session of `token` (also when presented with a token in its grace);
    /// returns whether a live session ended.
    pub fn remove(&self, token: &str) -> bool {
        let Some(presented) = Presented::parse(token) else {
            return false;
        };
        let mut shard = self.shard(&presented.id);
        let Some(record) = shard.take(&presented.id) else {
            return false;
        };
        let decision = self.decide_end(&presented, record);
        self.file_decided(shard, presented.id, decision.read_version, decision.next);
        decision.answer
    }

    /// Begins a session bound to `meta` at the store's time, without filing it: for a
    /// store that keeps its records elsewhere (the id is drawn here, and may be taken
    /// there; then begin another).
    pub fn begin_session(&self, meta: Meta) -> Result<NewSession, StoreError> {
        let secret = self.fresh_secret()?;
        let id = self.fresh_id()?;
        let record = SessionRecord::new(&secret, self.clock.now(), meta, &self.rules);
        Ok(NewSession {
            id,
            token: Token::new(id, &secret),
            record,
        })
    }

    /// A fresh secret from the store's randomness, for the successor of a rotation decided
    /// by [`TokenStore::decide_exchange`]; drawn once per request, before any decision.
    pub fn draw_secret(&self) -> Result<Secret, StoreError> {
        Ok(self.fresh_secret()?)
    }

    /// Decides, by [`transition`] at the store's time under its rules, what an exchange of
    /// `presented` with `update` does to its session's `record`; `fresh` is the secret a
    /// successor gets. The in-memory store applies this under its shard lock; a store kept
    /// elsewhere writes [`Decision::next`] back with a compare-and-set on
    /// [`Decision::read_version`], and decides again on the record it then reads if that
    /// fails. Both answer exactly [`Decision::answer`].
    pub fn decide_exchange(
        &self,
        presented: &Presented,
        record: SessionRecord,
        update: Option<Map<String, Value>>,
        fresh: Secret,
    ) -> Decision<Result<Rotated, StoreError>> {
        let read_version = record.version;
        let (next, outcome) = transition(
            record,
            &presented.secret,
            Action::Exchange(update),
            self.clock.now(),
            fresh,
            &self.rules,
        );
        let meta = next.as_ref().map(|record| record.meta.clone());
        let answer = rotation_result(presented.id, outcome, meta);
        Decision {
            next,
            answer,
            read_version,
        }
    }

    /// Decides what ending the session of `presented` (`DELETE`) does to its `record`;
    /// the answer is whether a live session ended. See [`TokenStore::decide_exchange`].
    pub fn decide_end(&self, presented: &Presented, record: SessionRecord) -> Decision<bool> {
        let read_version = record.version;
        // Nothing is issued on an end; the fresh secret is never used.
        let unused = Secret::from_bytes([0; SECRET_BYTES]);
        let (next, outcome) = transition(
            record,
            &presented.secret,
            Action::End,
            self.clock.now(),
            unused,
            &self.rules,
        );
        Decision {
            next,
            answer: matches!(outcome, Outcome::Ended | Outcome::Revoked),
            read_version,
        }
    }

    /// The dump line of a session `record`, `None` once it is over: what
    /// [`TokenStore::dump`] lists of each session, for a store kept elsewhere.
    pub fn dump_entry(&self, record: &SessionRecord) -> Option<DumpEntry> {
        let expires = record.live_until(&self.rules);
        (self.clock.now() < expires).then(|| DumpEntry {
            expires,
            meta: record.meta.clone(),
        })
    }

    /// Drops every expired session.
    ///
    /// Locks one shard at a time, so concurrent requests wait at most for one shard's
    /// sweep, never for the whole store.
    pub fn purge(&self) -> PurgeReport {
        (0..self.shard_count()).fold(PurgeReport::NOTHING, |report, index| {
            report.combined(self.purge_shard(index))
        })
    }

    /// Number of independently locked shards; valid indices for [`purge_shard`] are
    /// `0..shard_count()`.
    ///
    /// [`purge_shard`]: TokenStore::purge_shard
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Drops the expired sessions of one shard only, holding just that shard's lock; the
    /// report counts that shard alone. An index past [`shard_count`] purges nothing.
    ///
    /// [`purge`](TokenStore::purge) is this over every shard; a host that wants to pace a
    /// large purge, or a benchmark that times each lock hold, calls it shard by shard.
    ///
    /// [`shard_count`]: TokenStore::shard_count
    pub fn purge_shard(&self, index: usize) -> PurgeReport {
        let (report, swept) = self.sweep_shard(index);
        drop(swept);
        report
    }

    /// [`purge_shard`](TokenStore::purge_shard), except that the expired metadata is
    /// handed back instead of freed: the lock is released when this returns and the memory
    /// when the caller drops the [`Swept`], so the two can be timed apart.
    ///
    /// Also forgets predecessors whose grace is over, so a session rotated once does not
    /// keep its grace entry until its next rotation.
    pub fn sweep_shard(&self, index: usize) -> (PurgeReport, Swept) {
        let now = self.clock.now();
        let mut report = PurgeReport::NOTHING;
        let Some(shard) = self.shards.get(index) else {
            return (report, Swept(Vec::new()));
        };
        // Expired metadata is moved out under the lock and freed after it is released:
        // the frees are most of a sweep's cost.
        let mut shard = lock(shard);
        let Shard { sessions, grace } = &mut *shard;
        let before = sessions.len();
        let mut expired = Vec::new();
        sessions.retain(|_, entry| {
            let live_until = entry.live_until(&self.rules);
            let live = now < live_until;
            if live {
                report.next_expiry = Some(match report.next_expiry {
                    Some(next) => next.min(live_until),
                    None => live_until,
                });
            } else {
                if expired.capacity() == 0 {
                    // Sized once, at the first expired entry: the lock is never held across
                    // a reallocation, and a shard with nothing expired allocates nothing.
                    expired.reserve_exact(before);
                }
                expired.push(entry.meta.take());
            }
            live
        });
        if !grace.is_empty() {
            grace.retain(|id, predecessors| sessions.contains_key(id) && predecessors.prune(now));
        }
        report.purged = before - sessions.len();
        report.remaining = sessions.len();
        self.held.fetch_sub(report.purged, Ordering::Relaxed);
        (report, Swept(expired))
    }

    /// Every live session as it is kept at rest (id, secret hash, times, metadata, sealed
    /// grace successors), for a state file. Locks one shard at a time, so requests are
    /// never stalled for the whole copy.
    pub fn export(&self) -> Vec<StoredSession> {
        let mut sessions = Vec::new();
        for index in 0..self.shard_count() {
            self.export_shard(index, &mut sessions);
        }
        sessions
    }

    /// [`export`](TokenStore::export) of one shard only, appended to `sessions`, holding
    /// just that shard's lock; for a host that paces a large export. An index past
    /// [`shard_count`](TokenStore::shard_count) exports nothing.
    pub fn export_shard(&self, index: usize, sessions: &mut Vec<StoredSession>) {
        let now = self.clock.now();
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        let shard = lock(shard);
        sessions.extend(
            shard
                .sessions
                .iter()
                .filter(|(_, entry)| now < entry.live_until(&self.rules))
                .map(|(id, entry)| StoredSession {
                    id: *id,
                    record: shard.record(id, entry),
                }),
        );
    }

    /// Files sessions read from a state file, each valid until its original expiry;
    /// expired ones are dropped. Returns how many were filed. Meant for an empty store at
    /// start.
    pub fn import(&self, sessions: impl IntoIterator<Item = StoredSession>) -> usize {
        let now = self.clock.now();
        let mut filed = 0;
        for session in sessions {
            if now >= session.record.live_until(&self.rules) {
                continue;
            }
            let mut shard = self.shard(&session.id);
            if !shard.sessions.contains_key(&session.id) {
                shard.put(session.id, session.record);
                self.held.fetch_add(1, Ordering::Relaxed);
                filed += 1;
            }
        }
        filed
    }

    /// Every live session's expiry and metadata, earliest expiry first; never a token.
    pub fn dump(&self) -> Vec<DumpEntry> {
        let now = self.clock.now();
        let mut entries = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            entries.extend(shard.sessions.values().filter_map(|entry| {
                let expires = entry.live_until(&self.rules);
                (now < expires).then(|| DumpEntry {
                    expires,
                    meta: entry.meta.clone(),
                })
            }));
        }
        entries.sort_by_key(|entry| entry.expires);
        entries
    }

    /// Sessions held, including expired ones a purge has not dropped yet.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).sessions.len())
            .sum()
    }

    /// Tokens held, as counted beside the shards for `max_tokens`: no lock taken, so a
    /// metrics scrape can read it as often as it likes. It may be off by the creates in
    /// flight at that instant, which [`len`](TokenStore::len) (locking every shard) is not.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the store holds no session at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[id.shard(SHARDS)])
    }

    pub(crate) fn fresh_secret(&self) -> Result<Secret, RandomError> {
        let mut bytes = [0u8; SECRET_BYTES];
        self.random.fill(&mut bytes)?;
        Ok(Secret::from_bytes(bytes))
    }

    pub(crate) fn fresh_id(&self) -> Result<SessionId, RandomError> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        self.random.fill(&mut bytes)?;
        Ok(SessionId(bytes))
    }

    /// Files `record` under a fresh session id and returns the token of `secret` in it,
    /// drawing another id in the (rare, but possible with a seeded test source) case that
    /// the id is taken.
    fn insert_fresh(&self, secret: &Secret, record: SessionRecord) -> Result<Token, StoreError> {
        loop {
            let id = self.fresh_id()?;
            let mut shard = self.shard(&id);
            if !shard.sessions.contains_key(&id) {
                match &self.changes {
                    None => shard.put(id, record),
                    Some(sink) => {
                        let session = StoredSession {
                            id,
                            record: record.clone(),
                        };
                        shard.put(id, record);
                        let sequence = self.next_change();
                        drop(shard);
                        sink.changed(Change::Upsert {
                            session: &session,
                            sequence,
                        });
                    }
                }
                return Ok(Token::new(id, secret));
            }
        }
    }

    /// Files what [`transition`] left of session `id`: the record, or nothing (the session
    /// is over).
    fn file(&self, shard: &mut Shard, id: SessionId, next: Option<SessionRecord>) {
        match next {
            Some(record) => shard.put(id, record),
            None => {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Files the record a decision left (`None`: the session is over) and tells the change
    /// sink, if any, after releasing the shard lock (the change is numbered under it).
    fn file_decided(
        &self,
        mut shard: MutexGuard<'_, Shard>,
        id: SessionId,
        read_version: u32,
        next: Option<SessionRecord>,
    ) {
        match &self.changes {
            None => self.file(&mut shard, id, next),
            Some(sink) => {
                let change = self.file_changed(&mut shard, id, read_version, next);
                drop(shard);
                report(&**sink, change, id);
            }
        }
    }

    /// [`file`](TokenStore::file), returning what a change sink must be told: a copy of a
    /// record whose version moved on from `version` (what [`transition`] does to a record
    /// it changes), a removal, or (nothing changed) the metadata alone for the answer; a
    /// change is numbered here, under the lock.
    fn file_changed(
        &self,
        shard: &mut Shard,
        id: SessionId,
        version: u32,
        next: Option<SessionRecord>,
    ) -> Filed {
        let filed = match &next {
            None => Filed::Removed {
                sequence: self.next_change(),
            },
            Some(record) if record.version != version => {
                Filed::Changed(record.clone(), self.next_change())
            }
            Some(record) => Filed::Unchanged(record.meta.clone()),
        };
        self.file(shard, id, next);
        filed
    }
}

/// What [`TokenStore::file_changed`] saw, to report once the shard lock is released.
enum Filed {
    /// The record changed; this is a copy of it, and the change's sequence number.
    Changed(SessionRecord, u64),
    /// The record is unchanged; this is its metadata.
    Unchanged(Meta),
    /// The session is over, by the change of this sequence number.
    Removed { sequence: u64 },
}

/// Tells `sink` of a change of session `id`; returns the session's metadata, if it lives on.
fn report(sink: &dyn ChangeSink, filed: Filed, id: SessionId) -> Option<Meta> {
    match filed {
        Filed::Changed(record, sequence) => {
            let session = StoredSession { id, record };
            sink.changed(Change::Upsert {
                session: &session,
                sequence,
            });
            Some(session.record.meta)
        }
        Filed::Unchanged(meta) => Some(meta),
        Filed::Removed { sequence } => {
            sink.changed(Change::Removal { id, sequence });
            None
        }
    }
}

/// What an exchange of a token of session `id` answers, from the [`transition`]'s outcome
/// and the metadata of the record that follows (`None`: the session is over).
pub(crate) fn rotation_result(
    id: SessionId,
    outcome: Outcome,
    meta: Option<Meta>,
) -> Result<Rotated, StoreError> {
    match (outcome, meta) {
        (Outcome::Exchanged { successor }, Some(meta)) => Ok(Rotated {
            token: Token::new(id, &successor),
            meta,
            replayed: false,
        }),
        (Outcome::Replayed { successor }, Some(meta)) => Ok(Rotated {
            token: Token::new(id, &successor),
            meta,
            replayed: true,
        }),
        (Outcome::Revoked, _) => Err(StoreError::Revoked),
        (Outcome::Refused(err), _) => Err(StoreError::MetaLimit(err)),
        _ => Err(StoreError::InvalidToken),
    }
}

/// Locks a shard, shrugging off poisoning: no code panics while holding a shard, and a map
/// is never left half-updated by the operations above.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
