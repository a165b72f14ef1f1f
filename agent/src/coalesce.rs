//! When the reconcile loop syncs: the scheduling half, pure (the caller passes the
//! time), so that its rules are tested without a clock.
//!
//! * The first change after a quiet period syncs at once (leading edge): one Node change
//!   reaches the kernel in milliseconds.
//! * A change within the window after the last sync (or during it) waits: until the
//!   window ends, or until changes have stopped for a quarter of the window (at least
//!   `min`), whichever comes first. Everything that arrives meanwhile is applied by that
//!   one sync, and the end of a burst never waits out a long window. The quiet time grows
//!   with the window because a loaded API server delivers a storm with pauses of a few
//!   hundred ms: with a fixed 100 ms, each pause cost a sync (60 for 5000 changes).
//! * While changes keep coming within the window, each sync makes the next window
//!   [`GROWTH`] times longer, up to `max`: 5000 Node changes spread over 12 s (as fast as
//!   an API server takes the writes) cost under ten syncs, where a fixed 100 ms window
//!   cost one per 100 ms. A change after the window has passed resets it to `min`.
//! * A request for a full sync (a kernel notification, the periodic resync, a retry) is
//!   scheduled the same way but does not lengthen the window: it says nothing about how
//!   busy the Node watch is.
//! * After a failed sync, nothing syncs before the retry (the backoff), whatever arrives.

use std::time::Duration;

use tokio::time::Instant;

use crate::datapath::SyncKind;

/// How much longer each busy window is than the one before. With 4, a window grows from
/// 100 ms to 3 s in three syncs; doubling took five, a third of a 12 s burst's syncs.
pub const GROWTH: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    /// When the first and the last request since the last sync started arrived.
    first: Instant,
    last: Instant,
    /// The first Node change among them, if any.
    first_change: Option<Instant>,
    full: bool,
}

/// The schedule of one reconcile loop.
#[derive(Clone, Debug)]
pub struct Coalescer {
    min: Duration,
    max: Duration,
    window: Duration,
    /// When the last sync ended.
    last_end: Option<Instant>,
    pending: Option<Pending>,
    /// After a failed sync: the retry's time.
    retry_at: Option<Instant>,
}

impl Coalescer {
    /// Windows from `min` (also how long changes must stop for a burst to count as over)
    /// up to `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Coalescer {
        Coalescer {
            min,
            max: max.max(min),
            window: min,
            last_end: None,
            pending: None,
            retry_at: None,
        }
    }

    fn ask(&mut self, now: Instant, full: bool, change: bool) {
        let p = self.pending.get_or_insert(Pending {
            first: now,
            last: now,
            first_change: None,
            full: false,
        });
        p.last = p.last.max(now);
        p.full |= full;
        if change {
            p.first_change.get_or_insert(now);
        }
    }

    /// A Node change that the datapath needs (an incremental sync will do).
    pub fn change(&mut self, now: Instant) {
        self.ask(now, false, true);
    }

    /// A request for a full sync: the kernel changed behind weft's back, or the periodic
    /// resync.
    pub fn full(&mut self, now: Instant) {
        self.ask(now, true, false);
    }

    /// When the next sync is due; `None` while nothing is pending.
    pub fn due(&self) -> Option<Instant> {
        let p = self.pending?;
        if let Some(retry) = self.retry_at {
            return Some(retry);
        }
        let Some(end) = self.last_end else {
            return Some(p.first);
        };
        let window_end = end + self.window;
        if p.first >= window_end {
            return Some(p.first);
        }
        Some(window_end.min(p.last + self.quiet()))
    }

    /// How long changes must stop for a burst to count as over.
    fn quiet(&self) -> Duration {
        (self.window / 4).max(self.min)
    }

    /// A sync starts now: takes what is pending (`None` when nothing is) and sizes the
    /// window that will follow it.
    pub fn start(&mut self) -> Option<SyncKind> {
        let p = self.pending.take()?;
        if let Some(first) = p.first_change {
            let busy = self.last_end.is_some_and(|end| first < end + self.window);
            self.window = if busy {
                (self.window * GROWTH).min(self.max)
            } else {
                self.min
            };
        }
        self.retry_at = None;
        Some(if p.full {
            SyncKind::Full
        } else {
            SyncKind::Incremental
        })
    }

    /// The sync that [`Coalescer::start`] began ended at `now`; when it failed, a full
    /// one is due at `retry_at`.
    pub fn done(&mut self, now: Instant, retry_at: Option<Instant>) {
        self.last_end = Some(now);
        if let Some(at) = retry_at {
            self.ask(now, true, false);
            self.retry_at = Some(at);
        }
    }

    /// The current window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn coalescer() -> (Coalescer, Instant) {
        (
            Coalescer::new(100 * MS, Duration::from_secs(3)),
            Instant::now(),
        )
    }

    /// Runs syncs whenever due; each takes `took`. Returns the start times.
    fn drive(c: &mut Coalescer, events: &[Instant], took: Duration) -> Vec<(Instant, SyncKind)> {
        let mut syncs = Vec::new();
        let mut next = 0;
        loop {
            let due = c.due();
            match (events.get(next), due) {
                // Events queued while a sync ran are taken in before the next starts.
                (Some(&e), Some(d)) if e <= d => {
                    c.change(e);
                    next += 1;
                }
                (Some(&e), None) => {
                    c.change(e);
                    next += 1;
                }
                (_, Some(d)) => {
                    let kind = c.start().expect("pending");
                    syncs.push((d, kind));
                    let end = d + took;
                    while events.get(next).is_some_and(|&e| e < end) {
                        // Arrived during the sync: read once it is over.
                        c.change(end);
                        next += 1;
                    }
                    c.done(end, None);
                }
                (None, None) => return syncs,
            }
        }
    }

    #[test]
    fn a_change_after_quiet_syncs_at_once_and_the_next_waits_for_the_window() {
        let (mut c, t0) = coalescer();
        assert_eq!(c.due(), None);
        c.change(t0);
        assert_eq!(c.due(), Some(t0));
        assert_eq!(c.start(), Some(SyncKind::Incremental));
        c.done(t0 + 2 * MS, None);
        // 10 ms later: waits until the window after the sync ends.
        c.change(t0 + 12 * MS);
        assert_eq!(c.due(), Some(t0 + 102 * MS));
        c.start();
        c.done(t0 + 104 * MS, None);
        assert_eq!(c.window(), 400 * MS, "busy: the window grew");
        // After the window has passed: at once again, and the window is back to 100 ms.
        let later = t0 + Duration::from_secs(1);
        c.change(later);
        assert_eq!(c.due(), Some(later));
        c.start();
        assert_eq!(c.window(), 100 * MS);
    }

    #[test]
    fn the_end_of_a_burst_does_not_wait_out_a_long_window() {
        let (mut c, t0) = coalescer();
        let events: Vec<Instant> = (0..600u32).map(|i| t0 + i * 5 * MS).collect();
        let syncs = drive(&mut c, &events, 30 * MS);
        let starts: Vec<u128> = syncs.iter().map(|(t, _)| (*t - t0).as_millis()).collect();
        // Leading edge, then windows of 100 ms, 400 ms, 1.6 s, 3 s; the burst ends at
        // 2995 ms and the last sync follows once it has been quiet for a quarter of the
        // 3 s window, not at the window's end (5.16 s).
        assert_eq!(starts, [0, 130, 560, 2190, 3745]);
    }

    #[test]
    fn five_thousand_changes_over_twelve_seconds_cost_under_ten_syncs() {
        let (mut c, t0) = coalescer();
        // One every 2.4 ms: as an API server taking 5000 writes in 12 s sends them.
        let events: Vec<Instant> = (0..5000u32)
            .map(|i| t0 + i * 2400 * Duration::from_micros(1))
            .collect();
        let last = *events.last().unwrap();
        let syncs = drive(&mut c, &events, 30 * MS);
        assert!(syncs.len() <= 10, "{} syncs", syncs.len());
        assert_eq!(syncs[0].0, t0, "leading edge");
        let (end, _) = syncs.last().unwrap();
        assert!(
            *end > last && *end <= last + 750 * MS,
            "last sync {:?} after the last change",
            *end - last
        );
        assert!(syncs.iter().all(|(_, k)| *k == SyncKind::Incremental));
    }

    #[test]
    fn pauses_in_a_storm_do_not_cost_a_sync_each() {
        let (mut c, t0) = coalescer();
        // 5000 changes over 25 s, in bunches of 50 with a 240 ms pause after each.
        let events: Vec<Instant> = (0..5000u32)
            .map(|i| t0 + (i / 50) * 250 * MS + (i % 50) * 200 * Duration::from_micros(1))
            .collect();
        let syncs = drive(&mut c, &events, 30 * MS);
        // Leading edge, three growing windows, one per 3 s for the rest, the end.
        assert!(syncs.len() <= 13, "{} syncs", syncs.len());
    }

    #[test]
    fn full_requests_do_not_grow_the_window_and_failures_back_off() {
        let (mut c, t0) = coalescer();
        c.full(t0);
        assert_eq!(c.start(), Some(SyncKind::Full));
        c.done(t0 + MS, None);
        // Requests for full syncs keep coming: folded, and the window stays.
        c.full(t0 + 2 * MS);
        c.full(t0 + 3 * MS);
        assert_eq!(c.due(), Some(t0 + 101 * MS));
        assert_eq!(c.start(), Some(SyncKind::Full));
        assert_eq!(c.window(), 100 * MS);
        c.done(t0 + 110 * MS, None);
        // A change folded into a pending full sync makes it no less full.
        c.full(t0 + 120 * MS);
        c.change(t0 + 130 * MS);
        assert_eq!(c.start(), Some(SyncKind::Full));
        // A failure: a full retry at its time, and changes do not bring it forward.
        c.done(t0 + 200 * MS, Some(t0 + Duration::from_secs(1)));
        c.change(t0 + 300 * MS);
        assert_eq!(c.due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(c.start(), Some(SyncKind::Full));
        c.done(t0 + Duration::from_secs(1) + MS, None);
        assert_eq!(c.due(), None);
    }
}
