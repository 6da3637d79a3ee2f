//! In-memory [`Storage`]: Academy's `python` backend kind, with gravestones. Bounded by the
//! `[limits]` table; request records and gravestones expire after `[backend]`'s
//! `mailbox_expiration_d` and `gravestone_expiration_d`, as in the Redis storage.

mod expiry;
mod slot;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use exchange_core::wait::wait_for;
use exchange_core::{EntityId, Header, MailboxStats, MailboxStatus, MessageKind};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use self::expiry::{Clock, Due, Expiration, Schedule};
use self::slot::{Pending, QUEUE_ENTRY_COST, Queued, Slot, SlotState, agent_cost, mailbox_cost, shrink_sparse};
use self::usage::{Limits, Usage};
use super::config::ServerConfig;
use super::listing::{MAX_PAGE, MailboxPage, MailboxQuery, MailboxRow};
use super::storage::{ApiError, Caller, Storage, StoreTotals};

/// Visits a sweep makes before it lets other tasks run.
const SWEEP_BATCH: usize = 256;

/// Notices a terminate delivers before it lets other tasks run.
const NOTICE_BATCH: usize = 1024;

/// Mailboxes kept in this process.
///
/// Every queue, request record and mailbox is bounded (`[limits]`); usage is counted as it
/// changes, so [`Storage::totals`] is free. A background task (started by the first mailbox
/// created, stopped when the store is dropped) drops request records older than
/// `mailbox_expiration_d` and gravestones older than `gravestone_expiration_d`; a dropped
/// gravestone makes its id unknown again.
#[derive(Debug)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
    sweeper: OnceLock<tokio::task::AbortHandle>,
}

#[derive(Debug)]
struct Shared {
    mailboxes: RwLock<HashMap<Uuid, Arc<Slot>>>,
    next_seq: AtomicU64,
    limits: Limits,
    expiration: Expiration,
    usage: Usage,
    clock: Clock,
    schedule: Schedule,
}

/// Whether a delivery is held to the limits (senders) or not (what the server owes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bounds {
    Enforced,
    Owed,
}

impl MemoryStorage {
    /// An empty store with the limits of `[limits]` and `[backend] message_size_limit_kb`, and
    /// the expirations of `[backend]`.
    pub fn new(config: &ServerConfig) -> Self {
        let backend = &config.backend;
        MemoryStorage {
            shared: Arc::new(Shared {
                mailboxes: RwLock::default(),
                next_seq: AtomicU64::new(0),
                limits: Limits::from_config(config),
                expiration: Expiration::from_days(backend.mailbox_expiration_d, backend.gravestone_expiration_d),
                usage: Usage::default(),
                clock: Clock::new(),
                schedule: Schedule::default(),
            }),
            sweeper: OnceLock::new(),
        }
    }

    /// Starts the expiry sweep on the current runtime, once.
    fn start_sweeper(&self) {
        if self.sweeper.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.sweeper.get_or_init(|| {
            let period = self.shared.expiration.sweep_period();
            runtime.spawn(sweep(Arc::downgrade(&self.shared), period)).abort_handle()
        });
    }

    /// The slot if it exists and `caller` has access (403 otherwise); `None` if unknown.
    fn accessible(&self, caller: &Caller, id: &EntityId) -> Result<Option<Arc<Slot>>, ApiError> {
        match self.shared.slot(id.uid()) {
            Some(slot) if !slot.has_access(caller) => Err(ApiError::forbidden()),
            other => Ok(other),
        }
    }

    fn known(&self, caller: &Caller, id: &EntityId) -> Result<Arc<Slot>, ApiError> {
        self.accessible(caller, id)?.ok_or(ApiError::UnknownMailbox)
    }

    /// Share routes: existence and termination before ownership.
    fn owned(&self, caller: &Caller, id: &EntityId) -> Result<Arc<Slot>, ApiError> {
        let slot = self.shared.slot(id.uid()).ok_or(ApiError::UnknownMailbox)?;
        if slot.state.lock().terminated_at.is_some() {
            return Err(ApiError::Terminated);
        }
        if slot.owner != caller.client_id {
            return Err(ApiError::forbidden());
        }
        Ok(slot)
    }
}

impl Drop for MemoryStorage {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.get() {
            sweeper.abort();
        }
    }
}

/// The expiry sweep: every `period`, the visits that are due.
async fn sweep(shared: Weak<Shared>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        loop {
            let Some(shared) = shared.upgrade() else { return };
            if !shared.sweep_once(shared.clock.now_ms()) {
                break;
            }
            drop(shared);
            tokio::task::yield_now().await;
        }
    }
}

impl Shared {
    fn slot(&self, uid: Uuid) -> Option<Arc<Slot>> {
        self.mailboxes.read().get(&uid).cloned()
    }

    /// Queues a message with the request tracking of §3.4 step 5. No access check: `src` is
    /// the sender's slot when the caller may use it, `None` for server-made notices.
    fn deliver(
        &self,
        dest: &Slot,
        src: Option<&Slot>,
        header: &Header,
        message: Bytes,
        bounds: Bounds,
    ) -> Result<(), ApiError> {
        let len = message.len();
        {
            let mut state = dest.state.lock();
            if state.terminated_at.is_some() {
                return Err(ApiError::Terminated);
            }
            let record = (header.kind == MessageKind::Request).then(|| Pending::new(header, dest, self.clock.now_ms()));
            let charge = len + QUEUE_ENTRY_COST + record.as_ref().map_or(0, Pending::cost);
            if bounds == Bounds::Enforced {
                let limits = &self.limits;
                if state.queue.len() >= limits.mailbox_messages {
                    return Err(limits.queue_full_messages());
                }
                if state.queue_bytes.saturating_add(len) > limits.mailbox_bytes {
                    return Err(limits.queue_full_bytes());
                }
                if record.is_some()
                    && state.pending.len() >= limits.mailbox_pending
                    && !state.pending.contains_key(&header.tag)
                {
                    return Err(limits.too_many_pending());
                }
                if !self.usage.reserve(charge, limits.store_bytes) {
                    return Err(limits.store_full_bytes());
                }
            } else {
                self.usage.charge(charge);
            }
            if let Some(record) = record {
                if !state.expiry_planned {
                    state.expiry_planned = true;
                    let at = record.at_ms().saturating_add(self.expiration.requests_ms);
                    self.schedule.plan(at, Due::Requests, dest.uid);
                }
                if let Some(replaced) = state.pending.insert(header.tag, record) {
                    self.usage.release(replaced.cost());
                }
            }
            state.queue.push_back(Queued::from(Vec::from(message)));
            state.queue_bytes += len;
            self.usage.queued(1, len);
        }
        dest.notify.notify_one();
        if let Some(src) = src {
            let mut state = src.state.lock();
            match header.kind {
                MessageKind::Request => state.outgoing += 1,
                MessageKind::Response => {
                    let freed = state.complete(&header.tag);
                    self.usage.release(freed);
                }
            }
        }
        Ok(())
    }

    /// Makes the visits due at `now`, at most [`SWEEP_BATCH`]; `true` if more may be due.
    fn sweep_once(&self, now: u64) -> bool {
        let visits = self.schedule.take_due(now, SWEEP_BATCH);
        let mut gravestones = Vec::new();
        for (due, uid) in &visits {
            match due {
                Due::Requests => self.expire_requests(*uid, now),
                Due::Gravestone => gravestones.push(*uid),
            }
        }
        if !gravestones.is_empty() {
            self.sweep_gravestones(&gravestones, now);
        }
        visits.len() == SWEEP_BATCH
    }

    fn expire_requests(&self, uid: Uuid, now: u64) {
        let Some(slot) = self.slot(uid) else { return };
        let mut state = slot.state.lock();
        let (freed, oldest) = state.expire(now, self.expiration.requests_ms);
        self.usage.release(freed);
        match oldest {
            Some(oldest) => {
                self.schedule.plan(self.expiration.next_requests_visit(oldest, now), Due::Requests, uid);
            }
            None => state.expiry_planned = false,
        }
    }

    fn sweep_gravestones(&self, uids: &[Uuid], now: u64) {
        let mut mailboxes = self.mailboxes.write();
        for uid in uids {
            let Some(slot) = mailboxes.get(uid) else { continue };
            let expired = slot
                .state
                .lock()
                .terminated_at
                .is_some_and(|at| now.saturating_sub(at) >= self.expiration.gravestones_ms);
            if expired {
                if let Some(slot) = mailboxes.remove(uid) {
                    self.usage.release(mailbox_cost(&slot.owner) + slot.name.as_deref().map_or(0, str::len));
                    self.usage.gravestone_swept();
                }
            }
        }
        shrink_sparse!(mailboxes);
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn create(&self, caller: &Caller, id: &EntityId, agent: Option<Vec<String>>) -> Result<(), ApiError> {
        if self.accessible(caller, id)?.is_some() {
            return Ok(());
        }
        self.start_sweeper();
        let shared = &self.shared;
        let agent = if id.as_agent().is_some() { agent } else { None };
        let name = id.name().map(Box::from);
        let cost = mailbox_cost(&caller.client_id) + agent_cost(&agent) + name.as_deref().map_or(0, str::len);
        let mut mailboxes = shared.mailboxes.write();
        if mailboxes.contains_key(&id.uid()) {
            return Ok(());
        }
        if mailboxes.len() >= shared.limits.store_mailboxes {
            return Err(shared.limits.store_full_mailboxes());
        }
        if !shared.usage.reserve(cost, shared.limits.store_bytes) {
            return Err(shared.limits.store_full_bytes());
        }
        mailboxes.insert(
            id.uid(),
            Arc::new(Slot {
                uid: id.uid(),
                role: id.role(),
                seq: shared.next_seq.fetch_add(1, Ordering::Relaxed),
                name,
                owner: caller.client_id.clone(),
                state: Mutex::new(SlotState { agent, ..SlotState::default() }),
                notify: Notify::new(),
            }),
        );
        shared.usage.created();
        Ok(())
    }

    async fn terminate(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        let Some(slot) = self.accessible(caller, id)? else { return Ok(()) };
        let shared = &self.shared;
        let pending = {
            let mut state = slot.state.lock();
            if state.terminated_at.is_some() {
                return Ok(());
            }
            let now = shared.clock.now_ms();
            state.terminated_at = Some(now);
            let queue = std::mem::take(&mut state.queue);
            let queue_bytes = std::mem::take(&mut state.queue_bytes);
            let pending = std::mem::take(&mut state.pending);
            let agent = state.agent.take();
            state.heartbeat = None;
            shared.usage.dequeued(queue.len(), queue_bytes);
            shared.usage.release(
                queue_bytes
                    + queue.len() * QUEUE_ENTRY_COST
                    + pending.values().map(Pending::cost).sum::<usize>()
                    + agent_cost(&agent),
            );
            shared.usage.terminated();
            shared.schedule.plan(now.saturating_add(shared.expiration.gravestones_ms), Due::Gravestone, slot.uid);
            pending
        };
        slot.notify.notify_waiters();
        for (i, (tag, request)) in pending.into_iter().enumerate() {
            if i > 0 && i % NOTICE_BATCH == 0 {
                tokio::task::yield_now().await;
            }
            // Requesters that are unknown or terminated themselves are skipped.
            let Some(requester) = shared.slot(request.requester()) else { continue };
            let Some(notice) = request.terminated_notice(tag, &slot) else { continue };
            let bytes = Bytes::from(notice.to_json());
            let _ = shared.deliver(&requester, None, &notice.header, bytes, Bounds::Owed);
        }
        Ok(())
    }

    async fn status(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStatus, ApiError> {
        Ok(match self.accessible(caller, id)? {
            None => MailboxStatus::Missing,
            Some(slot) if slot.state.lock().terminated_at.is_some() => MailboxStatus::Terminated,
            Some(_) => MailboxStatus::Active,
        })
    }

    async fn put(&self, caller: &Caller, header: &Header, message: Bytes) -> Result<(), ApiError> {
        let shared = &self.shared;
        let mailboxes = shared.mailboxes.read();
        let dest = mailboxes.get(&header.dest.uid());
        if dest.is_some_and(|dest| !dest.has_access(caller)) {
            return Err(ApiError::forbidden());
        }
        if message.len() > shared.limits.message {
            return Err(ApiError::TooLarge { size: message.len(), limit: shared.limits.message });
        }
        let dest = dest.ok_or(ApiError::UnknownMailbox)?;
        let src = match mailboxes.get(&header.src.uid()) {
            Some(src) if src.has_access(caller) => src,
            _ => return Err(ApiError::forbidden_src()),
        };
        shared.deliver(dest, Some(src), header, message, Bounds::Enforced)
    }

    async fn requeue(&self, id: &EntityId, messages: Vec<Bytes>) -> Result<(), ApiError> {
        let Some(slot) = self.shared.slot(id.uid()) else { return Ok(()) };
        {
            let mut state = slot.state.lock();
            if state.terminated_at.is_some() {
                return Ok(());
            }
            let bytes: usize = messages.iter().map(Bytes::len).sum();
            self.shared.usage.queued(messages.len(), bytes);
            self.shared.usage.charge(bytes + messages.len() * QUEUE_ENTRY_COST);
            state.queue_bytes += bytes;
            for message in messages.into_iter().rev() {
                state.queue.push_front(Queued::from(Vec::from(message)));
            }
        }
        slot.notify.notify_one();
        Ok(())
    }

    async fn check_receive(&self, caller: &Caller, id: &EntityId) -> Result<(), ApiError> {
        if self.known(caller, id)?.state.lock().terminated_at.is_some() {
            return Err(ApiError::Terminated);
        }
        Ok(())
    }

    async fn recv(&self, caller: &Caller, id: &EntityId, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
        let slot = self.known(caller, id)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let usage = &self.shared.usage;
        wait_for(&slot.notify, Some(deadline), || slot.try_take(usage).transpose()).await.transpose()
    }

    async fn discover(&self, caller: &Caller, agent: &str, allow_subclasses: bool) -> Result<Vec<Uuid>, ApiError> {
        let mut found: Vec<(u64, Uuid)> = Vec::new();
        for (uid, slot) in self.shared.mailboxes.read().iter() {
            let matches = {
                let state = slot.state.lock();
                state.terminated_at.is_none()
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
        // An unknown id is a 200 that stores nothing (Academy answers 200 too).
        if let Some(slot) = self.accessible(caller, id)? {
            slot.state.lock().heartbeat = Some(Instant::now());
        }
        Ok(())
    }

    async fn heartbeat(&self, caller: &Caller, id: &EntityId) -> Result<Option<f64>, ApiError> {
        let slot = self.known(caller, id)?;
        let state = slot.state.lock();
        if state.terminated_at.is_some() {
            return Err(ApiError::Terminated);
        }
        Ok(state.heartbeat.map(|at| at.elapsed().as_secs_f64()))
    }

    async fn stats(&self, caller: &Caller, id: &EntityId) -> Result<MailboxStats, ApiError> {
        let Some(slot) = self.accessible(caller, id)? else { return Ok(MailboxStats::default()) };
        let stats = slot.state.lock().stats();
        Ok(stats)
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

    async fn mailboxes(&self, query: &MailboxQuery) -> Result<Option<MailboxPage>, ApiError> {
        let mut slots: Vec<Arc<Slot>> = self.shared.mailboxes.read().values().cloned().collect();
        slots.sort_unstable_by_key(|slot| slot.seq);
        let limit = query.limit.min(MAX_PAGE);
        let mut page = MailboxPage::default();
        for slot in slots {
            let state = slot.state.lock();
            let behaviours = state.agent.as_deref().unwrap_or_default();
            if !query.matches(&slot.uid, slot.name.as_deref(), slot.role.as_str(), behaviours) {
                continue;
            }
            page.matching += 1;
            if page.matching <= query.offset || page.rows.len() >= limit {
                continue;
            }
            let stats = state.stats();
            page.rows.push(MailboxRow {
                id: slot.uid,
                name: slot.name.as_deref().map(str::to_owned),
                role: slot.role.as_str(),
                behaviours: behaviours.to_vec(),
                status: if state.terminated_at.is_some() { "TERMINATED" } else { "ACTIVE" },
                queued: stats.queued,
                in_progress: stats.in_progress,
                heartbeat_age_s: state.heartbeat.map(|at| at.elapsed().as_secs_f64()),
            });
        }
        Ok(Some(page))
    }

    fn totals(&self) -> Option<StoreTotals> {
        Some(self.shared.usage.totals())
    }
}

#[cfg(test)]
mod tests {
    use exchange_core::{Body, Message, UserId};

    use super::*;

    fn store() -> MemoryStorage {
        MemoryStorage::new(&ServerConfig::default())
    }

    async fn user(store: &MemoryStorage) -> UserId {
        let id = UserId::new(None);
        store.create(&Caller::anonymous(), &id.clone().into(), None).await.unwrap();
        id
    }

    async fn put(store: &MemoryStorage, message: &Message) {
        store.put(&Caller::anonymous(), &message.header, Bytes::from(message.to_json())).await.unwrap();
    }

    async fn take(store: &MemoryStorage, id: &UserId) -> Option<Bytes> {
        store.recv(&Caller::anonymous(), &id.clone().into(), Duration::from_millis(1)).await.unwrap()
    }

    async fn status(store: &MemoryStorage, id: &UserId) -> Result<MailboxStatus, ApiError> {
        store.status(&Caller::anonymous(), &id.clone().into()).await
    }

    /// Bytes charged for two fresh mailboxes of the anonymous owner.
    fn two_mailboxes() -> usize {
        2 * mailbox_cost("")
    }

    #[tokio::test]
    async fn drained_queues_and_answered_records_give_memory_back() {
        let store = store();
        let (a, b) = (user(&store).await, user(&store).await);
        let requests: Vec<Message> =
            (0..1000).map(|_| Message::request(a.clone(), b.clone(), Body::PingRequest)).collect();
        for request in &requests {
            put(&store, request).await;
        }
        let slot = store.shared.slot(b.uid()).unwrap();
        assert!(slot.state.lock().queue.capacity() >= 1000);
        while take(&store, &b).await.is_some() {}
        {
            let state = slot.state.lock();
            assert!(state.queue.capacity() <= 8, "an emptied queue keeps {} slots", state.queue.capacity());
            assert_eq!(state.pending.len(), 1000, "received requests stay pending");
        }
        let records: usize = slot.state.lock().pending.values().map(Pending::cost).sum();
        assert_eq!(store.shared.usage.stored(), two_mailboxes() + records);
        for request in &requests {
            put(&store, &request.response(Body::SuccessResponse).unwrap()).await;
        }
        while take(&store, &a).await.is_some() {}
        {
            let state = slot.state.lock();
            assert!(state.pending.is_empty());
            assert!(state.pending.capacity() <= 8, "an emptied record map keeps {}", state.pending.capacity());
            assert_eq!(state.completed, 1000);
        }
        assert_eq!(store.shared.usage.stored(), two_mailboxes(), "everything charged was given back");
        let totals = store.totals().unwrap();
        assert_eq!((totals.queued_messages, totals.queued_bytes), (0, 0));
    }

    #[tokio::test]
    async fn records_and_gravestones_expire_at_their_age() {
        let store = store();
        let (a, b) = (user(&store).await, user(&store).await);
        for _ in 0..100 {
            put(&store, &Message::request(a.clone(), b.clone(), Body::PingRequest)).await;
        }
        assert_eq!(store.shared.schedule.len(), 1, "one visit planned per mailbox, not per request");
        while take(&store, &b).await.is_some() {}
        let expiration = store.shared.expiration;
        let now = store.shared.clock.now_ms();
        store.shared.sweep_once(now + expiration.requests_ms / 2);
        assert_eq!(store.stats(&Caller::anonymous(), &b.clone().into()).await.unwrap().in_progress, 100, "young");
        store.shared.sweep_once(now + expiration.requests_ms + 1000);
        assert_eq!(store.stats(&Caller::anonymous(), &b.clone().into()).await.unwrap().in_progress, 0, "expired");
        assert_eq!(store.shared.usage.stored(), two_mailboxes());
        assert_eq!(store.shared.schedule.len(), 0, "nothing left to visit");
        store.terminate(&Caller::anonymous(), &a.clone().into()).await.unwrap();
        store.shared.sweep_once(now + expiration.gravestones_ms / 2);
        assert_eq!(status(&store, &a).await.unwrap(), MailboxStatus::Terminated, "a young gravestone");
        store.shared.sweep_once(now + expiration.gravestones_ms + 1000);
        assert_eq!(status(&store, &a).await.unwrap(), MailboxStatus::Missing, "an expired gravestone");
        assert_eq!(status(&store, &b).await.unwrap(), MailboxStatus::Active);
        assert_eq!(store.shared.usage.stored(), mailbox_cost(""));
        let totals = store.totals().unwrap();
        assert_eq!((totals.active_mailboxes, totals.terminated_mailboxes), (1, 0));
    }
}
