//! Where token bytes come from: a [`TokenSource`] the host plugs in.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The randomness source could not deliver bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomError {
    /// What the source reported; for the log, never shown to a client.
    pub reason: String,
}

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "randomness source failed: {}", self.reason)
    }
}

impl std::error::Error for RandomError {}

/// Fills buffers with the bytes new tokens are made of.
///
/// One fallible method, so a host can plug in the OS CSPRNG ([`OsRandom`]), a seeded
/// deterministic source for tests ([`SeededRandom`]), or anything else. `&self` rather than
/// `&mut self` so a store shared between threads needs no lock around it.
pub trait TokenSource {
    /// Fills `dest` entirely, or fails without a partial result being used.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's CSPRNG through `getrandom` (`crypto.getRandomValues` in JS).
///
/// This is the only source fit for production: tokens must be unguessable.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl TokenSource for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(dest).map_err(|err| RandomError {
            reason: err.to_string(),
        })
    }
}

/// A deterministic source: the same seed gives the same tokens, for reproducible tests.
///
/// SplitMix64, which is tiny and statistically fine for tests but **predictable**: never
/// use it where tokens must be unguessable.
///
/// ```
/// use token_server_core::{SeededRandom, TokenSource};
/// let (a, b) = (SeededRandom::new(42), SeededRandom::new(42));
/// let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
/// a.fill(&mut x).unwrap();
/// b.fill(&mut y).unwrap();
/// assert_eq!(x, y);
/// ```
#[derive(Debug, Default)]
pub struct SeededRandom {
    /// Atomic so the source satisfies `&self` without a lock; SplitMix64's state step is
    /// a plain addition, which `fetch_add` does in one go.
    pub(crate) state: AtomicU64,
}

impl SeededRandom {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A source whose output is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom {
            state: AtomicU64::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl TokenSource for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl<T: TokenSource + ?Sized> TokenSource for std::sync::Arc<T> {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_repeat_and_differ_by_seed() {
        let draw = |seed| {
            let source = SeededRandom::new(seed);
            let mut out = [0u8; 37];
            source.fill(&mut out).unwrap();
            out
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        // The first SplitMix64 output for seed 0 is a published reference value.
        let source = SeededRandom::new(0);
        assert_eq!(source.next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn os_random_fills_the_whole_buffer() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsRandom.fill(&mut a).unwrap();
        OsRandom.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
