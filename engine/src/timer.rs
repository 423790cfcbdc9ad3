//! A hashed timer wheel: O(1) to schedule, O(expired + slot) per tick, sans I/O (time is
//! passed in), so a core pays for the timers that fire, not for every connection it holds.
//!
//! Entries are `(key, generation)` pairs: re-scheduling a connection bumps its generation, and
//! stale entries are dropped when they surface (lazy deletion, no search).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    at_tick: u64,
    key: usize,
    generation: u32,
}

#[derive(Debug)]
pub(crate) struct TimerWheel {
    start: Instant,
    tick: Duration,
    slots: Vec<Vec<Entry>>,
    /// The next tick to process.
    cursor: u64,
    /// When `cursor`'s tick ends: `advance` before then has nothing to do.
    next_due: Instant,
    len: usize,
}

impl TimerWheel {
    /// A wheel of `slots` (a power of two) slots of `tick` each.
    pub(crate) fn new(now: Instant, tick: Duration, slots: usize) -> TimerWheel {
        assert!(slots.is_power_of_two() && !tick.is_zero());
        // A little room in every slot up front, so scheduling in steady state does not allocate.
        TimerWheel {
            start: now,
            tick,
            slots: (0..slots).map(|_| Vec::with_capacity(4)).collect(),
            cursor: 0,
            next_due: now,
            len: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.start).as_nanos() as u64;
        nanos / self.tick.as_nanos() as u64
    }

    /// Entries scheduled (including stale ones not yet dropped).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// When an entry scheduled for `at` fires: the end of `at`'s tick.
    pub(crate) fn fires_at(&self, at: Instant) -> Instant {
        self.start + Duration::from_nanos((self.tick_of(at) + 1) * self.tick.as_nanos() as u64)
    }

    /// Schedules `(key, generation)` to fire at `at` (rounded up to the next tick; a time in
    /// the past fires within one tick).
    pub(crate) fn schedule(&mut self, at: Instant, key: usize, generation: u32) {
        let at_tick = (self.tick_of(at) + 1).max(self.cursor);
        let mask = self.slots.len() as u64 - 1;
        self.slots[(at_tick & mask) as usize].push(Entry {
            at_tick,
            key,
            generation,
        });
        self.len += 1;
    }

    /// Moves time to `now`, appending every entry due by then to `out`. Processes at most one
    /// revolution of slots per call (entries further ahead wait in their slot).
    pub(crate) fn advance(&mut self, now: Instant, out: &mut Vec<(usize, u32)>) {
        if now < self.next_due {
            return; // still inside the last processed tick: one comparison per loop turn
        }
        let target = self.tick_of(now);
        let mask = self.slots.len() as u64 - 1;
        let last = target.min(self.cursor + mask);
        while self.cursor <= last {
            let slot = &mut self.slots[(self.cursor & mask) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].at_tick <= target {
                    let e = slot.swap_remove(i);
                    out.push((e.key, e.generation));
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            self.cursor += 1;
        }
        if self.cursor <= target {
            // More than a revolution passed at once: the loop above visited every slot and
            // compared every entry with `target`, so nothing due is left; skip ahead.
            self.cursor = target + 1;
        }
        self.next_due =
            self.start + Duration::from_nanos(self.cursor * self.tick.as_nanos() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fires_in_order_of_ticks_and_not_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0, Duration::from_millis(1), 8);
        w.schedule(t0 + Duration::from_millis(3), 1, 0);
        w.schedule(t0 + Duration::from_millis(20), 2, 0); // beyond one revolution
        w.schedule(t0, 3, 0);
        let mut out = Vec::new();
        w.advance(t0 + Duration::from_millis(1), &mut out);
        assert_eq!(out, vec![(3, 0)]);
        out.clear();
        w.advance(t0 + Duration::from_millis(5), &mut out);
        assert_eq!(out, vec![(1, 0)]);
        out.clear();
        w.advance(t0 + Duration::from_millis(15), &mut out);
        assert!(
            out.is_empty(),
            "the 20 ms timer waits in its slot across revolutions"
        );
        w.advance(t0 + Duration::from_millis(22), &mut out);
        assert_eq!(out, vec![(2, 0)]);
        assert_eq!(w.len(), 0);
    }

    proptest! {
        /// Every timer fires exactly once, never before its time, and no later than one tick
        /// after the first `advance` past it.
        #[test]
        fn every_timer_fires_once_on_time(
            delays in proptest::collection::vec(0u64..5000, 1..100),
            steps in proptest::collection::vec(1u64..700, 1..60),
        ) {
            let t0 = Instant::now();
            let tick = Duration::from_micros(100);
            let mut w = TimerWheel::new(t0, tick, 16);
            for (k, d) in delays.iter().enumerate() {
                w.schedule(t0 + Duration::from_micros(*d), k, 7);
            }
            let mut fired = vec![None; delays.len()];
            let mut now = 0u64;
            let mut out = Vec::new();
            for s in steps.iter().chain(std::iter::repeat_n(&700, 20)) {
                now += s;
                out.clear();
                w.advance(t0 + Duration::from_micros(now), &mut out);
                for &(k, g) in &out {
                    prop_assert_eq!(g, 7);
                    prop_assert!(fired[k].is_none(), "fired twice");
                    fired[k] = Some(now);
                }
            }
            for (k, d) in delays.iter().enumerate() {
                let f = fired[k].expect("every timer fires");
                prop_assert!(f >= *d, "timer {k} at {d} µs fired early at {f} µs");
            }
            prop_assert_eq!(w.len(), 0);
        }
    }
}
