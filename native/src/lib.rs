//! The token server's host pieces as a library, so bench and test binaries can serve a
//! store built on any clock and randomness with exactly the shipped HTTP stack.

/// Every binary that serves through this host allocates with mimalloc: `token-server`, and
/// the benchmark's servers, so the trivial baseline runs on the same allocator as the server
/// it is compared with.
///
/// Why not the system allocator: a session's metadata is a small allocation that lives as
/// long as the session, made between the short-lived ones of the request that creates it.
/// glibc's malloc carves such long-lived chunks out of freed request memory and keeps the
/// rest of it in its free lists: after 1M logins the server held 274 MB with 183 MB in use
/// (`malloc_stats`; `malloc_trim` gave back 10 MB). mimalloc keeps each size class in pages
/// of its own, so request memory is reused by requests: 176 B per live session against
/// 274 B (bench/run.sh target 3; jemalloc, tried too, 189 B).
///
/// Built with mimalloc 2 (the crate's `v2`; its v3 held 216 B per session here) and without
/// transparent huge pages (`no_thp`): with them, the first touch of each 2 MiB page zeroes
/// it whole while a request waits, and POST p99 while the store grew went from 1.0 to 4.4 ms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api_keys;
pub mod cli;
pub mod clock;
pub mod command_batch;
pub mod connections;
pub mod deadline;
pub mod fd_limit;
pub mod journal;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod observer;
pub mod own_writes;
pub mod periodic;
pub mod purge;
pub mod redis_store;
pub mod server;
pub mod shards;
pub mod shutdown;
pub mod sighup;
pub mod state;
pub mod tls;
