//! A client connection in its QUIC 0-RTT phase (docs/quic.md "0-RTT"): its channel is handed
//! out before the handshake completes; calls marked idempotent go at once, within the early
//! budget, and every other command for the connection waits here, in order, until the
//! connection opens (the Welcome) or ends, then runs as if it had just arrived. A waiting
//! call's deadline runs meanwhile: it fails with `DeadlineExceeded` when it passes (the
//! connection's timer), and keeps only what is left of it when it finally starts.

use std::collections::VecDeque;

use super::*;

/// Commands waiting for a connection's 0-RTT phase to end, with when each arrived. Made when
/// the connection is added in its 0-RTT phase (and counted in `Core::early_conns`), taken when
/// the phase ends ([`Core::unpark`]).
#[derive(Default)]
pub(super) struct Parked {
    cmds: VecDeque<(Instant, Command)>,
}

impl Parked {
    /// The earliest deadline among the parked calls.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.cmds
            .iter()
            .filter_map(|(at, c)| call_deadline(*at, c))
            .min()
    }
}

/// Commands parked per connection at most; more are refused (`ResourceExhausted`, naming
/// it) rather than held without bound while a handshake takes its time.
pub(super) const MAX_PARKED: usize = 4096;

/// The connection a command is for, if it is one a 0-RTT phase can hold.
fn target(cmd: &Command) -> Option<ConnRef> {
    match cmd {
        Command::Call { conn, .. }
        | Command::CancelSlot { conn, .. }
        | Command::OpenStream { conn, .. }
        | Command::StreamWork { conn, .. }
        | Command::PublishTo { conn, .. }
        | Command::Subscribe { conn, .. }
        | Command::Unsubscribe { conn, .. } => Some(*conn),
        _ => None,
    }
}

/// When a parked call's deadline passes (`at`: when it arrived).
fn call_deadline(at: Instant, cmd: &Command) -> Option<Instant> {
    match cmd {
        Command::Call {
            deadline: Some(d), ..
        } => at.checked_add(*d),
        _ => None,
    }
}

impl Core {
    /// Takes `cmd` if it is for a connection in its 0-RTT phase and cannot go yet (see the
    /// module documentation); `Some` hands it back to run now.
    pub(super) fn park(&mut self, cmd: Command, now: Instant) -> Option<Command> {
        if self.early_conns == 0 {
            return Some(cmd);
        }
        let Some(conn) = target(&cmd) else {
            return Some(cmd);
        };
        let key = conn.key as usize;
        let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing && en.conn.is_early())
        else {
            return Some(cmd);
        };
        match &cmd {
            Command::Call {
                service,
                method,
                payload,
                deadline,
                idempotent: true,
                metadata,
                ..
            } => {
                let spec = crate::conn::CallSpec {
                    service,
                    method,
                    payload,
                    deadline: *deadline,
                    idempotent: true,
                    metadata: metadata.as_deref(),
                };
                if en.conn.early_call_fits(&spec) {
                    return Some(cmd);
                }
            }
            Command::CancelSlot { slot, code, .. } => {
                let Some(parked) = en.parked.as_mut() else {
                    return Some(cmd);
                };
                let i = parked.cmds.iter().position(
                    |(_, c)| matches!(c, Command::Call { slot: s, .. } if Arc::ptr_eq(s, slot)),
                );
                let Some((_, Command::Call { slot, .. })) = i.and_then(|i| parked.cmds.remove(i))
                else {
                    return Some(cmd);
                };
                if *code == StatusCode::DeadlineExceeded {
                    self.stats.deadline_exceeded += 1;
                }
                slot.complete(Err(Status::new(
                    *code,
                    "cancelled while waiting for the QUIC handshake (never sent)",
                )));
                return None;
            }
            _ => {}
        }
        let Some(parked) = en.parked.as_mut() else {
            return Some(cmd);
        };
        if parked.cmds.len() >= MAX_PARKED {
            if let Command::Call { slot, .. } = cmd {
                slot.complete(Err(Status::new(
                    StatusCode::ResourceExhausted,
                    format!(
                        "{MAX_PARKED} commands already wait for this connection's QUIC \
                         handshake (0-RTT): retry once it completes"
                    ),
                )
                .with_origin(crate::status::Origin::Refused)));
                return None;
            }
            // Not a call: nothing to tell; the others' waiters have deadlines of their own.
            return None;
        }
        let due = call_deadline(now, &cmd);
        parked.cmds.push_back((now, cmd));
        if let Some(due) = due {
            self.schedule_parked(key, due);
        }
        None
    }

    /// Makes sure `key`'s timer fires by `due`.
    fn schedule_parked(&mut self, key: usize, due: Instant) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        if en.scheduled.is_some_and(|s| s <= due) {
            return;
        }
        en.timer_gen = en.timer_gen.wrapping_add(1);
        en.scheduled = Some(due);
        self.wheel.schedule(due, key, en.timer_gen);
    }

    /// Fails `key`'s parked calls whose deadline passed by `now` (`DeadlineExceeded`, never
    /// sent).
    pub(super) fn expire_parked(&mut self, key: usize, now: Instant) {
        let Some(parked) = self.conns.get_mut(key).and_then(|en| en.parked.as_mut()) else {
            return;
        };
        let mut i = 0;
        while i < parked.cmds.len() {
            let (at, c) = &parked.cmds[i];
            if call_deadline(*at, c).is_some_and(|d| d <= now) {
                if let Some((_, Command::Call { slot, .. })) = parked.cmds.remove(i) {
                    self.stats.deadline_exceeded += 1;
                    slot.complete(Err(Status::deadline_exceeded(
                        "the deadline passed while the call waited for the QUIC handshake \
                         (0-RTT carries idempotent calls only: CallOptions::idempotent)",
                    )));
                }
            } else {
                i += 1;
            }
        }
    }

    /// `key`'s 0-RTT phase ended (the connection opened, or is closing): its parked commands
    /// run now, in order, each with what is left of its deadline.
    pub(super) fn unpark(&mut self, key: usize, now: Instant) {
        let Some(parked) = self.conns.get_mut(key).and_then(|en| en.parked.take()) else {
            return;
        };
        self.early_conns -= 1;
        for (at, mut cmd) in parked.cmds {
            if let Command::Call {
                deadline: Some(d),
                slot,
                ..
            } = &mut cmd
            {
                let spent = now.saturating_duration_since(at);
                if spent >= *d {
                    self.stats.deadline_exceeded += 1;
                    slot.complete(Err(Status::deadline_exceeded(
                        "the deadline passed while the call waited for the QUIC handshake",
                    )));
                    continue;
                }
                *d -= spent;
            }
            self.on_command(cmd, now);
        }
    }
}
