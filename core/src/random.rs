//! Where token bytes come from: a [`TokenSource`] the host plugs in.

use std::cell::RefCell;
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

/// The operating system's CSPRNG through `getrandom` (`crypto.getRandomValues` in JS),
/// drawn in blocks of [`OsRandom::BLOCK_BYTES`] per thread.
///
/// This is the only source fit for production: tokens must be unguessable. One system call
/// per token was a third of a rotation's system calls (and a JS boundary crossing per token
/// in wasm), so each thread draws a block and hands it out 16 bytes at a time; every byte is
/// handed out once and wiped from the block as it goes, so the process only ever holds the
/// bytes of the next tokens (at most a block's worth), never those of tokens already issued.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl OsRandom {
    /// Bytes drawn from the OS at once: 32 secrets' worth natively, 256 on wasm32.
    ///
    /// What a draw costs decides the size. Natively it is one `getrandom` system call, well
    /// under a microsecond. On wasm32 it is a call out of the module into
    /// `crypto.getRandomValues`, which costs about 6 µs in Node 20 whatever the size up to
    /// a few KiB (7.4 µs for 4 KiB): with 512-byte blocks that was ~250 ns of every create
    /// and rotate, with 4 KiB ~45 ns. The bytes stay the host's CSPRNG output, each handed
    /// out once; only more of them wait in the block (a JS host can read the module's memory
    /// anyway).
    pub const BLOCK_BYTES: usize = if cfg!(target_arch = "wasm32") {
        4096
    } else {
        512
    };
}

thread_local! {
    /// Per thread, so the hot path takes no lock and threads never share bytes.
    static BLOCK: RefCell<Block> = const { RefCell::new(Block::empty()) };
}

impl TokenSource for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        if dest.len() > OsRandom::BLOCK_BYTES / 4 {
            return os_fill(dest);
        }
        // `try_with` fails only while the thread is being torn down; the OS still answers.
        BLOCK
            .try_with(|block| block.borrow_mut().take(dest, os_fill))
            .unwrap_or_else(|_| os_fill(dest))
    }
}

fn os_fill(dest: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(dest).map_err(|err| RandomError {
        reason: err.to_string(),
    })
}

/// A block of random bytes handed out front to back, each exactly once.
struct Block {
    bytes: [u8; OsRandom::BLOCK_BYTES],
    /// Bytes before this index are handed out (and wiped).
    used: usize,
}

impl Block {
    const fn empty() -> Block {
        Block {
            bytes: [0; OsRandom::BLOCK_BYTES],
            used: OsRandom::BLOCK_BYTES,
        }
    }

    /// Moves the next `dest.len()` bytes into `dest`, refilling the whole block with
    /// `refill` first when too few are left. `dest` must not be larger than the block.
    fn take(
        &mut self,
        dest: &mut [u8],
        refill: impl FnOnce(&mut [u8]) -> Result<(), RandomError>,
    ) -> Result<(), RandomError> {
        if self.bytes.len() - self.used < dest.len() {
            // A failed refill leaves the block empty: no byte of a partial draw is used.
            self.used = self.bytes.len();
            refill(&mut self.bytes)?;
            self.used = 0;
        }
        let part = &mut self.bytes[self.used..self.used + dest.len()];
        dest.copy_from_slice(part);
        part.fill(0);
        self.used += dest.len();
        Ok(())
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

    /// A stand-in OS: writes 1, 2, 3, ... (wrapping) across calls and counts its calls.
    #[derive(Default)]
    struct CountingOs {
        calls: usize,
        next: u8,
    }

    impl CountingOs {
        fn refill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
            self.calls += 1;
            for byte in buf.iter_mut() {
                self.next = self.next.wrapping_add(1);
                *byte = self.next;
            }
            Ok(())
        }

        fn draw(&mut self, block: &mut Block, len: usize) -> Vec<u8> {
            let mut out = vec![0u8; len];
            block.take(&mut out, |buf| self.refill(buf)).unwrap();
            out
        }
    }

    #[test]
    fn block_hands_out_each_byte_once_and_wipes_it() {
        let mut block = Block::empty();
        let mut os = CountingOs::default();
        let mut seen = Vec::new();
        // Three blocks' worth of 16-byte draws.
        for _ in 0..3 * OsRandom::BLOCK_BYTES / 16 {
            seen.extend(os.draw(&mut block, 16));
            // Everything handed out so far is wiped from the block.
            assert!(block.bytes[..block.used].iter().all(|&b| b == 0));
        }
        assert_eq!(os.calls, 3, "one OS draw per block, not per token");
        let expected: Vec<u8> = (1..=seen.len()).map(|i| i as u8).collect();
        assert_eq!(
            seen, expected,
            "bytes come out in order, none twice, none skipped"
        );
    }

    #[test]
    fn block_refills_when_the_rest_is_too_short() {
        let mut block = Block::empty();
        let mut os = CountingOs::default();
        let first = os.draw(&mut block, OsRandom::BLOCK_BYTES - 10);
        // 10 bytes left: a 16-byte draw takes a fresh block instead of mixing two.
        let second = os.draw(&mut block, 16);
        assert_eq!(first[0], 1);
        assert_eq!(second[0], (OsRandom::BLOCK_BYTES + 1) as u8);
        assert_eq!((os.calls, block.used), (2, 16));
    }

    #[test]
    fn block_refill_failure_is_an_error_and_uses_no_byte() {
        let mut block = Block::empty();
        let failing = |buf: &mut [u8]| {
            buf.fill(7); // a partial draw must not leak out
            Err(RandomError {
                reason: "no entropy".into(),
            })
        };
        let mut out = [0u8; 16];
        let err = block.take(&mut out, failing).unwrap_err();
        assert_eq!(err.reason, "no entropy");
        assert_eq!(out, [0u8; 16]);
        // The next draw refills again rather than handing out the failed draw's bytes.
        let mut fresh = [0u8; 16];
        block
            .take(&mut fresh, |buf: &mut [u8]| {
                buf.fill(9);
                Ok(())
            })
            .unwrap();
        assert_eq!(fresh, [9u8; 16]);
    }

    #[test]
    fn os_random_draws_differ_within_and_across_blocks_and_threads() {
        let draws: Vec<[u8; 16]> = (0..3 * OsRandom::BLOCK_BYTES / 16)
            .map(|_| {
                let mut out = [0u8; 16];
                OsRandom.fill(&mut out).unwrap();
                out
            })
            .collect();
        let other = std::thread::spawn(|| {
            let mut out = [0u8; 16];
            OsRandom.fill(&mut out).unwrap();
            out
        })
        .join()
        .unwrap();
        let mut all: Vec<[u8; 16]> = draws.clone();
        all.push(other);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), draws.len() + 1, "no two 128-bit draws are equal");
        // Larger requests bypass the block and still come back filled.
        let mut large = [0u8; 1024];
        OsRandom.fill(&mut large).unwrap();
        assert!(large.iter().any(|&b| b != 0));
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
