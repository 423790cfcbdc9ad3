//! Connection migration on `quic://` servers (docs/quic.md "Connection migration"): the
//! datagrams of a client whose address changed reach the listening socket, since a
//! connection's socket is connected to the client's old address; the listener's thread routes
//! them to the connection by the connection ID they carry.
//!
//! Every connection ID a server connection issues is recorded in its listener's [`CidRoutes`]
//! (netron-quic's [`netron_quic::CidHook`]), mapped to the connection's [`PathMail`]. The
//! listener's thread posts a datagram whose Destination Connection ID is recorded to that
//! mailbox ([`PathMail::post`], at most [`MAX_MAIL`] waiting) and wakes the connection's core
//! once (`Command::QuicMail`); the link hands the datagrams to its endpoint with their new
//! source address, quinn-proto validates the new path, and once it moved the link connects its
//! socket to the new address, so later datagrams come to it directly.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use bytes::BytesMut;
use netron_quic::CID_LEN;

use crate::inbox::{Command, ConnRef, Inbox};

/// Datagrams waiting in one connection's mailbox at most; later ones are dropped (QUIC
/// retransmits), so a client cannot make the listener hold more.
pub(crate) const MAX_MAIL: usize = 64;
/// Connection IDs kept routable per connection: quinn-proto keeps a handful active and
/// retires the rest, so older ones are forgotten (bounds what a peer that makes us issue IDs
/// again and again can make the listener hold).
const MAX_IDS: usize = 16;

/// A listener's map from the connection IDs its connections issued to their mailboxes.
#[derive(Debug, Default)]
pub(crate) struct CidRoutes {
    map: Mutex<HashMap<[u8; CID_LEN], Weak<PathMail>>>,
}

impl CidRoutes {
    /// The mailbox of the connection that issued the Destination Connection ID of `datagram`
    /// (a short-header packet: RFC 9000 §17.3, the ID right after the first byte), if it
    /// lives.
    pub(crate) fn route(&self, datagram: &[u8]) -> Option<Arc<PathMail>> {
        let (&first, rest) = datagram.split_first()?;
        if first & 0x80 != 0 {
            return None;
        }
        let cid: [u8; CID_LEN] = rest.get(..CID_LEN)?.try_into().ok()?;
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&cid).and_then(Weak::upgrade)
    }

    /// The hook a new server connection's endpoint reports its IDs to, routing them to
    /// `mail`; its IDs are forgotten when the endpoint (and so the hook) is dropped.
    pub(crate) fn hook(self: &Arc<Self>, mail: &Arc<PathMail>) -> netron_quic::CidHook {
        let issued = Issued {
            routes: self.clone(),
            mail: Arc::downgrade(mail),
            ids: Mutex::new(VecDeque::new()),
        };
        Arc::new(move |cid: &[u8]| issued.record(cid))
    }
}

/// The IDs one connection issued, forgotten from the routes when dropped.
struct Issued {
    routes: Arc<CidRoutes>,
    mail: Weak<PathMail>,
    ids: Mutex<VecDeque<[u8; CID_LEN]>>,
}

impl Issued {
    fn record(&self, cid: &[u8]) {
        let Ok(cid) = <[u8; CID_LEN]>::try_from(cid) else {
            return;
        };
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map = self
            .routes
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // An ID another live connection was issued first stays its (a collision: 64 random
        // bits make it practically impossible, but the first owner keeps working).
        let taken = map
            .get(&cid)
            .is_some_and(|m| m.strong_count() > 0 && !Weak::ptr_eq(m, &self.mail));
        if !taken {
            map.insert(cid, self.mail.clone());
        }
        ids.push_back(cid);
        if ids.len() > MAX_IDS
            && let Some(old) = ids.pop_front()
        {
            self.forget(&mut map, &old);
        }
    }

    /// Removes `cid`'s route if it is still this connection's (were two connections ever
    /// issued the same ID, the other's route stays: fresh user R16's finding 2).
    fn forget(&self, map: &mut HashMap<[u8; CID_LEN], Weak<PathMail>>, cid: &[u8; CID_LEN]) {
        if map.get(cid).is_some_and(|m| Weak::ptr_eq(m, &self.mail)) {
            map.remove(cid);
        }
    }
}

impl Drop for Issued {
    fn drop(&mut self) {
        let ids = std::mem::take(
            self.ids
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut map = self
            .routes
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids.iter() {
            self.forget(&mut map, id);
        }
    }
}

/// Datagrams for one server connection that reached its listener's socket (the client's
/// address changed), and where to wake the connection.
#[derive(Debug, Default)]
pub(crate) struct PathMail {
    state: Mutex<MailState>,
}

#[derive(Debug, Default)]
struct MailState {
    datagrams: VecDeque<(SocketAddr, BytesMut)>,
    /// The core running the connection, once it took it.
    route: Option<(Arc<Inbox>, ConnRef)>,
    /// A wake-up is on its way to the core (one at a time).
    woken: bool,
}

impl MailState {
    fn wake(&mut self) {
        if self.woken || self.datagrams.is_empty() {
            return;
        }
        if let Some((inbox, conn)) = &self.route {
            self.woken = true;
            inbox.push(Command::QuicMail(*conn));
        }
    }
}

impl PathMail {
    /// Posts a datagram from `from` (listener thread). `false`: the mailbox is full and the
    /// datagram was dropped.
    pub(crate) fn post(&self, from: SocketAddr, datagram: BytesMut) -> bool {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.datagrams.len() >= MAX_MAIL {
            return false;
        }
        s.datagrams.push_back((from, datagram));
        s.wake();
        true
    }

    /// The core that took the connection, and its reference there.
    pub(crate) fn set_route(&self, inbox: Arc<Inbox>, conn: ConnRef) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.route = Some((inbox, conn));
        s.wake();
    }

    /// Hands every waiting datagram to `each` (the link, on its core); the next post wakes
    /// the core again.
    pub(crate) fn take(&self, mut each: impl FnMut(SocketAddr, BytesMut)) {
        let taken = {
            let mut s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.woken = false;
            std::mem::take(&mut s.datagrams)
        };
        for (from, d) in taken {
            each(from, d);
        }
    }
}
