//! The token a client holds: a session id and a secret, and the hashes the store keeps of it.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use sha2::{Digest, Sha256};

/// Random bytes of a session id: 64 bits, drawn again on the (rare) collision, so ids need
/// not be unguessable on their own; the secret is what makes a token unguessable.
pub const SESSION_ID_BYTES: usize = 8;

/// Random bytes of a token's secret: 128 bits, unguessable by any online attack.
pub const SECRET_BYTES: usize = 16;

/// Bytes a token spells: session id then secret.
pub const TOKEN_BYTES: usize = SESSION_ID_BYTES + SECRET_BYTES;

/// Characters per token: 24 bytes in base64url (no padding is needed for 24 bytes).
pub const TOKEN_LEN: usize = 32;

/// Characters of a legacy token, issued before sessions (state file format v1): 16 random
/// bytes in unpadded base64url. Still accepted, so an upgrade logs nobody out.
pub const LEGACY_TOKEN_LEN: usize = 22;

/// Bytes of the hash the store keeps of a secret: the first 16 bytes of its SHA-256.
pub const SECRET_HASH_BYTES: usize = 16;

/// RFC 4648 base64url: only characters that are safe in URLs and cookies.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A token as handed to clients: 32 base64url characters (opaque to them).
///
/// Held inline rather than as a `String`: every create and rotation makes one, and an
/// allocation and its free were a few percent of either (more in wasm, whose allocator is
/// slower).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// The token text.
    pub fn as_str(&self) -> &str {
        // Only base64url characters are ever written, so this is never the empty fallback.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The token text, as an owned string.
    pub fn into_string(self) -> String {
        self.as_str().to_owned()
    }

    /// The token of session `id` whose current secret is `secret`.
    pub fn new(id: SessionId, secret: &Secret) -> Token {
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..SESSION_ID_BYTES].copy_from_slice(&id.0);
        bytes[SESSION_ID_BYTES..].copy_from_slice(&secret.0);
        let mut text = [0u8; TOKEN_LEN];
        for (triple, chars) in bytes.chunks_exact(3).zip(text.chunks_exact_mut(4)) {
            let acc = u32::from_be_bytes([0, triple[0], triple[1], triple[2]]);
            for (i, c) in chars.iter_mut().enumerate() {
                *c = ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize];
            }
        }
        Token(text)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tokens are credentials: `Debug` must not leak them into logs or panic messages.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A session's id: the first 8 bytes of its tokens, and the key the store files it under.
///
/// For a legacy session (loaded from a v1 state file) it is the first 8 bytes of its
/// secret hash, so a legacy token finds its session with one hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct SessionId(pub [u8; SESSION_ID_BYTES]);

impl SessionId {
    /// Which of `shards` shards the session is in: its first two random bytes.
    pub(crate) fn shard(&self, shards: usize) -> usize {
        (usize::from(self.0[0]) | usize::from(self.0[1]) << 8) % shards
    }
}

impl Hash for SessionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0));
    }
}

/// The secret part of a token: held only while a request is answered, or sealed (see
/// [`crate::session`]); never stored as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) [u8; SECRET_BYTES]);

impl Secret {
    /// A secret from its bytes (e.g. drawn from a [`crate::TokenSource`]).
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Secret {
        Secret(bytes)
    }

    /// The hash the store keeps: the first 16 bytes of the secret's SHA-256. A legacy
    /// token's secret hash is its v1 key, so one rule verifies both forms.
    pub fn hash(&self) -> SecretHash {
        let digest = Sha256::digest(self.0);
        let mut hash = [0u8; SECRET_HASH_BYTES];
        hash.copy_from_slice(&digest[..SECRET_HASH_BYTES]);
        SecretHash(hash)
    }
}

/// Secrets are credentials too.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the store keeps of a secret: enough to recognise it, useless to present.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SecretHash(pub [u8; SECRET_HASH_BYTES]);

impl SecretHash {
    /// The session id of a legacy token with this secret hash: its first 8 bytes.
    pub fn legacy_session_id(&self) -> SessionId {
        let mut id = [0u8; SESSION_ID_BYTES];
        id.copy_from_slice(&self.0[..SESSION_ID_BYTES]);
        SessionId(id)
    }
}

/// A token as a client presented it: the session it names and the secret it carries.
/// A store keeping its records elsewhere (Redis) looks the session up by [`Presented::id`]
/// and hands the whole back to [`crate::TokenStore::decide`].
pub struct Presented {
    /// The session the token names: the key its record is filed under.
    pub id: SessionId,
    pub(crate) secret: Secret,
}

impl Presented {
    /// The session id and secret `text` spells, or `None` when it cannot be a token we
    /// issued. Accepts the current form (32 characters) and the legacy one (22).
    ///
    /// Only the canonical spelling is accepted, so one token has exactly one text.
    pub fn parse(text: &str) -> Option<Presented> {
        match text.len() {
            TOKEN_LEN => {
                let bytes: [u8; TOKEN_BYTES] = decode(text)?;
                let mut id = [0u8; SESSION_ID_BYTES];
                id.copy_from_slice(&bytes[..SESSION_ID_BYTES]);
                let mut secret = [0u8; SECRET_BYTES];
                secret.copy_from_slice(&bytes[SESSION_ID_BYTES..]);
                Some(Presented {
                    id: SessionId(id),
                    secret: Secret(secret),
                })
            }
            LEGACY_TOKEN_LEN => {
                let secret = Secret(decode(text)?);
                Some(Presented {
                    id: secret.hash().legacy_session_id(),
                    secret,
                })
            }
            _ => None,
        }
    }
}

/// Hashes a [`SessionId`] by taking its random bits as they are.
///
/// Ids are CSPRNG output (or a SHA-256 prefix) and only the store chooses which get
/// inserted, so they are already uniformly spread; SipHash on top would only cost time.
///
/// But not every bit is free: the shard is chosen by the id's first two bytes
/// ([`SessionId::shard`]), so within a shard those are nearly the same for every id. The
/// table picks a bucket by the low bits of the hash and keeps its top 7 bits as a tag, so
/// the hash is the id rotated to put other bytes in both places. Taken as it was, every id
/// of a shard started probing at the same bucket, and finding one walked past a good part
/// of the shard (on wasm32, whose tables probe 4 slots at a time, ~5% of a create).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        // Bytes 3.. of the id become the low bits; the top byte (the tag on 64-bit targets)
        // is byte 2; on 32-bit targets the tag comes from bits 25..32, byte 6.
        self.0 = word.rotate_right(24);
    }
}

pub(crate) type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

/// Each byte's value as a base64url character, or [`NOT_BASE64`]: one load per character
/// rather than a chain of range checks (a token is decoded on every request).
const BASE64_VALUES: [u8; 256] = {
    let mut values = [NOT_BASE64; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        values[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    values
};

/// Whether every byte of `bytes` is a base64url character: one load per byte, no branch.
pub(crate) fn is_base64url(bytes: &[u8]) -> bool {
    let seen = bytes
        .iter()
        .fold(0u8, |seen, &byte| seen | BASE64_VALUES[usize::from(byte)]);
    seen & !63 == 0
}

/// Not a base64url character: the high bits a 6-bit value never has.
const NOT_BASE64: u8 = 0xff;

/// The `N` bytes canonical unpadded base64url `text` spells, or `None`.
fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != (N * 8).div_ceil(6) {
        return None;
    }
    let mut bytes = [0u8; N];
    // Whole groups of 4 characters and 3 bytes first: as many of each, for any N.
    let mut quads = text.chunks_exact(4);
    let mut triples = bytes.chunks_exact_mut(3);
    for (quad, triple) in (&mut quads).zip(&mut triples) {
        let acc = sextets(quad)?;
        triple.copy_from_slice(&acc.to_be_bytes()[1..]);
    }
    let (rest, tail) = (quads.remainder(), triples.into_remainder());
    if !rest.is_empty() {
        let acc = sextets(rest)?;
        // Bits beyond the last whole byte must be zero in canonical base64.
        let spare = rest.len() * 6 - tail.len() * 8;
        if acc & ((1 << spare) - 1) != 0 {
            return None;
        }
        let acc = acc >> spare;
        let len = tail.len();
        for (i, byte) in tail.iter_mut().enumerate() {
            *byte = (acc >> (8 * (len - 1 - i))) as u8;
        }
    }
    Some(bytes)
}

/// The bits of up to 4 base64url characters, first character highest, or `None` when one
/// is not base64url.
fn sextets(chars: &[u8]) -> Option<u32> {
    let mut acc = 0u32;
    let mut seen = 0u8;
    for &c in chars {
        let value = BASE64_VALUES[usize::from(c)];
        seen |= value;
        acc = (acc << 6) | u32::from(value & 63);
    }
    (seen & !63 == 0).then_some(acc)
}

#[cfg(test)]
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(6));
    let mut triples = bytes.chunks_exact(3);
    for triple in &mut triples {
        push_base64(
            &mut out,
            u32::from_be_bytes([0, triple[0], triple[1], triple[2]]),
            4,
        );
    }
    let rest = triples.remainder();
    if !rest.is_empty() {
        let acc = rest.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let chars = (rest.len() * 8).div_ceil(6);
        push_base64(&mut out, acc << (chars * 6 - rest.len() * 8), chars);
    }
    out
}

/// Appends the last `chars` 6-bit groups of `acc` as base64url, highest first.
#[cfg(test)]
fn push_base64(out: &mut String, acc: u32, chars: usize) {
    for i in (0..chars).rev() {
        out.push(char::from(ALPHABET[((acc >> (6 * i)) & 63) as usize]));
    }
}

/// The text of a legacy (v1) token with this secret: only tests make these now.
#[cfg(test)]
pub(crate) fn legacy_token(secret: &Secret) -> String {
    encode(&secret.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_rfc4648_base64url() {
        assert_eq!(encode(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(encode(&[0xFF; 16]), "_____________________w");
        let bytes: [u8; 16] = *b"\xfb\xff\xbf0123456789abc";
        // Checked with: printf '\xfb\xff\xbf0123456789abc' | base64 | tr '+/' '-_'
        assert_eq!(encode(&bytes), "-_-_MDEyMzQ1Njc4OWFiYw");
        // 24 bytes need no padding: printf 'sessionXsecret-of-16byte' | base64
        assert_eq!(
            encode(b"sessionXsecret-of-16byte"),
            "c2Vzc2lvblhzZWNyZXQtb2YtMTZieXRl"
        );
        let token = Token::new(SessionId(*b"sessionX"), &Secret(*b"secret-of-16byte"));
        assert_eq!(token.as_str(), "c2Vzc2lvblhzZWNyZXQtb2YtMTZieXRl");
        assert_eq!(token.to_string(), token.clone().into_string());
        let ones = Token::new(SessionId([0xff; 8]), &Secret([0xfb; 16]));
        // (printf '\xff%.0s' $(seq 8); printf '\xfb%.0s' $(seq 16)) | base64 | tr '+/' '-_'
        assert_eq!(ones.as_str(), "___________7-_v7-_v7-_v7-_v7-_v7");
    }

    #[test]
    fn parse_inverts_token_new_for_both_forms() {
        for seed in 0..64u8 {
            let mut id = [0u8; 8];
            let mut secret = [0u8; 16];
            for (i, b) in id.iter_mut().chain(secret.iter_mut()).enumerate() {
                *b = seed
                    .wrapping_mul(31)
                    .wrapping_add((i as u8).wrapping_mul(17));
            }
            let token = Token::new(SessionId(id), &Secret(secret));
            assert_eq!(token.as_str().len(), TOKEN_LEN);
            assert!(token
                .as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            let presented = Presented::parse(token.as_str()).unwrap();
            assert_eq!(
                (presented.id, presented.secret),
                (SessionId(id), Secret(secret))
            );

            let legacy = legacy_token(&Secret(secret));
            assert_eq!(legacy.len(), LEGACY_TOKEN_LEN);
            let presented = Presented::parse(&legacy).unwrap();
            assert_eq!(presented.secret, Secret(secret));
            assert_eq!(presented.id, Secret(secret).hash().legacy_session_id());
        }
    }

    #[test]
    fn parse_refuses_anything_else() {
        for text in [
            "",
            "AAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAA+A",
            "AAAAAAAAAAAAAAAAAAAA=A",
            "AAAAAAAAAAAAAAAAAAAAAé",
            // Non-canonical: the last character carries bits past the 16th byte.
            "AAAAAAAAAAAAAAAAAAAAAB",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.",
        ] {
            assert!(Presented::parse(text).is_none(), "{text:?} parsed");
        }
        assert!(Presented::parse("AAAAAAAAAAAAAAAAAAAAAQ").is_some());
        assert!(Presented::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_").is_some());
        // Every ASCII character outside the alphabet, at every position of a good token.
        let good = Token::new(SessionId(*b"sessionX"), &Secret(*b"secret-of-16byte"));
        for position in 0..TOKEN_LEN {
            for c in (0u8..128).filter(|c| !ALPHABET.contains(c)) {
                let mut text = good.as_str().as_bytes().to_vec();
                text[position] = c;
                let text = String::from_utf8(text).unwrap();
                assert!(Presented::parse(&text).is_none(), "{text:?} parsed");
            }
        }
    }

    #[test]
    fn every_byte_value_round_trips_at_every_position() {
        for position in 0..TOKEN_BYTES {
            for value in 0..=255u8 {
                let mut bytes = [0x5au8; TOKEN_BYTES];
                bytes[position] = value;
                let mut id = [0u8; SESSION_ID_BYTES];
                id.copy_from_slice(&bytes[..SESSION_ID_BYTES]);
                let mut secret = [0u8; SECRET_BYTES];
                secret.copy_from_slice(&bytes[SESSION_ID_BYTES..]);
                let token = Token::new(SessionId(id), &Secret(secret));
                let presented = Presented::parse(token.as_str()).expect("own token parses");
                assert_eq!(
                    (presented.id, presented.secret),
                    (SessionId(id), Secret(secret))
                );
            }
        }
    }

    #[test]
    fn ids_of_one_shard_spread_over_buckets_and_tags() {
        use crate::random::{SeededRandom, TokenSource};
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let random = SeededRandom::new(12);
        let shard = SessionId([0x5a, 0xc3, 0, 0, 0, 0, 0, 0]).shard(1024);
        let hashes: Vec<u64> = (0..512)
            .map(|_| {
                let mut id = [0u8; SESSION_ID_BYTES];
                random.fill(&mut id).unwrap();
                id[..2].copy_from_slice(&[0x5a, 0xc3]);
                let id = SessionId(id);
                assert_eq!(id.shard(1024), shard);
                BuildKeyHasher::default().hash_one(id)
            })
            .collect();
        let distinct =
            |f: &dyn Fn(u64) -> u64| hashes.iter().map(|&h| f(h)).collect::<HashSet<_>>().len();
        // 512 ids over 256 buckets fill ~220 of them; over 128 tags, nearly all.
        assert!(
            distinct(&|h| h & 0xff) > 180,
            "buckets: {}",
            distinct(&|h| h & 0xff)
        );
        assert!(distinct(&|h| h >> 57) > 100, "64-bit tags");
        assert!(distinct(&|h| (h >> 25) & 0x7f) > 100, "32-bit tags");
    }

    #[test]
    fn the_hash_is_a_sha256_prefix_of_the_secret_not_the_secret() {
        let secret = Secret([0u8; 16]);
        // printf '\0%.0s' $(seq 16) | sha256sum -> 374708fff7719dd5979ec875d56cd228...
        assert_eq!(
            secret.hash().0,
            [
                0x37, 0x47, 0x08, 0xff, 0xf7, 0x71, 0x9d, 0xd5, 0x97, 0x9e, 0xc8, 0x75, 0xd5, 0x6c,
                0xd2, 0x28
            ]
        );
        assert_ne!(secret.hash().0, secret.0);
    }

    #[test]
    fn debug_does_not_leak_the_token_or_the_secret() {
        let token = Token::new(SessionId([1; 8]), &Secret([7; 16]));
        assert!(!format!("{token:?}").contains(token.as_str()));
        assert!(!format!("{:?}", Secret([7; 16])).contains('7'));
    }
}
