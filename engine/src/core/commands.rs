//! Work sent to the core: commands from other threads (through the inbox) and from the core's
//! own tasks (handled in the same turn), and graceful shutdown.

use super::*;
use crate::status::Origin;

impl Core {
    /// Commands this core's own tasks sent directly (e.g. a handler calling another service on a
    /// connection of this core): handled in this turn, so the request goes out in this flush.
    pub(super) fn drain_local(&mut self, now: Instant) -> bool {
        let mut work = false;
        while Inbox::has_local() {
            // The empty buffer goes to the thread, its commands come here: the two buffers
            // alternate, keeping their capacity.
            let mut local = std::mem::take(&mut self.local);
            self.inbox.take_local(&mut local);
            if local.is_empty() {
                self.local = local;
                return work;
            }
            work = true;
            for (_, cmd) in local.drain(..) {
                self.on_command(cmd, now);
            }
            self.local = local;
            // Completions may have woken tasks that send more.
            self.run_tasks(now);
        }
        work
    }

    /// Handles the commands other threads queued. They are stamped with the time they are
    /// taken (one clock read when there are any): handlers may have run for a while since
    /// the turn began, and a call's deadline must not start before it is taken.
    pub(super) fn drain_inbox(&mut self) -> bool {
        let Some(first) = self.inbox.pop() else {
            return false;
        };
        let now = Instant::now();
        self.on_command(first, now);
        while let Some(cmd) = self.inbox.pop() {
            self.on_command(cmd, now);
        }
        true
    }

    pub(super) fn on_command(&mut self, cmd: Command, now: Instant) {
        let Some(cmd) = self.park(cmd, now) else {
            return;
        };
        match cmd {
            Command::Adopt { link, slot } => match self.add_connected(link, Role::Client, now) {
                Ok(key) => self.conns[key].adopt = Some(slot),
                Err(why) => slot.complete(Err(why)),
            },
            Command::CountError(label, n) => self.stats.count_errors(label, n),
            Command::AcceptQuic(pipe) => {
                let mail = pipe.mail.clone();
                if self.listeners.is_closing() {
                    self.stats.refused += 1;
                } else if let Ok(key) =
                    self.add_connected(crate::transport::Connected::Quic(pipe), Role::Server, now)
                {
                    self.stats.accepted += 1;
                    if let Some(mail) = mail {
                        let generation = self.conns[key].generation;
                        mail.set_route(
                            self.inbox.clone(),
                            ConnRef {
                                key: key as u32,
                                generation,
                            },
                        );
                    }
                }
            }
            Command::QuicMail(conn) => {
                if let Some(en) = self
                    .conns
                    .get_mut(conn.key as usize)
                    .filter(|en| en.generation == conn.generation)
                    && let crate::transport::AnyLink::Quic(l) = &mut en.link
                {
                    l.mail_arrived(&mut self.driver);
                }
            }
            Command::AcceptRecord(pipe) => {
                if self.listeners.is_closing() {
                    // Stopped listening: the dropped rings are the client's refusal.
                    self.stats.refused += 1;
                } else if self
                    .add_connected(crate::transport::Connected::Record(pipe), Role::Server, now)
                    .is_ok()
                {
                    self.stats.accepted += 1;
                }
            }
            Command::Call {
                conn,
                service,
                method,
                payload,
                deadline,
                idempotent,
                metadata,
                slot,
            } => {
                let spec = crate::conn::CallSpec {
                    service: &service,
                    method: &method,
                    payload: &payload,
                    deadline,
                    idempotent,
                    metadata: metadata.as_deref(),
                };
                self.start_call(conn, &spec, slot, now);
            }
            Command::CancelSlot { conn, slot, code } => {
                let key = conn.key as usize;
                if let Some(en) = self
                    .conns
                    .get_mut(key)
                    .filter(|en| en.generation == conn.generation)
                {
                    if en.conn.cancel_slot(&slot, code) && code == StatusCode::DeadlineExceeded {
                        self.stats.deadline_exceeded += 1;
                    }
                    self.mark_dirty(key);
                }
            }
            Command::Close { conn } => {
                if self
                    .conns
                    .get(conn.key as usize)
                    .is_some_and(|en| en.generation == conn.generation)
                {
                    self.begin_close(conn.key as usize, "the channel was closed");
                }
            }
            Command::Answer {
                conn,
                id,
                token,
                result,
                metadata,
            } => self.answer_deferred(conn, id, token, result, metadata.as_deref(), now),
            Command::OpenStream {
                conn,
                service,
                method,
                metadata,
                deadline,
                first,
                end,
                app,
            } => {
                let spec = crate::conn::StreamSpec {
                    service: &service,
                    method: &method,
                    deadline,
                    metadata: metadata.as_deref(),
                    first,
                    end,
                };
                self.open_stream_for(conn, &spec, app, now);
            }
            Command::StreamWork { conn, id } => {
                let key = conn.key as usize;
                if let Some(en) = self
                    .conns
                    .get_mut(key)
                    .filter(|en| en.generation == conn.generation && !en.closing)
                {
                    en.conn.stream_work(id);
                    self.after_event(key);
                }
            }
            Command::Shutdown { drain } => self.shutdown(drain),
            Command::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
            Command::Publish {
                topic,
                payload,
                hops,
                served,
            } => {
                self.inbox.release_event(topic.len() + payload.len());
                let ev = std::rc::Rc::new(crate::conn::Published { topic, payload });
                self.fan_out(&ev, Some(hops), served);
            }
            Command::PublishTo {
                conn,
                topic,
                payload,
            } => {
                self.inbox.release_event(topic.len() + payload.len());
                if self.publish_for(conn, &topic, &payload).is_err() {
                    // Fire-and-forget (docs/protocol.md §24.5): counted, not reported.
                    self.stats.count_error("publish_failed");
                }
            }
            Command::Subscribe {
                conn,
                pattern,
                opts,
                app,
            } => self.subscribe_for(conn, &pattern, &opts, app),
            Command::Unsubscribe { conn, id } => self.unsubscribe_for(conn, id),
            Command::SubscribeLocal {
                pattern,
                opts,
                app,
                key,
            } => self.add_local_sub(pattern.as_bytes(), &opts, app, key),
            Command::UnsubscribeLocal { key } => self.events.index.remove_local(key),
            Command::Services { registry, done } => {
                self.set_registry(registry);
                let _ = done.send(());
            }
        }
    }

    /// A deferred reply answered call `id`: deliver it unless the call ended meanwhile
    /// (deadline, cancel, connection closed), in which case the answer is dropped and counted.
    fn answer_deferred(
        &mut self,
        conn: ConnRef,
        id: u32,
        token: u32,
        result: Result<bytes::Bytes, Status>,
        metadata: Option<&netron_codec::hpack::HeaderList>,
        now: Instant,
    ) {
        let state = self.executor.answer_deferred(conn, id, token, now);
        if state != crate::executor::Answered::Live {
            self.stats.count_error("late_deferred_reply");
        }
        if state == crate::executor::Answered::Gone {
            return;
        }
        let result = if state == crate::executor::Answered::Expired {
            self.stats.deadline_exceeded += 1;
            Err(Status::deadline_exceeded(
                "the deadline passed before the handler finished",
            ))
        } else {
            result
        };
        self.complete_later(conn, id, result, metadata, now);
    }

    /// Delivers the outcome of async or deferred call `id` to its connection (if it is still
    /// the same, open connection).
    pub(super) fn complete_later(
        &mut self,
        conn: ConnRef,
        id: u32,
        result: Result<bytes::Bytes, Status>,
        metadata: Option<&netron_codec::hpack::HeaderList>,
        now: Instant,
    ) {
        let key = conn.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        {
            let mut env = Env {
                registry: &self.registry,
                now,
                stats: &mut self.stats,
                origin: None,
            };
            en.conn.complete_async(id, result, metadata, &mut env);
            self.after_event(key);
        }
    }

    /// Opens a stream on client connection `conn` (or fails `app` saying why not).
    fn open_stream_for(
        &mut self,
        conn: ConnRef,
        spec: &crate::conn::StreamSpec<'_>,
        app: Arc<crate::streams::Shared>,
        now: Instant,
    ) {
        let key = conn.key as usize;
        let mut app: Box<dyn crate::conn::StreamApp> = Box::new(crate::streams::AppHandle(app));
        match self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        {
            Some(en) => {
                en.conn.open_stream(spec, app, now);
                self.after_event(key);
            }
            None => crate::conn::fail_app(&mut *app, &crate::peer::closed()),
        }
    }

    pub(super) fn start_call(
        &mut self,
        conn: ConnRef,
        spec: &crate::conn::CallSpec<'_>,
        slot: Arc<Completion>,
        now: Instant,
    ) -> Option<u32> {
        let key = conn.key as usize;
        match self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        {
            Some(en) => match en.conn.start_call(spec, slot.clone(), now) {
                Ok(id) => {
                    self.mark_dirty(key);
                    if spec.deadline.is_some() {
                        self.reschedule(key);
                    }
                    self.write_early(key);
                    Some(id)
                }
                Err(s) => {
                    // Refused before anything was encoded: a connection that cannot carry
                    // calls (Unavailable: closed, closing, going away) or a limit.
                    let origin = match s.code {
                        StatusCode::Unavailable | StatusCode::Internal => Origin::Closed,
                        _ => Origin::Refused,
                    };
                    slot.complete(Err(s.with_origin(origin)));
                    None
                }
            },
            None => {
                slot.complete(Err(crate::peer::closed()));
                None
            }
        }
    }

    /// Graceful shutdown: stop accepting, send GoAway on every connection, let in-flight work
    /// finish for up to `drain`, then close everything.
    pub fn shutdown(&mut self, drain: Duration) {
        if self.drain_until.is_some() {
            return;
        }
        // A drain too long to represent waits for the work to finish, however long.
        let now = Instant::now();
        self.drain_until = Some(
            now.checked_add(drain)
                .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600)),
        );
        self.close_listeners();
        let until = self.drain_until;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            if let Some(en) = self.conns.get_mut(k) {
                en.conn.go_away("the engine is shutting down");
                // A QUIC close already waiting for its peer ends with the drain too.
                if let Some(until) = until {
                    en.link.limit_linger(&mut self.driver, until);
                }
            }
            self.mark_dirty(k);
        }
    }
}
