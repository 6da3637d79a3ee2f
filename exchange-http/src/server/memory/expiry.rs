//! When request records and gravestones expire: a clock in milliseconds and a schedule of the
//! mailboxes to visit, swept by a background task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

/// Milliseconds since the store was made.
#[derive(Debug)]
pub(super) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock { epoch: Instant::now() }
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// What a visit of a mailbox looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    /// Its request records older than the request expiration.
    Requests,
    /// Its gravestone, older than the gravestone expiration.
    Gravestone,
}

/// The expirations of a store (`[backend] mailbox_expiration_d`, `gravestone_expiration_d`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Expiration {
    /// Age in milliseconds at which a request record is dropped.
    pub(super) requests_ms: u64,
    /// Age in milliseconds at which a gravestone is dropped (the id is unknown again).
    pub(super) gravestones_ms: u64,
}

impl Expiration {
    /// From days, as the configuration gives them (validated finite and positive).
    pub(super) fn from_days(requests_d: f64, gravestones_d: f64) -> Self {
        let ms = |days: f64| ((days * 86_400_000.0) as u64).max(1);
        Expiration { requests_ms: ms(requests_d), gravestones_ms: ms(gravestones_d) }
    }

    /// How often the sweeper looks for due visits: a sixteenth of the shorter expiration,
    /// between 10 ms and 1 minute.
    pub(super) fn sweep_period(&self) -> Duration {
        let ms = (self.requests_ms.min(self.gravestones_ms) / 16).clamp(10, 60_000);
        Duration::from_millis(ms)
    }

    /// When to visit a mailbox again whose oldest request record is from `oldest`: when that
    /// record expires, but not sooner than a sixteenth of the expiration from `now`, so that a
    /// mailbox is walked at most about sixteen times per expiration period.
    pub(super) fn next_requests_visit(&self, oldest: u64, now: u64) -> u64 {
        oldest.saturating_add(self.requests_ms).max(now.saturating_add(self.requests_ms / 16))
    }
}

/// Mailboxes to visit, earliest first. A mailbox has at most one visit of each kind planned
/// at a time (the slot remembers it), so the schedule is bounded by the number of mailboxes.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    visits: Mutex<BinaryHeap<Reverse<(u64, Due, Uuid)>>>,
}

impl Schedule {
    /// Plans a visit of `uid` at `at` (milliseconds of the store's clock).
    pub(super) fn plan(&self, at: u64, due: Due, uid: Uuid) {
        self.visits.lock().push(Reverse((at, due, uid)));
    }

    /// Takes up to `max` visits due at `now`.
    pub(super) fn take_due(&self, now: u64, max: usize) -> Vec<(Due, Uuid)> {
        let mut visits = self.visits.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match visits.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, kind, uid))) = visits.pop() else { break };
            due.push((kind, uid));
        }
        let len = visits.len();
        if len < visits.capacity() / 4 {
            visits.shrink_to(len * 2);
        }
        due
    }

    /// Visits planned.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.visits.lock().len()
    }
}
