//! Answers held back for a rule's `delay`, so that a PXE server elsewhere on the segment that
//! whitelists its machines answers them first. A pure queue: the caller gives `now`; tested
//! with explicit instants. It is bounded (a flood of DISCOVERs from made-up MACs costs at most
//! `cap` small entries) and holds one answer per MAC, however often the client repeats its
//! DISCOVER while it waits.

use std::time::Instant;

/// A client: its MAC.
pub type Key = [u8; 6];

/// What `hold` did with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Queued,
    /// An answer to this MAC already waits.
    Already,
    /// The queue is full: dropped.
    Full,
}

#[derive(Debug)]
pub struct Delayed<T> {
    cap: usize,
    items: Vec<(Instant, Key, T)>,
}

impl<T> Delayed<T> {
    pub fn new(cap: usize) -> Delayed<T> {
        Delayed {
            cap,
            items: Vec::new(),
        }
    }

    /// Holds `item` until `due`.
    pub fn hold(&mut self, due: Instant, key: Key, item: T) -> Held {
        if self.items.iter().any(|(_, k, _)| *k == key) {
            return Held::Already;
        }
        if self.items.len() >= self.cap {
            return Held::Full;
        }
        self.items.push((due, key, item));
        Held::Queued
    }

    /// The answers due at `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<T> {
        let mut due: Vec<(Instant, Key, T)> = Vec::new();
        let mut i = 0;
        while i < self.items.len() {
            if self.items[i].0 <= now {
                due.push(self.items.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(at, _, _)| *at);
        due.into_iter().map(|(_, _, item)| item).collect()
    }

    /// When the next answer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.items.iter().map(|(at, _, _)| *at).min()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn answers_leave_when_due_in_order_once_per_transaction() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut q = Delayed::new(3);
        assert_eq!(q.hold(t0 + 2 * s, [1; 6], "a"), Held::Queued);
        assert_eq!(q.hold(t0 + s, [2; 6], "b"), Held::Queued);
        // The client repeats its DISCOVER while it waits: still one answer.
        assert_eq!(q.hold(t0 + 3 * s, [1; 6], "a again"), Held::Already);
        assert_eq!(q.next_due(), Some(t0 + s));
        assert!(q.take_due(t0).is_empty());
        assert_eq!(q.take_due(t0 + s), vec!["b"]);
        assert_eq!(q.next_due(), Some(t0 + 2 * s));
        assert_eq!(q.take_due(t0 + 5 * s), vec!["a"]);
        assert!(q.is_empty() && q.next_due().is_none());
        // Once answered, the same client is answered again.
        assert_eq!(q.hold(t0 + 6 * s, [1; 6], "a2"), Held::Queued);
    }

    #[test]
    fn a_flood_is_bounded() {
        let t0 = Instant::now();
        let mut q = Delayed::new(2);
        assert_eq!(q.hold(t0, [1; 6], ()), Held::Queued);
        assert_eq!(q.hold(t0, [2; 6], ()), Held::Queued);
        assert_eq!(q.hold(t0, [3; 6], ()), Held::Full);
        assert_eq!(q.len(), 2);
        assert_eq!(q.take_due(t0).len(), 2);
        assert_eq!(q.hold(t0, [3; 6], ()), Held::Queued);
    }
}
