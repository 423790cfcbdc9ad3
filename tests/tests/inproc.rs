//! Transport-specific: `inproc://` record framing and errors that byte streams cannot
//! express (empty records, a handshake frame cut across records, in-process peers gone).
//! Everything transport-agnostic is in the conformance suite (tests/src/suite).

use std::time::{Duration, Instant};

use netron_codec::handshake::{ClientConfig, ClientHandshake, ClientProgress};
use netron_engine::Engine;
use netron_shm::{Consumer, Producer};
use netron_tests::calc;

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// A name no other test of this process uses.
fn name(tag: &str) -> String {
    format!("netron-inproc-test-{}-{tag}", std::process::id())
}

/// A one-core engine serving `calc` on `inproc://<name>`.
fn server(name: &str) -> Engine {
    Engine::builder()
        .cores(1)
        .service(calc())
        .listen(&format!("inproc://{name}"))
        .build()
        .expect("engine")
}

fn publish(tx: &mut Producer, record: &[u8]) {
    tx.send_wait(record, Some(Instant::now() + Duration::from_secs(10)))
        .expect("send a record");
    tx.publish().expect("publish");
}

/// Reads the server's records until it closes (`true`) or `bound` passes (`false`).
fn read_to_close(rx: &mut Consumer, bound: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + bound;
    let mut all = Vec::new();
    loop {
        match rx.read() {
            Ok(Some(r)) => {
                all.extend_from_slice(r);
                rx.release();
                continue;
            }
            Ok(None) if rx.peer_gone() => match rx.ready() {
                Ok(true) => continue,
                _ => return (all, true),
            },
            Ok(None) => {}
            Err(_) => return (all, true),
        }
        if Instant::now() > end {
            return (all, false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The preface and Hello of a default client: (preface, hello frame).
fn hello() -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    ClientHandshake::new(ClientConfig::default())
        .start(&mut out)
        .unwrap();
    let hello = out.split_off(8);
    (out, hello)
}

/// Connects raw rings to `inproc://<name>` and completes the handshake as §26.1 says.
fn raw_handshake(name: &str) -> (Producer, Consumer) {
    let (mut tx, mut rx) = netron_engine::inproc::connect_raw(name).unwrap();
    let mut hs = ClientHandshake::new(ClientConfig::default());
    let mut out = Vec::new();
    hs.start(&mut out).unwrap();
    publish(&mut tx, &out[..8]);
    publish(&mut tx, &out[8..]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    loop {
        if let Some(r) = rx.read().unwrap() {
            buf.extend_from_slice(r);
            rx.release();
            if let ClientProgress::Done { .. } = hs.handle(&buf).unwrap() {
                return (tx, rx);
            }
        }
        assert!(Instant::now() < end, "no Welcome");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_for(e: &Engine, counter: &str) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = e.total_stats().errors_of(counter);
        if n > 0 || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An empty record holds no frame but costs the server a read and resets its keepalive,
/// like an empty frame; a peer publishing millions of them must be cut off by the
/// idle-frame budget as a ping flood is (limits::rapid_reset_and_empty_frame_floods_are_cut_off),
/// not keep a core busy for ever with no counter moving.
#[test]
fn an_empty_record_flood_is_cut_off_by_the_idle_frame_budget() {
    let n = name("empty-flood");
    let e = server(&n);
    let (mut tx, mut rx) = raw_handshake(&n);
    let start = Instant::now();
    let mut cut_off = false;
    'flood: while start.elapsed() < Duration::from_secs(5) {
        for _ in 0..1000 {
            match tx.send(b"") {
                Ok(()) => {}
                Err(netron_shm::Error::Full) => break,
                Err(_) => {
                    cut_off = true;
                    break 'flood;
                }
            }
        }
        if tx.publish().is_err() {
            cut_off = true;
            break;
        }
        // Keep reading the server's side, so only the flood can end the connection.
        while let Ok(Some(_)) = rx.read() {}
        rx.release();
        if rx.peer_gone() {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "an empty-record flood was never cut off");
    assert!(
        wait_for(&e, "idle_frame_budget") >= 1,
        "{:?}",
        e.total_stats()
    );
    // Other clients are served.
    let c = Engine::builder().cores(1).build().unwrap();
    let ch = c.client().connect(&format!("inproc://{n}")).unwrap();
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
}

/// §26.1–§26.3: the Hello travels whole in the record after the preface (it is at most
/// 64 KiB, far below the 1 MiB − 16 B record limit). A Hello cut over two records is
/// `Incomplete`, exactly as a request cut over two records is after the handshake
/// (bad_input::frame_trickle_is_bounded), not silently reassembled.
#[test]
fn a_hello_cut_over_two_records_is_incomplete() {
    let n = name("hello-split");
    let e = server(&n);
    for cut in [3, 16, 20] {
        let (mut tx, mut rx) = netron_engine::inproc::connect_raw(&n).unwrap();
        let (preface, hello) = hello();
        publish(&mut tx, &preface);
        publish(&mut tx, &hello[..cut]);
        let _ = tx.send(&hello[cut..]);
        let _ = tx.publish();
        let (got, closed) = read_to_close(&mut rx, Duration::from_secs(10));
        assert!(closed, "cut at {cut}: the server did not close");
        let welcome = netron_codec::FrameIter::new(&got, &netron_codec::Limits::default())
            .map_while(Result::ok)
            .any(|f| f.kind() == netron_codec::FrameKind::Welcome);
        assert!(
            !welcome,
            "cut at {cut}: a Hello cut over two records was welcomed"
        );
    }
    assert!(wait_for(&e, "incomplete") >= 3, "{:?}", e.total_stats());
}
