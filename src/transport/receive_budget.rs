//! The receive budget: one bound per chat on message data received and not
//! yet handed to the session, across all messages in progress.
//!
//! The size limit bounds one message and the in-progress limit their
//! number, but their product is large (64 × 16 MiB by default), and a peer
//! that never finishes its messages could pin all of it. So every message
//! in progress is charged for what it holds, and beyond the budget the
//! transport stops reading (TCP: the socket; QUIC: that message's stream)
//! instead of allocating; flow control pushes back on the peer.
//!
//! The largest message in progress is not counted (as the sender's bound on
//! unconfirmed messages leaves out the oldest): a message larger than the
//! budget must still arrive, and with it excluded, some message can always
//! go on. Nor are the first [`ALLOWANCE`] bytes of each: a short message
//! goes on even while the budget is used up by long ones, as it does on its
//! own stream. What a chat holds is thus at most the budget, plus one
//! message within the size limit, plus the allowance per message in
//! progress (docs/protocol.md §14).

use std::collections::HashMap;

/// Bytes of messages in progress, not counting the largest, beyond which a
/// receiver stops reading. Part of the protocol on TCP: a sender interleaves
/// messages only as far as a receiver holding them would stay within it
/// (see [`fits_alongside`]), since a TCP receiver cannot pick which message
/// to read on.
pub const RECEIVE_BUDGET: u64 = 64 << 20;

/// Bytes of each message in progress not counted against the budget.
pub const ALLOWANCE: u64 = 64 << 10;

/// What a message holding `held` bytes counts against the budget.
fn charged(held: u64) -> u64 {
    held.saturating_sub(ALLOWANCE)
}

/// Whether a sender may start a message of `size` bytes next to messages
/// of `active` sizes: a receiver holding all of them whole would stay
/// within the budget. A message with nothing else in progress always may.
///
/// Holding no more than each whole message, the receiver's held bytes less
/// its largest never exceed the sizes' sum less the largest size.
pub fn fits_alongside(active: impl Iterator<Item = u64>, size: u64) -> bool {
    let (mut sum, mut max) = (charged(size), charged(size));
    for s in active.map(charged) {
        sum = sum.saturating_add(s);
        max = max.max(s);
    }
    sum - max <= RECEIVE_BUDGET
}

/// [`fits_alongside`] for many candidates against the same messages in
/// progress: their charged sum and largest, summed once.
#[derive(Debug, Clone, Copy)]
pub struct InProgress {
    sum: u64,
    max: u64,
}

impl InProgress {
    pub fn of(active: impl Iterator<Item = u64>) -> Self {
        let mut p = InProgress { sum: 0, max: 0 };
        for s in active.map(charged) {
            p.sum = p.sum.saturating_add(s);
            p.max = p.max.max(s);
        }
        p
    }

    /// Whether a message of `size` bytes may start next to them.
    pub fn fits(self, size: u64) -> bool {
        let c = charged(size);
        self.sum.saturating_add(c) - self.max.max(c) <= RECEIVE_BUDGET
    }
}

/// What the messages in progress hold, each under a key of the caller's.
#[derive(Debug)]
pub struct Held {
    per: HashMap<u64, u64>,
    /// What they count against the budget, all together.
    total: u64,
    budget: u64,
}

impl Default for Held {
    fn default() -> Self {
        Held::with_budget(RECEIVE_BUDGET)
    }
}

impl Held {
    pub fn with_budget(budget: u64) -> Self {
        Held {
            per: HashMap::new(),
            total: 0,
            budget,
        }
    }

    /// Message `key` took in `n` more bytes.
    pub fn add(&mut self, key: u64, n: usize) {
        let held = self.per.entry(key).or_default();
        let before = charged(*held);
        *held += n as u64;
        self.total += charged(*held) - before;
    }

    /// Message `key` is complete, handed on or dropped: it holds nothing.
    pub fn remove(&mut self, key: u64) {
        if let Some(held) = self.per.remove(&key) {
            self.total -= charged(held);
        }
    }

    /// What all messages count against the budget, the largest included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// What the largest message counts.
    fn largest(&self) -> u64 {
        charged(self.per.values().copied().max().unwrap_or(0))
    }

    /// Beyond the budget: nothing may be read but for the largest message.
    pub fn over(&self) -> bool {
        // Cheap in the common case: the total alone is within it.
        self.total > self.budget && self.total - self.largest() > self.budget
    }

    /// Whether message `key` may take in more.
    pub fn may_grow(&self, key: u64) -> bool {
        if !self.over() {
            return true;
        }
        let held = self.per.get(&key).copied().unwrap_or(0);
        held < ALLOWANCE || charged(held) >= self.largest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: usize = ALLOWANCE as usize;

    #[test]
    fn only_the_largest_grows_beyond_the_budget() {
        let mut held = Held::with_budget(100);
        held.add(1, A + 80);
        held.add(2, A + 60);
        assert!(!held.over(), "the largest is not counted");
        held.add(3, A + 50);
        assert!(held.over());
        assert!(held.may_grow(1));
        assert!(!held.may_grow(2));
        assert!(!held.may_grow(3));
        assert!(held.may_grow(4), "a new message has its allowance");
        held.add(4, A - 1);
        assert!(held.may_grow(4));
        held.add(4, 2);
        assert!(!held.may_grow(4), "and no more");
        held.remove(1);
        assert!(!held.over());
        assert_eq!(held.total(), 111);
    }

    #[test]
    fn a_message_larger_than_the_budget_arrives_alone() {
        let mut held = Held::with_budget(10);
        for _ in 0..100 {
            assert!(held.may_grow(7));
            held.add(7, A);
        }
        assert!(!held.over());
    }

    #[test]
    fn a_sender_interleaves_only_within_the_budget() {
        let (mib, a, b) = (1 << 20, ALLOWANCE, RECEIVE_BUDGET);
        assert!(fits_alongside(std::iter::empty(), 10 * b));
        assert!(fits_alongside([500 * mib].into_iter(), b + a));
        assert!(fits_alongside([500 * mib, a + 1].into_iter(), b + a - 1));
        assert!(!fits_alongside([500 * mib, a + 2].into_iter(), b + a - 1));
        assert!(!fits_alongside([40 * mib, 40 * mib].into_iter(), 30 * mib));
        let full = [500 * mib, b + a];
        assert!(fits_alongside(full.into_iter(), a), "short ones always fit");
        let p = InProgress::of(full.into_iter());
        assert!(p.fits(a) && !p.fits(a + 1));
    }
}
