//! The state file format: live tokens' key hashes, expiries and metadata, versioned, so a
//! restart logs nobody out. Never contains a token: only the store's SHA-256 keys.
//!
//! Text, one token per line, so an operator can inspect it (`head`, `wc -l`):
//!
//! ```text
//! token-server state v1
//! <32 hex digits of key hash> <expiry, ms since epoch> <metadata JSON>
//! …
//! end <number of token lines>
//! ```
//!
//! The closing `end` line makes a truncated file detectable.

use std::fmt;
use std::io::{BufRead, Write};

use crate::clock::Timestamp;
use crate::meta::Meta;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_PREFIX: &str = "token-server state v";

/// One live token as stored at rest: its key hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The store's key: the first 16 bytes of the SHA-256 of the token's secret.
    pub key_hash: [u8; 16],
    /// When the token stops working.
    pub expires: Timestamp,
    /// Its metadata.
    pub meta: Meta,
}

/// Why a state file could not be read.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The file is of another format version (or not a state file at all).
    Version { found: String },
    /// A line is not what this format writes.
    Corrupt { line: usize, reason: String },
    /// The file ends before its `end` line: it was cut short.
    Truncated,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(err) => write!(f, "{err}"),
            SnapshotError::Version { found } => write!(
                f,
                "not a state file of format version {FORMAT_VERSION} (it starts with {found:?})"
            ),
            SnapshotError::Corrupt { line, reason } => {
                write!(f, "line {line} is corrupt: {reason}")
            }
            SnapshotError::Truncated => f.write_str("the file is truncated (no end line)"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<std::io::Error> for SnapshotError {
    fn from(err: std::io::Error) -> Self {
        SnapshotError::Io(err)
    }
}

/// Writes `tokens` in the state file format.
pub fn write_snapshot<'a, W: Write>(
    out: &mut W,
    tokens: impl IntoIterator<Item = &'a StoredToken>,
) -> Result<usize, SnapshotError> {
    let mut writer = SnapshotWriter::new(out)?;
    for token in tokens {
        writer.write(token)?;
    }
    Ok(writer.finish()?.1)
}

/// Writes the state file format one token at a time: the header when created, a line per
/// [`write`](SnapshotWriter::write), the `end` line at [`finish`](SnapshotWriter::finish).
/// For a host that streams a large store to disk rather than collecting it first; the
/// bytes are exactly those of [`write_snapshot`].
///
/// ```
/// use token_server_core::snapshot::{read_snapshot, SnapshotWriter, StoredToken};
/// use token_server_core::{Meta, Timestamp};
///
/// let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
/// let token = StoredToken {
///     key_hash: [7; 16],
///     expires: Timestamp(1_700_000_000_000),
///     meta: Meta::from_json(r#"{"u":1}"#).unwrap(),
/// };
/// writer.write(&token).unwrap();
/// // The bytes so far can be taken out and sent on; the count carries over.
/// let mut file = std::mem::take(writer.get_mut());
/// let (rest, count) = writer.finish().unwrap();
/// file.extend_from_slice(&rest);
/// assert_eq!(count, 1);
/// assert_eq!(read_snapshot(&file[..]).unwrap(), vec![token]);
/// ```
#[derive(Debug)]
pub struct SnapshotWriter<W> {
    out: W,
    /// Token lines written so far, for the `end` line.
    count: usize,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a state file in `out` by writing its header line.
    pub fn new(mut out: W) -> Result<Self, SnapshotError> {
        writeln!(out, "{HEADER_PREFIX}{FORMAT_VERSION}")?;
        Ok(SnapshotWriter { out, count: 0 })
    }

    /// Appends `token`'s line.
    pub fn write(&mut self, token: &StoredToken) -> Result<(), SnapshotError> {
        let mut hex = [0u8; 32];
        for (i, byte) in token.key_hash.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(byte >> 4)];
            hex[2 * i + 1] = HEX[usize::from(byte & 15)];
        }
        self.out.write_all(&hex)?;
        writeln!(
            self.out,
            " {} {}",
            token.expires.as_millis(),
            token.meta.as_json()
        )?;
        self.count += 1;
        Ok(())
    }

    /// Token lines written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The sink, e.g. to take the bytes written so far out of a `Vec<u8>`.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Ends the file with its `end` line; returns the sink and the number of tokens.
    pub fn finish(mut self) -> Result<(W, usize), SnapshotError> {
        writeln!(self.out, "end {}", self.count)?;
        Ok((self.out, self.count))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Reads a whole state file; any deviation from the format is an error, never a silently
/// shorter list.
pub fn read_snapshot<R: BufRead>(input: R) -> Result<Vec<StoredToken>, SnapshotError> {
    let mut lines = input.lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    if header != format!("{HEADER_PREFIX}{FORMAT_VERSION}") {
        let found: String = header.chars().take(40).collect();
        return Err(SnapshotError::Version { found });
    }
    let mut tokens = Vec::new();
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        let line = line?;
        let corrupt = |reason: &str| SnapshotError::Corrupt {
            line: number,
            reason: reason.to_string(),
        };
        if let Some(count) = line.strip_prefix("end ") {
            let count: usize = count.parse().map_err(|_| corrupt("bad end line"))?;
            if count != tokens.len() {
                return Err(corrupt("end line does not match the number of tokens"));
            }
            return Ok(tokens);
        }
        let mut fields = line.splitn(3, ' ');
        let (Some(hex), Some(expires), Some(meta)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(corrupt("expected: key expiry metadata"));
        };
        let key_hash = parse_hex(hex).ok_or_else(|| corrupt("bad key hash"))?;
        let expires = expires
            .parse()
            .map(Timestamp)
            .map_err(|_| corrupt("bad expiry"))?;
        let meta = Meta::from_json(meta).map_err(|err| corrupt(&err.to_string()))?;
        tokens.push(StoredToken {
            key_hash,
            expires,
            meta,
        });
    }
    Err(SnapshotError::Truncated)
}

fn parse_hex(hex: &str) -> Option<[u8; 16]> {
    let hex = hex.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let digit = |c: u8| HEX.iter().position(|&h| h == c).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (digit(hex[2 * i])? << 4) | digit(hex[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<StoredToken> {
        (0..3u8)
            .map(|i| StoredToken {
                key_hash: [i.wrapping_mul(77); 16],
                expires: Timestamp(1_700_000_000_000 + u64::from(i)),
                meta: Meta::from_json(&format!(r#"{{"n":{i},"s":"a b\nc"}}"#)).unwrap(),
            })
            .collect()
    }

    fn encoded(tokens: &[StoredToken]) -> Vec<u8> {
        let mut out = Vec::new();
        write_snapshot(&mut out, tokens).unwrap();
        out
    }

    #[test]
    fn round_trips() {
        let tokens = sample();
        let bytes = encoded(&tokens);
        assert_eq!(read_snapshot(&bytes[..]).unwrap(), tokens);
        assert_eq!(read_snapshot(&encoded(&[])[..]).unwrap(), vec![]);
    }

    #[test]
    fn a_streamed_file_taken_in_pieces_is_byte_identical() {
        let tokens = sample();
        let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
        let mut file = Vec::new();
        for token in &tokens {
            writer.write(token).unwrap();
            file.append(writer.get_mut());
        }
        let (rest, count) = writer.finish().unwrap();
        file.extend_from_slice(&rest);
        assert_eq!((file, count), (encoded(&tokens), 3));
        // And both are the format as documented, byte for byte.
        let one = StoredToken {
            key_hash: [0xab; 16],
            expires: Timestamp(5),
            meta: Meta::from_json(r#"{"a":1}"#).unwrap(),
        };
        let expected = format!(
            "token-server state v1\n{} 5 {{\"a\":1}}\nend 1\n",
            "ab".repeat(16)
        );
        assert_eq!(String::from_utf8(encoded(&[one])).unwrap(), expected);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encoded(&sample());
        // Every cut but the one that only drops the final newline.
        for cut in 0..bytes.len() - 1 {
            assert!(
                read_snapshot(&bytes[..cut]).is_err(),
                "a file cut at byte {cut} of {} was accepted",
                bytes.len()
            );
        }
    }

    #[test]
    fn corruption_and_other_versions_are_refused() {
        let text = String::from_utf8(encoded(&sample())).unwrap();
        let other_version = text.replacen("state v1", "state v2", 1);
        assert!(matches!(
            read_snapshot(other_version.as_bytes()),
            Err(SnapshotError::Version { .. })
        ));
        let bad_meta = text.replacen(r#"{"n":1"#, r#"["n":1"#, 1);
        assert!(matches!(
            read_snapshot(bad_meta.as_bytes()),
            Err(SnapshotError::Corrupt { line: 3, .. })
        ));
        let bad_key = text.replacen("4d4d", "4x4d", 1);
        assert!(matches!(
            read_snapshot(bad_key.as_bytes()),
            Err(SnapshotError::Corrupt { .. })
        ));
        let wrong_count = text.replacen("end 3", "end 4", 1);
        assert!(read_snapshot(wrong_count.as_bytes()).is_err());
        assert!(read_snapshot(&b"garbage"[..]).is_err());
    }
}
