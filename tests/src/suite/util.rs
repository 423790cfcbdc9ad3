//! Helpers shared by the suite's areas: bounded waits, frame encoding and decoding.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits};
use netron_engine::{CoreStats, Engine};

use crate::RawPeer;

/// Polls the engine's counter `label` until it is non-zero or `bound` passes; returns it.
pub(crate) fn wait_for(e: &Engine, label: &str, bound: Duration) -> u64 {
    let end = Instant::now() + bound;
    loop {
        let n = e.total_stats().errors_of(label);
        if n > 0 || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls the engine's counters until `what` holds (true) or 10 s pass (false).
pub(crate) fn poll(e: &Engine, what: impl Fn(&CoreStats) -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if what(&e.total_stats()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs `f` on another thread and fails the test if it does not return within 20 s (a hang).
pub(crate) fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return: it hangs"))
}

/// The (kind, id) of each whole frame in `bytes`.
pub(crate) fn frames(bytes: &[u8]) -> Vec<(FrameKind, u32)> {
    FrameIter::new(bytes, &Limits::default())
        .filter_map(Result::ok)
        .map(|f| (f.kind(), f.id()))
        .collect()
}

/// The (kind, id, payload) of each frame in `bytes`, up to the first bad or partial one.
pub(crate) fn kinds(bytes: &[u8]) -> Vec<(FrameKind, u32, Vec<u8>)> {
    FrameIter::new(bytes, &Limits::default())
        .map_while(Result::ok)
        .map(|f| (f.kind(), f.id(), f.payload().to_vec()))
        .collect()
}

/// Appends a `calc@1.2.0/<method>` Request with `id`, `deadline` and `payload`.
pub(crate) fn request(
    b: &mut BatchEncoder,
    enc: &mut HeaderEncoder,
    id: u32,
    deadline: Option<Duration>,
    method: &[u8],
    payload: &[u8],
) {
    b.request(id, deadline)
        .unwrap()
        .headers(
            enc,
            &[Header::service(b"calc@1.2.0"), Header::method(method)],
        )
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
}

/// Incompressible bytes.
pub(crate) fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Reads frames until `done` says so or the server closes; returns (kind, id, payload) and
/// whether the server closed.
pub(crate) fn read_frames(
    p: &mut RawPeer,
    done: impl Fn(&[(FrameKind, u32, Vec<u8>)]) -> bool,
) -> (Vec<(FrameKind, u32, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut out = Vec::new();
    let mut closed = false;
    loop {
        out.clear();
        let mut it = FrameIter::new(&buf, &Limits::default());
        for f in it.by_ref() {
            match f {
                Ok(f) => out.push((f.kind(), f.id(), f.payload().to_vec())),
                Err(_) => break,
            }
        }
        if done(&out) || closed {
            return (out, closed);
        }
        match p.recv(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed = true,
            Err(e) => panic!(
                "read: {e} (got {:?})",
                out.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>()
            ),
        }
    }
}
