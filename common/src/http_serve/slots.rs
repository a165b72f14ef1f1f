//! The connection table of [`super::serve`]: which connections are open, oldest first,
//! and which one a new connection replaces when the table is full. Pure, no I/O.

use std::collections::BTreeMap;

/// What happened to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Recorded under this id; there was room.
    Open(u64),
    /// Recorded under this id in place of `T`, the oldest idle connection, which the
    /// caller must now close.
    Evicting(u64, T),
    /// Every open connection is answering a request: close the new one.
    Full,
}

/// Open connections by id; ids grow with accept order, so the smallest is the oldest.
#[derive(Debug)]
pub struct Slots<T> {
    cap: usize,
    next_id: u64,
    open: BTreeMap<u64, T>,
}

impl<T> Slots<T> {
    /// A table for at most `cap` connections (at least one).
    pub fn new(cap: usize) -> Self {
        Slots {
            cap: cap.max(1),
            next_id: 0,
            open: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Records `conn`. When the table is full, the oldest connection for which `busy` is
    /// false makes room: a connection still waiting for its request head (half-open) or
    /// idle between requests. A connection answering a request is never chosen.
    pub fn admit(&mut self, conn: T, busy: impl Fn(&T) -> bool) -> Admit<T> {
        let victim = if self.open.len() < self.cap {
            None
        } else {
            let oldest_idle = self.open.iter().find(|(_, c)| !busy(c)).map(|(id, _)| *id);
            match oldest_idle.and_then(|id| self.open.remove(&id)) {
                Some(v) => Some(v),
                None => return Admit::Full,
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, conn);
        match victim {
            Some(v) => Admit::Evicting(id, v),
            None => Admit::Open(id),
        }
    }

    /// Forgets a closed connection (already gone when it was evicted).
    pub fn remove(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Empties the table, returning every open connection.
    pub fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.open).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_busy(_: &&str) -> bool {
        false
    }

    #[test]
    fn admits_up_to_the_cap_then_replaces_the_oldest() {
        let mut s = Slots::new(2);
        assert_eq!(s.admit("a", never_busy), Admit::Open(0));
        assert_eq!(s.admit("b", never_busy), Admit::Open(1));
        assert_eq!(s.admit("c", never_busy), Admit::Evicting(2, "a"));
        assert_eq!(s.admit("d", never_busy), Admit::Evicting(3, "b"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_connection_answering_a_request_is_never_evicted() {
        let mut s = Slots::new(2);
        s.admit("busy", never_busy);
        s.admit("idle", never_busy);
        let busy = |c: &&str| *c == "busy";
        assert_eq!(s.admit("new", busy), Admit::Evicting(2, "idle"));
        // Now "busy" and "new" are open; with both busy there is no room.
        assert_eq!(s.admit("newer", |_| true), Admit::Full);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn removed_connections_free_their_slot() {
        let mut s = Slots::new(1);
        let Admit::Open(id) = s.admit("a", never_busy) else {
            panic!("room for one")
        };
        s.remove(id);
        // Removing twice (closed after being evicted) is harmless.
        s.remove(id);
        assert!(s.is_empty());
        assert_eq!(s.admit("b", never_busy), Admit::Open(1));
        assert_eq!(s.drain(), vec!["b"]);
        assert!(s.is_empty());
    }
}
