//! The `--api-keys` file: read at start, read again on SIGHUP so keys rotate without a
//! restart. What a key file may hold and how a key is checked is the core's rule
//! (`token_server_core::auth`); this module only does the file and the signal.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_server_core::auth::{ApiKeys, Fingerprint, KeyFileError};
use token_server_core::protocol::Service;
use token_server_core::{Clock, TokenSource};

use crate::sighup::ReloadGuard;

/// Why a key file could not be used; `Display` names the file (and the line).
#[derive(Debug)]
pub enum LoadError {
    /// The file cannot be read, or is not UTF-8 text.
    Read { path: PathBuf, err: std::io::Error },
    /// The text is not a valid key file.
    Invalid { path: PathBuf, err: KeyFileError },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, err } => write!(f, "{}: {err}", path.display()),
            LoadError::Invalid { path, err } => write!(f, "{}: {err}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and parses the key file at `path`.
pub fn load(path: &Path) -> Result<ApiKeys, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|err| LoadError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    ApiKeys::parse(&text).map_err(|err| LoadError::Invalid {
        path: path.to_path_buf(),
        err,
    })
}

/// `N keys (fingerprints a1b2c3d4, …)`, the way logs name a key set.
pub fn describe(keys: &ApiKeys) -> String {
    let fingerprints: Vec<String> = keys
        .fingerprints()
        .iter()
        .map(Fingerprint::to_string)
        .collect();
    format!(
        "{} keys (fingerprints {})",
        keys.len(),
        fingerprints.join(", ")
    )
}

/// Listens for SIGHUP (registered at once, so a SIGHUP right after startup no longer
/// kills the process); each signal reloads `path` into `service`. A file that fails to
/// load keeps the keys in force and logs why.
pub fn reload_on_sighup<C, R>(
    service: Arc<Service<C, R>>,
    path: PathBuf,
) -> std::io::Result<ReloadGuard>
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    crate::sighup::on_sighup(move || reload(&service, &path))
}

/// Reloads the key file into `service`; on failure the current keys stay.
pub fn reload<C: Clock, R: TokenSource>(service: &Service<C, R>, path: &Path) {
    // A key file is a few lines: reading it on the runtime thread costs less than
    // handing it to the blocking pool.
    match load(path) {
        Ok(keys) => {
            log::info!("api keys reloaded: {}", describe(&keys));
            service.replace_api_keys(keys);
        }
        Err(err) => log::error!("api keys not reloaded, the previous keys stay in force: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("ts-api-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, "# keys\nshort\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: line 2: ", path.display())),
            "{err}"
        );
        let missing = dir.join("missing");
        let err = load(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        let keys = load(&path).unwrap();
        assert_eq!(
            describe(&keys),
            format!(
                "1 keys (fingerprints {})",
                Fingerprint::of_key(&"k".repeat(40))
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
