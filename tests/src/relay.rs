//! The record relay of [`crate::SHM2P`]: a child process (the `shm_relay` binary of this
//! package) that listens on `shm://Y-relay` for every server name `Y` the suite dials, and per
//! accepted client connects to `shm://Y` and forwards records both ways unchanged.
//!
//! One relay process serves a whole test binary (started by the first [`dial`]); it reads
//! its orders on stdin (`Y X` per line: listen on `X`, forward to `Y`; it answers `ok` or
//! `err <why>`) and exits when stdin ends, i.e. when the test process exits, however it
//! exits (the pipe's write end is only ever in the test process: Rust opens it close-on-exec).

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The running relay of this process, and the names it already listens on.
struct Relay {
    _child: Child,
    orders: ChildStdin,
    answers: BufReader<ChildStdout>,
    relayed: HashSet<String>,
}

static RELAY: Mutex<Option<Relay>> = Mutex::new(None);

/// Where the `shm_relay` binary is: `NETRON_SHM_RELAY` if set, otherwise beside the test
/// binary's `deps` directory (`target/<profile>/shm_relay`, where cargo builds a package's
/// binaries for its integration tests).
fn relay_exe() -> io::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("NETRON_SHM_RELAY") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir.join("shm_relay"))
}

fn start() -> io::Result<Relay> {
    let exe = relay_exe()?;
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", exe.display())))?;
    let orders = child.stdin.take().expect("piped stdin");
    let answers = BufReader::new(child.stdout.take().expect("piped stdout"));
    Ok(Relay {
        _child: child,
        orders,
        answers,
        relayed: HashSet::new(),
    })
}

/// The endpoint that reaches the server bound on `endpoint` (`shm://Y`) through the relay
/// process: `shm://Y-relay`. Starts the relay on first use and has it listen on `Y-relay`
/// (once per name).
///
/// # Panics
/// If `endpoint` is not `shm://name`, or the relay cannot be started or cannot listen (a
/// test-harness failure, named).
pub fn dial(endpoint: &str) -> String {
    let y = endpoint
        .strip_prefix("shm://")
        .unwrap_or_else(|| panic!("shm2p: {endpoint} is not an shm:// endpoint"));
    let x = format!("{y}-relay");
    let mut guard = RELAY.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(start().unwrap_or_else(|e| panic!("shm2p: the relay process: {e}")));
    }
    let relay = guard.as_mut().expect("started above");
    if !relay.relayed.contains(y) {
        let mut answer = String::new();
        writeln!(relay.orders, "{y} {x}")
            .and_then(|()| relay.orders.flush())
            .and_then(|()| relay.answers.read_line(&mut answer))
            .unwrap_or_else(|e| panic!("shm2p: talking to the relay process: {e}"));
        assert!(
            answer.trim_end() == "ok",
            "shm2p: the relay cannot listen on shm://{x}: {answer:?}"
        );
        relay.relayed.insert(y.to_owned());
    }
    format!("shm://{x}")
}

/// Forwards records between `a` and `b` (two connections' raw rings) until both directions
/// have ended: each record read on one side is written unchanged as one record on the other;
/// a side's half-close (its liveness socket's write side shut) becomes a half-close of the
/// other once everything it sent is forwarded; a side that hangs up (both directions) while
/// the other still talks, or any failure, hangs up both. Runs one direction on a thread of its
/// own and the other on the caller's.
///
/// It never calls netron-shm's blocking waits: they take a half-closed peer for a gone one
/// (right for netron-shm's users, not for a relay that must still answer that peer).
pub fn forward(
    a: (netron_shm::Producer, netron_shm::Consumer),
    b: (netron_shm::Producer, netron_shm::Consumer),
) {
    let ended = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let e2 = ended.clone();
    let (a_tx, a_rx) = a;
    let (b_tx, b_rx) = b;
    let back = std::thread::spawn(move || pump(b_rx, a_tx, &e2, 1));
    pump(a_rx, b_tx, &ended, 0);
    let _ = back.join();
}

/// What a look at a liveness socket found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    /// Both ways open.
    Open,
    /// The peer shut its writing side (it sends nothing more).
    HalfClosed,
    /// Hung up (or both sides shut their writing sides, or this side shut both ways).
    Gone,
}

/// Looks at the liveness socket `live` and waits up to `wait` for it to change or for the
/// doorbell `bell` to be rung (the second value: rung, and drained).
fn look(live: BorrowedFd<'_>, bell: Option<BorrowedFd<'_>>, wait: Duration) -> (Peer, bool) {
    use rustix::event::{PollFd, PollFlags};
    let ts = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: i64::try_from(wait.as_nanos().min(999_999_999)).unwrap_or(0),
    };
    let watch = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
    let mut fds = [
        PollFd::new(&live, watch),
        PollFd::new(bell.as_ref().unwrap_or(&live), PollFlags::IN),
    ];
    let n = if bell.is_some() { 2 } else { 1 };
    if rustix::event::poll(&mut fds[..n], Some(&ts)).is_err() {
        return (Peer::Open, false);
    }
    let ev = fds[0].revents();
    let rung = bell.is_some() && !fds[1].revents().is_empty();
    if let (true, Some(b)) = (rung, bell) {
        let mut v = [0u8; 8];
        let _ = rustix::io::read(b, &mut v);
    }
    let peer = if ev.intersects(PollFlags::HUP | PollFlags::ERR) {
        Peer::Gone
    } else if ev.contains(PollFlags::RDHUP) {
        Peer::HalfClosed
    } else {
        Peer::Open
    };
    (peer, rung)
}

/// How long a pump sleeps between looks when nothing rings (it also wakes on its doorbell
/// and on its peer's liveness socket) and while the ring it writes to is full.
const SLICE: Duration = Duration::from_millis(10);
const FULL_NAP: Duration = Duration::from_micros(200);

/// One direction of [`forward`] (direction `me` of `ended`): records from `rx` to `tx`.
fn pump(
    mut rx: netron_shm::Consumer,
    mut tx: netron_shm::Producer,
    ended: &[AtomicBool; 2],
    me: usize,
) {
    use rustix::net::Shutdown;
    let (Some(rx_live), Some(tx_live)) = (
        rx.liveness_fd().map(|f| f.try_clone_to_owned()),
        tx.liveness_fd().map(|f| f.try_clone_to_owned()),
    ) else {
        return;
    };
    let (Ok(rx_live), Ok(tx_live)) = (rx_live, tx_live) else {
        return;
    };
    let hang_up = || {
        let _ = rustix::net::shutdown(&rx_live, Shutdown::Both);
        let _ = rustix::net::shutdown(&tx_live, Shutdown::Both);
        ended[me].store(true, Ordering::Release);
    };
    loop {
        // Everything published so far, one record at a time, written on as one record.
        loop {
            let record = match rx.read() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => return hang_up(),
            };
            loop {
                match tx.reserve(record.len()) {
                    Ok(mut space) => {
                        space.copy_from_slice(record);
                        space.commit();
                        break;
                    }
                    Err(netron_shm::Error::Full) => {
                        if tx.publish().is_err()
                            || look(tx_live.as_fd(), None, Duration::ZERO).0 == Peer::Gone
                        {
                            return hang_up();
                        }
                        std::thread::sleep(FULL_NAP);
                    }
                    Err(_) => return hang_up(),
                }
            }
            rx.release();
            if tx.publish().is_err() {
                return hang_up();
            }
        }
        if rx.announce_sleep().is_err() {
            return hang_up();
        }
        let (peer, _) = look(rx_live.as_fd(), rx.doorbell_fd(), SLICE);
        rx.cancel_sleep();
        if rx.ready().unwrap_or(false) {
            continue;
        }
        match peer {
            Peer::Open => {}
            Peer::HalfClosed => {
                let _ = rustix::net::shutdown(&tx_live, Shutdown::Write);
                ended[me].store(true, Ordering::Release);
                return;
            }
            Peer::Gone => {
                // A hang-up, unless it is only the two half-closes meeting (the other
                // direction ended first and shut this peer's reading side).
                if ended[1 - me].load(Ordering::Acquire) {
                    let _ = rustix::net::shutdown(&tx_live, Shutdown::Write);
                    ended[me].store(true, Ordering::Release);
                    return;
                }
                return hang_up();
            }
        }
    }
}
