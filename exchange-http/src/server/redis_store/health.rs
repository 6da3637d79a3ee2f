//! Whether Redis still holds the data we started with: the marker key
//! `exchange-server:marker` (no TTL; a random token) is written at start if absent and checked
//! every few seconds. Gone (a restart without persistence, a flush, another Redis behind the
//! address) or replaced by another server that saw it gone: every mailbox registered before
//! reads as unknown, so the watcher logs an error, counts it, and writes a new marker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionManager;
use uuid::Uuid;

/// The marker key.
pub(super) const MARKER: &str = "exchange-server:marker";
/// How often the watcher looks at the marker.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Answers the marker, writing `ARGV[1]` first if there is none.
static CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local seen = redis.call('GET', KEYS[1])
if seen then return seen end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
",
    )
});

/// The marker now in Redis (written with a new token when absent).
pub(super) async fn claim(conn: &mut ConnectionManager) -> RedisResult<String> {
    CLAIM.key(MARKER).arg(Uuid::new_v4().to_string()).invoke_async(conn).await
}

/// Times a lost store was noticed since start.
#[derive(Debug, Default)]
pub(super) struct DataLosses(AtomicU64);

impl DataLosses {
    /// The count so far.
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Checks the marker every [`WATCH_INTERVAL`] against `known` (the one seen at start) until the
/// task is aborted. Failed checks (Redis unreachable) are retried at the next tick; they also
/// keep the connection reconnecting while no request comes.
pub(super) async fn watch(mut conn: ConnectionManager, mut known: String, losses: Arc<DataLosses>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        match claim(&mut conn).await {
            Ok(seen) if seen == known => {}
            Ok(seen) => {
                losses.0.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    marker = MARKER,
                    "Redis lost its data (the marker key vanished: restarted without persistence, flushed or \
                     replaced); mailboxes registered before now read as unknown"
                );
                known = seen;
            }
            Err(e) => tracing::debug!(error = %e, "marker check failed; retrying"),
        }
    }
}
