//! The token server's host pieces as a library, so bench and test binaries can serve a
//! store built on any clock and randomness with exactly the shipped HTTP stack.

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
