//! SIGHUP as "read your files again": each file-backed setting (the API keys, the TLS
//! certificate) registers its own reload here, so one signal reloads them all.

/// Stops a SIGHUP listener when dropped, so it cannot outlive the server.
pub struct ReloadGuard(tokio::task::JoinHandle<()>);

impl Drop for ReloadGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens for SIGHUP: registered at once (so a SIGHUP right after startup no longer
/// kills the process), then runs `reload` on each signal. Every listener gets every
/// signal, so several reloads can be registered independently.
pub fn on_sighup(mut reload: impl FnMut() + Send + 'static) -> std::io::Result<ReloadGuard> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(ReloadGuard(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            reload();
        }
    })))
}
