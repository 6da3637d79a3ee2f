//! What the memory store holds, counted on the hot path, and the limits it is held to.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::super::config::ServerConfig;
use super::super::storage::{ApiError, StoreTotals};

const MIB: usize = 1024 * 1024;

/// The bounds of one store, in bytes and counts (from `[backend]` and `[limits]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Largest message.
    pub(super) message: usize,
    /// Messages one queue may hold.
    pub(super) mailbox_messages: usize,
    /// Bytes of messages one queue may hold.
    pub(super) mailbox_bytes: usize,
    /// Unanswered requests tracked for one mailbox.
    pub(super) mailbox_pending: usize,
    /// Bytes charged to the whole store (see [`Usage::reserve`]).
    pub(super) store_bytes: usize,
    /// Mailboxes, gravestones included.
    pub(super) store_mailboxes: usize,
}

impl Limits {
    pub(super) fn from_config(config: &ServerConfig) -> Self {
        let limits = &config.limits;
        Limits {
            message: config.message_limit(),
            mailbox_messages: limits.mailbox_max_messages,
            mailbox_bytes: limits.mailbox_max_mb.saturating_mul(MIB),
            mailbox_pending: limits.mailbox_max_pending,
            store_bytes: limits.store_max_mb.saturating_mul(MIB),
            store_mailboxes: limits.store_max_mailboxes,
        }
    }

    pub(super) fn queue_full_messages(&self) -> ApiError {
        ApiError::QueueFull(format!("Mailbox queue full: it holds {} messages, the limit", self.mailbox_messages))
    }

    pub(super) fn queue_full_bytes(&self) -> ApiError {
        ApiError::QueueFull(format!(
            "Mailbox queue full: this message would pass its limit of {} MiB of queued messages",
            self.mailbox_bytes / MIB
        ))
    }

    pub(super) fn too_many_pending(&self) -> ApiError {
        ApiError::QueueFull(format!(
            "Mailbox has {} unanswered requests, the limit: no new request until some are answered",
            self.mailbox_pending
        ))
    }

    pub(super) fn store_full_bytes(&self) -> ApiError {
        ApiError::StoreFull(format!(
            "Exchange store full: its {} MiB of messages and records are in use",
            self.store_bytes / MIB
        ))
    }

    pub(super) fn store_full_mailboxes(&self) -> ApiError {
        ApiError::StoreFull(format!("Exchange store full: it holds {} mailboxes, the limit", self.store_mailboxes))
    }
}

/// Counters over the whole store, kept by every operation (never a walk).
#[derive(Debug, Default)]
pub(super) struct Usage {
    /// Bytes charged against [`Limits::store_bytes`]: queued messages, request records and
    /// mailbox records.
    stored: AtomicUsize,
    queued_messages: AtomicU64,
    queued_bytes: AtomicU64,
    active: AtomicU64,
    terminated: AtomicU64,
}

impl Usage {
    /// Charges `bytes` if the charged total stays within `max`; `false` (nothing charged)
    /// otherwise.
    pub(super) fn reserve(&self, bytes: usize, max: usize) -> bool {
        self.stored
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |stored| {
                stored.checked_add(bytes).filter(|t| *t <= max)
            })
            .is_ok()
    }

    /// Charges `bytes` whatever the limit (what the store owes: requeued messages, notices).
    pub(super) fn charge(&self, bytes: usize) {
        self.stored.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Returns `bytes` charged before.
    pub(super) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.stored.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Counts `messages` messages of `bytes` bytes into the queues.
    pub(super) fn queued(&self, messages: usize, bytes: usize) {
        self.queued_messages.fetch_add(messages as u64, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts `messages` messages of `bytes` bytes out of the queues.
    pub(super) fn dequeued(&self, messages: usize, bytes: usize) {
        self.queued_messages.fetch_sub(messages as u64, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    pub(super) fn created(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn terminated(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.terminated.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn gravestone_swept(&self) {
        self.terminated.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn totals(&self) -> StoreTotals {
        StoreTotals {
            active_mailboxes: self.active.load(Ordering::Relaxed),
            terminated_mailboxes: self.terminated.load(Ordering::Relaxed),
            queued_messages: self.queued_messages.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
        }
    }

    /// Bytes charged against the store limit now.
    #[cfg(test)]
    pub(super) fn stored(&self) -> usize {
        self.stored.load(Ordering::Relaxed)
    }
}
