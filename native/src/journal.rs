//! The journal beside the state file (`PATH.journal`): every session change appended before
//! it is answered, so a kill -9 between snapshots loses no answered login and revives no
//! used or logged-out token. The format is core's ([`token_server_core::journal`]).
//!
//! Durability: each change is one `write(2)` of one line to a file opened `O_APPEND`, under
//! a std mutex, before the store's operation returns; the bytes are then in the kernel, so
//! a crash of the process loses nothing answered. `fsync` runs every second from a
//! background task (`--journal-fsync everysec`, as Redis's `appendfsync everysec`: a power
//! loss loses at most about a second), or after every write before the answer
//! (`--journal-fsync always`).
//!
//! Rotation, so the journal stays as short as one snapshot interval and no change is lost
//! in between (run by the one snapshot writer, `crate::state::Snapshots::write`):
//!
//! 1. [`Journal::seal`], before the snapshot copies any shard: under the append mutex the
//!    current journal is renamed to `PATH.journal.N` (a sealed segment) and a fresh
//!    `PATH.journal` opened, so every change appended from then on lands in the new file.
//! 2. The snapshot copies the shards (each change appended to the sealed segment was made
//!    before it was sealed, so before the copy) and renames its file over `PATH`.
//! 3. [`Journal::remove_sealed`] deletes the sealed segments, now covered by the snapshot.
//!
//! A crash or a failed snapshot between 1 and 3 leaves sealed segments beside the journal;
//! start-up replays them all with the journal over the snapshot (old or new), and the next
//! successful snapshot deletes them. That is correct in every order because records are
//! idempotent upserts and removals ordered by the session's version: a session's newest
//! record among the journals is its state, whichever snapshot is on disk.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use token_server_core::journal::{write_change, Change, ChangeSink, HEADER};

use crate::periodic::{self, PeriodicGuard};

/// When the journal is fsynced (`--journal-fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JournalFsync {
    /// After every change, before it is answered: a power loss loses nothing answered, at
    /// the price of one disk flush per change.
    Always,
    /// Every second from a background task: a power loss loses at most about a second; a
    /// crash of the process alone loses nothing.
    #[default]
    EverySecond,
}

impl FromStr for JournalFsync {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "always" => Ok(JournalFsync::Always),
            "everysec" => Ok(JournalFsync::EverySecond),
            _ => Err(()),
        }
    }
}

/// How often a failing journal write is logged at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How often the journal is fsynced under [`JournalFsync::EverySecond`].
const FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes reserved for one change's line: most sessions' metadata is small, so one
/// allocation per change, none grown.
const LINE_BYTES: usize = 256;

/// The journal of one state file; a [`ChangeSink`] for the store.
#[derive(Debug)]
pub struct Journal {
    /// `PATH.journal`.
    path: PathBuf,
    /// The file appended to. Behind a mutex so a seal swaps it between two appends; an
    /// `Arc` so an fsync runs on a clone without holding the mutex.
    file: Mutex<Current>,
    fsync: JournalFsync,
    /// Whether anything was appended since the last background fsync.
    dirty: AtomicBool,
    /// Sealed segments on disk, oldest first, and the number the next one gets.
    sealed: Mutex<Sealed>,
    /// When a failed write was last logged, so a full disk does not flood the log.
    failure_logged: Mutex<Option<Instant>>,
}

/// The journal appended to, and how much of it is whole records.
#[derive(Debug)]
struct Current {
    file: Arc<File>,
    /// Bytes of whole lines at its start: a failed append (a full disk) may leave part of
    /// a record after them, which must be cut off before the next record is appended, or
    /// the two make one corrupt line in the middle of the journal, which refuses the start.
    whole: u64,
    /// Whether a failed append may have left part of a record after `whole` bytes that
    /// could not be cut off yet.
    torn: bool,
}

impl Current {
    fn new(file: File, whole: u64) -> Current {
        Current {
            file: Arc::new(file),
            whole,
            torn: false,
        }
    }

    /// Appends `line` whole, or leaves the file as it was (as far as the disk lets it).
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.torn {
            self.file.set_len(self.whole)?;
            self.torn = false;
        }
        match (&*self.file).write_all(line) {
            Ok(()) => {
                self.whole += line.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Part of the line may be on disk: cut it off now, or before the next one.
                self.torn = self.file.set_len(self.whole).is_err();
                Err(err)
            }
        }
    }
}

#[derive(Debug, Default)]
struct Sealed {
    segments: Vec<PathBuf>,
    next: u64,
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The journal beside the state file `state_file`.
pub fn journal_path(state_file: &Path) -> PathBuf {
    with_suffix(state_file, ".journal")
}

/// Opens `path` to append, creating it 0600 if missing; never through a symlink.
fn open_append(path: &Path, exclusive: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true);
    }
    options.open(path)
}

/// The directory holding `path`: `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

impl Journal {
    /// Opens the journal of `state_file` to append (created 0600 if missing), and finds
    /// the sealed segments a crash or a failed snapshot left. Nothing is read yet: start-up
    /// replays [`files`](Journal::files), then calls [`resume`](Journal::resume).
    pub fn open(state_file: &Path, fsync: JournalFsync) -> std::io::Result<Journal> {
        let path = journal_path(state_file);
        let file = open_append(&path, false)?;
        let mut sealed = Sealed::default();
        let prefix = format!(
            "{}.",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let mut numbered = Vec::new();
        for entry in fs::read_dir(directory_of(&path))? {
            let name = entry?.file_name();
            let number = name
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .and_then(|number| number.parse::<u64>().ok());
            if let Some(number) = number {
                numbered.push(number);
            }
        }
        numbered.sort_unstable();
        sealed.next = numbered.last().map_or(1, |last| last + 1);
        sealed.segments = numbered
            .into_iter()
            .map(|number| with_suffix(&path, &format!(".{number}")))
            .collect();
        Ok(Journal {
            path,
            // Its length is known once replay has read it (`resume`).
            file: Mutex::new(Current::new(file, 0)),
            fsync,
            dirty: AtomicBool::new(false),
            sealed: Mutex::new(sealed),
            failure_logged: Mutex::new(None),
        })
    }

    /// `PATH.journal`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files to replay at start, sealed segments first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = lock(&self.sealed).segments.clone();
        files.push(self.path.clone());
        files
    }

    /// After replay: cuts the journal to its `readable_bytes` (a torn last record would
    /// otherwise sit before the next append, a corrupt middle record at the next start),
    /// and gives an empty journal its header.
    pub fn resume(&self, readable_bytes: u64) -> std::io::Result<()> {
        let mut current = lock(&self.file);
        current.whole = readable_bytes;
        current.torn = current.file.metadata()?.len() != readable_bytes;
        if readable_bytes == 0 {
            current.append(HEADER.as_bytes())?;
        } else if current.torn {
            current.file.set_len(readable_bytes)?;
            current.torn = false;
        }
        let file = current.file.clone();
        drop(current);
        file.sync_all()
    }

    /// Step 1 of a rotation (see the module comment): renames the journal to a new sealed
    /// segment and appends to a fresh one from now on. On failure the journal is as before.
    pub fn seal(&self) -> std::io::Result<()> {
        let mut sealed = lock(&self.sealed);
        let segment = with_suffix(&self.path, &format!(".{}", sealed.next));
        let mut file = lock(&self.file);
        fs::rename(&self.path, &segment)?;
        let fresh = open_append(&self.path, true).and_then(|mut fresh| {
            fresh.write_all(HEADER.as_bytes())?;
            Ok(fresh)
        });
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(err) => {
                let _ = fs::remove_file(&self.path);
                fs::rename(&segment, &self.path)?;
                return Err(err);
            }
        };
        let old = std::mem::replace(&mut *file, Current::new(fresh, HEADER.len() as u64)).file;
        drop(file);
        sealed.next += 1;
        sealed.segments.push(segment);
        drop(sealed);
        // Off the append mutex: the sealed segment and the new name on disk, in case the
        // snapshot never completes.
        old.sync_all()?;
        File::open(directory_of(&self.path))?.sync_all()
    }

    /// Step 3 of a rotation: deletes the sealed segments, once a snapshot taken after they
    /// were sealed is on disk.
    ///
    /// A segment that cannot be deleted stays listed, with those after it, so the next
    /// snapshot tries again: forgotten, it would stay on disk and be replayed over a newer
    /// snapshot at the next start, reviving the sessions it held as they were then.
    pub fn remove_sealed(&self) -> std::io::Result<()> {
        let mut sealed = lock(&self.sealed);
        while let Some(segment) = sealed.segments.first() {
            match fs::remove_file(segment) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {
                    sealed.segments.remove(0);
                }
            }
        }
        Ok(())
    }

    /// Fsyncs the journal if anything was appended since the last time.
    pub fn sync(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            let file = lock(&self.file).file.clone();
            if let Err(err) = file.sync_data() {
                self.dirty.store(true, Ordering::Relaxed);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Under [`JournalFsync::EverySecond`], fsyncs every second until the guard drops;
    /// `None` under [`JournalFsync::Always`].
    pub fn spawn_fsync(self: Arc<Self>) -> Option<PeriodicGuard> {
        if self.fsync == JournalFsync::Always {
            return None;
        }
        Some(periodic::spawn(FSYNC_INTERVAL, move || {
            let journal = self.clone();
            async move {
                if !journal.dirty.load(Ordering::Relaxed) {
                    // Nothing appended: no blocking thread needed.
                    return;
                }
                let synced = tokio::task::spawn_blocking(move || {
                    let synced = journal.sync();
                    if let Err(err) = &synced {
                        journal.failed(err);
                    }
                })
                .await;
                drop(synced);
            }
        }))
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let file = {
            let mut current = lock(&self.file);
            current.append(line)?;
            match self.fsync {
                JournalFsync::Always => Some(current.file.clone()),
                JournalFsync::EverySecond => None,
            }
        };
        match file {
            // Outside the mutex: concurrent changes share the disk's flushes.
            Some(file) => file.sync_data(),
            None => {
                self.dirty.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn failed(&self, err: &std::io::Error) {
        let mut logged = lock(&self.failure_logged);
        if logged.is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL) {
            *logged = Some(Instant::now());
            log::error!(
                "cannot append to the journal {}: {err}; changes stay in memory and reach disk with the next snapshot",
                self.path.display()
            );
        }
    }
}

impl ChangeSink for Journal {
    fn changed(&self, change: Change<'_>) {
        let mut line = Vec::with_capacity(LINE_BYTES);
        // Writing to a Vec cannot fail.
        let _ = write_change(&mut line, change);
        if let Err(err) = self.append(&line) {
            self.failed(&err);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::load_journaled;
    use token_server_core::{ManualClock, Meta, SeededRandom, TokenStore};

    fn folder(name: &str) -> PathBuf {
        let folder =
            std::env::temp_dir().join(format!("token-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        folder
    }

    fn store(journal: Option<Arc<Journal>>) -> TokenStore<ManualClock, SeededRandom> {
        let clock = ManualClock::new(1_700_000_000_000);
        let store = TokenStore::new(Duration::from_secs(3600), clock, SeededRandom::new(9));
        match journal {
            Some(journal) => store.with_change_sink(Box::new(journal)),
            None => store,
        }
    }

    #[test]
    fn segments_sealed_by_unfinished_snapshots_replay_with_the_journal() {
        let folder = folder("sealed");
        let state = folder.join("state");
        let journal = Arc::new(Journal::open(&state, JournalFsync::EverySecond).unwrap());
        let live = store(Some(journal.clone()));
        load_journaled(&state, &live, &journal).unwrap();
        let first = live.create(Meta::default()).unwrap();
        // Two snapshots that sealed the journal and never finished (no remove_sealed).
        journal.seal().unwrap();
        let second = live.rotate(first.as_str(), None).unwrap().token;
        journal.seal().unwrap();
        let third = live.rotate(second.as_str(), None).unwrap().token;
        let other = live.create(Meta::default()).unwrap();
        assert!(live.remove(other.as_str()));
        drop((live, journal));

        let journal = Journal::open(&state, JournalFsync::Always).unwrap();
        assert_eq!(journal.files().len(), 3);
        let restored = store(None);
        let loaded = load_journaled(&state, &restored, &journal).unwrap();
        assert_eq!((loaded.sessions, loaded.records), (1, 5));
        assert!(restored.rotate(second.as_str(), None).is_err());
        assert!(restored.rotate(other.as_str(), None).is_err());
        assert!(restored.rotate(third.as_str(), None).is_ok());
        // A finished snapshot removes them; the next seal numbers on.
        journal.remove_sealed().unwrap();
        journal.seal().unwrap();
        assert_eq!(
            journal.files(),
            vec![folder.join("state.journal.3"), journal_path(&state)]
        );
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_segment_that_could_not_be_deleted_is_deleted_by_the_next_snapshot() {
        let folder = folder("undeletable");
        let state = folder.join("state");
        let journal = Arc::new(Journal::open(&state, JournalFsync::EverySecond).unwrap());
        let live = store(Some(journal.clone()));
        load_journaled(&state, &live, &journal).unwrap();
        live.create(Meta::default()).unwrap();
        journal.seal().unwrap();
        live.create(Meta::default()).unwrap();
        journal.seal().unwrap();
        // The first segment cannot be deleted: a directory holding a file stands in its
        // place (unlink fails with EISDIR, as it would with EIO or a read-only mount).
        let first = folder.join("state.journal.1");
        let second = folder.join("state.journal.2");
        fs::remove_file(&first).unwrap();
        fs::create_dir(&first).unwrap();
        fs::write(first.join("x"), "x").unwrap();
        assert!(journal.remove_sealed().is_err());
        assert!(second.exists(), "the second was deleted before the first");
        // Once it can be, the next snapshot's call deletes both.
        fs::remove_dir_all(&first).unwrap();
        fs::write(&first, "").unwrap();
        journal.remove_sealed().unwrap();
        assert!(
            !first.exists(),
            "the segment that failed was forgotten on disk"
        );
        assert!(
            !second.exists(),
            "the segment after it was forgotten on disk"
        );
        assert_eq!(journal.files(), vec![journal_path(&state)]);
        drop((live, journal));
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn the_fsync_policy_is_read_from_its_two_names() {
        assert_eq!("always".parse(), Ok(JournalFsync::Always));
        assert_eq!("everysec".parse(), Ok(JournalFsync::EverySecond));
        assert_eq!("never".parse::<JournalFsync>(), Err(()));
    }
}
