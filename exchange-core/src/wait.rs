//! Waiting for something another task signals through a [`Notify`], with an optional deadline:
//! the one receive loop every in-memory queue here needs.

use tokio::sync::Notify;
use tokio::time::Instant;

/// Calls `poll` until it yields a value, waiting on `notify` between calls; `None` once
/// `deadline` passes first. No wake-up is lost between a call of `poll` and the wait.
pub async fn wait_for<T>(notify: &Notify, deadline: Option<Instant>, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    if let Some(ready) = poll() {
        return Some(ready);
    }
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(ready) = poll() {
            return Some(ready);
        }
        match deadline {
            None => notified.await,
            Some(deadline) => tokio::time::timeout_at(deadline, notified).await.ok()?,
        }
    }
}
