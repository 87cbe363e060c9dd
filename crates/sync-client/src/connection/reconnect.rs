//! The connect/backoff loop: connect, run a session, and after a failure try again
//! after a capped exponential delay with jitter (cut short by `sync_now`), until the
//! engine stops. On shutdown it keeps connecting, without delay, for the grace period
//! while local changes wait.

use std::sync::Arc;
use std::time::Duration;

use super::handshake::connect;
use super::{Ended, Session};
use crate::error::SyncError;
use crate::events::{EventType, SyncEvent};
use crate::shared::Shared;

/// Runs until the engine stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let config = shared.config();
    let mut backoff = config.backoff_initial;
    let mut attempt: u64 = 0;
    let grace_deadline = || tokio::time::Instant::now() + config.shutdown_grace;
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        if shared.is_stopped() {
            break;
        }
        if shared.is_flushing() {
            let deadline = *flush_deadline.get_or_insert_with(grace_deadline);
            if tokio::time::Instant::now() >= deadline || shared.pending_count().unwrap_or(0) == 0 {
                break;
            }
        }
        attempt += 1;
        let mut event = SyncEvent::new(EventType::ConnectionAttempted);
        event.numeric_data = attempt;
        shared.emit(event);
        let connecting = connect(&shared);
        let result = match flush_deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, connecting)
                .await
                .unwrap_or_else(|_| Err(SyncError::Timeout("shutdown grace period ended while connecting".into()))),
            None => tokio::select! {
                r = connecting => r,
                () = shared.stopped() => break,
            },
        };
        match result {
            Ok((socket, welcome)) => {
                attempt = 0;
                backoff = config.backoff_initial;
                if let Err(e) = shared.authenticated_as(&welcome.user_id) {
                    // Only owners of documents made before the first connection stay unknown.
                    tracing::warn!(error = %e, "storing the user id failed");
                    let mut event = SyncEvent::new(EventType::SyncError);
                    event.error = Some(format!("storing the user id failed: {e}"));
                    shared.emit(event);
                }
                shared.connection_up();
                shared.emit(SyncEvent::new(EventType::ConnectionSucceeded));
                let ended =
                    Session::new(Arc::clone(&shared), socket, welcome.access_reconcile).run(&welcome.user_id).await;
                shared.topics().offline();
                shared.connection_down();
                match ended {
                    Ended::Stopped => break,
                    Ended::Lost(why) => {
                        let mut event = SyncEvent::new(EventType::ConnectionLost);
                        event.error = Some(why);
                        shared.emit(event);
                    }
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, attempt, "connection attempt failed");
                if matches!(err, SyncError::Server { .. }) {
                    let mut event = SyncEvent::new(EventType::SyncError);
                    event.error = Some(err.to_string());
                    shared.emit(event);
                }
            }
        }
        if shared.is_flushing() {
            // Shutting down: retry at once within the grace period, no backoff.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // Capped exponential backoff with jitter (50–100% of the delay); `sync_now` or
        // shutdown cut it short.
        let delay = backoff.mul_f64(0.5 + 0.5 * jitter());
        backoff = (backoff * 2).min(config.backoff_max);
        if shared.take_sync_now() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.woken(), if true => {
                // This wake-up already cuts the delay short, whether `sync_now` asked for it or not.
                shared.take_sync_now();
            }
            () = shared.stopped() => break,
            () = shared.flushing(), if flush_deadline.is_none() => {}
        }
    }
    shared.connection_down();
}

/// A random fraction in `[0, 1]`, so that clients that lost the same server do not all
/// come back at the same moment.
fn jitter() -> f64 {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    f64::from(byte[0]) / 255.0
}
