//! The state file on disk: loaded at start, written atomically on shutdown and every
//! snapshot interval, so a deploy or a crash logs (almost) nobody out.
//!
//! One writer at a time ([`Snapshots`]): the shutdown save waits for a periodic snapshot in
//! progress, since both write the same temporary file. A snapshot streams the store shard by
//! shard to a file thread, so no copy of the whole store is ever held.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use token_server_core::journal::Replay;
use token_server_core::protocol::Service;
use token_server_core::snapshot::{
    read_snapshot, ReadChecks, SnapshotError, SnapshotWriter, StoredSession,
};
use token_server_core::throttle::Throttle;
use token_server_core::{Clock, TokenSource, TokenStore};
use tokio::sync::{mpsc, oneshot};

use crate::journal::Journal;
use crate::observer::Observer;
use crate::periodic::{self, PeriodicGuard};
use crate::shards;

/// A state file that cannot be used; `Display` says which file and what went wrong.
#[derive(Debug)]
pub struct StateError {
    path: PathBuf,
    action: StateAction,
    cause: SnapshotError,
}

/// What was being done with the state file when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateAction {
    Load,
    /// Replaying a journal (its path is the error's).
    LoadJournal,
    Write,
    /// The start-up check that files can be created in the state file's directory.
    UseDirectory,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match self.action {
            StateAction::Load => write!(f, "cannot load state file {path}: {}", self.cause),
            StateAction::LoadJournal => write!(f, "cannot replay journal {path}: {}", self.cause),
            StateAction::Write => write!(f, "cannot write state file {path}: {}", self.cause),
            StateAction::UseDirectory => write!(
                f,
                "cannot write state file {path}: its directory {} is missing or not writable ({})",
                directory_of(&self.path).display(),
                self.cause
            ),
        }
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
        action: StateAction::Load,
        cause,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(error(SnapshotError::Io(err))),
    };
    let checks = ReadChecks {
        now: store.clock().now(),
        meta_limits: store.meta_limits(),
    };
    let sessions = read_snapshot(BufReader::new(file), &checks).map_err(error)?;
    Ok(store.import(sessions))
}

/// What [`load_journaled`] filed and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Live sessions filed.
    pub sessions: usize,
    /// Journal records replayed.
    pub records: usize,
}

/// [`load`], then the journals' records over it (see [`crate::journal`]); the journal is
/// then cut to its readable part and ready for appends. A torn last record of a journal is
/// ignored and logged; anything else unreadable is an error naming the file and line.
pub fn load_journaled<C: Clock, R: TokenSource>(
    path: &Path,
    store: &TokenStore<C, R>,
    journal: &Journal,
) -> Result<Loaded, StateError> {
    let checks = ReadChecks {
        now: store.clock().now(),
        meta_limits: store.meta_limits(),
    };
    let snapshot = match File::open(path) {
        Ok(file) => read_snapshot(BufReader::new(file), &checks),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(SnapshotError::Io(err)),
    }
    .map_err(|cause| StateError {
        path: path.to_path_buf(),
        action: StateAction::Load,
        cause,
    })?;
    let mut replay = Replay::default();
    let mut records = 0;
    let mut current_readable = 0;
    for file in journal.files() {
        let error = |cause| StateError {
            path: file.clone(),
            action: StateAction::LoadJournal,
            cause,
        };
        let read = match File::open(&file) {
            Ok(opened) => replay.read(BufReader::new(opened), &checks),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => Err(SnapshotError::Io(err)),
        }
        .map_err(error)?;
        if let Some(line) = read.torn {
            log::warn!(
                "journal {}: ignoring its last line {line}, cut short (by a crash or a power loss)",
                file.display()
            );
        }
        records += read.records;
        current_readable = read.readable_bytes;
    }
    journal.resume(current_readable).map_err(|err| StateError {
        path: journal.path().to_path_buf(),
        action: StateAction::LoadJournal,
        cause: SnapshotError::Io(err),
    })?;
    // New records must be newer than every replayed one: the journal is appended to.
    store.continue_changes_after(replay.last_sequence());
    Ok(Loaded {
        sessions: store.import(replay.apply(snapshot)),
        records,
    })
}

/// Checks at start that snapshots of `path` can be written, by creating and removing the
/// temporary file they use: a state file in a missing or read-only directory would
/// otherwise fail every snapshot and lose every session at shutdown.
pub fn check_writable(path: &Path) -> Result<(), StateError> {
    let temporary = temporary_path(path);
    create_temporary(&temporary)
        .and_then(|probe| {
            drop(probe);
            fs::remove_file(&temporary)
        })
        .map_err(|err| StateError {
            path: path.to_path_buf(),
            action: StateAction::UseDirectory,
            cause: SnapshotError::Io(err),
        })
}

/// The state file's own file name with `.tmp` appended, beside it: a rename within one
/// directory is atomic.
fn temporary_path(path: &Path) -> PathBuf {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    PathBuf::from(temporary)
}

/// The directory holding `path`: `.` for a bare file name, whose parent is empty.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates `temporary` fresh, for this process alone, readable by its owner only (it holds
/// every user's metadata). Whatever is there already (a stale file from a crash, or a
/// symlink planted to make a root process overwrite its target) is unlinked first, never
/// written through: `remove_file` removes a symlink itself, and `O_EXCL` with
/// `O_NOFOLLOW` refuses anything that reappears in between.
fn create_temporary(temporary: &Path) -> std::io::Result<File> {
    match fs::remove_file(temporary) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temporary)
}

/// Bytes gathered from the shards before they are handed to the file thread: large writes,
/// few hand-offs, little memory.
const CHUNK_BYTES: usize = 256 * 1024;

/// Chunks queued for the file thread at most; the shard loop waits when the disk is slower,
/// so memory stays at a few chunks however large the store.
const QUEUED_CHUNKS: usize = 2;

/// Debug builds only: milliseconds the file thread sleeps before its fsync, as a slow disk
/// would, so a black-box test can send SIGTERM while a periodic snapshot is still writing
/// its temporary file. Release builds ignore it.
const TEST_SYNC_DELAY_VAR: &str = "TOKEN_SERVER_TEST_SNAPSHOT_SYNC_DELAY_MS";

/// How often a snapshot that keeps failing is logged at most; the first failure is logged
/// at once, and a success after failures says so.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What the shard loop hands the file thread.
enum Chunk {
    /// More of the file.
    Part(Vec<u8>),
    /// The end of the file: write it, then fsync and rename.
    Last(Vec<u8>),
}

/// The one writer of a state file: periodic snapshots and the shutdown save both go
/// through [`Snapshots::write`], which runs one at a time.
#[derive(Debug)]
pub struct Snapshots {
    path: PathBuf,
    temporary: PathBuf,
    /// Held from the start of a snapshot until its file thread has renamed or removed the
    /// temporary file. An async mutex so a waiting save parks no worker; owned, so the file
    /// thread keeps holding it when the task that started the snapshot is aborted (the
    /// periodic job is, at shutdown) and the shutdown save waits for the thread to finish.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Snapshots failed in a row, for the line that says they recovered.
    failures: AtomicU64,
    /// Rate limit of the periodic snapshot's failure line.
    failure_log: Throttle,
    /// Pause after each shard; zero except in tests.
    shard_delay: Duration,
    /// Sessions serialized between two yields: [`SERIALIZED_PER_STEP`] except in tests.
    serialized_per_step: usize,
    /// Pause of the file thread before its fsync; zero except in tests (see
    /// [`TEST_SYNC_DELAY_VAR`]).
    sync_delay: Duration,
    /// Told of every snapshot written (metrics), when the host has one.
    observer: Option<Arc<Observer>>,
    /// The journal each snapshot rotates, when it is on.
    journal: Option<Arc<Journal>>,
}

impl Snapshots {
    /// The writer of the state file at `path`.
    pub fn new(path: PathBuf) -> Snapshots {
        let sync_delay = if cfg!(debug_assertions) {
            std::env::var(TEST_SYNC_DELAY_VAR)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or_default()
        } else {
            Duration::ZERO
        };
        Snapshots {
            temporary: temporary_path(&path),
            path,
            writer: Arc::default(),
            failures: AtomicU64::new(0),
            failure_log: Throttle::new(FAILURE_LOG_INTERVAL),
            shard_delay: Duration::ZERO,
            serialized_per_step: SERIALIZED_PER_STEP,
            sync_delay,
            observer: None,
            journal: None,
        }
    }

    /// Rotates `journal` with every snapshot (see [`crate::journal`]).
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Snapshots {
        self.journal = Some(journal);
        self
    }

    /// Reports each snapshot written, and how long it took, to `observer`.
    pub fn with_observer(mut self, observer: Arc<Observer>) -> Snapshots {
        self.observer = Some(observer);
        self
    }

    /// Pauses `delay` after each shard, making a snapshot slow on purpose (tests).
    pub fn with_shard_delay(mut self, delay: Duration) -> Snapshots {
        self.shard_delay = delay;
        self
    }

    /// Pauses the file thread `delay` before its fsync, as a slow disk would (tests).
    pub fn with_sync_delay(mut self, delay: Duration) -> Snapshots {
        self.sync_delay = delay;
        self
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `store`'s live tokens to the state file atomically, after any snapshot still
    /// in progress: a fresh temporary file beside it, fsync, rename over the old one, fsync
    /// of the directory. A crash at any point leaves the old file or the new one, never a
    /// mix. Returns the number of tokens written.
    ///
    /// The shards are copied one at a time on the calling worker, yielding between them
    /// like the purge, and serialized into small chunks that a blocking thread writes: at
    /// no point is more than a shard and a few chunks held beside the store. Dropping the
    /// future abandons the snapshot: the file thread removes the temporary and only then
    /// lets the next writer in.
    pub async fn write<C: Clock, R: TokenSource>(
        &self,
        store: &TokenStore<C, R>,
    ) -> Result<usize, StateError> {
        let writer = self.writer.clone().lock_owned().await;
        let started = std::time::Instant::now();
        if let Some(journal) = &self.journal {
            // Before any shard is copied: from here on every change goes to a fresh journal.
            let journal = journal.clone();
            let sealed = tokio::task::spawn_blocking(move || journal.seal())
                .await
                .unwrap_or_else(|err| Err(std::io::Error::other(err)));
            if let Err(err) = sealed {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(StateError {
                    path: self.path.clone(),
                    action: StateAction::Write,
                    cause: SnapshotError::Io(err),
                });
            }
        }
        let journal = self.journal.clone();
        let (chunks, received) = mpsc::channel(QUEUED_CHUNKS);
        let (report, outcome) = oneshot::channel();
        let (path, temporary) = (self.path.clone(), self.temporary.clone());
        let sync_delay = self.sync_delay;
        // A thread of its own rather than the blocking pool: it lowers its own priority,
        // which must not outlive the snapshot (an unprivileged process cannot raise it
        // back). If it cannot start, the shard loop and the outcome report it as stopped.
        let _ = std::thread::Builder::new()
            .name("snapshot-file".to_string())
            .spawn(move || {
                yield_to_requests();
                let written = write_file(&path, &temporary, received, sync_delay);
                let written = match (written, journal) {
                    // The snapshot now holds everything the sealed journals do.
                    (Ok(()), Some(journal)) => journal.remove_sealed().map_err(SnapshotError::Io),
                    (written, _) => written,
                };
                // Nobody listens when the snapshot was abandoned; the file is cleaned up anyway.
                let _ = report.send(written);
                drop(writer);
            });
        let streamed =
            stream_shards(store, chunks, self.shard_delay, self.serialized_per_step).await;
        let written = match outcome.await {
            Ok(written) => written.and(streamed),
            Err(_) => Err(SnapshotError::Io(std::io::Error::other(
                "the snapshot's file thread stopped",
            ))),
        };
        match written {
            Ok(count) => {
                if let Some(observer) = &self.observer {
                    observer.snapshot_written(started.elapsed());
                }
                log::debug!("snapshot: {count} tokens written");
                let failed = self.failures.swap(0, Ordering::Relaxed);
                if failed > 0 {
                    self.failure_log.reset();
                    log::info!(
                        "snapshot recovered after {failed} failed attempts: {count} tokens written to {}",
                        self.path.display()
                    );
                }
                Ok(count)
            }
            Err(cause) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(StateError {
                    path: self.path.clone(),
                    action: StateAction::Write,
                    cause,
                })
            }
        }
    }

    /// Writes a snapshot of `service`'s store every `interval`; stops when the guard is
    /// dropped (a snapshot in progress is abandoned, its temporary file removed). A failure
    /// is logged at once, then at most every ten minutes with a count, so a full disk does
    /// not flood the log; the first success after failures says so.
    pub fn spawn_periodic<C, R>(
        self: Arc<Self>,
        service: Arc<Service<C, R>>,
        interval: Duration,
    ) -> PeriodicGuard
    where
        C: Clock + Send + Sync + 'static,
        R: TokenSource + Send + Sync + 'static,
    {
        periodic::spawn(interval, move || {
            let (snapshots, service) = (self.clone(), service.clone());
            async move {
                let store = service.store();
                if let Err(err) = snapshots.write(store).await {
                    if let Some(held_back) = snapshots.failure_log.check(store.clock().now()) {
                        let in_a_row = snapshots.failures.load(Ordering::Relaxed);
                        if held_back == 0 {
                            log::error!("snapshot failed: {err}");
                        } else {
                            log::error!(
                                "snapshot failed: {err} ({held_back} more failures not logged, {in_a_row} in a row)"
                            );
                        }
                    }
                }
            }
        })
    }
}

/// Lowers the calling thread's CPU priority to the least (nice 19), so a request worker
/// that wakes up preempts it at once instead of waiting out its time slice: on a machine
/// with few cores the file thread shares a core with a worker, and the slices it was given
/// showed up as milliseconds of request latency during a 5M snapshot. Only this thread:
/// on Linux a thread's nice value is its own. Best effort; a refusal changes nothing.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads no memory of ours; gettid names the calling thread.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// How many sessions are serialized between two yields to the runtime. A shard holds
/// ~5,000 sessions at 5M: serialized in one step, every request queued behind it on the
/// worker waited for all of them (bench target 6 measures the p99 during a 5M snapshot).
/// 256 keep a step to a few tens of microseconds.
const SERIALIZED_PER_STEP: usize = 256;

/// Serializes `store` shard by shard into chunks for the file thread; the chunk carrying
/// the `end` line is sent as [`Chunk::Last`]. Returns the number of tokens; stops early
/// (the file thread's error says why) when the file thread hangs up.
async fn stream_shards<C: Clock, R: TokenSource>(
    store: &TokenStore<C, R>,
    chunks: mpsc::Sender<Chunk>,
    shard_delay: Duration,
    serialized_per_step: usize,
) -> Result<usize, SnapshotError> {
    let hung_up = || SnapshotError::Io(std::io::Error::other("the snapshot's file thread stopped"));
    // Reused for every shard: it holds one shard's tokens at a time.
    let mut shard: Vec<StoredSession> = Vec::new();
    let mut out = SnapshotWriter::new(Vec::with_capacity(CHUNK_BYTES))?;
    let mut indices = shards::paced(store.shard_count());
    while let Some(index) = indices.next().await {
        store.export_shard(index, &mut shard);
        for (written, token) in shard.drain(..).enumerate() {
            if written > 0 && written % serialized_per_step.max(1) == 0 {
                tokio::task::yield_now().await;
            }
            out.write(&token)?;
            if out.get_mut().len() >= CHUNK_BYTES {
                let bytes = std::mem::replace(out.get_mut(), Vec::with_capacity(CHUNK_BYTES));
                chunks
                    .send(Chunk::Part(bytes))
                    .await
                    .map_err(|_| hung_up())?;
            }
        }
        if !shard_delay.is_zero() {
            tokio::time::sleep(shard_delay).await;
        }
    }
    let (last, count) = out.finish()?;
    chunks
        .send(Chunk::Last(last))
        .await
        .map_err(|_| hung_up())?;
    Ok(count)
}

/// The file thread of a snapshot: writes the chunks to a fresh `temporary`, and once the
/// last has come, fsyncs it, renames it over `path` and fsyncs the directory. On any error,
/// or when the shard loop is dropped before its last chunk, the temporary is removed.
fn write_file(
    path: &Path,
    temporary: &Path,
    mut chunks: mpsc::Receiver<Chunk>,
    sync_delay: Duration,
) -> Result<(), SnapshotError> {
    let written = (|| -> Result<(), SnapshotError> {
        let mut file = create_temporary(temporary)?;
        loop {
            match chunks.blocking_recv() {
                Some(Chunk::Part(bytes)) => file.write_all(&bytes)?,
                Some(Chunk::Last(bytes)) => {
                    file.write_all(&bytes)?;
                    break;
                }
                None => {
                    return Err(SnapshotError::Io(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "snapshot abandoned",
                    )))
                }
            }
        }
        std::thread::sleep(sync_delay);
        file.sync_all()?;
        fs::rename(temporary, path)?;
        File::open(directory_of(path))?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use token_server_core::{ManualClock, Meta, SeededRandom};

    fn store() -> TokenStore<ManualClock, SeededRandom> {
        TokenStore::new(
            Duration::from_secs(3600),
            ManualClock::new(1_000),
            SeededRandom::new(4),
        )
    }

    fn filled(count: usize) -> TokenStore<ManualClock, SeededRandom> {
        let store = store();
        for n in 0..count {
            store
                .create(Meta::from_json(&format!(r#"{{"n":{n}}}"#)).unwrap())
                .unwrap();
        }
        store
    }

    /// A fresh, empty directory for one test.
    fn folder(name: &str) -> PathBuf {
        let folder =
            std::env::temp_dir().join(format!("token-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        folder
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Waits until `path` exists (a snapshot has created its temporary file).
    async fn appears(path: &Path) {
        for _ in 0..2_000 {
            if path.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{} never appeared", path.display());
    }

    #[tokio::test]
    async fn write_then_load_round_trips_and_leaves_no_temporary() {
        let folder = folder("round-trip");
        let path = folder.join("state");
        let source = store();
        let token = source
            .create(Meta::from_json(r#"{"u":1}"#).unwrap())
            .unwrap();
        let snapshots = Snapshots::new(path.clone());
        assert_eq!(snapshots.write(&source).await.unwrap(), 1);
        assert!(!folder.join("state.tmp").exists());
        let loaded = store();
        assert_eq!(load(&path, &loaded).unwrap(), 1);
        assert!(loaded.rotate(token.as_str(), None).is_ok());
        assert_eq!(load(&folder.join("missing"), &store()).unwrap(), 0);
        fs::write(&path, "token-server state v2\n").unwrap();
        let message = load(&path, &store()).unwrap_err().to_string();
        assert!(
            message.contains("truncated") && message.contains("state"),
            "{message}"
        );
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test]
    async fn a_large_store_streams_to_the_same_bytes_as_a_whole_export() {
        let folder = folder("stream");
        let path = folder.join("state");
        // Several chunks' worth, so chunk boundaries fall inside the file.
        let source = filled(30_000);
        let snapshots = Snapshots::new(path.clone());
        assert_eq!(snapshots.write(&source).await.unwrap(), 30_000);
        let mut whole = Vec::new();
        token_server_core::snapshot::write_snapshot(&mut whole, &source.export()).unwrap();
        assert!(whole.len() > 2 * CHUNK_BYTES);
        assert!(fs::read(&path).unwrap() == whole);
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_snapshot_lets_requests_run_within_a_shard() {
        let folder = folder("paced");
        let path = folder.join("state");
        // About 30 sessions a shard, serialized 3 at a time: yielding only between shards
        // would give the other task ~1,000 turns, yielding within them ~10,000.
        let source = filled(30_000);
        let mut snapshots = Snapshots::new(path.clone());
        snapshots.serialized_per_step = 3;
        let (written, turns) = crate::shards::turns_while(snapshots.write(&source)).await;
        assert_eq!(written.unwrap(), 30_000);
        assert!(turns >= 30_000 / 3 - source.shard_count(), "{turns} turns");
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test]
    async fn a_planted_temporary_symlink_is_replaced_not_followed() {
        let folder = folder("symlink");
        let path = folder.join("state");
        let victim = folder.join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, folder.join("state.tmp")).unwrap();
        let snapshots = Snapshots::new(path.clone());
        assert_eq!(snapshots.write(&filled(3)).await.unwrap(), 3);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(load(&path, &store()).unwrap(), 3);
        assert!(!folder.join("state.tmp").exists());
        // A stale plain temporary from a crash is replaced the same way.
        fs::write(folder.join("state.tmp"), "stale garbage").unwrap();
        assert_eq!(snapshots.write(&filled(2)).await.unwrap(), 2);
        assert_eq!(load(&path, &store()).unwrap(), 2);
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test]
    async fn the_temporary_and_the_state_file_are_owner_only() {
        let folder = folder("modes");
        let path = folder.join("state");
        // An older, world-readable state file is replaced by an owner-only one.
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let snapshots =
            Arc::new(Snapshots::new(path.clone()).with_sync_delay(Duration::from_millis(500)));
        let store = Arc::new(filled(10));
        let writing = tokio::spawn({
            let (snapshots, store) = (snapshots.clone(), store.clone());
            async move {
                snapshots
                    .write(&*store)
                    .await
                    .map_err(|err| err.to_string())
            }
        });
        appears(&folder.join("state.tmp")).await;
        assert_eq!(mode(&folder.join("state.tmp")), 0o600);
        assert_eq!(writing.await.unwrap(), Ok(10));
        assert_eq!(mode(&path), 0o600);
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test]
    async fn a_save_waits_for_the_periodic_snapshot_in_progress() {
        let folder = folder("one-writer");
        let path = folder.join("state");
        let snapshots =
            Arc::new(Snapshots::new(path.clone()).with_sync_delay(Duration::from_millis(500)));
        let service = Arc::new(Service::new(filled(50)));
        let periodic = snapshots
            .clone()
            .spawn_periodic(service.clone(), Duration::from_millis(20));
        appears(&folder.join("state.tmp")).await;
        // Into its slow fsync (the shards of 50 tokens are copied in milliseconds).
        tokio::time::sleep(Duration::from_millis(200)).await;
        // As at shutdown: stop the periodic job mid-snapshot, then save.
        drop(periodic);
        let saved = tokio::time::timeout(Duration::from_secs(60), snapshots.write(service.store()))
            .await
            .unwrap();
        assert_eq!(saved.unwrap(), 50);
        assert_eq!(load(&path, &store()).unwrap(), 50);
        assert!(!folder.join("state.tmp").exists());
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test]
    async fn concurrent_writes_take_turns() {
        let folder = folder("turns");
        let path = folder.join("state");
        let snapshots =
            Arc::new(Snapshots::new(path.clone()).with_sync_delay(Duration::from_millis(100)));
        let source = Arc::new(filled(20));
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (snapshots, store) = (snapshots.clone(), source.clone());
                tokio::spawn(
                    async move { snapshots.write(&*store).await.map_err(|e| e.to_string()) },
                )
            })
            .collect();
        for writer in writers {
            assert_eq!(writer.await.unwrap(), Ok(20));
        }
        assert_eq!(load(&path, &store()).unwrap(), 20);
        fs::remove_dir_all(&folder).unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_snapshot_removes_its_temporary_and_keeps_the_old_file() {
        let folder = folder("abandoned");
        let path = folder.join("state");
        let snapshots = Snapshots::new(path.clone());
        assert_eq!(snapshots.write(&filled(4)).await.unwrap(), 4);
        let slow = Snapshots::new(path.clone()).with_shard_delay(Duration::from_millis(1));
        let bigger = filled(9);
        let cut_short = tokio::time::timeout(Duration::from_millis(100), slow.write(&bigger)).await;
        assert!(cut_short.is_err(), "the snapshot was meant to be cut short");
        // The file thread cleans up, then lets the next writer in.
        drop(slow.writer.clone().lock_owned().await);
        assert!(!folder.join("state.tmp").exists());
        assert_eq!(load(&path, &store()).unwrap(), 4);
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_missing_or_unwritable_directory_is_refused_naming_the_path() {
        let folder = folder("probe");
        assert!(check_writable(&folder.join("state")).is_ok());
        assert!(!folder.join("state.tmp").exists(), "the probe is removed");
        let file = folder.join("a-file");
        fs::write(&file, "").unwrap();
        for path in [
            folder.join("missing").join("state"),
            file.join("state"),
            PathBuf::from("/proc/token-server-state"),
        ] {
            let message = check_writable(&path).unwrap_err().to_string();
            assert!(
                message.contains(&*path.to_string_lossy())
                    && message.contains("missing or not writable"),
                "{message}"
            );
        }
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("st")), Path::new("."));
        assert_eq!(directory_of(Path::new("a/st")), Path::new("a"));
        assert_eq!(directory_of(Path::new("/st")), Path::new("/"));
        assert_eq!(temporary_path(Path::new("st")), Path::new("st.tmp"));
    }
}
