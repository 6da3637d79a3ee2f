//! [`Client`]: one mailbox shared by many [`Handle`]s, with the listener that routes responses
//! back to the calls waiting for them.
//!
//! A user's client owns a user mailbox and a listener task; an agent's client is the agent's
//! own mailbox, whose listener is the agent runtime. Responses are routed by tag (checked
//! against the label) to the waiting call.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::exchange::{Exchange, Mailbox};
use crate::handle::Handle;
use crate::id::{AgentId, EntityId};
use crate::message::{AcademyError, Body, ErrorCode, Message};

/// How often clients post a heartbeat (Academy's default).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// A heartbeat younger than this means the agent is [`AgentStatus::Active`].
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(90);

/// Liveness of an agent, derived from its heartbeat as Academy's clients derive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentStatus {
    /// Heartbeat younger than [`ACTIVE_WINDOW`].
    Active,
    /// No heartbeat yet, or an old one.
    Inactive,
    /// The mailbox was terminated.
    Terminated,
    /// The exchange does not know the id.
    Missing,
}

/// The status of `id` read from its heartbeat.
///
/// # Errors
/// Transport failures.
pub async fn agent_status(exchange: &dyn Exchange, id: &EntityId) -> Result<AgentStatus> {
    match exchange.heartbeat(id).await {
        Ok(Some(age)) if age < ACTIVE_WINDOW => Ok(AgentStatus::Active),
        Ok(_) => Ok(AgentStatus::Inactive),
        Err(Error::BadEntityId { .. }) => Ok(AgentStatus::Missing),
        Err(Error::MailboxTerminated { .. }) => Ok(AgentStatus::Terminated),
        Err(e) => Err(e),
    }
}

/// Posts a heartbeat for `id` now (before returning, so that an entity that answers already
/// reads as active) and then every `interval`, until the returned task is aborted.
pub(crate) async fn start_heartbeat(exchange: Arc<dyn Exchange>, id: EntityId, interval: Duration) -> JoinHandle<()> {
    async fn beat(exchange: &dyn Exchange, id: &EntityId) {
        if let Err(e) = exchange.update_heartbeat(id).await {
            tracing::warn!(%id, error = %e, "heartbeat failed");
        }
    }
    beat(&*exchange, &id).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            beat(&*exchange, &id).await;
        }
    })
}

/// A waiting call: the handle's label and where to deliver the response.
struct Waiter {
    label: Option<Uuid>,
    tx: oneshot::Sender<Message>,
}

/// One mailbox used by many handles. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    exchange: Arc<dyn Exchange>,
    id: EntityId,
    pending: Mutex<HashMap<Uuid, Waiter>>,
    closed: AtomicBool,
    /// The mailbox and background tasks of a user client (agents: owned by the runtime).
    owned: Mutex<Option<Owned>>,
}

struct Owned {
    mailbox: Arc<dyn Mailbox>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Some(owned) = self.owned.get_mut().take() {
            for task in owned.tasks {
                task.abort();
            }
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("id", &self.inner.id).field("pending", &self.inner.pending.lock().len()).finish()
    }
}

impl Client {
    /// Registers a user mailbox and starts its listener and heartbeat.
    ///
    /// # Errors
    /// Transport failures while registering or opening the mailbox.
    pub async fn user(exchange: Arc<dyn Exchange>, name: Option<&str>) -> Result<Client> {
        let id: EntityId = exchange.register_user(name).await?.into();
        let mailbox: Arc<dyn Mailbox> = Arc::from(exchange.open_mailbox(&id).await?);
        let client = Client::new(exchange.clone(), id.clone());
        let listener = tokio::spawn(user_listener(Arc::downgrade(&client.inner), mailbox.clone()));
        let heartbeat = start_heartbeat(exchange, id, HEARTBEAT_INTERVAL).await;
        *client.inner.owned.lock() = Some(Owned { mailbox, tasks: vec![listener, heartbeat] });
        Ok(client)
    }

    /// A client without a listener: the caller routes responses with [`Client::route`].
    pub(crate) fn new(exchange: Arc<dyn Exchange>, id: EntityId) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                exchange,
                id,
                pending: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                owned: Mutex::new(None),
            }),
        }
    }

    /// The mailbox requests are sent from.
    pub fn id(&self) -> &EntityId {
        &self.inner.id
    }

    /// The exchange this client talks to.
    pub fn exchange(&self) -> &Arc<dyn Exchange> {
        &self.inner.exchange
    }

    /// A handle to an agent, sending from this client's mailbox.
    pub fn handle(&self, agent: &AgentId) -> Handle {
        Handle::new(self.clone(), agent.clone())
    }

    /// Liveness of an agent, from its heartbeat.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn status(&self, agent: &AgentId) -> Result<AgentStatus> {
        agent_status(&*self.inner.exchange, &agent.clone().into()).await
    }

    /// Agents whose behaviours match (see [`Exchange::discover`]).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn discover(&self, behavior: &str, allow_subclasses: bool) -> Result<Vec<AgentId>> {
        self.inner.exchange.discover(behavior, allow_subclasses).await
    }

    /// Stops the listener, fails waiting calls, and terminates a user client's mailbox (users
    /// always terminate their own mailbox on close, as Academy's do). Idempotent.
    ///
    /// # Errors
    /// Transport failures while terminating.
    pub async fn close(&self) -> Result<()> {
        self.fail_all();
        let owned = self.inner.owned.lock().take();
        if let Some(owned) = owned {
            for task in owned.tasks {
                task.abort();
            }
            let _ = owned.mailbox.close().await;
            self.inner.exchange.terminate(&self.inner.id).await?;
        }
        Ok(())
    }

    /// Registers a waiting call.
    pub(crate) fn expect(&self, tag: Uuid, label: Option<Uuid>) -> Result<oneshot::Receiver<Message>> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.inner.pending.lock();
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { id: self.inner.id.clone() });
        }
        pending.insert(tag, Waiter { label, tx });
        Ok(rx)
    }

    /// Forgets a waiting call (finished, timed out or dropped).
    pub(crate) fn forget(&self, tag: &Uuid) {
        self.inner.pending.lock().remove(tag);
    }

    /// Why calls can no longer complete.
    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed { id: self.inner.id.clone() }
    }

    /// Hands a response to the call waiting for it; unknown tags or labels are dropped.
    pub(crate) fn route(&self, message: Message) {
        let waiter = self.inner.pending.lock().remove(&message.header.tag);
        match waiter {
            Some(waiter) if waiter.label == message.header.label => {
                let _ = waiter.tx.send(message);
            }
            Some(waiter) => {
                tracing::debug!(id = %self.inner.id, "dropping a response whose label does not match its call");
                self.inner.pending.lock().insert(message.header.tag, waiter);
            }
            None => tracing::debug!(id = %self.inner.id, %message, "dropping a response nobody waits for"),
        }
    }

    /// Fails every waiting call and refuses new ones.
    pub(crate) fn fail_all(&self) {
        let mut pending = self.inner.pending.lock();
        self.inner.closed.store(true, Ordering::Release);
        pending.clear();
    }
}

/// Answers a request that reached a client which does not serve it: code 5 for an
/// incompatible protocol, else `code` (4 for users).
pub(crate) fn refusal(request: &Message, code: ErrorCode, receiver: &EntityId) -> Result<Message> {
    let code = if request.header.check_protocol().is_err() { ErrorCode::IncompatibleProtocol } else { code };
    request.response(Body::AcademyError(AcademyError { error_code: code, mailbox_id: Some(receiver.clone()) }))
}

/// Receives on a user mailbox: responses go to their calls, requests are refused (code 4).
async fn user_listener(client: std::sync::Weak<ClientInner>, mailbox: Arc<dyn Mailbox>) {
    let mut failures = 0u32;
    loop {
        let message = match mailbox.recv(None).await {
            Ok(message) => message,
            Err(Error::Timeout { .. }) => continue,
            Err(e) if e.is_retryable() && failures < 50 => {
                failures += 1;
                tracing::warn!(id = %mailbox.id(), error = %e, "user client receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => break,
        };
        failures = 0;
        let Some(inner) = client.upgrade() else { break };
        let client = Client { inner };
        if message.is_request() {
            if let Ok(answer) = refusal(&message, ErrorCode::InvalidClient, client.id()) {
                let _ = client.exchange().send(answer).await;
            }
        } else {
            client.route(message);
        }
    }
    if let Some(inner) = client.upgrade() {
        Client { inner }.fail_all();
    }
}
