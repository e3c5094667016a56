//! The budget of handshakes in progress: how many strangers may be in the
//! middle of a handshake at once, in all and from one source.
//!
//! When the budget is full, the OLDEST unfinished handshake is cut short to
//! make room, not the newest turned away: an honest handshake finishes in a
//! few round trips, so only a peer that stalls ever becomes the oldest. An
//! attacker who keeps the budget full with silent or slow sockets therefore
//! evicts its own sockets, and a client arriving meanwhile gets in before
//! its turn to be evicted comes (docs/protocol.md §14).
//!
//! One source (an IPv4 address, or an IPv6 /64, which one host usually
//! owns whole) may hold only a share of the budget; past it, that source's
//! own oldest handshake goes, so one host cannot push everyone else's
//! handshakes out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// A handshake's place in the budget; dropping it gives the place back.
pub struct Slot {
    budget: Arc<Mutex<State>>,
    id: u64,
    /// Resolves when the handshake has been evicted to make room.
    evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// Waits until this handshake is evicted (never, if it is not).
    pub async fn evicted(&mut self) {
        // The sender is dropped, not used, when the slot is evicted: either
        // way the receiver completes.
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.budget).remove(self.id);
    }
}

/// The handshakes in progress on one listening socket.
#[derive(Clone)]
pub struct Budget {
    state: Arc<Mutex<State>>,
}

/// What [`Budget::admit`] did to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admitted {
    /// Handshakes cut short for the new one (0 or 1).
    pub evicted: usize,
}

struct Entry {
    source: Source,
    /// Dropped to tell the handshake it is evicted.
    _evict: oneshot::Sender<()>,
}

struct State {
    total: usize,
    per_source: usize,
    next: u64,
    /// Every handshake in progress, oldest first (ids only grow).
    order: BTreeMap<u64, Entry>,
    /// Each source's handshakes in progress, oldest first.
    by_source: HashMap<Source, VecDeque<u64>>,
}

/// Where handshakes are counted together: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Source(IpAddr::V6(bits.into()))
            }
        }
    }
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.order.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&entry.source) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // The state stays consistent across every operation; a panic elsewhere
    // while it was held leaves nothing half done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Budget {
    /// Room for `total` handshakes at once, at most `per_source` of them
    /// from one [`Source`].
    pub fn new(total: usize, per_source: usize) -> Budget {
        Budget {
            state: Arc::new(Mutex::new(State {
                total: total.max(1),
                per_source: per_source.clamp(1, total.max(1)),
                next: 0,
                order: BTreeMap::new(),
                by_source: HashMap::new(),
            })),
        }
    }

    /// Handshakes in progress.
    pub fn len(&self) -> usize {
        lock(&self.state).order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for a handshake from `ip`, evicting that source's oldest
    /// handshake if it has its share, else the oldest of all if the budget
    /// is full.
    pub fn admit(&self, ip: IpAddr) -> (Slot, Admitted) {
        let source = Source::of(ip);
        let mut state = lock(&self.state);
        let mut admitted = Admitted::default();
        let own_oldest = state
            .by_source
            .get(&source)
            .filter(|ids| ids.len() >= state.per_source)
            .and_then(|ids| ids.front().copied());
        let victim = own_oldest.or_else(|| {
            (state.order.len() >= state.total)
                .then(|| state.order.keys().next().copied())
                .flatten()
        });
        if let Some(victim) = victim {
            // Dropping the entry drops its sender: the handshake sees it.
            if state.remove(victim).is_some() {
                admitted.evicted = 1;
            }
        }
        let id = state.next;
        state.next += 1;
        let (tx, rx) = oneshot::channel();
        state.order.insert(id, Entry { source, _evict: tx });
        state.by_source.entry(source).or_default().push_back(id);
        drop(state);
        (
            Slot {
                budget: self.state.clone(),
                id,
                evicted: rx,
            },
            admitted,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn is_evicted(slot: &mut Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(10), slot.evicted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn full_budget_evicts_the_oldest_not_the_newest() {
        let budget = Budget::new(3, 3);
        let mut a = budget.admit(ip("10.0.0.1")).0;
        let mut b = budget.admit(ip("10.0.0.2")).0;
        let mut c = budget.admit(ip("10.0.0.3")).0;
        let (mut d, admitted) = budget.admit(ip("10.0.0.4"));
        assert_eq!(admitted.evicted, 1);
        assert!(is_evicted(&mut a).await, "the oldest goes");
        assert!(!is_evicted(&mut b).await);
        assert!(!is_evicted(&mut c).await);
        assert!(!is_evicted(&mut d).await, "the newest stays");
        assert_eq!(budget.len(), 3);
    }

    #[tokio::test]
    async fn one_source_evicts_only_its_own() {
        let budget = Budget::new(10, 2);
        let mut other = budget.admit(ip("10.0.0.9")).0;
        let mut a = budget.admit(ip("10.0.0.1")).0;
        let mut b = budget.admit(ip("10.0.0.1")).0;
        let (_c, admitted) = budget.admit(ip("10.0.0.1"));
        assert_eq!(admitted.evicted, 1);
        assert!(is_evicted(&mut a).await);
        assert!(!is_evicted(&mut b).await);
        assert!(!is_evicted(&mut other).await, "another source is untouched");
    }

    #[tokio::test]
    async fn a_finished_handshake_gives_its_place_back() {
        let budget = Budget::new(2, 2);
        let a = budget.admit(ip("10.0.0.1")).0;
        let mut b = budget.admit(ip("10.0.0.1")).0;
        drop(a);
        assert_eq!(budget.len(), 1);
        let (_c, admitted) = budget.admit(ip("10.0.0.1"));
        assert_eq!(admitted.evicted, 0);
        assert!(!is_evicted(&mut b).await);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            Source::of(ip("2001:db8::1")),
            Source::of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
    }
}
