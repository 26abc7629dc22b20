//! Runtime-agnostic store of one-time access tokens bound to JSON metadata.
//!
//! The crate never reads the OS clock or opens a socket on its own: time comes from a
//! [`Clock`] and randomness from a [`TokenSource`] that the host plugs in. That keeps it
//! compiling to `wasm32-unknown-unknown` and lets a test drive expiry by hand with a
//! [`ManualClock`] in microseconds.
//!
//! ```
//! use std::time::Duration;
//! use token_server_core::{ManualClock, SeededRandom, TokenStore, Meta};
//!
//! let clock = ManualClock::new(0);
//! let store = TokenStore::new(Duration::from_secs(3600), clock.clone(), SeededRandom::new(7));
//! let meta = Meta::from_json(r#"{"name":"My user"}"#).unwrap();
//! let first = store.create(meta).unwrap();
//! let rotated = store.rotate(first.as_str(), None).unwrap();
//! assert_eq!(rotated.meta.as_json(), r#"{"name":"My user"}"#);
//! // Each token works once.
//! assert!(store.rotate(first.as_str(), None).is_err());
//! // And only for its lifetime.
//! clock.advance(Duration::from_secs(3600));
//! assert!(store.rotate(rotated.token.as_str(), None).is_err());
//! ```

pub mod auth;
mod clock;
pub mod config;
pub mod duration;
pub mod flags;
pub mod journal;
mod meta;
pub mod protocol;
mod random;
pub mod session;
pub mod shared_record;
pub mod snapshot;
mod store;
pub mod throttle;
mod token;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use clock::SystemClock;
pub use clock::{Clock, ManualClock, Monotonic, Timestamp, TimestampError};
pub use meta::{Meta, MetaError, MetaLimits};
pub use random::{OsRandom, RandomError, SeededRandom, TokenSource};
pub use store::{
    Decision, DumpEntry, NewSession, PurgeReport, Rotated, StoreError, Swept, TokenStore,
};
pub use token::{
    Presented, Secret, SecretHash, SessionId, Token, LEGACY_TOKEN_LEN, SECRET_BYTES,
    SESSION_ID_BYTES, TOKEN_BYTES, TOKEN_LEN,
};
