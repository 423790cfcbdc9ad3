//! The adaptive idle spin of a caller-driven core counts from the caller's last piece of
//! work: a call (or a stream receive) made after the caller was away spins its full `spin`
//! for the reply before it parks.

use std::time::Duration;

use super::*;
use crate::{Engine, IdlePolicy, Service};

/// How long the server's stream echo takes: longer than the caller stays away.
const SLOW_ECHO: Duration = Duration::from_millis(500);

/// A one-core busy-poll echo server and a caller-driven core connected to it, adaptive with
/// `spin`.
fn client(spin: Duration) -> (Engine, Core, ConnId) {
    let echo = Service::new("spin", "1.0.0")
        .expect("service")
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        })
        .bidi_stream("slow_echo", |_, mut rx, mut tx| async move {
            while let Some(m) = rx.recv().await {
                // Holds the (test's own) server core, so the echo comes after the caller
                // came back and waits.
                std::thread::sleep(SLOW_ECHO);
                tx.send(m?).await?;
            }
            Ok(())
        });
    let server = Engine::builder()
        .cores(1)
        .idle(IdlePolicy::BusyPoll)
        .service(echo)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("server");
    let cfg = crate::RuntimeConfig::default().with_idle(IdlePolicy::Adaptive { spin });
    let mut core = Core::new(cfg).expect("core");
    let conn = core
        .connect(&server.endpoints()[0], Duration::from_secs(5))
        .expect("connect");
    (server, core, conn)
}

/// Makes the core's idle spin start (idle `run_once` turns, well within the spin: they do
/// not park), then stays away longer than the spin.
fn idle_then_away(core: &mut Core, spin: Duration) {
    core.run_once().expect("turn");
    core.run_once().expect("turn");
    std::thread::sleep(spin + spin / 4);
}

#[test]
fn calls_after_the_caller_was_away_spin_before_they_park() {
    // A spin far above a loopback round trip, even a loaded debug build's: a call that
    // parks did so because its spin was counted from before the call.
    let spin = Duration::from_millis(300);
    let (server, mut core, conn) = client(spin);
    let mut slot = CallSlot::new();
    for _ in 0..5 {
        idle_then_away(&mut core, spin);
        let before = core.stats().driver().parks;
        for i in 0..20u8 {
            let reply = core
                .call(conn, b"spin@1.0.0", b"echo", &[i; 16], None, &mut slot)
                .expect("call");
            assert_eq!(reply, &[i; 16]);
        }
        assert_eq!(
            core.stats().driver().parks,
            before,
            "no call parked: each spun for its reply"
        );
    }
    drop(core);
    server.shutdown(Duration::from_millis(100));
}

#[test]
fn a_stream_receive_after_the_caller_was_away_spins_before_it_parks() {
    let spin = Duration::from_millis(300);
    let (server, mut core, conn) = client(spin);
    let stream = core
        .open_stream(conn, b"spin@1.0.0", b"slow_echo", None, false, None)
        .expect("open");
    for i in 0..3u8 {
        core.stream_try_send(&stream, &[i; 8]).expect("send");
        // Sent, then away for longer than the spin while the echo is still due (SLOW_ECHO).
        idle_then_away(&mut core, spin);
        let before = core.stats().driver().parks;
        let got = core
            .recv_chunk(&stream, |c| c.to_vec())
            .expect("recv")
            .expect("a chunk");
        assert_eq!(got, vec![i; 8]);
        assert_eq!(core.stats().driver().parks, before, "the receive spun");
    }
    drop(core);
    server.shutdown(Duration::from_millis(100));
}
