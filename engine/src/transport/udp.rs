//! The UDP I/O of a QUIC link: `sendmsg` with UDP GSO and `recvmsg` with UDP GRO where the
//! kernel offers them, through `quinn-udp` (the quinn project's UDP layer: control messages,
//! the kernel's GSO support probed once per process, and its fallback to one datagram per call
//! when a kernel or NIC refuses a segmented send with `EIO`/`EINVAL`), counted per core
//! ([`UdpCounters`], reported in [`crate::DriverStats`]).
//!
//! GSO (Linux `UDP_SEGMENT`, 4.18+): up to [`MAX_SEGMENTS`] datagrams of one size to one
//! destination leave in one system call and the kernel (or the NIC) cuts them. GRO (`UDP_GRO`, 5.0+): datagrams
//! of one flow that arrive together come up in one `recvmsg` as one buffer with their
//! segment size, cut here into datagrams again, each a slice of one buffer (one allocation and
//! one copy per receive, not per datagram; quinn-proto decrypts each slice in place and keeps
//! stream data as `Bytes` of it). Both are `QuicSettings::gso` / `QuicSettings::gro`,
//! default on (docs/quic.md "UDP GSO and GRO").

use std::cell::Cell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;

use bytes::BytesMut;
use netron_quic::{EcnCodepoint, Transmit};
use quinn_udp::{RecvMeta, UdpSocketState};

/// Largest buffer one receive fills: a datagram, or a GRO train (the kernel merges at most
/// 64 KiB).
pub(crate) const RX_BUFFER: usize = 65_535;

/// Datagrams one `sendmsg` carries at most, as quinn's own driver does (quinn 0.11,
/// `MAX_TRANSMIT_SEGMENTS`): the kernel takes up to 64 segments, but one send carries at most
/// 64 KiB (an IP datagram's length), which 64 segments of a 1,452-byte QUIC packet pass (the
/// kernel refuses the send with `EMSGSIZE`: the first version of this link lost those trains
/// and ran bulk transfers at 0.4x the speed without GSO), and ten keep a train within a
/// typical congestion burst.
pub(crate) const MAX_SEGMENTS: usize = 10;

/// A core's UDP counters, shared by its QUIC links (reported in [`crate::DriverStats`]).
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    sends: Cell<u64>,
    datagrams_sent: Cell<u64>,
    receives: Cell<u64>,
    datagrams_received: Cell<u64>,
    routed: Cell<u64>,
}

impl UdpCounters {
    /// Adds the counts into `d`.
    pub(crate) fn add_to(&self, d: &mut crate::DriverStats) {
        d.udp_sends += self.sends.get();
        d.udp_datagrams_sent += self.datagrams_sent.get();
        d.udp_receives += self.receives.get();
        d.udp_datagrams_received += self.datagrams_received.get();
        d.udp_datagrams_routed += self.routed.get();
    }
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// One QUIC link's UDP socket state.
#[derive(Debug)]
pub(crate) struct UdpIo {
    state: UdpSocketState,
    gso: bool,
    counters: Rc<UdpCounters>,
    rx: Vec<u8>,
}

impl UdpIo {
    /// Prepares `socket` (non-blocking, ECN and GRO reporting, no IP fragmentation) for
    /// `sendmsg`/`recvmsg`; `gso` and `gro` are `QuicSettings::gso` and `::gro`.
    ///
    /// # Errors
    /// The OS error of a socket option the socket refuses (`quinn-udp` ignores the optional
    /// ones, GRO among them).
    pub(crate) fn new(
        socket: &UdpSocket,
        gso: bool,
        gro: bool,
        counters: &Rc<UdpCounters>,
    ) -> io::Result<UdpIo> {
        let state = UdpSocketState::new(socket.into())?;
        if !gro {
            // quinn-udp turns GRO on where it can; a kernel without it has nothing to turn
            // off, so the error is ignored.
            let _ = super::sock::set_udp_gro(socket, false);
        }
        Ok(UdpIo {
            state,
            gso,
            counters: counters.clone(),
            rx: vec![0; RX_BUFFER],
        })
    }

    /// Datagrams one send may carry: at most [`MAX_SEGMENTS`], 1 without GSO (off, not
    /// offered, or given up after a refusal).
    pub(crate) fn max_segments(&self) -> usize {
        if self.gso {
            self.state.max_gso_segments().min(MAX_SEGMENTS)
        } else {
            1
        }
    }

    /// Sends `t`'s datagrams (`buf[..t.len]`) in one `sendmsg`.
    ///
    /// # Errors
    /// The OS error as it is: `WouldBlock` (the socket's buffer is full), `ConnectionRefused`
    /// (an ICMP error for an earlier datagram), others; the caller drops the datagrams, which
    /// QUIC's loss recovery sends again.
    pub(crate) fn send(&self, socket: &UdpSocket, t: &Transmit, buf: &[u8]) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: t
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents: &buf[..t.len],
            segment_size: t.segment_size.filter(|&s| s < t.len),
            src_ip: None,
        };
        self.state.try_send(socket.into(), &transmit)?;
        bump(&self.counters.sends, 1);
        bump(&self.counters.datagrams_sent, t.datagrams() as u64);
        Ok(())
    }

    /// Counts a datagram the listener routed to this link (connection migration).
    pub(crate) fn count_routed(&self) {
        bump(&self.counters.routed, 1);
    }

    /// Receives what one `recvmsg` returns and hands each datagram in it to `each` (its
    /// source, ECN marking and bytes). `Ok(false)`: nothing was waiting.
    ///
    /// # Errors
    /// The OS error (`ConnectionRefused` for an ICMP error of an earlier send, others).
    pub(crate) fn recv(
        &mut self,
        socket: &UdpSocket,
        mut each: impl FnMut(SocketAddr, Option<EcnCodepoint>, BytesMut),
    ) -> io::Result<bool> {
        let mut meta = [RecvMeta::default()];
        let n = {
            let mut bufs = [IoSliceMut::new(&mut self.rx)];
            match self.state.recv(socket.into(), &mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(false);
        }
        let m = &meta[0];
        let len = m.len.min(self.rx.len());
        let stride = if m.stride == 0 { len } else { m.stride };
        let ecn = m.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
        bump(&self.counters.receives, 1);
        // One buffer for the whole train; each datagram is a slice of it.
        let mut data = BytesMut::from(&self.rx[..len]);
        while !data.is_empty() {
            let d = data.split_to(stride.min(data.len()));
            bump(&self.counters.datagrams_received, 1);
            each(m.addr, ecn, d);
        }
        Ok(true)
    }
}
