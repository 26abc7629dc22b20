//! The future that resolves when the operator asks the service to stop.

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, whichever comes first.
///
/// If a handler cannot be installed the service keeps running rather than stopping at
/// once; the failure is logged.
pub async fn signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            log::error!("cannot listen for SIGINT: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                log::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => log::info!("SIGINT received, shutting down"),
        () = terminate => log::info!("SIGTERM received, shutting down"),
    }
}
