//! The in-process record transport, `inproc://name`: connections between threads of one
//! process over two netron-shm rings on the heap (`netron_shm::channel_with_doorbell`), one
//! per direction, each with an eventfd doorbell a core can wait on inside io_uring.
//!
//! It is the record transport the engine's tests run the conformance suite over (the proof
//! that the transport layer carries records, not only byte streams), and it is useful on its
//! own: two engines in one process talk without sockets, with the same API as `tcp://`.
//! `shm://` (issue 19) reuses everything here except where the rings live (a shared segment
//! instead of the heap) and the liveness socket.
//!
//! Framing is docs/protocol.md §26: the client's first record is the preface, then its Hello;
//! each later record holds one batch of whole frames; a frame longer than a record is
//! fragmented. Both sides of an in-process connection are this process's own code, so frames
//! are decoded in place (§26.5's copies guard against a peer in another process rewriting
//! shared memory after it was checked, which cannot happen here).
//!
//! A listener registers its name in a process-wide table; `connect` looks the name up, makes
//! the two rings, and hands the server's half to the listener's acceptor (the engine routes it
//! to one of its cores). Names are unique per process: a second bind of a bound name fails
//! with `AddrInUse`, a connect to an unbound name with `ConnectionRefused`.

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use netron_codec::TxBuf;
use netron_shm::{Consumer, Error as ShmError, Producer};

use crate::conn::Role;
use crate::conn::record::for_each_record;

/// Bytes of ring per direction of an in-process connection: the largest record is 16 bytes
/// less (netron-shm's record header and slack, docs/shm.md "Records"), so the default batch
/// limits (docs/architecture.md) fit one record and larger frames are fragmented.
pub const RING_BYTES: usize = 1 << 20;

/// The least free ring space worth lending to the encoder ([`RecordPipe::lend`]): a ring
/// with less free in one piece is nearly full, and batches then go through the copying path
/// (which waits for room record by record).
pub(crate) const LEND_MIN: usize = 4 << 10;

/// Records read per [`RecordPipe::read`] at most, so one busy peer does not starve a core's
/// other connections in a turn (the rest waits for the next turn; nothing is lost).
pub(crate) const MAX_RECORDS_PER_READ: usize = 64;

/// One side of an in-process connection: the ring it writes and the ring it reads.
#[derive(Debug)]
#[allow(dead_code)] // driven by the record link of the transport layer
pub(crate) struct RecordPipe {
    tx: Producer,
    rx: Consumer,
    /// The largest record the peer writes to us (fragments are recognised against it).
    limit_in: usize,
    /// Records of the current batch already in the ring: a full ring stops a batch midway,
    /// and the next `write` of the same batch resumes after them.
    sent: usize,
    /// `Some(role)` until this side's first batch (its handshake) is out.
    first: Option<Role>,
    /// The peer half-closed (`shm://`: it shut its socket's writing side down): reads end
    /// after what it published, as after a FIN.
    input_ended: bool,
    /// `shm://` not trusting its peer: each record is copied here before the connection
    /// looks at it (docs/protocol.md §26.5; docs/shm.md, "Lending ring memory"). Kept (no
    /// allocation per record) unless a large record grew it past [`KEEP_COPY`].
    copy: Option<Vec<u8>>,
}

/// Bytes of record copy buffer an untrusting `shm://` connection keeps between reads.
const KEEP_COPY: usize = 256 << 10;

/// What [`RecordPipe::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// This many records were delivered (and their space handed back).
    Got(usize),
    /// Nothing is waiting.
    Empty,
    /// The peer is gone and everything it published was read.
    Eof,
    /// The ring broke its rules (a bug, or a peer that corrupted the segment: counter
    /// `shm_corrupt`); close.
    Failed { counter: &'static str, why: String },
}

/// What [`RecordPipe::write`] did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteEnd {
    /// All of it is published; this call wrote this many bytes of it.
    Done(usize),
    /// The ring is full: this many bytes (whole records) are published; call `write` again
    /// with the same batch once the peer has read (the rest resumes where it stopped).
    Blocked(usize),
    /// The peer is gone or the ring broke; close.
    Failed(String),
}

#[allow(dead_code)] // driven by the record link of the transport layer
impl RecordPipe {
    /// A connected pair: (client side, server side), each ring `capacity` bytes.
    ///
    /// # Errors
    /// `InvalidInput` for a capacity netron-shm refuses (a power of two, 64 B to 1 GiB);
    /// the OS error if an eventfd cannot be made (`EMFILE`).
    pub(crate) fn pair(capacity: usize) -> io::Result<(RecordPipe, RecordPipe)> {
        let (c2s_tx, c2s_rx) =
            netron_shm::channel_with_doorbell(capacity, Duration::ZERO).map_err(shm_io)?;
        let (s2c_tx, s2c_rx) =
            netron_shm::channel_with_doorbell(capacity, Duration::ZERO).map_err(shm_io)?;
        let client = RecordPipe {
            limit_in: s2c_tx.max_record_len(),
            tx: c2s_tx,
            rx: s2c_rx,
            sent: 0,
            first: Some(Role::Client),
            input_ended: false,
            copy: None,
        };
        let server = RecordPipe {
            limit_in: client.tx.max_record_len(),
            tx: s2c_tx,
            rx: c2s_rx,
            sent: 0,
            first: Some(Role::Server),
            input_ended: false,
            copy: None,
        };
        Ok((client, server))
    }

    /// One side of a `shm://` connection: the segment's two rings (`role` says which side).
    /// `trust_peer`: records are read in place (the peer is trusted not to change them
    /// while they are looked at); otherwise each is copied first (§26.5).
    pub(crate) fn from_shm(
        conn: netron_shm::ShmConnection,
        role: Role,
        trust_peer: bool,
    ) -> RecordPipe {
        let (tx, rx) = conn.split();
        RecordPipe {
            // The peer's producer writes records of at most its ring's capacity less 16
            // bytes (netron-shm's record header and closing zero word).
            limit_in: rx.capacity().saturating_sub(16),
            tx,
            rx,
            sent: 0,
            first: Some(role),
            input_ended: false,
            copy: (!trust_peer).then(Vec::new),
        }
    }

    /// The liveness socket of a `shm://` connection (`None` in process): readable once the
    /// peer process is gone.
    pub(crate) fn liveness(&self) -> Option<BorrowedFd<'_>> {
        self.rx.liveness_fd()
    }

    /// Whether the rings are shared with another process (`shm://`).
    pub(crate) fn is_remote(&self) -> bool {
        // Only a segment shared with another process has a liveness socket.
        self.rx.liveness_fd().is_some()
    }

    /// Records the peer as gone if its liveness socket says so (after a poll on it fired):
    /// reads then end after what it published, writes fail.
    pub(crate) fn check_peer(&self) {
        let _ = self.rx.check_peer();
    }

    /// The peer sends nothing more (its half-close): reads end after what it published;
    /// writes go on.
    pub(crate) fn end_input(&mut self) {
        self.input_ended = true;
    }

    /// The largest record the peer sends (for `Connection::handle_record`).
    pub(crate) fn limit_in(&self) -> usize {
        self.limit_in
    }

    /// Delivers up to a turn's share of waiting records to `deliver`, in order, then hands
    /// their space back to the peer (one store).
    pub(crate) fn read(&mut self, deliver: impl FnMut(&[u8])) -> ReadEnd {
        self.read_some(usize::MAX, deliver)
    }

    /// [`RecordPipe::read`], stopping once `budget` bytes were delivered (at least one
    /// record is, whatever its size).
    pub(crate) fn read_some(&mut self, budget: usize, mut deliver: impl FnMut(&[u8])) -> ReadEnd {
        let mut n = 0;
        let mut bytes = 0usize;
        let mut end = None;
        while n < MAX_RECORDS_PER_READ && bytes < budget {
            match self.rx.read() {
                Ok(Some(r)) => {
                    bytes += r.len();
                    match self.copy.as_mut() {
                        // §26.5: the peer may rewrite the record while we parse it; the
                        // connection sees a private copy (its length was read once, by
                        // netron-shm, before the slice was formed).
                        Some(copy) => {
                            copy.clear();
                            copy.extend_from_slice(r);
                            deliver(copy);
                        }
                        None => deliver(r),
                    }
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    end = Some(ring_failed(&e, self.is_remote()));
                    break;
                }
            }
        }
        if let Some(copy) = self.copy.as_mut().filter(|c| c.capacity() > KEEP_COPY) {
            *copy = Vec::new();
        }
        self.rx.release();
        match end {
            Some(e) => e,
            None if n > 0 => ReadEnd::Got(n),
            // Seen gone after seeing nothing: its last records (published before it marked
            // itself gone) are visible now; read them before reporting the end.
            None if self.rx.peer_gone() || self.input_ended => match self.rx.ready() {
                Ok(true) => self.read_some(budget, deliver),
                _ => ReadEnd::Eof,
            },
            None => ReadEnd::Empty,
        }
    }

    /// Writes `batch` (this side's own encoder output) as records: cut as protocol.md
    /// §26.1–§26.3 say, copied into the ring, published with one store (and at most one
    /// doorbell write, only if the peer sleeps).
    pub(crate) fn write(&mut self, batch: &[u8]) -> WriteEnd {
        let limit = self.tx.max_record_len();
        let (tx, skip) = (&mut self.tx, self.sent);
        let mut index = 0;
        let mut committed = 0;
        let mut wrote = 0;
        let mut outcome = Ok(true);
        for_each_record(batch, self.first, limit, |record| {
            let i = index;
            index += 1;
            if i < skip || !matches!(outcome, Ok(true)) {
                return;
            }
            match tx.reserve(record.len()) {
                Ok(mut r) => {
                    r.copy_from_slice(record);
                    r.commit();
                    committed += 1;
                    wrote += record.len();
                }
                Err(ShmError::Full) => outcome = Ok(false),
                Err(e) => outcome = Err(e),
            }
        });
        let published = self.tx.publish();
        match (outcome, published) {
            (Err(e), _) | (_, Err(e)) => WriteEnd::Failed(ring_err(&e, self.is_remote())),
            (Ok(true), Ok(())) => {
                self.sent = 0;
                self.first = None;
                WriteEnd::Done(wrote)
            }
            (Ok(false), Ok(())) => {
                // Everything before the record that did not fit is in the ring.
                self.sent = skip + committed;
                WriteEnd::Blocked(wrote)
            }
        }
    }

    /// Lends the ring's free space (at least [`LEND_MIN`] bytes in one piece, up to all of it)
    /// to the connection's encoder as a [`TxBuf`], so the next batch is encoded in place and
    /// [`write_lent`](Self::write_lent) only commits it (docs/protocol.md §26.6). `None`
    /// while this side's handshake is not out (its records follow §26.1's special cut), a
    /// batch is midway (`write` resumes it), a lend is outstanding, or the ring has less
    /// free (the copying path then waits for room).
    pub(crate) fn lend(&mut self) -> Option<TxBuf> {
        if self.first.is_some() || self.sent != 0 {
            return None;
        }
        // What is left of an earlier lend: the caller checked that no buffer holds it.
        self.tx.cancel_lent();
        let space = self.tx.lend(LEND_MIN).ok()?;
        // Records follow one another in the lent space at netron-shm's own offsets
        // (`lent_span`: each payload on a fresh cache line), which `write_lent`'s
        // `commit_lent_part` uses too.
        // SAFETY: `lend` gave `space.len()` bytes at `as_ptr` of the ring's unpublished free
        // space, which its keepalive keeps mapped; until `commit_lent` or `cancel_lent` the
        // producer hands them to no one else (`reserve` and `lend` fail) and the consumer
        // reads only published records. The link commits or cancels only once the buffer
        // came back from the connection or stopped using the space (`write_lent`,
        // `cancel_lend`). A peer in another process that writes this space breaks the ring
        // protocol; what that can do is docs/shm.md "Lending ring memory".
        let buf = unsafe {
            TxBuf::lent_records(
                space.as_ptr(),
                space.len(),
                crate::conn::record::GROUP_BYTES,
                netron_shm::ring::lent_span,
                space.keepalive(),
            )
        };
        Some(buf)
    }

    /// Commits and publishes `buf`, a batch encoded in the space [`lend`](Self::lend) lent:
    /// one record, nothing copied. A record group's size bounds the batch
    /// ([`crate::conn::record::GROUP_BYTES`], `TxBuf`'s `batch_cap`; its last frame may
    /// cross it), as the copying path groups frames. The rest of the lent space stays lent
    /// (the encoder may have gone on there: `TxBuf::split_batch`).
    /// Returns the bytes written, or why the link failed (close).
    pub(crate) fn write_lent(&mut self, buf: TxBuf) -> Result<usize, String> {
        let len = buf.len();
        // The encoder stops writing this batch before it is committed.
        drop(buf);
        self.tx
            .commit_lent_part(len)
            .and_then(|_| self.tx.publish())
            .map(|()| len)
            .map_err(|e| ring_err(&e, self.is_remote()))
    }

    /// Takes back space lent to an encoder that no longer uses it (a frame too large for it
    /// moved the batch to the heap), so the ring can take that batch.
    pub(crate) fn cancel_lend(&mut self) {
        self.tx.cancel_lent();
    }

    /// Announces that the core is about to wait on [`doorbell`](Self::doorbell) and re-checks
    /// the ring: `Ok(true)`: wait; `Ok(false)`: records arrived, read instead; `Err`: the peer
    /// is gone (read what is left, then end).
    pub(crate) fn announce_sleep(&self) -> Result<bool, ()> {
        if self.input_ended {
            return Err(());
        }
        self.rx.announce_sleep().map_err(drop)
    }

    /// Withdraws the announcement after the doorbell fired (or the core stopped waiting).
    pub(crate) fn cancel_sleep(&self) {
        self.rx.cancel_sleep();
    }

    /// The eventfd the peer writes when it publishes after [`announce_sleep`](Self::announce_sleep).
    pub(crate) fn doorbell(&self) -> BorrowedFd<'_> {
        self.rx
            .doorbell_fd()
            .expect("channel_with_doorbell always has an eventfd")
    }
}

/// Why a ring operation failed, in this transport's words: netron-shm's `PeerGone` speaks of
/// another process and its liveness socket, which an in-process peer has neither.
/// A failed read: `shm_corrupt` if the peer broke the ring's rules (netron-shm closed the
/// connection), else `recv_failed`.
fn ring_failed(e: &ShmError, remote: bool) -> ReadEnd {
    let counter = match e {
        ShmError::Corrupt { .. } => "shm_corrupt",
        _ => "recv_failed",
    };
    ReadEnd::Failed {
        counter,
        why: ring_err(e, remote),
    }
}

fn ring_err(e: &ShmError, remote: bool) -> String {
    match (e, remote) {
        (ShmError::PeerGone, false) => "the in-process peer closed the connection".to_owned(),
        (other, false) => format!("in-process ring: {other}"),
        (ShmError::PeerGone, true) => {
            "the shm:// peer process closed the connection or died (its liveness socket closed)"
                .to_owned()
        }
        (other, true) => format!("shm:// ring: {other}"),
    }
}

pub(crate) fn shm_io(e: ShmError) -> io::Error {
    match e {
        ShmError::Config { .. } => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

/// What a listener does with the server half of a new connection: hand it to a core. An
/// `Err` refuses the connection with that reason, which the connecting side gets from
/// `connect` (a dropped raw listener). The engine's and `Core::listen`'s acceptors only queue
/// the rings in a core's inbox and return `Ok`: a core that is full (`max_connections`) or
/// shutting down refuses later by dropping them, which the client sees as a close during the
/// handshake.
pub(crate) type Acceptor = Arc<dyn Fn(RecordPipe) -> Result<(), String> + Send + Sync>;

fn table() -> &'static Mutex<HashMap<String, Acceptor>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Acceptor>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// A bound `inproc://` name; dropping it unbinds the name (new connects are refused, open
/// connections are not affected).
#[derive(Debug)]
pub(crate) struct Binding {
    name: String,
}

impl Drop for Binding {
    fn drop(&mut self) {
        table()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

/// Binds `name` (the part after `inproc://`) to `acceptor`.
///
/// # Errors
/// `AddrInUse` if the name is bound in this process already; `InvalidInput` if it is empty.
pub(crate) fn bind(name: &str, acceptor: Acceptor) -> io::Result<Binding> {
    if name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an inproc:// endpoint needs a name (inproc://name)",
        ));
    }
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    if t.contains_key(name) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("inproc://{name} is already bound in this process"),
        ));
    }
    t.insert(name.to_owned(), acceptor);
    Ok(Binding {
        name: name.to_owned(),
    })
}

/// Opens a connection to the listener bound to `name`: makes the rings, hands the server
/// half to its acceptor, returns the client half.
pub(crate) fn connect(name: &str) -> io::Result<RecordPipe> {
    let acceptor = table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nothing listens on inproc://{name} in this process"),
            )
        })?;
    let (client, server) = RecordPipe::pair(RING_BYTES)?;
    acceptor(server).map_err(|why| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("inproc://{name} refused the connection: {why}"),
        )
    })?;
    Ok(client)
}

/// The raw rings of a new connection to `inproc://name`, for tests and tools that speak the
/// protocol by hand (an independent client written from docs/protocol.md §26): write records
/// with the [`Producer`] (the preface first, then the Hello, then batches of whole frames),
/// read the server's records with the [`Consumer`]. Dropping the producer is the end of the
/// client's side (EOF); dropping both closes the connection.
///
/// # Errors
/// `ConnectionRefused` if nothing listens on the name in this process or the listener
/// refused; the OS error if an eventfd cannot be made.
pub fn connect_raw(name: &str) -> io::Result<(Producer, Consumer)> {
    let RecordPipe { tx, rx, .. } = connect(name)?;
    Ok((tx, rx))
}

/// A raw listener on `inproc://name` (see [`listen_raw`]); dropping it unbinds the name.
#[derive(Debug)]
pub struct RawListener {
    incoming: std::sync::mpsc::Receiver<RecordPipe>,
    _binding: Binding,
}

impl RawListener {
    /// The next connection's raw rings: the [`Producer`] writes to the client, the
    /// [`Consumer`] reads its records (the preface first, then its Hello).
    ///
    /// # Errors
    /// `TimedOut` if no client connected within `timeout` (`None`: wait without bound).
    pub fn accept(&self, timeout: Option<Duration>) -> io::Result<(Producer, Consumer)> {
        let pipe = match timeout {
            Some(t) => self.incoming.recv_timeout(t).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no inproc connection within {t:?}"),
                )
            })?,
            None => self
                .incoming
                .recv()
                .map_err(|_| io::Error::other("the inproc listener's name table is gone"))?,
        };
        let RecordPipe { tx, rx, .. } = pipe;
        Ok((tx, rx))
    }
}

/// Binds `inproc://name` for a hand-written server (a test or tool playing the server side
/// of docs/protocol.md §26 by hand): engines connecting to the name reach [`RawListener::accept`].
///
/// # Errors
/// `AddrInUse` if the name is bound in this process already; `InvalidInput` if it is empty.
pub fn listen_raw(name: &str) -> io::Result<RawListener> {
    let (tx, incoming) = std::sync::mpsc::channel();
    let binding = bind(
        name,
        Arc::new(move |pipe| {
            tx.send(pipe)
                .map_err(|_| "the raw listener was dropped".to_owned())
        }),
    )?;
    Ok(RawListener {
        incoming,
        _binding: binding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(frames: &[(u8, usize)]) -> Vec<u8> {
        let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
        for &(fill, len) in frames {
            b.frame(netron_codec::FrameKind::Ping, 0)
                .unwrap()
                .payload(&vec![fill; len])
                .finish()
                .unwrap();
        }
        b.as_slice().to_vec()
    }

    fn drain(p: &mut RecordPipe) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let ReadEnd::Got(_) = p.read(|r| got.push(r.to_vec())) {}
        got
    }

    #[test]
    fn a_read_with_a_budget_stops_after_it_and_the_next_goes_on_in_order() {
        let (mut c, mut s) = RecordPipe::pair(1 << 16).unwrap();
        c.first = None;
        // Ten records of 1,000 + 16 bytes each (each frame alone: above a 1 KiB record).
        let frames: Vec<(u8, usize)> = (0..10).map(|i| (i, 1000)).collect();
        for f in &frames {
            assert!(matches!(c.write(&batch(&[*f])), WriteEnd::Done(_)));
        }
        let mut got = Vec::new();
        // 2,500 bytes: three records (the one that crosses the budget is delivered whole).
        assert_eq!(s.read_some(2500, |r| got.push(r.to_vec())), ReadEnd::Got(3));
        // A budget below one record still delivers one.
        assert_eq!(s.read_some(1, |r| got.push(r.to_vec())), ReadEnd::Got(1));
        got.extend(drain(&mut s));
        let fills: Vec<u8> = got.iter().map(|r| r[netron_codec::HEADER_LEN]).collect();
        assert_eq!(fills, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_full_ring_blocks_a_batch_midway_and_it_resumes_where_it_stopped() {
        let (mut c, mut s) = RecordPipe::pair(1024).unwrap();
        c.first = None;
        // 1008-byte records: each 600-byte frame goes alone; two fit in the 1 KiB ring only
        // one at a time.
        let b = batch(&[(1, 600), (2, 600), (3, 600)]);
        let WriteEnd::Blocked(mut total) = c.write(&b) else {
            panic!("three 600-byte records cannot fit a 1 KiB ring at once");
        };
        let mut got = drain(&mut s);
        assert_eq!(got.len(), 1);
        let mut rounds = 0;
        loop {
            match c.write(&b) {
                WriteEnd::Blocked(n) => total += n,
                WriteEnd::Done(n) => {
                    total += n;
                    break;
                }
                WriteEnd::Failed(e) => panic!("{e}"),
            }
            got.extend(drain(&mut s));
            rounds += 1;
            assert!(rounds < 10, "no progress");
        }
        got.extend(drain(&mut s));
        assert_eq!(got.concat(), b, "every byte once, in order");
        assert_eq!(total, b.len(), "bytes reported written, each once");
        // The next batch starts afresh.
        let b2 = batch(&[(4, 10)]);
        assert_eq!(c.write(&b2), WriteEnd::Done(b2.len()));
        assert_eq!(drain(&mut s), vec![b2]);
    }

    #[test]
    fn the_end_is_reported_after_the_last_records() {
        let (mut c, mut s) = RecordPipe::pair(4096).unwrap();
        c.first = None;
        let b = batch(&[(7, 10)]);
        assert_eq!(c.write(&b), WriteEnd::Done(b.len()));
        assert_eq!(s.announce_sleep(), Ok(false), "a record is waiting");
        drop(c);
        assert_eq!(drain(&mut s), vec![b]);
        assert_eq!(s.read(|_| panic!("nothing more")), ReadEnd::Eof);
        assert_eq!(s.announce_sleep(), Err(()));
        // Writing to a gone peer fails instead of filling a ring nobody reads.
        assert!(matches!(s.write(&batch(&[(1, 1)])), WriteEnd::Failed(_)));
    }

    #[test]
    fn a_gone_in_process_peer_is_not_called_a_dead_process() {
        // netron-shm's PeerGone speaks of another process and its liveness socket; an
        // in-process peer has neither, and the text reaches users ("send failed: ...").
        let (mut c, s) = RecordPipe::pair(4096).unwrap();
        c.first = None;
        drop(s);
        let WriteEnd::Failed(why) = c.write(&batch(&[(1, 1)])) else {
            panic!("a write to a gone peer fails");
        };
        assert!(
            !why.contains("peer process") && !why.contains("liveness"),
            "misleading: {why}"
        );
        assert!(why.contains("in-process peer closed"), "{why}");
    }

    #[test]
    fn names_are_bound_once_and_connects_reach_the_acceptor() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let name = format!("inproc-unit-{}", std::process::id());
        let binding = bind(
            &name,
            Arc::new(move |p| {
                sink.lock().unwrap().push(p);
                Ok(())
            }),
        )
        .unwrap();
        let e = bind(&name, Arc::new(|_| Ok(()))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&name));
        let (mut tx, _rx) = connect_raw(&name).unwrap();
        tx.send(b"hi").unwrap();
        tx.publish().unwrap();
        let mut server = got
            .lock()
            .unwrap()
            .pop()
            .expect("the acceptor got the server half");
        assert_eq!(drain(&mut server), vec![b"hi".to_vec()]);
        drop(binding);
        let e = connect(&name).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains("nothing listens"), "{e}");
        let refusing = bind(
            &name,
            Arc::new(|_| Err("the engine is shutting down".into())),
        )
        .unwrap();
        let e = connect(&name).unwrap_err();
        assert!(e.to_string().contains("shutting down"), "{e}");
        drop(refusing);
        let raw = listen_raw(&name).unwrap();
        let (mut c_tx, mut c_rx) = connect_raw(&name).unwrap();
        let (mut s_tx, mut s_rx) = raw.accept(Some(Duration::from_secs(5))).unwrap();
        c_tx.send(b"ping").unwrap();
        c_tx.publish().unwrap();
        assert_eq!(s_rx.read().unwrap(), Some(&b"ping"[..]));
        s_rx.release();
        s_tx.send(b"pong").unwrap();
        s_tx.publish().unwrap();
        assert_eq!(c_rx.read().unwrap(), Some(&b"pong"[..]));
        c_rx.release();
        let e = raw.accept(Some(Duration::from_millis(1))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(raw);
        assert_eq!(
            bind("", Arc::new(|_| Ok(()))).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
