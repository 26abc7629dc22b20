//! The state file on disk: loaded at start, written atomically on shutdown and every
//! snapshot interval, so a deploy or a crash logs (almost) nobody out.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use token_server_core::protocol::Service;
use token_server_core::snapshot::{read_snapshot, write_snapshot, SnapshotError, StoredToken};
use token_server_core::{Clock, TokenSource, TokenStore};

use crate::observer::Observer;
use crate::periodic::{self, PeriodicGuard};
use crate::shards;

/// A state file that cannot be used; `Display` says which file and what to do.
#[derive(Debug)]
pub struct StateError {
    path: PathBuf,
    action: &'static str,
    cause: SnapshotError,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} state file {}: {}",
            self.action,
            self.path.display(),
            self.cause
        )
    }
}

impl std::error::Error for StateError {}

/// Loads `path` into `store`; a missing file is a first start and loads nothing.
///
/// Anything else that goes wrong is an error: the caller must refuse to start rather than
/// run empty and log every user out.
pub fn load<C: Clock, R: TokenSource>(
    path: &Path,
    store: &TokenStore<C, R>,
) -> Result<usize, StateError> {
    let error = |cause| StateError {
        path: path.to_path_buf(),
        action: "load",
        cause,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(error(SnapshotError::Io(err))),
    };
    let tokens = read_snapshot(BufReader::new(file)).map_err(error)?;
    Ok(store.import(tokens))
}

/// Writes the store's live tokens to `path` atomically (see [`write`]).
pub fn save<C: Clock, R: TokenSource>(
    path: &Path,
    store: &TokenStore<C, R>,
) -> Result<usize, StateError> {
    write(path, &store.export())
}

/// Writes `tokens` to `path` atomically: a temporary file beside it, fsync, rename over the
/// old one, fsync of the folder. A crash at any point leaves either the old file or the new
/// one, never a mix.
pub fn write(path: &Path, tokens: &[StoredToken]) -> Result<usize, StateError> {
    let error = |cause| StateError {
        path: path.to_path_buf(),
        action: "write",
        cause,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = (|| -> Result<usize, SnapshotError> {
        let file = File::create(&temporary)?;
        let mut out = BufWriter::new(file);
        let count = write_snapshot(&mut out, tokens)?;
        out.flush()?;
        let file = out.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(folder)?.sync_all()?;
        }
        Ok(count)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(error)
}

/// Writes a snapshot of `service`'s store to `path` every `interval`, each success
/// recorded in the observer's metrics; stops when the guard is dropped.
pub fn spawn_snapshots<C, R>(
    service: Arc<Service<C, R>>,
    path: PathBuf,
    interval: Duration,
    observer: Arc<Observer>,
) -> PeriodicGuard
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    let path = Arc::new(path);
    periodic::spawn(interval, move || {
        let (service, path, observer) = (service.clone(), path.clone(), observer.clone());
        async move {
            let started = std::time::Instant::now();
            // Copied shard by shard on the request workers, like the purge; the file is
            // written off them.
            let store = service.store();
            let mut tokens = Vec::new();
            shards::each_shard(store.shard_count(), |index| {
                store.export_shard(index, &mut tokens)
            })
            .await;
            match tokio::task::spawn_blocking(move || write(&path, &tokens)).await {
                Ok(Ok(count)) => {
                    observer.snapshot_written(started.elapsed());
                    log::debug!("snapshot: {count} tokens written");
                }
                Ok(Err(err)) => log::error!("snapshot failed: {err}"),
                Err(err) => log::error!("snapshot failed: {err}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_server_core::{ManualClock, Meta, SeededRandom};

    fn store() -> TokenStore<ManualClock, SeededRandom> {
        TokenStore::new(
            Duration::from_secs(3600),
            ManualClock::new(1_000),
            SeededRandom::new(4),
        )
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temporary() {
        let folder = std::env::temp_dir().join(format!("token-state-{}", std::process::id()));
        fs::create_dir_all(&folder).unwrap();
        let path = folder.join("state");
        let source = store();
        let token = source
            .create(Meta::from_json(r#"{"u":1}"#).unwrap())
            .unwrap();
        assert_eq!(save(&path, &source).unwrap(), 1);
        assert!(!folder.join("state.tmp").exists());
        let loaded = store();
        assert_eq!(load(&path, &loaded).unwrap(), 1);
        assert!(loaded.rotate(token.as_str(), None).is_ok());
        assert_eq!(load(&folder.join("missing"), &store()).unwrap(), 0);
        fs::write(&path, "token-server state v1\n").unwrap();
        let message = load(&path, &store()).unwrap_err().to_string();
        assert!(
            message.contains("truncated") && message.contains("state"),
            "{message}"
        );
        fs::remove_dir_all(&folder).unwrap();
    }
}
