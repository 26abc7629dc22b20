//! A folder of its own for one test's files, removed when the test ends.

use std::path::{Path, PathBuf};

/// A fresh folder under the system's temporary directory, named after the test binary's
/// process so parallel runs do not meet; removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// An empty folder `PREFIX-NAME-PID` (`prefix` says which suite, `name` which test);
    /// whatever a crashed earlier run left there is removed first.
    pub fn new(prefix: &str, name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` atomically (temp file + rename), as an operator replacing a
    /// key or certificate file should, so a reload never reads half a file. Returns the
    /// file's path as a command line takes it.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        let partial = self.0.join(format!("{name}.tmp"));
        std::fs::write(&partial, text).expect("write a test file");
        std::fs::rename(&partial, &path).expect("rename a test file");
        path.to_str().expect("a UTF-8 temp path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
