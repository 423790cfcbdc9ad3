//! Transport-specific: TCP only. Endpoint strings and TCP ports at build time.
//! Everything transport-agnostic is in the conformance suite (tests/src/suite).

use netron_engine::{Endpoint, Engine};
use netron_tests::calc;

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
