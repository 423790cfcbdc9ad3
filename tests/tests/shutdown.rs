//! Graceful shutdown with calls in flight: every call ends (reply or Unavailable), nothing
//! hangs, and the engine's threads exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netron_engine::{Engine, StatusCode};
use netron_tests::calc;

#[test]
fn shutdown_drains_and_refuses_new_calls() {
    let server = Engine::builder()
        .cores(2)
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let ep = server.endpoints()[0].to_string();
    let client_engine = Engine::builder().cores(1).build().unwrap();
    let client = client_engine.client();
    let ok = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(20);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (client, ep, ok, unavailable) =
                (client.clone(), ep.clone(), ok.clone(), unavailable.clone());
            std::thread::spawn(move || {
                let ch = client.connect(&ep).unwrap();
                while Instant::now() < stop_at {
                    // Some calls are slow, so shutdown finds them in flight.
                    match ch.call(
                        "calc@1.2.0",
                        "sleep",
                        &[2u8][..],
                        Some(Duration::from_secs(5)),
                    ) {
                        Ok(r) => {
                            assert_eq!(r, b"slept");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            assert_eq!(s.code, StatusCode::Unavailable, "{s}");
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                panic!("calls kept succeeding after shutdown");
            })
        })
        .collect();
    while ok.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    server.shutdown(Duration::from_secs(2));
    assert!(t.elapsed() < Duration::from_secs(10));
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(
        unavailable.load(Ordering::Relaxed),
        4,
        "every caller saw Unavailable once"
    );
    client_engine.shutdown(Duration::from_secs(1));
}
