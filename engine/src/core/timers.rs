//! Time-driven work: connection timers on the wheel (call deadlines, stalls, keepalive,
//! linger) and async handlers (polled when woken, dropped when their deadline passes).

use super::*;

impl Core {
    /// Drops async handlers past their deadline and answers DeadlineExceeded.
    pub(super) fn expire_tasks(&mut self, now: Instant) {
        if self.executor.len() > 0 {
            for (conn, call) in self.executor.expire(now) {
                self.stats.deadline_exceeded += 1;
                let key = conn.key as usize;
                if let Some(en) = self
                    .conns
                    .get_mut(key)
                    .filter(|en| en.generation == conn.generation)
                {
                    en.conn.abandon_async(
                        call,
                        StatusCode::DeadlineExceeded,
                        "the deadline passed before the handler finished",
                        &self.registry,
                    );
                    self.mark_dirty(key);
                }
            }
        }
    }

    /// (Re)schedules `key`'s timer if it now needs one earlier than the one scheduled.
    pub(super) fn reschedule(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.closing {
            return;
        }
        let parked = en.parked.as_ref().and_then(|p| p.next_deadline());
        let Some(next) = [en.conn.poll_timeout(), parked].into_iter().flatten().min() else {
            return;
        };
        if en.scheduled.is_some_and(|s| s <= next) {
            return; // the earlier timer fires first and reschedules
        }
        en.timer_gen = en.timer_gen.wrapping_add(1);
        en.scheduled = Some(next);
        self.wheel.schedule(next, key, en.timer_gen);
    }

    /// Runs the connection timers that are due: call deadlines, stalls (handshake, frame,
    /// blocked output), keepalive and dead peers, and the linger bound of closing connections.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.advance(now, &mut fired);
        let mut expired = std::mem::take(&mut self.expired);
        for &(key, timer_gen) in &fired {
            if self
                .conns
                .get(key)
                .is_some_and(|en| en.timer_gen == timer_gen && en.parked.is_some())
            {
                self.expire_parked(key, now);
            }
            let Some(en) = self
                .conns
                .get_mut(key)
                .filter(|en| en.timer_gen == timer_gen && !en.closing)
            else {
                continue; // stale entry, or the connection is gone
            };
            en.scheduled = None;
            let mut env = Env {
                registry: &self.registry,
                now,
                stats: &mut self.stats,
                origin: None,
            };
            let before = en.conn.wants_write();
            if let Err(e) = en.conn.handle_timeout(&mut env, &mut expired) {
                if matches!(e.counter, "close_linger" | "write_stalled") {
                    // The peer takes no bytes: close now, whatever is still queued.
                    if e.counter == "close_linger" {
                        self.stats.count_error(e.counter);
                    }
                    self.begin_close(key, &e.message);
                } else {
                    self.after_event(key);
                }
                continue;
            }
            if !before && en.conn.wants_write() {
                self.mark_dirty(key);
            }
            self.reschedule(key);
        }
        self.expired = expired;
        self.fired = fired;
    }

    /// Polls woken async handlers and answers the calls that finished.
    pub(super) fn run_tasks(&mut self, now: Instant) -> bool {
        if !self.executor.has_ready() {
            return false;
        }
        let mut outcomes = std::mem::take(&mut self.outcomes);
        let work = self.executor.run(&mut outcomes);
        for Outcome::Done(conn, call, result) in outcomes.drain(..) {
            self.complete_later(conn, call, result, None, now);
        }
        self.outcomes = outcomes;
        work
    }
}
