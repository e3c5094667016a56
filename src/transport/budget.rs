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
//! go on. What a chat holds is thus at most the budget plus one message
//! within the size limit (docs/protocol.md §14).

use std::collections::HashMap;

/// Bytes of messages in progress, not counting the largest, beyond which a
/// receiver stops reading. Part of the protocol on TCP: a sender interleaves
/// messages only as far as a receiver holding them would stay within it
/// (see [`fits_alongside`]), since a TCP receiver cannot pick which message
/// to read on.
pub const RECEIVE_BUDGET: u64 = 64 << 20;

/// Whether a sender may start a message of `size` bytes next to messages
/// of `active` sizes: a receiver holding all of them whole would stay
/// within the budget. A message with nothing else in progress always may.
///
/// Holding no more than each whole message, the receiver's held bytes less
/// its largest never exceed the sizes' sum less the largest size.
pub fn fits_alongside(active: impl Iterator<Item = u64>, size: u64) -> bool {
    let (mut sum, mut max) = (size, size);
    for s in active {
        sum = sum.saturating_add(s);
        max = max.max(s);
    }
    sum - max <= RECEIVE_BUDGET
}

/// What the messages in progress hold, each under a key of the caller's.
#[derive(Debug)]
pub struct Held {
    per: HashMap<u64, u64>,
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
        let n = n as u64;
        *self.per.entry(key).or_default() += n;
        self.total += n;
    }

    /// Message `key` is complete, handed on or dropped: it holds nothing.
    pub fn remove(&mut self, key: u64) {
        if let Some(n) = self.per.remove(&key) {
            self.total -= n;
        }
    }

    /// All bytes held, the largest message included.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn largest(&self) -> u64 {
        self.per.values().copied().max().unwrap_or(0)
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
        self.per.get(&key).copied().unwrap_or(0) >= self.largest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_largest_grows_beyond_the_budget() {
        let mut held = Held::with_budget(100);
        held.add(1, 80);
        held.add(2, 60);
        assert!(!held.over(), "the largest is not counted");
        held.add(3, 50);
        assert!(held.over());
        assert!(held.may_grow(1));
        assert!(!held.may_grow(2));
        assert!(!held.may_grow(3));
        assert!(!held.may_grow(4), "a new message waits too");
        held.remove(1);
        assert!(!held.over());
        assert_eq!(held.total(), 110);
    }

    #[test]
    fn a_message_larger_than_the_budget_arrives_alone() {
        let mut held = Held::with_budget(10);
        for _ in 0..100 {
            assert!(held.may_grow(7));
            held.add(7, 5);
        }
        assert!(!held.over());
    }

    #[test]
    fn a_sender_interleaves_only_within_the_budget() {
        let mib = 1 << 20;
        assert!(fits_alongside(std::iter::empty(), 10 * RECEIVE_BUDGET));
        assert!(fits_alongside([500 * mib].into_iter(), RECEIVE_BUDGET));
        assert!(fits_alongside(
            [500 * mib, 1].into_iter(),
            RECEIVE_BUDGET - 1
        ));
        assert!(!fits_alongside(
            [500 * mib, 2].into_iter(),
            RECEIVE_BUDGET - 1
        ));
        assert!(!fits_alongside([40 * mib, 40 * mib].into_iter(), 30 * mib));
    }
}
