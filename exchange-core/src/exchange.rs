//! The two traits every transport implements: [`Exchange`] (shared, cheap to clone) and
//! [`Mailbox`] (one receiving end).
//!
//! Semantics are Academy 1.x's, and the conformance suite (`exchange-conformance`) checks
//! every bullet below on every backend.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::{AgentId, EntityId, UserId};
use crate::message::Message;

/// Academy's base class name: ending an agent's behaviour list with it makes the agent
/// discoverable by `discover(ACADEMY_AGENT_BASE, true)`, as every Python agent is.
pub const ACADEMY_AGENT_BASE: &str = "academy.agent.Agent";

/// What to register for an agent.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AgentRegistration {
    /// Behaviour (class) names, most-derived first; what [`Exchange::discover`] matches.
    pub behaviors: Vec<String>,
    /// A fixed id to register instead of a fresh one.
    pub id: Option<AgentId>,
    /// Name of a fresh id (ignored when `id` is given).
    pub name: Option<String>,
}

impl AgentRegistration {
    /// Registration with these behaviour names, most-derived first.
    pub fn new<I, S>(behaviors: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AgentRegistration { behaviors: behaviors.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Registers under this id.
    pub fn with_id(mut self, id: AgentId) -> Self {
        self.id = Some(id);
        self
    }

    /// Gives a fresh id this name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The id to register: the fixed one, or a fresh one with the name.
    pub fn resolve_id(&self) -> AgentId {
        self.id.clone().unwrap_or_else(|| AgentId::new(self.name.as_deref()))
    }
}

/// Exchange-side state of a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MailboxStatus {
    /// Registered and accepting messages.
    Active,
    /// Terminated: sends and receives fail.
    Terminated,
    /// Never registered (or forgotten).
    Missing,
}

/// Message counters of one mailbox (Academy's `agent_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStats {
    /// `completed + pending`: requests ever addressed here that are answered or pending.
    pub incoming: u64,
    /// Requests sent with this mailbox as the source.
    pub outgoing: u64,
    /// Responses sent from this mailbox that matched a pending request.
    pub completed: u64,
    /// Pending requests already taken out of the queue: `max(0, pending - queued)`.
    pub in_progress: u64,
    /// Messages waiting in the queue.
    pub queued: u64,
}

impl MailboxStats {
    /// Academy's formulas from the raw counters.
    pub fn from_counts(pending: u64, completed: u64, outgoing: u64, queued: u64) -> Self {
        MailboxStats {
            incoming: completed + pending,
            outgoing,
            completed,
            in_progress: pending.saturating_sub(queued),
            queued,
        }
    }
}

/// A client of one exchange: registers mailboxes, sends, discovers.
///
/// Cheap to clone (backends are `Arc` inside) and object safe: `Arc<dyn Exchange>` picks a
/// backend at run time.
#[async_trait]
pub trait Exchange: Send + Sync + Debug + 'static {
    /// Registers an agent mailbox with its behaviour names.
    ///
    /// # Behavior
    /// Registering an id that exists already is a no-op that returns it; a terminated id stays
    /// terminated.
    ///
    /// # Errors
    /// Transport failures; `Forbidden` where the exchange enforces ownership.
    async fn register_agent(&self, registration: AgentRegistration) -> Result<AgentId>;

    /// Registers a user mailbox with a fresh id.
    ///
    /// # Errors
    /// Transport failures.
    async fn register_user(&self, name: Option<&str>) -> Result<UserId>;

    /// Terminates a mailbox.
    ///
    /// # Behavior
    /// Idempotent. Queued messages are discarded, blocked receivers wake with
    /// `MailboxTerminated`, and every request pending in the mailbox (queued or being
    /// processed) is answered with an `academy-error-response` code 0 to its requester
    /// (requesters that are themselves terminated are skipped). Terminating an unknown id is a
    /// no-op (the Redis backend records a gravestone, as Academy's does).
    ///
    /// # Errors
    /// Transport failures; `Forbidden`.
    async fn terminate(&self, id: &EntityId) -> Result<()>;

    /// Active agents whose first behaviour is `behavior`, or any of whose behaviours is, with
    /// `allow_subclasses`.
    ///
    /// # Errors
    /// Transport failures.
    async fn discover(&self, behavior: &str, allow_subclasses: bool) -> Result<Vec<AgentId>>;

    /// Opens the receiving end of a mailbox.
    ///
    /// # Errors
    /// `BadEntityId` for an unknown id, `MailboxTerminated` for a terminated one.
    async fn open_mailbox(&self, id: &EntityId) -> Result<Box<dyn Mailbox>>;

    /// Sends a message to the mailbox named by its header's `dest`.
    ///
    /// # Behavior
    /// Requests are remembered until answered (for [`Exchange::stats`] and terminate);
    /// per-mailbox delivery is FIFO.
    ///
    /// # Errors
    /// `BadEntityId` for an unknown destination, `MailboxTerminated` for a terminated one,
    /// `MessageTooLarge`, `Forbidden`, transport failures.
    async fn send(&self, message: Message) -> Result<()>;

    /// Exchange-side status of a mailbox.
    ///
    /// # Errors
    /// Transport failures.
    async fn status(&self, id: &EntityId) -> Result<MailboxStatus>;

    /// Records "now" as the mailbox's last heartbeat.
    ///
    /// # Behavior
    /// Never fails for an unknown id (as Academy's exchanges).
    ///
    /// # Errors
    /// Transport failures.
    async fn update_heartbeat(&self, id: &EntityId) -> Result<()>;

    /// Time since the last heartbeat; `None` before the first.
    ///
    /// # Errors
    /// `BadEntityId` for an unknown id, `MailboxTerminated` for a terminated one.
    async fn heartbeat(&self, id: &EntityId) -> Result<Option<Duration>>;

    /// Message counters of a mailbox.
    ///
    /// # Errors
    /// `BadEntityId` for an unknown id; transport failures.
    async fn stats(&self, id: &EntityId) -> Result<MailboxStats>;
}

/// The receiving end of one mailbox. One receiver per mailbox is the normal case; with
/// several, each message goes to exactly one of them.
#[async_trait]
pub trait Mailbox: Send + Sync + Debug {
    /// The mailbox this handle receives from.
    fn id(&self) -> &EntityId;

    /// The next message, waiting at most `timeout` (`None` = until one arrives).
    ///
    /// # Errors
    /// `Timeout` when nothing arrived in time; `MailboxTerminated` when the mailbox is (or
    /// becomes, while waiting) terminated, even if messages were queued; `Closed` after
    /// [`Mailbox::close`].
    async fn recv(&self, timeout: Option<Duration>) -> Result<Message>;

    /// Stops receiving and releases the handle's resources. Does not terminate the mailbox.
    ///
    /// # Errors
    /// Transport failures.
    async fn close(&self) -> Result<()>;
}
