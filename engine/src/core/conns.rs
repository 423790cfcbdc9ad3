//! The connection slab's lifecycle: adding connections, marking them for a flush, closing
//! them (begin, EOF half-close, finish once the kernel is done with their buffers), and the
//! bookkeeping after every event on a connection.

use super::*;
use crate::transport::stream::StreamLink;

impl Core {
    /// Adds a connection over a connected socket.
    pub(super) fn add_socket(&mut self, fd: OwnedFd, role: Role, now: Instant) -> Option<usize> {
        self.add_conn(AnyLink::Stream(StreamLink::new(fd)), role, now)
    }

    /// Adds a connection made on another thread (a socket, or an in-process connection's
    /// rings); `Err` says why it could not be added (the core is full or shutting down, or
    /// the link could not be set up, e.g. `EMFILE`); the connection is then dropped, which
    /// the peer sees as a close.
    pub(super) fn add_connected(
        &mut self,
        c: crate::transport::Connected,
        role: Role,
        now: Instant,
    ) -> Result<usize, Status> {
        let mut limits = self.conn_cfg.server.limits;
        limits.max_frame_size = limits
            .max_frame_size
            .max(self.conn_cfg.client.limits.max_frame_size);
        match c.into_link(
            &limits,
            self.conn_cfg.stall_timeout,
            &self.conn_cfg.buffers,
            &self.udp,
        ) {
            Ok(link) => self.add_conn(link, role, now).ok_or_else(|| {
                Status::new(
                    StatusCode::ResourceExhausted,
                    "core is at its connection limit (RuntimeConfig::max_connections) or \
                     shutting down",
                )
            }),
            Err(e) => {
                self.stats.count_error("link_setup_failed");
                Err(Status::unavailable(format!(
                    "setting up the connection's link failed: {e}"
                )))
            }
        }
    }

    /// Adds a connection over `link` (any transport) and starts receiving on it.
    pub(super) fn add_conn(&mut self, link: AnyLink, role: Role, now: Instant) -> Option<usize> {
        if self.conns.len() >= self.cfg.runtime.max_connections || self.drain_until.is_some() {
            self.stats.refused += 1;
            return None;
        }
        self.next_gen = self.next_gen.wrapping_add(1) & 0x00ff_ffff;
        let cfg = if matches!(link, AnyLink::Quic(_)) {
            // Built on first use (header_table_size 0: ConnConfig::for_quic).
            let p = &self.cfg.protocol;
            let datagrams = p.quic_server_in_use().is_some_and(|s| s.settings.datagrams)
                || p.quic_client_in_use().is_some_and(|c| c.settings.datagrams);
            self.quic_conn_cfg
                .get_or_insert_with(|| Rc::new(self.conn_cfg.for_quic(datagrams)))
        } else {
            &self.conn_cfg
        };
        let mut conn = Conn::new(role, cfg, now);
        let mut parked = None;
        if let (Role::Client, AnyLink::Quic(l)) = (role, &link) {
            if l.is_early() {
                // 0-RTT: idempotent calls may go before the Welcome, the rest waits
                // (docs/quic.md "0-RTT").
                conn.enter_early(l.early_memo());
                parked = Some(Box::default());
                self.early_conns += 1;
            }
        }
        let key = self.conns.insert(Entry {
            link,
            conn,
            generation: self.next_gen,
            closing: false,
            dirty: false,
            adopt: None,
            timer_gen: 0,
            scheduled: None,
            hot: None,
            parked,
        });
        self.arm_recv(key);
        self.mark_dirty(key);
        self.reschedule(key);
        Some(key)
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(en) = self.conns.get_mut(key) {
            if !en.dirty {
                en.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts closing `key`: no new operations; shuts the socket down so pending ones finish.
    /// Calls still in flight fail with `why` (unless the connection already knows a reason).
    pub(super) fn begin_close(&mut self, key: usize, why: &str) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.closing {
            return;
        }
        en.closing = true;
        // What the handshake taught (or a 0-RTT failure disproved) of a QUIC server's header
        // table, also when the input that opened the connection closed it.
        note_table_memo(en);
        en.conn.handle_closed(why);
        self.events.index.remove_conn(key as u32);
        let was_hot = en.hot.take().is_some();
        self.executor.drop_conn(key as u32);
        if let Some(slot) = en.adopt.take() {
            slot.complete(Err(handshake_failure(&en.conn, why)));
        }
        // A QUIC link waits (at most close_linger) for the peer to acknowledge its last
        // frames, the Error(0) above all; a core being dropped does not wait.
        // During a shutdown the linger ends with the drain (`Engine::shutdown`'s bound).
        let now = Instant::now();
        let linger = match self.drain_until {
            _ if self.dropping => Duration::ZERO,
            Some(until) => self
                .conn_cfg
                .close_linger
                .min(until.saturating_duration_since(now)),
            None => self.conn_cfg.close_linger,
        };
        en.link
            .close_with(&mut self.driver, en.conn.close_status(), linger);
        self.closing.push(key);
        if was_hot {
            self.hot.retain(|&k| k != key);
        }
        // Commands held for its 0-RTT phase fail as for any closed connection.
        self.unpark(key, now);
    }

    pub(super) fn finish_closes(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let key = self.closing[i];
            let done = self.conns.get(key).is_none_or(|en| en.link.quiescent());
            if done {
                self.closing.swap_remove(i);
                if self.conns.try_remove(key).is_some() {
                    self.stats.closed += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// After a connection changed: start async work it queued, schedule a flush, and close
    /// it once it is closing (or drained after the peer's EOF/GoAway) and its output is out.
    pub(super) fn after_event(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let conn = ConnRef {
            key: key as u32,
            generation: en.generation,
        };
        en.conn.run_stream_hooks(&self.registry);
        if en.conn.has_event_news() {
            // Subscriptions changed or events were published: index, fan out.
            self.event_news(key);
        }
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        while let Some(ev) = en.conn.poll_event() {
            match ev {
                crate::conn::Event::Spawn(sp) => match sp.future {
                    Some(f) => self.executor.spawn(conn, sp.id, f, sp.deadline),
                    None => self
                        .executor
                        .spawn_deferred(conn, sp.id, sp.token, sp.deadline),
                },
                crate::conn::Event::Cancel(id) => {
                    self.executor.cancel(conn.key, id);
                    en.conn.abandon_async(
                        id,
                        StatusCode::Cancelled,
                        "cancelled by the caller",
                        &self.registry,
                    );
                }
            }
        }
        note_table_memo(en);
        if en.parked.is_some() && !en.conn.is_early() {
            // The 0-RTT phase ended (opened or failed): the commands it held run now.
            self.unpark(key, Instant::now());
        }
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let open = en.conn.is_open() || en.conn.is_early();
        if en.adopt.is_some() && (open || en.conn.is_closing()) {
            let slot = en.adopt.take().expect("checked");
            if open {
                let r = ConnRef {
                    key: key as u32,
                    generation: en.generation,
                };
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&r.key.to_le_bytes());
                b[4..].copy_from_slice(&r.generation.to_le_bytes());
                slot.complete(Ok(&b));
                if slot.was_abandoned() {
                    // The connecting thread gave up (timeout) and may never see this handle.
                    self.begin_close(key, "the connecting caller gave up");
                    return;
                }
            } else {
                slot.complete(Err(handshake_failure(&en.conn, "handshake failed")));
            }
        }
        if !en.closing && (en.conn.is_closing() || en.conn.drained()) {
            // Nothing more is read from a connection that is closing: its input after an
            // error is not looked at, and the closing bound runs from now.
            if !en.conn.is_closing() {
                en.conn.close_with(crate::conn::ConnError {
                    counter: "drained",
                    status: StatusCode::Unavailable,
                    message: "the peer ended the connection".to_owned(),
                });
                // Drained is a clean end, not a connection error (no Error(0) is sent): a
                // QUIC close carries code 0 (protocol.md §27.1), so the peer counts nothing.
                en.conn.close_code = None;
            }
            en.conn.closing_at(Instant::now());
            en.link.end_reading(true);
            en.link.keep_transport_going(&mut self.driver);
            if en.hot.take().is_some() {
                self.hot.retain(|&k| k != key);
            }
        }
        if en.conn.wants_write() {
            self.mark_dirty(key);
        } else if en.conn.is_closing() && !en.link.writing() {
            self.begin_close(key, "closed");
            return;
        }
        self.reschedule(key);
    }

    /// The peer sent EOF: nothing more to read; answer what is in flight, then close.
    pub(super) fn on_eof(&mut self, key: usize, now: Instant) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        en.link.end_reading(false);
        en.link.keep_transport_going(&mut self.driver);
        en.conn.handle_eof(now);
        if en.hot.take().is_some() {
            self.hot.retain(|&k| k != key);
        }
        self.after_event(key);
    }
}

/// Why a connection failed before its handshake completed, for the connecting caller: the
/// peer's refusal or the handshake timeout as recorded by the connection, or else its close
/// reason (`why` when it has none).
fn handshake_failure<C: crate::conn::Caller>(conn: &Connection<C>, why: &str) -> Status {
    conn.handshake_failure.clone().unwrap_or_else(|| {
        let reason = conn
            .close_reason
            .clone()
            .unwrap_or_else(|| format!("connection closed during the handshake: {why}"));
        Status::unavailable(reason).with_origin(crate::status::Origin::Closed)
    })
}

/// A `quic://` client connection: keeps what its handshake taught of the server's header
/// table for the next 0-RTT connect, or forgets what a failed 0-RTT phase assumed
/// (docs/quic.md "0-RTT"). Once per connection (both are taken).
fn note_table_memo(en: &mut Entry) {
    if let Some(memo) = en.conn.take_opened() {
        if let AnyLink::Quic(l) = &mut en.link {
            l.remember_table(memo);
        }
    }
    if en.conn.take_early_failed() {
        if let AnyLink::Quic(l) = &mut en.link {
            l.forget_early_memo();
        }
    }
}
