//! In-memory [`Storage`]: Academy's `python` backend kind, with gravestones.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use exchange_core::wait::wait_for;
use exchange_core::{EntityId, Header, MailboxStats, MailboxStatus, Message, MessageKind};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use super::storage::{ApiError, Caller, Storage};

/// Mailboxes kept in this process. Terminated mailboxes stay as gravestones.
#[derive(Debug)]
pub struct MemoryStorage {
    mailboxes: RwLock<HashMap<Uuid, Arc<Slot>>>,
    next_seq: AtomicU64,
    message_limit: usize,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    owner: String,
    state: Mutex<SlotState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct SlotState {
    queue: VecDeque<Bytes>,
    terminated: bool,
    agent: Option<Vec<String>>,
    shares: BTreeSet<String>,
    heartbeat: Option<Instant>,
    /// Requests addressed here and not answered, by tag.
    pending: HashMap<Uuid, Header>,
    outgoing: u64,
    completed: u64,
}

impl MemoryStorage {
    /// An empty store refusing messages longer than `message_limit` bytes.
    pub fn new(message_limit: usize) -> Self {
        MemoryStorage { mailboxes: RwLock::default(), next_seq: AtomicU64::new(0), message_limit }
    }

    fn slot(&self, id: &EntityId) -> Option<Arc<Slot>> {
        self.mailboxes.read().get(&id.uid()).cloned()
    }

    /// The slot if it exists and `caller` has access (403 otherwise); `None` if unknown.
    fn accessible(&self, caller: &Caller, id: &EntityId) -> Result<Option<Arc<Slot>>, ApiError> {
        match self.slot(id) {
            Some(slot) if !slot.has_access(caller) => Err(ApiError::forbidden()),
            other => Ok(other),
        }
    }

    fn known(&self, caller: &Caller, id: &EntityId) -> Result<Arc<Slot>, ApiError> {
        self.accessible(caller, id)?.ok_or(ApiError::UnknownMailbox)
    }

    /// Share routes: existence and termination before ownership.
    fn owned(&self, caller: &Caller, id: &EntityId) -> Result<Arc<Slot>, ApiError> {
        let slot = self.slot(id).ok_or(ApiError::UnknownMailbox)?;
        if slot.state.lock().terminated {
            return Err(ApiError::Terminated);
        }
        if slot.owner != caller.client_id {
            return Err(ApiError::forbidden());
        }
        Ok(slot)
    }

    /// Queues a message with the request tracking of §3.4 step 5; no access check.
    fn deliver(&self, header: &Header, message: Bytes) -> Result<(), ApiError> {
        let mailboxes = self.mailboxes.read();
        let dest = mailboxes.get(&header.dest.uid()).ok_or(ApiError::UnknownMailbox)?;
        let src = mailboxes.get(&header.src.uid());
        {
            let mut state = dest.state.lock();
            if state.terminated {
                return Err(ApiError::Terminated);
            }
            if header.kind == MessageKind::Request {
                state.pending.insert(header.tag, header.clone());
            }
            state.queue.push_back(message);
        }
        dest.notify.notify_one();
        if let Some(src) = src {
            let mut state = src.state.lock();
            match header.kind {
                MessageKind::Request => state.outgoing += 1,
                MessageKind::Response => {
                    if state.pending.remove(&header.tag).is_some() {
                        state.completed += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Slot {
    fn has_access(&self, caller: &Caller) -> bool {
        self.owner == caller.client_id || self.state.lock().shares.iter().any(|g| caller.groups.contains(g))
    }

    /// The next message, or the terminated error; `None` when the queue is empty.
    fn try_take(&self) -> Result<Option<Bytes>, ApiError> {
        let mut state = self.state.lock();
        if state.terminated {
            return Err(ApiError::Terminated);
        }
        Ok(state.queue.pop_front())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn create(&self, caller: &Caller, id: &EntityId, agent: Option<Vec<String>>) -> Result<(), ApiError> {
        if self.accessible(caller, id)?.is_some() {
            return Ok(());
        }
        let mut mailboxes = self.mailboxes.write();
        mailboxes.entry(id.uid()).or_insert_with(|| {
            let agent = if id.as_agent().is_some() { agent } else { None };
            Arc::new(Slot {
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                owner: caller.client_id.clone(),
                state: Mutex::new(SlotState { agent, ..SlotState::default() }),
                notify: Notify::new(),
            })
        });
        Ok(())
    }

    async fn terminate(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        let Some(slot) = self.accessible(caller, id)? else { return Ok(()) };
        let pending = {
            let mut state = slot.state.lock();
            if state.terminated {
                return Ok(());
            }
            state.terminated = true;
            state.queue = VecDeque::new();
            std::mem::take(&mut state.pending)
        };
        slot.notify.notify_waiters();
        for request in pending.into_values() {
            let Ok(notice) = Message::terminated_notice(&request) else { continue };
            // Requesters that are unknown or terminated themselves are skipped.
            let _ = self.deliver(&notice.header, Bytes::from(notice.to_json()));
        }
        Ok(())
    }

    async fn status(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStatus, ApiError> {
        Ok(match self.accessible(caller, id)? {
            None => MailboxStatus::Missing,
            Some(slot) if slot.state.lock().terminated => MailboxStatus::Terminated,
            Some(_) => MailboxStatus::Active,
        })
    }

    async fn put(&self, caller: &Caller, header: &Header, message: Bytes) -> Result<(), ApiError> {
        self.accessible(caller, &header.dest)?;
        if message.len() > self.message_limit {
            return Err(ApiError::TooLarge { size: message.len(), limit: self.message_limit });
        }
        self.deliver(header, message)
    }

    async fn requeue(&self, id: &EntityId, messages: Vec<Bytes>) -> Result<(), ApiError> {
        let Some(slot) = self.slot(id) else { return Ok(()) };
        {
            let mut state = slot.state.lock();
            if state.terminated {
                return Ok(());
            }
            for message in messages.into_iter().rev() {
                state.queue.push_front(message);
            }
        }
        slot.notify.notify_one();
        Ok(())
    }

    async fn check_receive(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        if self.known(caller, id)?.state.lock().terminated {
            return Err(ApiError::Terminated);
        }
        Ok(())
    }

    async fn recv(&self, caller: &Caller, id: &EntityId, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
        let slot = self.known(caller, id)?;
        let deadline = tokio::time::Instant::now() + timeout;
        wait_for(&slot.notify, Some(deadline), || slot.try_take().transpose()).await.transpose()
    }

    async fn discover(&self, caller: &Caller, agent: &str, allow_subclasses: bool) -> Result<Vec<Uuid>, ApiError> {
        let mut found: Vec<(u64, Uuid)> = Vec::new();
        for (uid, slot) in self.mailboxes.read().iter() {
            let matches = {
                let state = slot.state.lock();
                !state.terminated
                    && state.agent.as_ref().is_some_and(|names| {
                        if allow_subclasses {
                            names.iter().any(|n| n == agent)
                        } else {
                            names.first().is_some_and(|n| n == agent)
                        }
                    })
            };
            if matches && slot.has_access(caller) {
                found.push((slot.seq, *uid));
            }
        }
        found.sort_unstable();
        Ok(found.into_iter().map(|(_, uid)| uid).collect())
    }

    async fn set_heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        if let Some(slot) = self.accessible(caller, id)? {
            slot.state.lock().heartbeat = Some(Instant::now());
        }
        Ok(())
    }

    async fn heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<Option<f64>, ApiError> {
        let slot = self.known(caller, id)?;
        let state = slot.state.lock();
        if state.terminated {
            return Err(ApiError::Terminated);
        }
        Ok(state.heartbeat.map(|at| at.elapsed().as_secs_f64()))
    }

    async fn stats(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStats, ApiError> {
        let Some(slot) = self.accessible(caller, id)? else { return Ok(MailboxStats::default()) };
        let state = slot.state.lock();
        Ok(MailboxStats::from_counts(
            state.pending.len() as u64,
            state.completed,
            state.outgoing,
            state.queue.len() as u64,
        ))
    }

    async fn share(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError> {
        let slot = self.owned(caller, id)?;
        if !caller.groups.contains(group) {
            return Err(ApiError::forbidden());
        }
        slot.state.lock().shares.insert(group.to_owned());
        Ok(())
    }

    async fn shares(&self, caller: &Caller, id: &EntityId) -> Result<Vec<String>, ApiError> {
        let slot = self.owned(caller, id)?;
        let groups = slot.state.lock().shares.iter().cloned().collect();
        Ok(groups)
    }

    async fn unshare(&self, caller: &Caller, id: &EntityId, group: &str) -> Result<(), ApiError> {
        let slot = self.owned(caller, id)?;
        slot.state.lock().shares.remove(group);
        Ok(())
    }
}
