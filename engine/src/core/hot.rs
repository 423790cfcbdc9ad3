//! Hot connections of busy-poll cores: read with one non-blocking `recv(2)` per loop turn
//! instead of the io_uring multishot receive (see [`crate::DirectRecv`] and
//! docs/architecture.md, "Hot connections").
//!
//! A connection is promoted when a ring receive delivers data: its multishot receive is
//! cancelled and the connection joins the hot list. Bytes keep their order across the switch
//! because the two never read the same socket at once: a hot connection is read directly only
//! after the final completion of its cancelled receive (whose bytes, if any, are handled like
//! any other), whatever ring mode runs the kernel's task work. A hot connection silent for
//! `DirectRecv::idle` is demoted: its ring receive is armed again.

use std::time::Instant;

use super::Core;
use crate::config::{DirectRecv, IdlePolicy};
use crate::conn::Env;
use crate::transport::{Direct, Link};

/// Receives per hot connection per turn at most (a peer that keeps the socket full must not
/// starve the others).
const MAX_READS_PER_TURN: usize = 4;

/// What a direct read of one hot connection ended with.
enum ReadEnd {
    /// Drained (`EAGAIN`) or read its share for this turn.
    Open,
    /// The peer closed its side.
    Eof,
    /// The transport failed (the counter to count).
    Failed(&'static str),
    /// The link ended with this update (handled as from a completion).
    Ended(crate::transport::Update),
}

impl Core {
    /// The direct-receive policy in force: only busy-poll cores read directly (an adaptive core
    /// must be able to park in the ring, which needs the ring receive armed).
    pub(super) fn direct_recv(&self) -> Option<DirectRecv> {
        match self.cfg.runtime.idle {
            IdlePolicy::BusyPoll => self.cfg.runtime.direct_recv.filter(|d| d.max_conns > 0),
            IdlePolicy::Adaptive { .. } => None,
        }
    }

    /// Makes `key` hot if the policy allows it: cancels its ring receive (the final completion
    /// of that receive may still bring data; it is handled before any direct read).
    pub(super) fn maybe_promote(&mut self, key: usize, now: Instant) {
        let Some(policy) = self.direct_recv() else {
            return;
        };
        if self.hot.len() >= policy.max_conns {
            return;
        }
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.hot.is_some() || en.closing || en.link.read_done() || !en.link.reads_directly() {
            return;
        }
        en.hot = Some(now);
        self.hot.push(key);
        self.stats.driver.hot_promotions += 1;
        if self.scratch.is_empty() {
            // Once per core, the first time a connection gets hot.
            self.scratch = vec![0; self.cfg.runtime.recv_buffer_size].into_boxed_slice();
        }
        en.link.stop_recv(&mut self.driver);
    }

    /// Reads every hot connection once (up to a few receives each), feeds the bytes to its
    /// connection, and demotes the ones silent for the policy's idle time. Returns whether any
    /// bytes arrived.
    pub(super) fn poll_hot(&mut self, now: Instant) -> bool {
        if self.hot.is_empty() {
            return false;
        }
        // Connections only get hot under a policy, and the policy is fixed for the core's life.
        let idle = self
            .direct_recv()
            .map_or(std::time::Duration::ZERO, |d| d.idle);
        let mut work = false;
        // The survivors go into the spare list; both keep their capacity (no allocation).
        let spare = std::mem::take(&mut self.hot_spare);
        let mut keys = std::mem::replace(&mut self.hot, spare);
        for &key in &keys {
            let (end, got) = self.read_hot(key, now);
            work |= got;
            match end {
                ReadEnd::Open => {}
                ReadEnd::Eof => {
                    self.on_eof(key, now);
                    continue;
                }
                ReadEnd::Failed(counter) => {
                    self.stats.count_error(counter);
                    self.begin_close(key, "receive failed");
                    continue;
                }
                ReadEnd::Ended(update) => {
                    if got {
                        self.after_event(key);
                    }
                    self.end_link(key, update, now);
                    continue;
                }
            }
            if got {
                self.after_event(key);
                self.write_early(key);
            }
            let Some(en) = self.conns.get_mut(key) else {
                continue;
            };
            if en.closing {
                // `begin_close` already took it off the hot list.
                continue;
            }
            if en.hot.is_none_or(|last| now.duration_since(last) >= idle) {
                en.hot = None;
                self.arm_recv(key);
            } else {
                self.hot.push(key);
            }
        }
        keys.clear();
        self.hot_spare = keys;
        work
    }

    /// Direct receives on one hot connection until it would block (or its share is used).
    /// Nothing while its cancelled ring receive has not completed yet: that receive may still
    /// take bytes, and they must be handled before anything read after them.
    fn read_hot(&mut self, key: usize, now: Instant) -> (ReadEnd, bool) {
        let Some(en) = self.conns.get_mut(key).filter(|en| !en.link.receiving()) else {
            return (ReadEnd::Open, false);
        };
        let mut got = false;
        let certs = en.link.peer_certificates();
        for _ in 0..MAX_READS_PER_TURN {
            self.stats.driver.direct_recvs += 1;
            let conn = &mut en.conn;
            let (registry, stats, inbox) = (&self.registry, &mut self.stats, &self.inbox);
            let origin = crate::dispatch::Origin {
                inbox,
                conn: crate::inbox::ConnRef {
                    key: key as u32,
                    generation: en.generation,
                },
                cred: en.link.peer_cred(),
                certs: certs.as_ref(),
            };
            let mut env = Env {
                registry,
                now,
                stats,
                origin: Some(origin),
            };
            let read = if let Some(rx) = conn.pending_frame()
                && let Some(r) = en.link.recv_appending(rx)
            {
                // The rest of a large frame, straight into its reassembly buffer.
                let room_left = rx.len() < rx.capacity();
                match r {
                    Ok(0) => Direct::Eof,
                    Ok(n) => {
                        let _ = conn.handle_appended(n, &mut env);
                        Direct::Got {
                            maybe_more: !room_left,
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Direct::Empty,
                    Err(_) => Direct::Failed("recv_failed"),
                }
            } else {
                en.link.read_direct(&mut self.scratch, |input| {
                    let _ = crate::transport::feed(conn, input, &mut env);
                })
            };
            match read {
                Direct::Got { maybe_more } => {
                    got = true;
                    en.hot = Some(now);
                    if !maybe_more || en.conn.is_closing() {
                        break;
                    }
                }
                Direct::Empty => break,
                Direct::Eof => return (ReadEnd::Eof, got),
                Direct::Failed(counter) => return (ReadEnd::Failed(counter), got),
                Direct::Ended(update) => return (ReadEnd::Ended(update), got),
            }
        }
        (ReadEnd::Open, got)
    }
}
