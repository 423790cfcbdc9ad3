//! Transport-specific: TCP only. Endpoint strings and TCP ports at build time, and zero-copy
//! sends (`send_zc`), which the engine supports on TCP: on a Unix socket the kernel refuses
//! `send_zc` (EOPNOTSUPP) and today the engine fails the call instead of falling back to a
//! plain send, so this test cannot join the conformance suite yet.
//! Everything transport-agnostic is in the conformance suite (tests/src/suite).

use std::time::Duration;

use netron_engine::{CallSlot, Core, CoreConfig, Endpoint, Engine};
use netron_tests::{TCP, calc, engine};

const DL: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn bad_endpoints_and_services_fail_build() {
    assert!(Engine::builder().listen("udp://x").build().is_err());
    assert!(
        Engine::builder()
            .service(calc())
            .service(calc())
            .build()
            .is_err()
    );
    // Binding to port 0 works; binding a port held by a socket without SO_REUSEPORT fails.
    let _running = Engine::builder()
        .cores(1)
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let _std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = _std.local_addr().unwrap();
    assert!(
        Engine::builder()
            .listen(&format!("tcp://{addr}"))
            .build()
            .is_err()
    );
    assert!(matches!(
        "tcp://127.0.0.1:1".parse::<Endpoint>(),
        Ok(Endpoint::Tcp(_))
    ));
}

/// With a zero-copy threshold, large replies (and requests) go out as zero-copy sends and
/// arrive intact; small calls still use plain sends.
#[test]
fn zero_copy_sends_deliver_large_replies_intact() {
    let cfg = CoreConfig::default().with_send_zc_threshold(Some(16 << 10));
    let (e, _) = engine(&TCP, cfg.clone(), &[calc()], "zc");
    let mut core = Core::new(cfg).expect("core");
    let conn = core
        .connect(&e.endpoints()[0], Duration::from_secs(5))
        .expect("connect");
    let mut slot = CallSlot::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..50u32 {
        // Incompressible, so the negotiated compression leaves it large.
        let big: Vec<u8> = (0..(256 << 10) + i)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"echo", &big, DL, &mut slot)
                .unwrap(),
            &big[..]
        );
        // Small calls still go through plain sends.
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"add", &[1, 2], DL, &mut slot)
                .unwrap(),
            &[3]
        );
    }
    let client = core.stats().clone();
    let server = e.total_stats();
    assert!(
        client.zero_copy_writes >= 50 && server.zero_copy_writes >= 50,
        "{client:?} {server:?}"
    );
    assert!(client.writes > client.zero_copy_writes);
    e.shutdown(Duration::from_secs(1));
}
