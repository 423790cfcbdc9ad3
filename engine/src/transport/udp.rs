//! The UDP I/O of a QUIC link: `sendmsg` with UDP GSO through `quinn-udp` (the quinn project's
//! UDP layer: control messages, the kernel's GSO support probed once per process, and its
//! fallback to one datagram per call when a kernel or NIC refuses a segmented send with
//! `EIO`/`EINVAL`), and receives with UDP GRO while a burst lasts; counted per core
//! ([`UdpCounters`], reported in [`crate::DriverStats`]). docs/quic.md "UDP GSO and GRO".
//!
//! GSO (Linux `UDP_SEGMENT`, 4.18+; `QuicSettings::gso`, default on): up to
//! [`MAX_SEGMENTS`] datagrams of one size to one destination leave in one system call and the
//! kernel (or the NIC) cuts them. Adaptive too: quinn-proto pads every datagram of a train but
//! the last to the train's segment size, so trains of small datagrams (the replies and
//! acknowledgements of many small calls) put padding on the wire and cost more than separate
//! sends (64 pipelined 64-byte calls: 0.89x the rate without GSO). A link asks for trains only
//! after a transmit produced [`GSO_ON_AT`] full-size datagrams (at least [`FULL_DATAGRAM`]
//! bytes: bulk data), and stops after [`GSO_OFF_AFTER`] transmits in a row that produced none.
//!
//! GRO (`UDP_GRO`, 5.0+; `QuicSettings::gro`, default on) is *adaptive*. With it on, the
//! datagrams of one flow that arrive together come up in one `recvmsg` as one buffer with
//! their segment size, cut here into datagrams again, each a slice of one buffer (one
//! allocation and copy per receive, not per datagram). But reading the segment size needs
//! `recvmsg` with a control buffer, which costs about 130 ns more than `recvfrom` per empty
//! poll and 200-300 ns more per datagram (measured on this machine's loopback): on a
//! busy-polled call path that was 0.1x of the QUIC floor's round trip. So a link receives
//! with plain `recvfrom` and GRO off while its traffic comes a datagram at a time, turns GRO
//! on (one `setsockopt`) once a single drain of the socket finds [`GRO_ON_AT`] datagrams or
//! more, and off again after [`GRO_OFF_AFTER`] drains in a row that found one datagram each;
//! after turning it off it keeps `recvmsg` until the socket is empty once more, since trains
//! already queued stay merged.
//!
//! ECN: quinn-udp turns on `IP_RECVTOS` and `IP_PKTINFO`; both are turned off again (a
//! control message per datagram each, and the engine uses neither), so received datagrams
//! carry no ECN marks to quinn-proto, which then stops marking its own (RFC 9000 §13.4.2's
//! validation), as before this module existed.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;

use bytes::BytesMut;
use netron_quic::Transmit;
use quinn_udp::UdpSocketState;

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

/// A datagram of at least this many bytes is full size (QUIC's smallest maximum datagram size,
/// RFC 9000 §14: 1,200 bytes): a stream's bulk data, not a small reply or acknowledgement.
pub(crate) const FULL_DATAGRAM: usize = 1200;
/// A transmit that produces this many full-size datagrams turns GSO trains on.
pub(crate) const GSO_ON_AT: usize = 4;
/// Transmits in a row that produce no full-size datagram turn GSO trains off again.
pub(crate) const GSO_OFF_AFTER: u32 = 16;

/// A single drain of the socket that finds this many datagrams or more turns GRO on.
pub(crate) const GRO_ON_AT: usize = 8;
/// Drains in a row that find exactly one datagram each turn GRO off again (empty drains do
/// not count: a busy-poll loop polls an idle socket all the time).
pub(crate) const GRO_OFF_AFTER: u32 = 256;

/// One QUIC link's UDP socket state.
#[derive(Debug)]
pub(crate) struct UdpIo {
    state: UdpSocketState,
    /// `QuicSettings::gso`.
    gso: bool,
    /// Bulk data is going out: transmits may be trains.
    gso_burst: bool,
    /// Transmits in a row without a full-size datagram while trains are on.
    gso_quiet: u32,
    /// `QuicSettings::gro`.
    gro_allowed: bool,
    /// `UDP_GRO` is on on the socket: trains may come, receive with `recvmsg`.
    gro_on: bool,
    /// GRO was just turned off: `recvmsg` until the socket is found empty once.
    gro_draining: bool,
    /// Drains in a row with one datagram each while GRO is on.
    quiet: u32,
    counters: Rc<UdpCounters>,
    rx: Vec<u8>,
}

/// Sets an integer socket option, ignoring a refusal (an option the kernel lacks).
fn set_int_option(socket: &UdpSocket, level: libc::c_int, name: libc::c_int, on: bool) {
    let _ = super::sock::set_int_option(socket, level, name, libc::c_int::from(on));
}

impl UdpIo {
    /// Prepares `socket` (non-blocking, no IP fragmentation: quinn-udp's options; GRO, TOS
    /// and packet-info reports off) for `sendmsg`/`recvmsg`; `gso` and `gro` are
    /// `QuicSettings::gso` and `::gro`.
    ///
    /// # Errors
    /// The OS error of a socket option the socket refuses (`quinn-udp` ignores the optional
    /// ones).
    pub(crate) fn new(
        socket: &UdpSocket,
        gso: bool,
        gro: bool,
        counters: &Rc<UdpCounters>,
    ) -> io::Result<UdpIo> {
        let state = UdpSocketState::new(socket.into())?;
        // Off until a burst comes (module docs); the reports quinn-udp asked for are not used.
        let _ = super::sock::set_udp_gro(socket, false);
        let v4 = socket.local_addr().is_ok_and(|a| a.is_ipv4());
        if v4 {
            set_int_option(socket, libc::IPPROTO_IP, libc::IP_RECVTOS, false);
            set_int_option(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, false);
        } else {
            set_int_option(socket, libc::IPPROTO_IP, libc::IP_RECVTOS, false);
            set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, false);
            set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, false);
        }
        Ok(UdpIo {
            gro_allowed: gro && state.gro_segments() > 1,
            state,
            gso,
            gso_burst: false,
            gso_quiet: 0,
            gro_on: false,
            gro_draining: false,
            quiet: 0,
            counters: counters.clone(),
            rx: vec![0; RX_BUFFER],
        })
    }

    /// Datagrams the next send may carry: at most [`MAX_SEGMENTS`] while bulk data goes out;
    /// 1 otherwise and without GSO (off, not offered, or given up after a refusal).
    pub(crate) fn max_segments(&self) -> usize {
        if self.gso && self.gso_burst {
            self.state.max_gso_segments().min(MAX_SEGMENTS)
        } else {
            1
        }
    }

    /// The full-size datagrams in `t` ([`FULL_DATAGRAM`]).
    pub(crate) fn full_datagrams(t: &Transmit) -> usize {
        match t.segment_size {
            Some(s) if s >= FULL_DATAGRAM => t.datagrams(),
            None if t.len >= FULL_DATAGRAM => 1,
            _ => 0,
        }
    }

    /// After a transmit (every datagram the endpoint had) that produced `full` full-size
    /// datagrams: turns trains on for bulk data, off after a run without (module docs).
    pub(crate) fn transmitted(&mut self, full: usize) {
        if !self.gso {
            return;
        }
        if !self.gso_burst {
            self.gso_burst = full >= GSO_ON_AT;
            self.gso_quiet = 0;
        } else if full == 0 {
            self.gso_quiet += 1;
            if self.gso_quiet >= GSO_OFF_AFTER {
                self.gso_burst = false;
            }
        } else {
            self.gso_quiet = 0;
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

    /// Receives what one `recvfrom` (GRO off) or `recvmsg` (GRO on) returns and hands each
    /// datagram in it to `each` (its source and bytes). `Ok(false)`: nothing was waiting.
    ///
    /// # Errors
    /// The OS error (`ConnectionRefused` for an ICMP error of an earlier send, others).
    pub(crate) fn recv(
        &mut self,
        socket: &UdpSocket,
        mut each: impl FnMut(SocketAddr, BytesMut),
    ) -> io::Result<bool> {
        let (len, from, stride) = if self.gro_on || self.gro_draining {
            match super::sock::recv_udp(socket, &mut self.rx) {
                Ok(r) => (r.len, r.from, r.stride),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.gro_draining = false;
                    return Ok(false);
                }
                // Too large for the buffer (no QUIC datagram of ours): dropped.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(true),
                Err(e) => return Err(e),
            }
        } else {
            match socket.recv_from(&mut self.rx) {
                Ok((n, from)) => (n, from, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        bump(&self.counters.receives, 1);
        // One buffer for the whole train; each datagram is a slice of it.
        let mut data = BytesMut::from(&self.rx[..len]);
        while !data.is_empty() {
            let d = data.split_to(stride.max(1).min(data.len()));
            bump(&self.counters.datagrams_received, 1);
            each(from, d);
        }
        Ok(true)
    }

    /// After a drain of the socket (receives until it was empty) that found `datagrams`:
    /// turns GRO on for a burst, off after a run of single datagrams (module docs).
    pub(crate) fn drained(&mut self, socket: &UdpSocket, datagrams: usize) {
        if !self.gro_allowed {
            return;
        }
        if !self.gro_on {
            if datagrams >= GRO_ON_AT && super::sock::set_udp_gro(socket, true).is_ok() {
                self.gro_on = true;
                self.quiet = 0;
            }
        } else if datagrams == 1 {
            self.quiet += 1;
            if self.quiet >= GRO_OFF_AFTER && super::sock::set_udp_gro(socket, false).is_ok() {
                self.gro_on = false;
                self.gro_draining = true;
            }
        } else if datagrams > 1 {
            self.quiet = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_io(gso: bool, gro: bool) -> (UdpSocket, UdpIo) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let io = UdpIo::new(&s, gso, gro, &Rc::default()).unwrap();
        (s, io)
    }

    #[test]
    fn trains_follow_bulk_data_and_stop_after_it() {
        let (_s, mut io) = udp_io(true, true);
        let offered = io.state.max_gso_segments().min(MAX_SEGMENTS);
        assert_eq!(io.max_segments(), 1, "no trains before bulk data");
        io.transmitted(GSO_ON_AT - 1);
        assert_eq!(io.max_segments(), 1);
        io.transmitted(GSO_ON_AT);
        assert_eq!(io.max_segments(), offered, "bulk data: trains");
        for _ in 0..GSO_OFF_AFTER - 1 {
            io.transmitted(0);
        }
        io.transmitted(1);
        for _ in 0..GSO_OFF_AFTER - 1 {
            io.transmitted(0);
        }
        assert_eq!(
            io.max_segments(),
            offered,
            "a full datagram restarts the count"
        );
        io.transmitted(0);
        assert_eq!(
            io.max_segments(),
            1,
            "no full datagram for a while: single sends"
        );
        let (_s, mut off) = udp_io(false, true);
        off.transmitted(100);
        assert_eq!(off.max_segments(), 1, "QuicSettings::gso off");
    }

    #[test]
    fn gro_follows_bursts_and_drains_merged_trains_after_it() {
        let (s, mut io) = udp_io(true, true);
        if !io.gro_allowed {
            return; // a kernel without UDP_GRO: nothing to follow
        }
        io.drained(&s, 0);
        io.drained(&s, GRO_ON_AT - 1);
        assert!(!io.gro_on, "no burst yet");
        io.drained(&s, GRO_ON_AT);
        assert!(io.gro_on, "a burst turns GRO on");
        for _ in 0..GRO_OFF_AFTER - 1 {
            io.drained(&s, 1);
            io.drained(&s, 0);
        }
        assert!(io.gro_on, "empty drains do not count");
        io.drained(&s, 1);
        assert!(
            !io.gro_on && io.gro_draining,
            "single datagrams: off, draining"
        );
        // The drain ends at the first empty receive.
        assert!(!io.recv(&s, |_, _| {}).unwrap());
        assert!(!io.gro_draining);
        let (s, mut off) = udp_io(true, false);
        off.drained(&s, 1000);
        assert!(!off.gro_on, "QuicSettings::gro off");
    }
}
