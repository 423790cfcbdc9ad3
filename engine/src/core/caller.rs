//! The caller-driven API: a program drives this core from its own thread and makes calls on
//! it directly (`connect`, `start`, `call`, `cancel`, `close`), with no cross-thread hop.

use super::*;
use crate::{CallError, ConnectError};

/// A call's payload, deadline, request metadata and idempotent flag.
pub(super) type CoreCall<'a> = (
    &'a [u8],
    Option<Duration>,
    Option<&'a netron_codec::hpack::HeaderList>,
    bool,
);

impl Core {
    /// Connects to `endpoint` as a client and completes the handshake within `timeout`
    /// (transport connect and handshake together; the core's
    /// `ProtocolConfig::handshake_timeout` bounds the handshake too), driving this core from
    /// the calling thread.
    ///
    /// # Errors
    /// - [`ConnectError::Io`]: the transport could not connect (e.g. connection refused);
    /// - [`ConnectError::Refused`]: the peer refused the handshake (its status inside);
    /// - [`ConnectError::Timeout`]: `timeout` or the handshake timeout passed first (named);
    /// - [`ConnectError::Tls`]: a `quic://` TLS handshake failed (either side refused);
    /// - [`ConnectError::Closed`]: the connection closed during the handshake, or the core is
    ///   at its connection limit;
    /// - [`ConnectError::EngineStopped`]: this core's ring failed.
    pub fn connect(
        &mut self,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<ConnId, ConnectError> {
        const SETTING: &str = "the timeout argument of Core::connect";
        let ep = || endpoint.to_string();
        let link = crate::transport::connect(
            endpoint,
            timeout,
            self.cfg.protocol.quic_client_in_use().as_ref(),
        )
        .map_err(|e| ConnectError::from_io(ep(), e, timeout, SETTING))?;
        let key = self
            .add_connected(link, Role::Client, Instant::now())
            .map_err(|s| ConnectError::Closed {
                endpoint: ep(),
                reason: s.message.into_owned(),
            })?;
        let generation = self.conns[key].generation;
        let done = |c: &Core| {
            c.conns
                .get(key)
                .is_none_or(|en| en.generation != generation || en.conn.is_open() || en.closing)
        };
        self.run_until(timeout, done)
            .map_err(|e| ConnectError::EngineStopped {
                reason: format!("the core's io_uring failed: {e}"),
            })?;
        match self.conns.get(key).filter(|en| en.generation == generation) {
            Some(en) if en.conn.is_open() => Ok(ConnId(ConnRef {
                key: key as u32,
                generation,
            })),
            Some(en) => {
                let failure = en.conn.handshake_failure.clone();
                let closing = en.closing || en.conn.is_closing();
                let reason = en.conn.close_reason.clone();
                self.begin_close(key, "handshake failed or timed out");
                Err(match failure {
                    Some(s) => ConnectError::from_core(ep(), s, timeout),
                    None if !closing => ConnectError::Timeout {
                        endpoint: ep(),
                        timeout,
                        setting: SETTING,
                    },
                    None => ConnectError::Closed {
                        endpoint: ep(),
                        reason: reason.unwrap_or_else(|| "handshake failed".to_owned()),
                    },
                })
            }
            None => Err(ConnectError::Closed {
                endpoint: ep(),
                reason: "the peer closed the connection".to_owned(),
            }),
        }
    }

    /// Starts a unary call on `conn` and returns its id; the outcome arrives in `slot` while
    /// this core runs (check [`CallSlot::is_done`], read it with [`CallSlot::reply`]).
    ///
    /// If `slot` still waits for an earlier call, that call is cancelled first (its reply
    /// could never be read). Returns `None` if the call could not start; the slot then holds
    /// the failure (e.g. `ResourceExhausted` for a payload above the negotiated frame size,
    /// `Unavailable` for a closed connection).
    pub fn start(
        &mut self,
        conn: ConnId,
        service: &[u8],
        method: &[u8],
        payload: &[u8],
        deadline: Option<Duration>,
        slot: &mut CallSlot,
    ) -> Option<u32> {
        let call = (payload, deadline, None, false);
        self.start_with_metadata(conn, (service, method), call, slot)
    }

    /// `call`: payload, deadline, request metadata, idempotent.
    fn start_with_metadata(
        &mut self,
        conn: ConnId,
        (service, method): (&[u8], &[u8]),
        call: CoreCall<'_>,
        slot: &mut CallSlot,
    ) -> Option<u32> {
        let (payload, deadline, metadata, idempotent) = call;
        if slot.inner.is_pending() {
            if let Some((c, id)) = slot.last.take() {
                self.cancel(ConnId(c), id);
            }
        }
        Completion::rearm(&mut slot.inner);
        let spec = crate::conn::CallSpec {
            service,
            method,
            payload,
            deadline,
            idempotent,
            metadata,
        };
        // The clock only places a deadline; a call without one needs no clock read (a
        // tenth of a pipelined client's time).
        let now = if deadline.is_some() {
            Instant::now()
        } else {
            self.clock
        };
        let id = self.start_call(conn.0, &spec, slot.inner.clone(), now);
        slot.last = id.map(|id| (conn.0, id));
        id
    }

    /// Cancels call `id` on `conn`: the slot is completed with `Cancelled` and a Cancel frame
    /// tells the server to stop.
    pub fn cancel(&mut self, conn: ConnId, id: u32) {
        let key = conn.0.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.0.generation)
        {
            en.conn
                .cancel_call(id, StatusCode::Cancelled, "cancelled by the caller");
            self.mark_dirty(key);
        }
    }

    /// A unary call driven by the calling thread: starts it, runs this core until the reply,
    /// and lends the reply from `slot` (the borrow keeps `slot` from starting another call
    /// while the reply is read). Allocates nothing in steady state.
    ///
    /// `deadline` is honoured by this loop itself: the call fails with `DeadlineExceeded` (and
    /// a Cancel goes to the server) once it passes, whatever the connection does.
    ///
    /// ```
    /// use netron_engine::{CallSlot, Core, CoreConfig, Engine, Service};
    /// use std::time::Duration;
    ///
    /// let echo = Service::new("echo", "1.0.0")?.unary("say", |req, reply| {
    ///     reply.write(req.payload());
    ///     Ok(())
    /// });
    /// let server = Engine::builder().cores(1).service(echo).listen("tcp://127.0.0.1:0").build()?;
    /// // A core driven by this thread: no cross-thread hop. Names are bytes here.
    /// let mut core = Core::new(CoreConfig::default())?;
    /// let conn = core.connect(&server.endpoints()[0], Duration::from_secs(5))?;
    /// let mut slot = CallSlot::new(); // reused call after call: no allocation per call
    /// for word in [&b"one"[..], b"two"] {
    ///     let reply = core.call(conn, b"echo@1.0.0", b"say", word, Some(Duration::from_secs(1)), &mut slot)?;
    ///     assert_eq!(reply, word);
    /// }
    /// server.shutdown(Duration::from_secs(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// - [`CallError::Status`]: the server's failure status, or `DeadlineExceeded` once
    ///   `deadline` passed;
    /// - [`CallError::Refused`]: a request above the peer's negotiated limits
    ///   (`max_frame_size`, `max_concurrent_calls`) or this side's backlog cap, refused before
    ///   anything is sent; the connection and its other calls are untouched;
    /// - [`CallError::Closed`]: the connection is closed or closed before the reply;
    /// - [`CallError::EngineStopped`]: this core's ring failed.
    pub fn call<'s>(
        &mut self,
        conn: ConnId,
        service: &[u8],
        method: &[u8],
        payload: &[u8],
        deadline: Option<Duration>,
        slot: &'s mut CallSlot,
    ) -> Result<&'s [u8], CallError> {
        if !self.client_interceptors.is_empty() {
            let opts = deadline.map_or_else(crate::CallOptions::new, |d| {
                crate::CallOptions::new().deadline(d)
            });
            return self.call_intercepted(conn, (service, method), payload, &opts, slot);
        }
        self.call_inner(
            conn,
            (service, method),
            (payload, deadline, None, false),
            slot,
        )
    }

    /// [`Core::call`] with [`crate::CallOptions`]: its deadline and request metadata. The
    /// response metadata is read from the slot ([`CallSlot::metadata`]) while the reply is
    /// borrowed. Allocates nothing in steady state for up to 6 request metadata fields (the
    /// response metadata is copied into the slot's buffer, reused call after call).
    ///
    /// # Errors
    /// As [`Core::call`]; [`CallError::Refused`] with `InvalidArgument` for a reserved
    /// metadata name (see [`crate::CallOptions::metadata`]), before anything is sent.
    pub fn call_with<'s>(
        &mut self,
        conn: ConnId,
        service: &[u8],
        method: &[u8],
        payload: &[u8],
        options: &crate::CallOptions,
        slot: &'s mut CallSlot,
    ) -> Result<&'s [u8], CallError> {
        if !self.client_interceptors.is_empty() {
            return self.call_intercepted(conn, (service, method), payload, options, slot);
        }
        options.check().map_err(CallError::Refused)?;
        let metadata = Some(options.get_metadata()).filter(|m| !m.is_empty());
        let call = (
            payload,
            options.get_deadline(),
            metadata,
            options.is_idempotent(),
        );
        self.call_inner(conn, (service, method), call, slot)
    }

    /// `call`: payload, deadline, request metadata, idempotent.
    pub(super) fn call_inner<'s>(
        &mut self,
        conn: ConnId,
        names: (&[u8], &[u8]),
        call: CoreCall<'_>,
        slot: &'s mut CallSlot,
    ) -> Result<&'s [u8], CallError> {
        let until = call.1.and_then(|d| Instant::now().checked_add(d));
        let id = self.start_with_metadata(conn, names, call, slot);
        // Send now rather than after the next turn's reads: a hot connection writes directly,
        // others queue their send for the next enter.
        self.flush();
        // Starting a call is work: an adaptive core spins its full `spin` for the reply from
        // now, whatever idle turns came before the call.
        self.idle_since = None;
        let mut looped = false;
        while !slot.inner.is_done() {
            let turned = self.turn(Some(&slot.inner), looped);
            looped = true;
            if let Err(e) = turned {
                if let Some(id) = id {
                    self.expire_call(conn, id, StatusCode::Unavailable, "the core's ring failed");
                }
                return Err(CallError::EngineStopped(Status::unavailable(format!(
                    "the core's io_uring failed: {e}"
                ))));
            }
            if let (Some(until), Some(id)) = (until, id) {
                if !slot.inner.is_done() && Instant::now() >= until {
                    self.expire_call(
                        conn,
                        id,
                        StatusCode::DeadlineExceeded,
                        "the deadline passed before a reply arrived",
                    );
                }
            }
        }
        slot.last = None;
        let s: &'s CallSlot = slot;
        s.inner
            .result()
            .unwrap_or_else(|| Err(Status::internal("call slot not completed")))
            .map_err(CallError::from_status)
    }

    /// Ends call `id` locally with `code` (a Cancel goes to the peer).
    pub(super) fn expire_call(
        &mut self,
        conn: ConnId,
        id: u32,
        code: StatusCode,
        why: &'static str,
    ) {
        let key = conn.0.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.0.generation)
        {
            en.conn.cancel_call(id, code, why);
            self.mark_dirty(key);
            self.flush();
        }
    }

    /// Closes a client connection.
    pub fn close(&mut self, conn: ConnId) {
        if self
            .conns
            .get(conn.0.key as usize)
            .is_some_and(|en| en.generation == conn.0.generation)
        {
            self.begin_close(
                conn.0.key as usize,
                "the connection was closed by this side",
            );
        }
    }
}
