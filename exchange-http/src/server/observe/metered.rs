//! [`MeteredStorage`]: a [`Storage`] that times and counts every operation of the one it wraps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use exchange_core::{EntityId, Header, MailboxStats, MailboxStatus};
use uuid::Uuid;

use super::metrics::Metrics;
use crate::server::listing::{MailboxPage, MailboxQuery};
use crate::server::storage::{ApiError, Caller, Storage, StoreTotals};

/// Records each operation's round trip and failures, messages accepted and delivered.
pub(crate) struct MeteredStorage {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl MeteredStorage {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Self {
        MeteredStorage { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.storage(operation, Some(start.elapsed()), failed(&result));
        result
    }
}

/// A failure of the store itself (not a refusal of the request).
fn failed<T>(result: &Result<T, ApiError>) -> bool {
    matches!(result, Err(ApiError::Unavailable(_)))
}

#[async_trait]
impl Storage for MeteredStorage {
    async fn create(&self, caller: &Caller, id: &EntityId, agent: Option<Vec<String>>) -> Result<(), ApiError> {
        self.timed("create", self.inner.create(caller, id, agent)).await
    }

    async fn terminate(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        self.timed("terminate", self.inner.terminate(caller, id)).await
    }

    async fn status(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStatus, ApiError> {
        self.timed("status", self.inner.status(caller, id)).await
    }

    async fn put(&self, caller: &Caller, header: &Header, message: Bytes) -> Result<(), ApiError> {
        let result = self.timed("put", self.inner.put(caller, header, message)).await;
        if result.is_ok() {
            self.metrics.accepted();
        }
        result
    }

    async fn requeue(&self, id: &EntityId, messages: Vec<Bytes>) -> Result<(), ApiError> {
        self.timed("requeue", self.inner.requeue(id, messages)).await
    }

    async fn check_receive(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        self.timed("check_receive", self.inner.check_receive(caller, id)).await
    }

    async fn recv(&self, caller: &Caller, id: &EntityId, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
        let result = self.inner.recv(caller, id, timeout).await;
        self.metrics.storage("recv", None, failed(&result));
        if matches!(result, Ok(Some(_))) {
            self.metrics.delivered();
        }
        result
    }

    async fn discover(&self, caller: &Caller, agent: &str, allow_subclasses: bool) -> Result<Vec<Uuid>, ApiError> {
        self.timed("discover", self.inner.discover(caller, agent, allow_subclasses)).await
    }

    async fn set_heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        self.timed("set_heartbeat", self.inner.set_heartbeat(caller, id)).await
    }

    async fn heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<Option<f64>, ApiError> {
        self.timed("heartbeat", self.inner.heartbeat(caller, id)).await
    }

    async fn stats(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStats, ApiError> {
        self.timed("stats", self.inner.stats(caller, id)).await
    }

    async fn share(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError> {
        self.timed("share", self.inner.share(caller, id, group)).await
    }

    async fn shares(&self, caller: &Caller, id: &EntityId) -> Result<Vec<String>, ApiError> {
        self.timed("shares", self.inner.shares(caller, id)).await
    }

    async fn unshare(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError> {
        self.timed("unshare", self.inner.unshare(caller, id, group)).await
    }

    async fn ready(&self) -> Result<(), ApiError> {
        self.timed("ready", self.inner.ready()).await
    }

    async fn mailboxes(&self, query: &MailboxQuery) -> Result<Option<MailboxPage>, ApiError> {
        self.timed("mailboxes", self.inner.mailboxes(query)).await
    }

    fn totals(&self) -> Option<StoreTotals> {
        self.inner.totals()
    }

    fn data_losses(&self) -> u64 {
        self.inner.data_losses()
    }
}
