//! Hot connections: busy-poll cores read a connection that receives data with direct,
//! non-blocking `recv` calls instead of the io_uring receive (`DirectRecv`), and hand it back
//! to the ring after it is silent for a while. Bytes must keep their order and frames their
//! boundaries through promotion, direct reads that end anywhere in a frame, and demotion.
//! (Misbehaving peers on hot connections are in [`super::bad_input`].)

use std::time::Duration;

use netron_engine::{CallSlot, DirectRecv, Engine, IdlePolicy, RuntimeConfig};

use crate::{Transport, calc};

const DL: Option<Duration> = Some(Duration::from_secs(10));

fn busy() -> RuntimeConfig {
    RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)
}

/// A one-core server on cpu1 serving `calc` with `cfg` on a fresh endpoint of `t`.
fn server(t: &Transport, cfg: RuntimeConfig) -> Engine {
    crate::builder(t)
        .cores(1)
        .cpus(&[1])
        .config(cfg)
        .service(calc())
        .listen(&(t.listen)("hot"))
        .build()
        .unwrap()
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k * 7) as u8).collect()
}

/// `n` echo calls of 64 distinct bytes each on `conn`, every reply checked.
fn echo_64(
    core: &mut netron_engine::Core,
    conn: netron_engine::ConnId,
    slot: &mut CallSlot,
    n: usize,
) {
    for i in 0..n {
        let p = payload(i, 64);
        let r = core
            .call(conn, b"calc@1.2.0", b"echo", &p, DL, slot)
            .unwrap();
        assert!(r == &p[..], "call {i} came back different");
    }
}

/// Echoes of many sizes stay intact across promotion, direct reads and demotion.
pub fn echoes_stay_intact_across_promotion_direct_reads_and_demotion(t: &Transport) {
    let server = server(t, busy());
    // Sizes around and far above the 16 KiB direct-read buffer, so frames end anywhere in a
    // read and one frame takes several reads (and several turns: 4 reads per turn at most).
    let sizes = [0usize, 1, 64, 4_000, 16_384, 40_000, 150_000];
    let ep = crate::dial_of(t, &server).clone();
    let mut core = crate::new_core(t, busy()).unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
    let mut slot = CallSlot::new();
    for i in 0..700 {
        let p = payload(i, sizes[i % sizes.len()]);
        let r = core
            .call(conn, b"calc@1.2.0", b"echo", &p, DL, &mut slot)
            .unwrap();
        assert!(r == &p[..], "{ep}: call {i} came back different");
        if i % 100 == 99 {
            // Silent far longer than the 200 µs idle time: both sides demote, and the next
            // bytes arrive through the ring receive again (and promote again).
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    let s = core.stats();
    // After each sleep the client sends its next request directly (still hot), then its
    // first read finds nothing, it demotes, and the reply arrives through the ring and
    // promotes it again. (A reply that beats that first read skips one cycle, so count
    // at least one cycle, not all six.)
    assert!(s.driver().hot_promotions >= 2, "{ep}: {s:?}");
    assert!(s.driver().direct_recvs > 700, "{ep}: {s:?}");
    assert!(s.errors().is_empty(), "{ep}: {:?}", s.errors());
    core.close(conn);
    let total = server.total_stats();
    assert!(total.driver().hot_promotions >= 2, "{total:?}");
    assert!(total.driver().direct_recvs > 0, "{total:?}");
    assert!(total.errors().is_empty(), "{:?}", total.errors());
    server.shutdown(Duration::from_secs(1));
}

/// A hot connection sees its peer go: the server shuts down while the client's connection
/// is read directly (no ring receive armed), and the client's next call fails at once as the
/// connection's end (Unavailable, naming the close), not at its deadline. Over `quic://` the
/// end comes as QUIC's CONNECTION_CLOSE inside a direct read.
pub fn a_hot_connection_sees_its_peer_go(t: &Transport) {
    let server = server(t, busy());
    let ep = crate::dial_of(t, &server).clone();
    // The client stays hot however long it is silent: the end must arrive in a direct read.
    let stay_hot = busy().with_direct_recv(Some(DirectRecv::new(8, Duration::from_secs(600))));
    let mut core = crate::new_core(t, stay_hot).unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
    let mut slot = CallSlot::new();
    echo_64(&mut core, conn, &mut slot, 200);
    assert!(core.stats().driver().hot_promotions >= 1, "{ep}: never hot");
    server.shutdown(Duration::from_secs(1));
    let long = Some(Duration::from_secs(60));
    // The failure is the connection's end (Unavailable), not the 60 s deadline
    // (DeadlineExceeded): no clock needed to tell them apart.
    let e = core
        .call(conn, b"calc@1.2.0", b"echo", b"x", long, &mut slot)
        .unwrap_err();
    assert_eq!(
        e.code(),
        netron_engine::StatusCode::Unavailable,
        "{ep}: {e}"
    );
    core.close(conn);
}

/// Eight threads call through one busy-poll client core: requests and replies of many calls
/// arrive coalesced, so direct reads carry several frames and cut frames anywhere.
pub fn concurrent_callers_share_hot_connections(t: &Transport) {
    let server = server(t, busy());
    let clients = crate::builder(t)
        .cores(1)
        .cpus(&[0])
        .config(busy())
        .build()
        .unwrap();
    let ch = clients
        .client()
        .connect(&crate::dial_of(t, &server).to_string())
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..8usize {
            let ch = ch.clone();
            s.spawn(move || {
                for i in 0..150usize {
                    let p = payload(t * 1000 + i, (i % 7) * 3_000);
                    let r = ch.call("calc@1.2.0", "echo", p.clone(), DL).unwrap();
                    assert!(r == p, "thread {t} call {i} came back different");
                }
            });
        }
    });
    for (who, st) in [
        ("server", server.total_stats()),
        ("client", clients.total_stats()),
    ] {
        assert!(
            st.driver().hot_promotions >= 1 && st.driver().direct_recvs > 0,
            "{who}: {st:?}"
        );
        assert!(st.errors().is_empty(), "{who}: {:?}", st.errors());
    }
    clients.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

/// The control for the tests above: with `direct_recv` off (the client: `None`; the server:
/// room for no hot connection), a busy-poll core never reads directly, so the counters those
/// tests check do depend on the policy.
pub fn turning_direct_reads_off_keeps_every_byte_on_the_ring(t: &Transport) {
    let no_room = DirectRecv::new(0, DirectRecv::default().idle);
    let server = server(t, busy().with_direct_recv(Some(no_room)));
    let mut core = crate::new_core(t, busy().with_direct_recv(None)).unwrap();
    let conn = core
        .connect(&crate::dial_of(t, &server), Duration::from_secs(5))
        .unwrap();
    let mut slot = CallSlot::new();
    echo_64(&mut core, conn, &mut slot, 200);
    let (c, s) = (core.stats().clone(), server.total_stats());
    assert_eq!(
        (c.driver().hot_promotions, c.driver().direct_recvs),
        (0, 0),
        "{c:?}"
    );
    assert_eq!(
        (s.driver().hot_promotions, s.driver().direct_recvs),
        (0, 0),
        "{s:?}"
    );
    core.close(conn);
    server.shutdown(Duration::from_secs(1));
}
