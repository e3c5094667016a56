//! Which message ids have already arrived on a connection, so that a second
//! message with the same id is caught (docs/protocol.md §4).
//!
//! Ids grow by one per message, so the received set is almost always a few
//! ranges; it is stored as ranges, and the number of ranges is capped so that
//! a peer skipping ids on purpose cannot make it grow without bound.

use std::collections::BTreeMap;

/// Most separate ranges tracked; a peer needing more is misbehaving.
const MAX_RANGES: usize = 4096;

#[derive(Debug, Default)]
pub struct ReceivedIds {
    /// start → end (exclusive), non-overlapping, non-adjacent.
    ranges: BTreeMap<u64, u64>,
}

/// Why an id could not be recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Duplicate,
    TooFragmented,
}

impl ReceivedIds {
    pub fn contains(&self, id: u64) -> bool {
        self.ranges
            .range(..=id)
            .next_back()
            .is_some_and(|(_, &end)| id < end)
    }

    /// What a RECEIVED frame says of this set (docs/protocol.md §12.6):
    /// every id below `below` is in it, and so is each of `ids` (above
    /// `below`, increasing). At most `max_ids` are listed, the highest: a
    /// gap can last (a message we rejected is not received, and is never
    /// filled), and the ids the peer may still hold unconfirmed — ours
    /// keeps at most 1,024 — are its latest.
    pub fn summary(&self, max_ids: usize) -> (u64, Vec<u64>) {
        let mut ranges = self.ranges.iter().peekable();
        let below = match ranges.peek() {
            Some(&(&0, &end)) => {
                ranges.next();
                end
            }
            _ => 0,
        };
        let mut ids: Vec<u64> = ranges
            .rev()
            .flat_map(|(&s, &e)| (s..e).rev())
            .take(max_ids)
            .collect();
        ids.reverse();
        (below, ids)
    }

    /// Records `id` as received.
    pub fn insert(&mut self, id: u64) -> Result<(), Refused> {
        if self.contains(id) {
            return Err(Refused::Duplicate);
        }
        let end = id.saturating_add(1);
        let before = self
            .ranges
            .range(..id)
            .next_back()
            .filter(|(_, e)| **e == id)
            .map(|(&s, _)| s);
        let after = self.ranges.get(&end).copied();
        match (before, after) {
            (Some(s), Some(e)) => {
                self.ranges.remove(&end);
                self.ranges.insert(s, e);
            }
            (Some(s), None) => {
                self.ranges.insert(s, end);
            }
            (None, Some(e)) => {
                self.ranges.remove(&end);
                self.ranges.insert(id, e);
            }
            (None, None) => {
                if self.ranges.len() >= MAX_RANGES {
                    return Err(Refused::TooFragmented);
                }
                self.ranges.insert(id, end);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_and_out_of_order_ids_merge_into_one_range() {
        let mut r = ReceivedIds::default();
        for id in [0, 2, 1, 4, 3, 5] {
            r.insert(id).unwrap();
        }
        assert_eq!(r.ranges.len(), 1);
        assert_eq!(r.insert(3), Err(Refused::Duplicate));
        assert!(!r.contains(6));
    }

    #[test]
    fn summary_lists_what_is_above_the_first_gap() {
        let mut r = ReceivedIds::default();
        assert_eq!(r.summary(10), (0, vec![]));
        for id in [0, 1, 2, 5, 7, 8] {
            r.insert(id).unwrap();
        }
        assert_eq!(r.summary(10), (3, vec![5, 7, 8]));
        assert_eq!(r.summary(2), (3, vec![7, 8]), "the highest are kept");
        let mut late = ReceivedIds::default();
        late.insert(4).unwrap();
        assert_eq!(late.summary(10), (0, vec![4]));
    }

    #[test]
    fn gaps_are_bounded() {
        let mut r = ReceivedIds::default();
        for i in 0..MAX_RANGES as u64 {
            r.insert(i * 2).unwrap();
        }
        assert_eq!(r.insert(u64::MAX - 1), Err(Refused::TooFragmented));
        // Filling a gap still works: it merges rather than adds.
        r.insert(1).unwrap();
    }
}
