//! The receive budget (see [`crate::transport::budget`]) shared by a QUIC
//! connection's stream readers: a reader that would take its message past
//! the budget waits, unread, until messages ahead of it are handed on; its
//! stream's flow-control window closes meanwhile, and the peer waits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::transport::receive_budget::Held;

#[derive(Debug, Default)]
pub(super) struct SharedBudget {
    held: Mutex<Held>,
    /// Woken when a message stops being held: waiting readers look again.
    freed: Notify,
    next_key: AtomicU64,
}

/// One message's charge against the budget; handed back when dropped.
pub(super) struct Charge<'a> {
    budget: &'a SharedBudget,
    key: u64,
}

impl SharedBudget {
    /// A charge for a new message, holding nothing yet.
    pub(super) fn charge(&self) -> Charge<'_> {
        Charge {
            budget: self,
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Held) -> T) -> Option<T> {
        self.held.lock().ok().map(|mut held| f(&mut held))
    }
}

impl Charge<'_> {
    /// Waits until this message may take in more.
    pub(super) async fn room(&self) {
        loop {
            // Registered before looking, so a release in between is not
            // missed.
            let freed = self.budget.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            // A poisoned lock (a reader panicked) stops nothing.
            if self.budget.with(|h| h.may_grow(self.key)).unwrap_or(true) {
                return;
            }
            freed.await;
        }
    }

    /// The message took in `n` more bytes.
    pub(super) fn add(&self, n: usize) {
        self.budget.with(|h| h.add(self.key, n));
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.with(|h| h.remove(self.key));
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::receive_budget::{ALLOWANCE, RECEIVE_BUDGET};
    use std::time::Duration;

    #[tokio::test]
    async fn a_reader_past_the_budget_waits_for_the_largest_to_go() {
        let budget = SharedBudget::default();
        let a = ALLOWANCE as usize;
        let large = budget.charge();
        large.add(RECEIVE_BUDGET as usize + a + 10);
        let second = budget.charge();
        second.add(RECEIVE_BUDGET as usize + a);
        let third = budget.charge();
        third.add(a + 1);
        large.room().await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), third.room()).await;
        assert!(waiting.is_err(), "the third message should wait");
        drop(large);
        tokio::time::timeout(Duration::from_secs(1), third.room())
            .await
            .expect("room once the largest is handed on");
    }
}
