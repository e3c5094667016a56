//! Messages sent and not yet confirmed, and the bound on them.
//!
//! The session hands every message to the transport at once, and the
//! transport queues what it cannot write yet. Without a bound, piping a large
//! file into the client would move all of it into that queue as fast as
//! standard input can be read; so the session stops taking input while too
//! much is unconfirmed, and takes more as acknowledgements come back.
//!
//! Each keeps its body until it is confirmed: on chat/2 a message whose
//! connection was lost is sent again after a resume (docs/protocol.md
//! §12.5). The bound below is what bounds that memory too.
//!
//! The oldest unconfirmed message is not counted in the byte bound. That
//! keeps a single large message (larger than the bound itself) from
//! stopping everything behind it: while it is in flight, small messages
//! still go, and their acknowledgements still come back ahead of it, which
//! is what running each message on its own stream is for.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::time::Instant;

use crate::protocol::MessageId;

/// Unconfirmed messages beyond which input waits.
pub const MAX_MESSAGES: usize = 1024;
/// Unconfirmed bytes, not counting the oldest message, beyond which input
/// waits.
pub const MAX_BYTES: usize = 32 << 20;

/// A message sent and not yet confirmed.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it was last handed to a transport: the start of its round
    /// trip.
    pub at: Instant,
    pub bytes: usize,
    pub body: Bytes,
    /// Whether it was ever handed to a transport (one typed while the
    /// connection was lost was not).
    pub transmitted: bool,
}

/// The unconfirmed messages, in the order they were sent.
#[derive(Debug, Default)]
pub struct Unconfirmed {
    sent: BTreeMap<MessageId, Sent>,
    bytes: usize,
}

impl Unconfirmed {
    /// Keeps message `id`; `transmitted`: it is being handed to a
    /// transport now.
    pub fn insert(&mut self, id: MessageId, body: Bytes, transmitted: bool) {
        let bytes = body.len();
        let sent = Sent {
            at: Instant::now(),
            bytes,
            body,
            transmitted,
        };
        if let Some(old) = self.sent.insert(id, sent) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
    }

    /// The messages, oldest first, for a resume to go through.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (MessageId, &mut Sent)> {
        self.sent.iter_mut().map(|(id, s)| (*id, s))
    }

    /// Takes a message off the list once it is confirmed (or refused).
    pub fn remove(&mut self, id: MessageId) -> Option<Sent> {
        let sent = self.sent.remove(&id)?;
        self.bytes -= sent.bytes;
        Some(sent)
    }

    /// Whether more input may be taken.
    pub fn has_room(&self) -> bool {
        let oldest = self.sent.first_key_value().map_or(0, |(_, s)| s.bytes);
        self.sent.len() < MAX_MESSAGES && self.bytes - oldest < MAX_BYTES
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// The unconfirmed ids, oldest first.
    pub fn ids(&self) -> Vec<MessageId> {
        self.sent.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Bytes {
        Bytes::from(vec![0; len])
    }

    #[test]
    fn counts_messages() {
        let mut u = Unconfirmed::default();
        for id in 0..MAX_MESSAGES as u64 - 1 {
            u.insert(id, body(1), true);
        }
        assert!(u.has_room());
        u.insert(5000, body(1), true);
        assert!(!u.has_room());
        assert!(u.remove(3).is_some());
        assert!(u.has_room());
        assert!(u.remove(3).is_none());
    }

    #[test]
    fn one_large_message_leaves_room_for_small_ones() {
        let mut u = Unconfirmed::default();
        u.insert(0, body(64 << 20), true);
        assert!(u.has_room());
        u.insert(1, body(100), true);
        assert!(u.has_room());
        // A second large one is counted: input waits.
        u.insert(2, body(MAX_BYTES), true);
        assert!(!u.has_room());
        // Once the first is confirmed, the oldest is small and the large
        // one counts in full.
        u.remove(0);
        assert!(!u.has_room());
        u.remove(1);
        assert!(u.has_room(), "the large one is now the oldest");
        assert_eq!(u.ids(), vec![2]);
    }

    #[test]
    fn bytes_bound_many_medium_messages() {
        let mut u = Unconfirmed::default();
        let size = 1 << 20;
        // The oldest does not count: 33 of 1 MiB fill 32 MiB.
        for id in 0..33 {
            assert!(u.has_room(), "after {id}");
            u.insert(id, body(size), true);
        }
        assert!(!u.has_room());
        u.remove(32);
        assert!(u.has_room());
    }
}
