//! In-process exchange over tokio: every mailbox lives in this process, messages move by value
//! (never serialized). It is the embedded default and the reference the other backends are
//! compared with.
//!
//! ```
//! # tokio_test_block_on(async {
//! use exchange_core::{Body, Exchange, Message};
//! use exchange_local::LocalExchange;
//!
//! let exchange = LocalExchange::new();
//! let alice = exchange.register_user(Some("alice")).await?;
//! let bob = exchange.register_user(Some("bob")).await?;
//! let inbox = exchange.open_mailbox(&bob.clone().into()).await?;
//! exchange.send(Message::request(alice, bob, Body::PingRequest)).await?;
//! assert_eq!(inbox.recv(None).await?.body, Body::PingRequest);
//! # Ok::<(), exchange_core::Error>(()) });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use exchange_core::wait::wait_for;
use exchange_core::{
    AgentId, AgentRegistration, EntityId, Error, Exchange, Header, Mailbox, MailboxStats, MailboxStatus, Message,
    MessageKind, Result, UserId,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

/// An in-process exchange. Clones share the same mailboxes.
#[derive(Clone, Default)]
pub struct LocalExchange {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: RwLock<HashMap<Uuid, Arc<Slot>>>,
    next_seq: AtomicU64,
}

/// One mailbox.
struct Slot {
    id: EntityId,
    /// Registration order, for discover.
    seq: u64,
    state: Mutex<SlotState>,
    /// Wakes receivers on a new message, termination or close.
    notify: Notify,
    outgoing: AtomicU64,
    completed: AtomicU64,
}

#[derive(Default)]
struct SlotState {
    queue: VecDeque<Message>,
    terminated: bool,
    /// Behaviour names of an active agent (`None` for users and terminated agents).
    behaviors: Option<Vec<String>>,
    /// Requests addressed here and not answered yet, by tag.
    pending: HashMap<Uuid, Pending, BuildHasherDefault<TagHasher>>,
    heartbeat: Option<Instant>,
}

impl LocalExchange {
    /// A new, empty exchange.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, uid: &Uuid) -> Option<Arc<Slot>> {
        self.inner.slots.read().get(uid).cloned()
    }

    fn known_slot(&self, id: &EntityId) -> Result<Arc<Slot>> {
        self.slot(&id.uid()).ok_or_else(|| Error::BadEntityId { id: id.clone() })
    }

    fn create(&self, id: EntityId, behaviors: Option<Vec<String>>) {
        let mut slots = self.inner.slots.write();
        slots.entry(id.uid()).or_insert_with(|| {
            Arc::new(Slot {
                id,
                seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
                state: Mutex::new(SlotState { behaviors, ..SlotState::default() }),
                notify: Notify::new(),
                outgoing: AtomicU64::new(0),
                completed: AtomicU64::new(0),
            })
        });
    }

    /// Delivers a message; the request tracking of §3.4 step 5 happens here.
    fn deliver(&self, message: Message) -> Result<()> {
        let slots = self.inner.slots.read();
        let dest = slots
            .get(&message.header.dest.uid())
            .ok_or_else(|| Error::BadEntityId { id: message.header.dest.clone() })?;
        let src = slots.get(&message.header.src.uid());
        let is_request = message.header.kind == MessageKind::Request;
        if !is_request {
            if let Some(src) = src {
                if src.state.lock().pending.remove(&message.header.tag).is_some() {
                    src.completed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        {
            let mut state = dest.state.lock();
            if state.terminated {
                return Err(Error::MailboxTerminated { id: message.header.dest.clone() });
            }
            if is_request {
                let pending = Pending {
                    requester: message.header.src.clone(),
                    addressed_to: message.header.dest.clone(),
                    label: message.header.label,
                };
                state.pending.insert(message.header.tag, pending);
            }
            state.queue.push_back(message);
        }
        dest.notify.notify_one();
        if is_request {
            if let Some(src) = src {
                src.outgoing.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LocalExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalExchange").field("mailboxes", &self.inner.slots.read().len()).finish()
    }
}

#[async_trait]
impl Exchange for LocalExchange {
    async fn register_agent(&self, registration: AgentRegistration) -> Result<AgentId> {
        let id = registration.resolve_id();
        self.create(id.clone().into(), Some(registration.behaviors));
        Ok(id)
    }

    async fn register_user(&self, name: Option<&str>) -> Result<UserId> {
        let id = UserId::new(name);
        self.create(id.clone().into(), None);
        Ok(id)
    }

    async fn terminate(&self, id: &EntityId) -> Result<()> {
        let Some(slot) = self.slot(&id.uid()) else { return Ok(()) };
        let pending = {
            let mut state = slot.state.lock();
            if state.terminated {
                return Ok(());
            }
            state.terminated = true;
            state.queue = VecDeque::new();
            state.behaviors = None;
            std::mem::take(&mut state.pending)
        };
        slot.notify.notify_waiters();
        for (tag, request) in pending {
            // Requesters that are unknown or terminated themselves are skipped.
            let _ = Message::terminated_notice(&request.header(tag)).and_then(|notice| self.deliver(notice));
        }
        Ok(())
    }

    async fn discover(&self, behavior: &str, allow_subclasses: bool) -> Result<Vec<AgentId>> {
        let mut found: Vec<(u64, AgentId)> = Vec::new();
        for slot in self.inner.slots.read().values() {
            let state = slot.state.lock();
            let Some(behaviors) = &state.behaviors else { continue };
            let matches = if allow_subclasses {
                behaviors.iter().any(|b| b == behavior)
            } else {
                behaviors.first().is_some_and(|b| b == behavior)
            };
            if let (true, Some(agent)) = (matches, slot.id.as_agent()) {
                found.push((slot.seq, agent.clone()));
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    async fn open_mailbox(&self, id: &EntityId) -> Result<Box<dyn Mailbox>> {
        let slot = self.known_slot(id)?;
        if slot.state.lock().terminated {
            return Err(Error::MailboxTerminated { id: slot.id.clone() });
        }
        Ok(Box::new(LocalMailbox { slot, closed: AtomicBool::new(false) }))
    }

    async fn send(&self, message: Message) -> Result<()> {
        self.deliver(message)
    }

    async fn status(&self, id: &EntityId) -> Result<MailboxStatus> {
        Ok(match self.slot(&id.uid()) {
            None => MailboxStatus::Missing,
            Some(slot) if slot.state.lock().terminated => MailboxStatus::Terminated,
            Some(_) => MailboxStatus::Active,
        })
    }

    async fn update_heartbeat(&self, id: &EntityId) -> Result<()> {
        if let Some(slot) = self.slot(&id.uid()) {
            slot.state.lock().heartbeat = Some(Instant::now());
        }
        Ok(())
    }

    async fn heartbeat(&self, id: &EntityId) -> Result<Option<Duration>> {
        let slot = self.known_slot(id)?;
        let state = slot.state.lock();
        if state.terminated {
            return Err(Error::MailboxTerminated { id: id.clone() });
        }
        Ok(state.heartbeat.map(|at| at.elapsed()))
    }

    async fn stats(&self, id: &EntityId) -> Result<MailboxStats> {
        let slot = self.known_slot(id)?;
        let (pending, queued) = {
            let state = slot.state.lock();
            (state.pending.len() as u64, state.queue.len() as u64)
        };
        Ok(MailboxStats::from_counts(
            pending,
            slot.completed.load(Ordering::Relaxed),
            slot.outgoing.load(Ordering::Relaxed),
            queued,
        ))
    }
}

/// What terminate needs to answer a pending request (smaller than its whole header).
struct Pending {
    requester: EntityId,
    addressed_to: EntityId,
    label: Option<Uuid>,
}

impl Pending {
    fn header(self, tag: Uuid) -> Header {
        Header { label: self.label, tag, ..Header::request(self.requester, self.addressed_to) }
    }
}

/// Hashes tags, which are random UUIDs made in this process, by folding their bits.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

/// Receiving end of a local mailbox.
pub struct LocalMailbox {
    slot: Arc<Slot>,
    closed: AtomicBool,
}

impl fmt::Debug for LocalMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMailbox").field("id", &self.slot.id).finish()
    }
}

impl LocalMailbox {
    fn try_take(&self) -> Option<Result<Message>> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Err(Error::Closed { id: self.slot.id.clone() }));
        }
        let mut state = self.slot.state.lock();
        if state.terminated {
            return Some(Err(Error::MailboxTerminated { id: self.slot.id.clone() }));
        }
        state.queue.pop_front().map(Ok)
    }
}

#[async_trait]
impl Mailbox for LocalMailbox {
    fn id(&self) -> &EntityId {
        &self.slot.id
    }

    async fn recv(&self, timeout: Option<Duration>) -> Result<Message> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        wait_for(&self.slot.notify, deadline, || self.try_take())
            .await
            .unwrap_or(Err(Error::Timeout { timeout: timeout.unwrap_or_default() }))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.slot.notify.notify_waiters();
        Ok(())
    }
}
