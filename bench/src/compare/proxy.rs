//! A counting TCP proxy: forwards every accepted connection to an upstream address and counts
//! the bytes it carries in both directions, so wire overhead is counted on sockets, not
//! estimated. Only for byte counts: it adds latency, so no timed run goes through it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A running proxy; stops accepting when dropped (open connections end with their peers).
pub(crate) struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = l.local_addr().expect("proxy addr");
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                for (from, to) in [
                    (down.try_clone(), up.try_clone()),
                    (up.try_clone(), down.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let b = b.clone();
                    std::thread::spawn(move || pump(from, to, &b));
                }
            }
        });
        Self { addr, bytes, stop }
    }

    /// Bytes forwarded so far, both directions, all connections.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to`, counting each chunk before forwarding it (so by the time the far end
/// has it, it is counted).
fn pump(mut from: TcpStream, mut to: TcpStream, bytes: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
