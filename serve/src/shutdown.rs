//! The shutdown: what starts it (SIGTERM, Ctrl-C) and the order it runs in.
//!
//! 1. The listener stops accepting (axum's graceful shutdown) and `/health` answers 503.
//! 2. The scheduler's ingress closes: a new request gets 503.
//! 3. Every waiting request ends at once: its client gets 503 ("shutting down").
//! 4. Running requests go on until they finish or the grace (`--shutdown-grace`) expires;
//!    then each ends with `finish_reason: "abort"` (outcome finished, reason error).
//! 5. The engine thread ends, the last response is written, and the process exits 0.

/// Resolves at the first SIGTERM or Ctrl-C (SIGINT).
pub async fn signal() {
    let ctrl_c = async {
        // An error means no handler could be installed: then only SIGTERM stops us.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
