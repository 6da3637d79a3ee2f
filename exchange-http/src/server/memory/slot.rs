//! One mailbox of the memory store: its queue, request records, counters and who may use it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::mem::size_of;
use std::time::Instant;

use bytes::Bytes;
use exchange_core::{EntityId, Header, MailboxStats, Message, Role};
use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

use super::super::storage::{ApiError, Caller};
use super::usage::Usage;

/// A queued message: its text as received, without the spare capacity of a `Vec` or the
/// reference counting of `Bytes` (converted from and to `Bytes` without copying).
pub(super) type Queued = Box<[u8]>;

/// Bytes a queued message is charged to the store beyond its length (its queue entry).
pub(super) const QUEUE_ENTRY_COST: usize = size_of::<Queued>();

/// A mailbox. Terminated mailboxes stay as gravestones until they expire.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) uid: Uuid,
    /// The role of the id it was created with.
    pub(super) role: Role,
    /// Registration order (discover answers in it).
    pub(super) seq: u64,
    /// The name the id was registered with (shown on the status page).
    pub(super) name: Option<Box<str>>,
    pub(super) owner: String,
    pub(super) state: Mutex<SlotState>,
    pub(super) notify: Notify,
}

/// The mutable part of a mailbox.
#[derive(Debug, Default)]
pub(super) struct SlotState {
    pub(super) queue: VecDeque<Queued>,
    /// Sum of the lengths of the queued messages.
    pub(super) queue_bytes: usize,
    /// When it was terminated (store clock, ms); `None` while active.
    pub(super) terminated_at: Option<u64>,
    pub(super) agent: Option<Vec<String>>,
    pub(super) shares: BTreeSet<String>,
    pub(super) heartbeat: Option<Instant>,
    /// Requests addressed here and not answered, by tag.
    pub(super) pending: HashMap<Uuid, Pending>,
    /// Whether a visit of `pending` for expiry is planned.
    pub(super) expiry_planned: bool,
    pub(super) outgoing: u64,
    pub(super) completed: u64,
}

/// What is kept of a request until it is answered or expires: enough to build the notice of
/// §3.4 DELETE step 4 (the tag is the key of the map holding it). Kept small: one is kept per
/// request for as long as it is queued or being processed.
#[derive(Debug)]
pub(super) struct Pending {
    /// When it was stored: whole seconds of the store clock, rounded up.
    at_s: u32,
    /// The requester: where the notice goes.
    src: EntityId,
    /// The destination as the request named it, unless that is the mailbox's own role and
    /// uid without a name (the usual case).
    dest: Option<Box<EntityId>>,
    label: Option<Uuid>,
}

fn name_cost(id: &EntityId) -> usize {
    // An `Arc<str>`: two counters and the text.
    id.name().map_or(0, |name| name.len() + 2 * size_of::<usize>())
}

impl Pending {
    /// The record of `header`, a request to `slot`, stored at `now_ms`.
    pub(super) fn new(header: &Header, slot: &Slot, now_ms: u64) -> Self {
        let plain = header.dest.role() == slot.role && header.dest.name().is_none();
        Pending {
            at_s: u32::try_from(now_ms.div_ceil(1000)).unwrap_or(u32::MAX),
            src: header.src.clone(),
            dest: (!plain).then(|| Box::new(header.dest.clone())),
            label: header.label,
        }
    }

    /// When it was stored, in milliseconds of the store clock (rounded up to the second).
    pub(super) fn at_ms(&self) -> u64 {
        u64::from(self.at_s) * 1000
    }

    /// Bytes charged to the store for this record (map entry and names).
    pub(super) fn cost(&self) -> usize {
        let dest = self.dest.as_deref().map_or(0, |dest| size_of::<EntityId>() + name_cost(dest));
        size_of::<(Uuid, Pending)>() + 2 * size_of::<usize>() + name_cost(&self.src) + dest
    }

    /// The requester's mailbox uid.
    pub(super) fn requester(&self) -> Uuid {
        self.src.uid()
    }

    /// The `academy-error-response` code 0 answering this request to `slot`.
    pub(super) fn terminated_notice(self, tag: Uuid, slot: &Slot) -> Option<Message> {
        let dest = self.dest.map_or_else(|| EntityId::from_parts(slot.role, slot.uid, None), |dest| *dest);
        let mut request = Header::request(self.src, dest);
        request.tag = tag;
        request.label = self.label;
        Message::terminated_notice(&request).ok()
    }
}

/// Bytes charged to the store for a mailbox record (beyond its agent names).
pub(super) fn mailbox_cost(owner: &str) -> usize {
    // The slot behind its `Arc`, the map entry, and the owner's text.
    size_of::<Slot>() + 4 * size_of::<usize>() + size_of::<Uuid>() + owner.len()
}

/// Bytes charged to the store for a mailbox's agent names.
pub(super) fn agent_cost(agent: &Option<Vec<String>>) -> usize {
    agent.as_ref().map_or(0, |names| names.iter().map(|n| n.len() + size_of::<String>()).sum())
}

/// Gives memory back once a collection is mostly empty: only for large ones, and to twice the
/// length, so that the cost stays amortized O(1) per operation.
macro_rules! shrink_sparse {
    ($collection:expr) => {{
        let (len, capacity) = ($collection.len(), $collection.capacity());
        if (capacity > 64 && len < capacity / 4) || (len == 0 && capacity > 8) {
            $collection.shrink_to(len * 2);
        }
    }};
}
pub(super) use shrink_sparse;

impl Slot {
    pub(super) fn has_access(&self, caller: &Caller) -> bool {
        self.owner == caller.client_id || self.state.lock().shares.iter().any(|g| caller.groups.contains(g))
    }

    /// The next message, or the terminated error; `None` when the queue is empty.
    pub(super) fn try_take(&self, usage: &Usage) -> Result<Option<Bytes>, ApiError> {
        let mut state = self.state.lock();
        if state.terminated_at.is_some() {
            return Err(ApiError::Terminated);
        }
        let Some(message) = state.queue.pop_front() else { return Ok(None) };
        state.queue_bytes -= message.len();
        shrink_sparse!(state.queue);
        usage.dequeued(1, message.len());
        usage.release(message.len() + QUEUE_ENTRY_COST);
        Ok(Some(Bytes::from(message)))
    }
}

impl SlotState {
    pub(super) fn stats(&self) -> MailboxStats {
        MailboxStats::from_counts(self.pending.len() as u64, self.completed, self.outgoing, self.queue.len() as u64)
    }

    /// Forgets the request `tag` (answered): counts a completion. Returns the bytes freed.
    pub(super) fn complete(&mut self, tag: &Uuid) -> usize {
        let Some(record) = self.pending.remove(tag) else { return 0 };
        self.completed += 1;
        shrink_sparse!(self.pending);
        record.cost()
    }

    /// Drops the request records older than `max_age_ms` at `now`. Returns the bytes freed
    /// and the time of the oldest record left.
    pub(super) fn expire(&mut self, now: u64, max_age_ms: u64) -> (usize, Option<u64>) {
        let mut freed = 0;
        let mut oldest: Option<u64> = None;
        self.pending.retain(|_, record| {
            let at = record.at_ms();
            if now.saturating_sub(at) >= max_age_ms {
                freed += record.cost();
                false
            } else {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
                true
            }
        });
        shrink_sparse!(self.pending);
        (freed, oldest)
    }
}
