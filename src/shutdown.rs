//! The shutdown signal: a future that completes on SIGINT or SIGTERM.

/// Completes when the process receives SIGINT (Ctrl-C) or SIGTERM.
///
/// # Panics
/// If the signal handlers cannot be installed, which only happens when the runtime has no
/// signal driver: a programming error, not a runtime condition.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing requests in flight");
}
