//! The token a client holds, and the fixed-size key the store files it under.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use sha2::{Digest, Sha256};

/// Random bytes per token: 128 bits, unguessable by any online attack.
pub const TOKEN_BYTES: usize = 16;

/// Characters per token: 16 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 22;

/// RFC 4648 base64url: only characters that are safe in URLs and cookies.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A one-time access token as handed to clients: 22 base64url characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the token text.
    pub fn into_string(self) -> String {
        self.0
    }

    pub(crate) fn from_secret(secret: &TokenSecret) -> Token {
        Token(encode(&secret.0))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tokens are credentials: `Debug` must not leak them into logs or panic messages.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The 16 random bytes a token spells: held only while a request is answered, never
/// stored.
pub(crate) struct TokenSecret(pub(crate) [u8; TOKEN_BYTES]);

impl TokenSecret {
    /// The secret a client's token text spells, or `None` when it cannot be a token we
    /// issued.
    ///
    /// Only the canonical spelling is accepted, so one token has exactly one text.
    pub(crate) fn parse(text: &str) -> Option<TokenSecret> {
        let text = text.as_bytes();
        if text.len() != TOKEN_LEN {
            return None;
        }
        let mut sextets = [0u8; TOKEN_LEN];
        for (out, &c) in sextets.iter_mut().zip(text) {
            *out = decode_char(c)?;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        for (group, chunk) in sextets.chunks(4).enumerate() {
            let mut acc: u32 = 0;
            for &s in chunk {
                acc = (acc << 6) | u32::from(s);
            }
            let bits = chunk.len() * 6;
            let whole = bits / 8;
            // Bits beyond the last whole byte must be zero in canonical base64.
            let spare = bits - whole * 8;
            if acc & ((1 << spare) - 1) != 0 {
                return None;
            }
            acc >>= spare;
            for i in 0..whole {
                bytes[group * 3 + i] = (acc >> (8 * (whole - 1 - i))) as u8;
            }
        }
        Some(TokenSecret(bytes))
    }

    /// The key the store files this token under.
    pub(crate) fn key(&self) -> TokenKey {
        let digest = Sha256::digest(self.0);
        let mut key = [0u8; TOKEN_BYTES];
        key.copy_from_slice(&digest[..TOKEN_BYTES]);
        TokenKey(key)
    }
}

/// The store's key for a token: the first 16 bytes of the SHA-256 of its secret.
///
/// A hash, not the token, so that nothing the store holds (in memory, a core dump, a
/// state file) can be presented as a token. 128 bits of a hash of 128 random bits stay
/// collision-free in practice and unguessable; fixed-size and `Copy`, so the map holds no
/// string allocation per token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenKey(pub(crate) [u8; TOKEN_BYTES]);

impl TokenKey {
    /// The key of the token `text` spells, or `None` when it cannot be a token we issued.
    pub(crate) fn parse(text: &str) -> Option<TokenKey> {
        TokenSecret::parse(text).map(|secret| secret.key())
    }

    /// Bytes 8..16, which the map hashes with (the shard index uses bytes 0 and 1).
    fn hash_word(&self) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[8..16]);
        u64::from_le_bytes(word)
    }
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_word());
    }
}

/// Hashes a [`TokenKey`] by taking its random bits as they are.
///
/// Keys are made of CSPRNG output and only the store chooses which keys get inserted, so
/// they are already uniformly spread; SipHash on top would only cost time.
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
        self.0 = word;
    }
}

pub(crate) type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

fn decode_char(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

fn encode(bytes: &[u8; TOKEN_BYTES]) -> String {
    let mut out = String::with_capacity(TOKEN_LEN);
    for chunk in bytes.chunks(3) {
        let mut acc: u32 = 0;
        for &b in chunk {
            acc = (acc << 8) | u32::from(b);
        }
        let bits = chunk.len() * 8;
        let chars = bits.div_ceil(6);
        acc <<= chars * 6 - bits;
        for i in (0..chars).rev() {
            out.push(char::from(ALPHABET[((acc >> (6 * i)) & 63) as usize]));
        }
    }
    out
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
    }

    #[test]
    fn parse_inverts_encode() {
        let mut bytes = [0u8; 16];
        for seed in 0..64u8 {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 17);
            }
            let text = encode(&bytes);
            assert_eq!(text.len(), TOKEN_LEN);
            assert!(text
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert!(TokenSecret::parse(&text).map(|s| s.0) == Some(bytes));
            assert!(TokenKey::parse(&text) == Some(TokenSecret(bytes).key()));
        }
    }

    #[test]
    fn parse_refuses_anything_else() {
        assert!(TokenKey::parse("").is_none());
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAAA").is_none());
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAAAAA").is_none());
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAA+A").is_none());
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAA=A").is_none());
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAAAé").is_none());
        // Non-canonical: the last character carries bits past the 16th byte.
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAAAB").is_none());
        assert!(TokenKey::parse("AAAAAAAAAAAAAAAAAAAAAQ").is_some());
    }

    #[test]
    fn the_key_is_a_sha256_prefix_of_the_secret_not_the_secret() {
        let secret = TokenSecret([0u8; 16]);
        // printf '\0%.0s' $(seq 16) | sha256sum -> 374708fff7719dd5979ec875d56cd228...
        assert_eq!(
            secret.key().0,
            [
                0x37, 0x47, 0x08, 0xff, 0xf7, 0x71, 0x9d, 0xd5, 0x97, 0x9e, 0xc8, 0x75, 0xd5, 0x6c,
                0xd2, 0x28
            ]
        );
        assert_ne!(secret.key().0, secret.0);
    }

    #[test]
    fn debug_does_not_leak_the_token() {
        let token = Token::from_secret(&TokenSecret([7; 16]));
        assert!(!format!("{token:?}").contains(token.as_str()));
    }
}
