//! API keys: which callers may use the service, checked once here for every host.
//!
//! The operator lists keys in a text file (one per line, `#` comments and blank lines
//! ignored); a caller presents one as `Authorization: Bearer <key>`. Only SHA-256 digests of
//! the keys are kept, and a presented key is compared digest against digest in constant
//! time, against every configured key, so neither the answer's timing nor a memory dump
//! gives a key away. Logs name a key by its [`Fingerprint`], never by the key.
//!
//! ```
//! use token_server_core::auth::{ApiKeys, AuthError};
//!
//! let keys = ApiKeys::parse("# web app, rotated 2026-11\nk1-0123456789abcdefghijklmnopqrstuv\n")?;
//! assert_eq!(keys.len(), 1);
//! assert_eq!(keys.check(Some("Bearer k1-0123456789abcdefghijklmnopqrstuv")), Ok(()));
//! assert_eq!(keys.check(None), Err(AuthError::Missing));
//! assert!(matches!(keys.check(Some("Bearer k2-0123456789abcdefghijklmnopqrstuv")), Err(AuthError::UnknownKey(_))));
//! # Ok::<(), token_server_core::auth::KeyFileError>(())
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

/// Fewest characters a key may have: 32 characters of base64 are 192 bits, far past guessing
/// even at millions of attempts per second, and every password manager makes them.
pub const MIN_KEY_LEN: usize = 32;

/// The authentication scheme of the `Authorization` header (RFC 6750).
pub const BEARER: &str = "Bearer";

/// SHA-256 of a key: what is kept and compared instead of the key.
type KeyDigest = [u8; 32];

/// A short public name for a key: the first 4 bytes of its SHA-256, as 8 hex digits.
///
/// Enough to tell an operator's handful of keys apart in a log; far too little to help
/// find the key (it is a hash prefix of a 32+ character secret).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    fn of_digest(digest: &KeyDigest) -> Fingerprint {
        Fingerprint([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The fingerprint of `key`.
    ///
    /// ```
    /// use token_server_core::auth::Fingerprint;
    /// // printf %s abc | sha256sum -> ba7816bf8f01cfea...
    /// assert_eq!(Fingerprint::of_key("abc").to_string(), "ba7816bf");
    /// ```
    pub fn of_key(key: &str) -> Fingerprint {
        Fingerprint::of_digest(&digest(key))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a key file cannot be used. Lines are numbered from 1; the key itself is never
/// part of the message, since the message goes to a terminal or a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// A key shorter than [`MIN_KEY_LEN`] characters, not counting its `=` padding.
    TooShort { line: usize, length: usize },
    /// A key with a character a `Bearer` credential cannot carry (RFC 6750 `b64token`),
    /// such as a space inside it: no client could send it as written.
    BadCharacter { line: usize },
    /// No key at all: every request would be refused, which is never what was meant
    /// (an empty or truncated file, a wrong path).
    NoKeys,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::TooShort { line, length } => write!(
                f,
                "line {line}: the key has {length} characters; at least {MIN_KEY_LEN} are required"
            ),
            KeyFileError::BadCharacter { line } => write!(
                f,
                "line {line}: a key may hold only letters, digits and - . _ ~ + / (then = padding)"
            ),
            KeyFileError::NoKeys => f.write_str(
                "no key in the file: one key per line is required (blank lines and # comments are ignored)",
            ),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Why a request was not let in. Each is answered 401 by the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or one that is not valid text.
    Missing,
    /// An `Authorization` header of another scheme than `Bearer`, or with no credential.
    NotBearer,
    /// A `Bearer` key that is not one of the configured keys; carries its fingerprint so
    /// the operator can see which stale key a caller still uses.
    UnknownKey(Fingerprint),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => {
                f.write_str("an API key is required: send it as Authorization: Bearer <key>")
            }
            AuthError::NotBearer => {
                f.write_str("the Authorization header must be Bearer followed by an API key")
            }
            AuthError::UnknownKey(_) => f.write_str("the API key is not valid"),
        }
    }
}

impl std::error::Error for AuthError {}

/// The set of API keys that are valid at once (several, so a key can be rotated without
/// downtime). Holds only the keys' SHA-256 digests.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// Digests in file order, duplicates dropped.
    digests: Vec<KeyDigest>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ApiKeys")
            .field(&self.fingerprints())
            .finish()
    }
}

impl ApiKeys {
    /// Reads a key file's text: one key per line, surrounding whitespace trimmed, blank
    /// lines and lines starting with `#` ignored. Every key must have at least
    /// [`MIN_KEY_LEN`] characters of RFC 6750 `b64token` before any `=` padding; the
    /// first line that does not is named in the error.
    pub fn parse(text: &str) -> Result<ApiKeys, KeyFileError> {
        let mut digests: Vec<KeyDigest> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if !is_b64token(key) {
                return Err(KeyFileError::BadCharacter { line: line_number });
            }
            // `=` padding carries none of the secret: only the characters before it count.
            let length = key.trim_end_matches('=').len();
            if length < MIN_KEY_LEN {
                return Err(KeyFileError::TooShort {
                    line: line_number,
                    length,
                });
            }
            let digest = digest(key);
            if !digests.contains(&digest) {
                digests.push(digest);
            }
        }
        if digests.is_empty() {
            return Err(KeyFileError::NoKeys);
        }
        Ok(ApiKeys { digests })
    }

    /// How many distinct keys are valid.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Always false for a parsed set (a file without keys is refused); for completeness.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The keys' fingerprints, in file order, for logs.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.digests.iter().map(Fingerprint::of_digest).collect()
    }

    /// Checks the value of a request's `Authorization` header (`None`: no header).
    ///
    /// The scheme is matched without regard to case (RFC 7235 §2.1); the key must match one
    /// configured key exactly. The presented key's digest is compared with every
    /// configured digest, without stopping at a match, so the time taken does not depend
    /// on which key matched or how much of one did.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let presented = bearer_credential(authorization.ok_or(AuthError::Missing)?)?;
        let digest = digest(presented);
        let mut matched = false;
        for configured in &self.digests {
            // `|` rather than `||`: every comparison runs.
            matched |= digests_equal(&digest, configured);
        }
        if matched {
            Ok(())
        } else {
            Err(AuthError::UnknownKey(Fingerprint::of_digest(&digest)))
        }
    }
}

/// The credential of a `Bearer` header value: `Bearer`, any case, then at least one space,
/// then the key (surrounding whitespace ignored).
fn bearer_credential(authorization: &str) -> Result<&str, AuthError> {
    let authorization = authorization.trim();
    let (scheme, credential) = authorization
        .split_once([' ', '\t'])
        .ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case(BEARER) {
        return Err(AuthError::NotBearer);
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(credential)
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(key: &str) -> bool {
    let body = key.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte))
}

fn digest(key: &str) -> KeyDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(key.as_bytes()));
    out
}

/// Equality of two digests in time independent of where they differ.
///
/// Hand-written rather than the `subtle` crate: the inputs are SHA-256 digests, so an
/// attacker cannot steer them byte by byte, and even a leaking comparison would only reveal
/// a prefix of a hash of the secret. The fold over every byte, with the accumulator passed
/// through `black_box`, keeps the compiler from turning it into an early-exit comparison.
fn digests_equal(a: &KeyDigest, b: &KeyDigest) -> bool {
    #[cfg(test)]
    tests::count_comparison();
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference = std::hint::black_box(difference | (x ^ y));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static COMPARISONS: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count_comparison() {
        COMPARISONS.with(|count| count.set(count.get() + 1));
    }

    fn comparisons_during(f: impl FnOnce()) -> usize {
        COMPARISONS.with(|count| count.set(0));
        f();
        COMPARISONS.with(Cell::get)
    }

    const KEY_A: &str = "alpha-0123456789abcdefghijklmnopqrstuv";
    const KEY_B: &str = "bravo-0123456789abcdefghijklmnopqrstuv";
    const KEY_C: &str = "charlie-0123456789abcdefghijklmnopqrstuv";

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    #[test]
    fn comments_blank_lines_and_whitespace_are_ignored() {
        let text = format!("# deploy keys\n\n   \n  {KEY_A}  \n\t# old: rotate out\n{KEY_B}\r\n");
        let keys = ApiKeys::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(&bearer(KEY_A))), Ok(()));
        assert_eq!(keys.check(Some(&bearer(KEY_B))), Ok(()));
        assert_eq!(
            keys.fingerprints(),
            vec![Fingerprint::of_key(KEY_A), Fingerprint::of_key(KEY_B)]
        );
    }

    #[test]
    fn a_short_key_is_refused_naming_its_line() {
        let text = format!("# keys\n{KEY_A}\n\nshort-key-of-31-characters-xxxx\n");
        assert_eq!("short-key-of-31-characters-xxxx".len(), 31);
        let err = ApiKeys::parse(&text).unwrap_err();
        assert_eq!(
            err,
            KeyFileError::TooShort {
                line: 4,
                length: 31
            }
        );
        assert_eq!(
            err.to_string(),
            "line 4: the key has 31 characters; at least 32 are required"
        );
        // Exactly the minimum is enough.
        assert!(ApiKeys::parse(&"k".repeat(MIN_KEY_LEN)).is_ok());
    }

    #[test]
    fn padding_does_not_count_towards_the_length() {
        // `=` padding carries no secret: one letter and 31 `=` is not a 32-character key.
        assert_eq!(
            ApiKeys::parse(&format!("a{}", "=".repeat(MIN_KEY_LEN - 1))),
            Err(KeyFileError::TooShort { line: 1, length: 1 })
        );
        let short = format!("{}=", "k".repeat(MIN_KEY_LEN - 1));
        assert_eq!(
            ApiKeys::parse(&short),
            Err(KeyFileError::TooShort {
                line: 1,
                length: MIN_KEY_LEN - 1
            })
        );
        assert!(ApiKeys::parse(&format!("{}==", "k".repeat(MIN_KEY_LEN))).is_ok());
    }

    #[test]
    fn a_key_no_header_could_carry_is_refused_without_echoing_it() {
        let secret = "with space 0123456789abcdefghijklmnopqrstuv";
        let err = ApiKeys::parse(&format!("{KEY_A}\n{secret}\n")).unwrap_err();
        assert_eq!(err, KeyFileError::BadCharacter { line: 2 });
        assert!(!err.to_string().contains("0123456789"), "{err}");
        for bad in ["a:b", "a=b", "=", "é"] {
            let key = format!("{bad}{}", "x".repeat(MIN_KEY_LEN));
            assert!(ApiKeys::parse(&key).is_err(), "{key}");
        }
        // Padding at the end is b64token.
        assert!(ApiKeys::parse(&format!("{}==", "A/+~._-9".repeat(4))).is_ok());
    }

    #[test]
    fn a_file_without_keys_is_refused() {
        assert_eq!(ApiKeys::parse(""), Err(KeyFileError::NoKeys));
        assert_eq!(
            ApiKeys::parse("# all keys revoked\n\n"),
            Err(KeyFileError::NoKeys)
        );
    }

    #[test]
    fn only_configured_keys_pass() {
        let keys = ApiKeys::parse(&format!("{KEY_A}\n{KEY_B}\n")).unwrap();
        assert_eq!(
            keys.check(Some(&bearer(KEY_C))),
            Err(AuthError::UnknownKey(Fingerprint::of_key(KEY_C)))
        );
        // Near misses: a prefix, an extension, another case.
        let prefix = &KEY_A[..KEY_A.len() - 1];
        for wrong in [
            prefix.to_string(),
            format!("{KEY_A}x"),
            KEY_A.to_uppercase(),
        ] {
            assert!(
                matches!(
                    keys.check(Some(&bearer(&wrong))),
                    Err(AuthError::UnknownKey(_))
                ),
                "{wrong}"
            );
        }
    }

    #[test]
    fn a_missing_or_non_bearer_header_is_refused() {
        let keys = ApiKeys::parse(KEY_A).unwrap();
        assert_eq!(keys.check(None), Err(AuthError::Missing));
        for header in [
            "",
            "Bearer",
            "Bearer   ",
            KEY_A,
            &format!("Basic {KEY_A}"),
            &format!("Bearer{KEY_A}"),
            &format!("Token {KEY_A}"),
        ] {
            assert_eq!(
                keys.check(Some(header)),
                Err(AuthError::NotBearer),
                "{header:?}"
            );
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let keys = ApiKeys::parse(KEY_A).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                keys.check(Some(&format!("{scheme} {KEY_A}"))),
                Ok(()),
                "{scheme}"
            );
        }
        assert_eq!(keys.check(Some(&format!("  Bearer  {KEY_A} "))), Ok(()));
    }

    #[test]
    fn every_configured_key_is_compared_whichever_matches() {
        let keys = ApiKeys::parse(&format!("{KEY_A}\n{KEY_B}\n{KEY_C}\n")).unwrap();
        for key in [
            KEY_A,
            KEY_B,
            KEY_C,
            "delta-0123456789abcdefghijklmnopqrstuv",
        ] {
            let count = comparisons_during(|| {
                let _ = keys.check(Some(&bearer(key)));
            });
            assert_eq!(count, 3, "{key}: compared {count} of 3 digests");
        }
    }

    #[test]
    fn digest_equality_sees_a_difference_anywhere() {
        let a = digest(KEY_A);
        assert!(digests_equal(&a, &a));
        for at in [0, 15, 31] {
            let mut b = a;
            b[at] ^= 1;
            assert!(!digests_equal(&a, &b), "byte {at}");
        }
    }

    #[test]
    fn duplicates_count_once_and_debug_shows_no_key() {
        let keys = ApiKeys::parse(&format!("{KEY_A}\n{KEY_A}\n")).unwrap();
        assert_eq!(keys.len(), 1);
        let debug = format!("{keys:?}");
        assert!(!debug.contains("alpha"), "{debug}");
        assert!(
            debug.contains(&Fingerprint::of_key(KEY_A).to_string()),
            "{debug}"
        );
    }
}
