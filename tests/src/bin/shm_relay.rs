//! The record relay process of the `shm2p` conformance transport (netron_tests::relay):
//! reads `Y X` lines on stdin, listens on `shm://X` for each and forwards every accepted
//! client's records to a connection of its own to `shm://Y`, both ways, unchanged. Exits when
//! stdin ends (the test process is gone).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netron_shm::{Config, ShmConnection, ShmListener};

/// The relay's netron-shm settings: no spinning (the machine has few cores and the suite's
/// own processes need them), the engine's ring sizes.
fn config() -> Config {
    let mut c = Config::default();
    c.spin(Duration::ZERO)
        .handshake_timeout(Duration::from_secs(5));
    c
}

/// How often an idle listener looks whether its upstream was found gone (one wake-up per
/// relayed name per period, for the rest of the run).
const IDLE_LOOK: Duration = Duration::from_millis(500);

/// Accepts clients on `listener` and relays each to `upstream`, until `upstream` refuses a
/// connection because nothing listens there any more: then the relay stops listening too (so
/// a client sees the name released as it would without the relay).
fn serve(listener: ShmListener, upstream: String) {
    let gone = Arc::new(AtomicBool::new(false));
    while !gone.load(Ordering::Acquire) {
        let Ok(pending) = listener.accept_pending(Some(Instant::now() + IDLE_LOOK)) else {
            continue;
        };
        let (upstream, gone) = (upstream.clone(), gone.clone());
        std::thread::spawn(move || {
            let Ok(down) = pending.complete() else {
                return;
            };
            // A server that refuses (or is gone) closes the client's connection too.
            let up = match ShmConnection::connect_with(&upstream, &config()) {
                Ok(up) => up,
                Err(netron_shm::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    gone.store(true, Ordering::Release);
                    return;
                }
                Err(_) => return,
            };
            netron_tests::relay::forward(down.split(), up.split());
        });
    }
}

/// Ends the relay once its parent (the test process) is gone, even if stdin has not ended
/// (another process holding the pipe's write end would keep it open): an orphaned relay must
/// not outlive the run holding the test process's stderr, which a CI log pipe waits on.
fn exit_when_orphaned() {
    let parent = rustix::process::getppid();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if rustix::process::getppid() != parent {
                std::process::exit(0);
            }
        }
    });
}

fn main() {
    exit_when_orphaned();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.split_once(' ') {
            Some((y, x)) => match ShmListener::bind_with(x, config()) {
                Ok(l) => {
                    let y = y.to_owned();
                    std::thread::spawn(move || serve(l, y));
                    "ok".to_owned()
                }
                Err(e) => format!("err {e}"),
            },
            None => format!("err bad order {line:?}"),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    // The test process is gone: so are its servers; end every relayed connection now.
    std::process::exit(0);
}
