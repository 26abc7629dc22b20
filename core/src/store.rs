//! The token store: issue, rotate, remove and purge one-time tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::{Clock, Timestamp};
use crate::meta::{Meta, MetaError, MetaLimits};
use crate::random::{RandomError, TokenSource};
use crate::snapshot::StoredToken;
use crate::token::{BuildKeyHasher, Token, TokenKey, TokenSecret, TOKEN_BYTES};

/// Number of independently locked parts of the store.
///
/// A power of two indexed by the token's first two random bytes. 1024 keeps each lock's
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
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidToken => f.write_str("InvalidToken"),
            StoreError::Random(err) => err.fmt(f),
            StoreError::Full => f.write_str("token store is full"),
            StoreError::MetaLimit(err) => err.fmt(f),
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
    /// The token that replaces the one presented.
    pub token: Token,
    /// The metadata after merging the update.
    pub meta: Meta,
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

/// The metadata of the tokens a [`TokenStore::sweep_shard`] dropped, freed when this is
/// dropped.
#[must_use = "dropping it frees the swept metadata; keep it only to free it later"]
pub struct Swept(Vec<Meta>);

impl fmt::Debug for Swept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Swept({} entries)", self.0.len())
    }
}

struct Entry {
    expires: Timestamp,
    meta: Meta,
}

type Shard = HashMap<TokenKey, Entry, BuildKeyHasher>;

/// One-time tokens bound to metadata, each valid for a fixed lifetime from its issue.
///
/// Safe to share between threads (`&self` everywhere) when the clock and token source
/// are: the store is split in independently locked shards.
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
    /// one map operation, and they work unchanged on wasm32.
    shards: Box<[Mutex<Shard>]>,
    lifetime: Duration,
    clock: C,
    random: R,
    meta_limits: MetaLimits,
    max_tokens: usize,
    /// Tokens held, kept beside the shards so `create` can enforce `max_tokens` without
    /// locking every shard to count.
    held: AtomicUsize,
}

impl<C: Clock, R: TokenSource> TokenStore<C, R> {
    /// An empty store whose tokens live for `lifetime`.
    pub fn new(lifetime: Duration, clock: C, random: R) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        TokenStore {
            shards,
            lifetime,
            clock,
            random,
            meta_limits: MetaLimits::default(),
            max_tokens: crate::config::DEFAULT_MAX_TOKENS,
            held: AtomicUsize::new(0),
        }
    }

    /// Caps the tokens held at once; past it [`create`](TokenStore::create) fails with
    /// [`StoreError::Full`] while rotations of existing tokens go on.
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Bounds the metadata that an update may grow a token's metadata to.
    pub fn with_meta_limits(mut self, limits: MetaLimits) -> Self {
        self.meta_limits = limits;
        self
    }

    /// The metadata bounds in force.
    pub fn meta_limits(&self) -> MetaLimits {
        self.meta_limits
    }

    /// How long a token stays valid after its issue.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The clock the store reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Issues a new token bound to `meta`, valid for the store's lifetime from now.
    ///
    /// Fails with [`StoreError::Full`] when the store holds its maximum of tokens.
    pub fn create(&self, meta: Meta) -> Result<Token, StoreError> {
        // Reserve the slot first, so concurrent creates cannot overshoot the cap.
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max_tokens {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Full);
        }
        let expires = self.clock.now().saturating_add(self.lifetime);
        let secret = match self.fresh_secret() {
            Ok(secret) => secret,
            Err(err) => {
                self.held.fetch_sub(1, Ordering::Relaxed);
                return Err(err.into());
            }
        };
        self.insert_fresh(secret, Entry { expires, meta })
    }

    /// Consumes `token` and issues a new one with a full lifetime, its metadata merged with
    /// `update` (see [`Meta::merged`]).
    ///
    /// Fails with [`StoreError::InvalidToken`] for a token that is unknown, used, removed
    /// or expired, even if a purge has not dropped it yet. Of several concurrent rotations
    /// of one token exactly one succeeds.
    pub fn rotate(
        &self,
        token: &str,
        update: Option<Map<String, Value>>,
    ) -> Result<Rotated, StoreError> {
        let key = TokenKey::parse(token).ok_or(StoreError::InvalidToken)?;
        // Drawn before the old token is consumed: a failing randomness source must not
        // cost the client its session.
        let fresh = self.fresh_secret()?;
        let now = self.clock.now();
        let entry = self.shard(&key).remove(&key);
        let Some(entry) = entry else {
            return Err(StoreError::InvalidToken);
        };
        if now >= entry.expires {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::InvalidToken);
        }
        let meta = match update {
            Some(update) => match entry.meta.merged_within(update, &self.meta_limits) {
                Ok(meta) => meta,
                Err(err) => {
                    // Refused: the presented token goes back, valid until its old expiry.
                    self.shard(&key).insert(key, entry);
                    return Err(StoreError::MetaLimit(err));
                }
            },
            None => entry.meta,
        };
        let meta_out = meta.clone();
        let token = self.insert_fresh(
            fresh,
            Entry {
                expires: now.saturating_add(self.lifetime),
                meta,
            },
        )?;
        Ok(Rotated {
            token,
            meta: meta_out,
        })
    }

    /// Removes `token`; returns whether it was a live token.
    pub fn remove(&self, token: &str) -> bool {
        let Some(key) = TokenKey::parse(token) else {
            return false;
        };
        let now = self.clock.now();
        let removed = self.shard(&key).remove(&key);
        if removed.is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        removed.is_some_and(|entry| now < entry.expires)
    }

    /// Drops every expired token.
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

    /// Drops the expired tokens of one shard only, holding just that shard's lock; the
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
    pub fn sweep_shard(&self, index: usize) -> (PurgeReport, Swept) {
        let now = self.clock.now();
        let mut report = PurgeReport::NOTHING;
        let Some(shard) = self.shards.get(index) else {
            return (report, Swept(Vec::new()));
        };
        // Expired metadata is moved out under the lock and freed after it is released:
        // the frees are most of a sweep's cost.
        let mut shard = lock(shard);
        let before = shard.len();
        let mut expired = Vec::new();
        shard.retain(|_, entry| {
            let live = now < entry.expires;
            if live {
                report.next_expiry = Some(match report.next_expiry {
                    Some(next) => next.min(entry.expires),
                    None => entry.expires,
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
        report.purged = before - shard.len();
        report.remaining = shard.len();
        self.held.fetch_sub(report.purged, Ordering::Relaxed);
        (report, Swept(expired))
    }

    /// Every live token as it is kept at rest (key hash, expiry, metadata), for a state
    /// file. Locks one shard at a time, so requests are never stalled for the whole copy.
    pub fn export(&self) -> Vec<StoredToken> {
        let mut tokens = Vec::new();
        for index in 0..self.shard_count() {
            self.export_shard(index, &mut tokens);
        }
        tokens
    }

    /// [`export`](TokenStore::export) of one shard only, appended to `tokens`, holding just
    /// that shard's lock; for a host that paces a large export. An index past
    /// [`shard_count`](TokenStore::shard_count) exports nothing.
    pub fn export_shard(&self, index: usize, tokens: &mut Vec<StoredToken>) {
        let now = self.clock.now();
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        let shard = lock(shard);
        tokens.extend(
            shard
                .iter()
                .filter(|(_, entry)| now < entry.expires)
                .map(|(key, entry)| StoredToken {
                    key_hash: key.0,
                    expires: entry.expires,
                    meta: entry.meta.clone(),
                }),
        );
    }

    /// Files tokens read from a state file, each valid until its original expiry; expired
    /// ones are dropped. Returns how many were filed. Meant for an empty store at start.
    pub fn import(&self, tokens: impl IntoIterator<Item = StoredToken>) -> usize {
        let now = self.clock.now();
        let mut filed = 0;
        for token in tokens.into_iter().filter(|token| now < token.expires) {
            let key = TokenKey(token.key_hash);
            let entry = Entry {
                expires: token.expires,
                meta: token.meta,
            };
            if self.shard(&key).insert(key, entry).is_none() {
                self.held.fetch_add(1, Ordering::Relaxed);
                filed += 1;
            }
        }
        filed
    }

    /// Every live token's expiry and metadata, earliest expiry first; never the tokens.
    pub fn dump(&self) -> Vec<DumpEntry> {
        let now = self.clock.now();
        let mut entries = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            entries.extend(
                shard
                    .values()
                    .filter(|entry| now < entry.expires)
                    .map(|entry| DumpEntry {
                        expires: entry.expires,
                        meta: entry.meta.clone(),
                    }),
            );
        }
        entries.sort_by_key(|entry| entry.expires);
        entries
    }

    /// Tokens held, including expired ones a purge has not dropped yet.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Tokens held, as counted beside the shards for `max_tokens`: no lock taken, so a
    /// metrics scrape can read it as often as it likes. It may be off by the creates in
    /// flight at that instant, which [`len`](TokenStore::len) (locking every shard) is not.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the store holds no token at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &TokenKey) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(usize::from(key.0[0]) | usize::from(key.0[1]) << 8) % SHARDS])
    }

    fn fresh_secret(&self) -> Result<TokenSecret, RandomError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        self.random.fill(&mut bytes)?;
        Ok(TokenSecret(bytes))
    }

    /// Files `entry` under the key of `secret` and returns the token spelling the secret,
    /// drawing another secret in the (astronomically unlikely, but possible with a seeded
    /// test source) case that the key is taken.
    fn insert_fresh(&self, mut secret: TokenSecret, entry: Entry) -> Result<Token, StoreError> {
        loop {
            let key = secret.key();
            {
                let mut shard = self.shard(&key);
                if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(key) {
                    slot.insert(entry);
                    return Ok(Token::from_secret(&secret));
                }
            }
            secret = match self.fresh_secret() {
                Ok(secret) => secret,
                Err(err) => {
                    // The slot this insert was counted for stays empty.
                    self.held.fetch_sub(1, Ordering::Relaxed);
                    return Err(err.into());
                }
            };
        }
    }
}

/// Locks a shard, shrugging off poisoning: no code panics while holding a shard, and a map
/// is never left half-updated by the operations above.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
