//! Scratch probe (not committed): `ffi_probe server` serves; `ffi_probe client EP N MODE` calls.
use netron_engine::{CallSlot, Core, Endpoint, Engine, IdlePolicy, RuntimeConfig, Service};
use std::time::Duration;
fn utime_ns() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_utime.tv_sec as u64 * 1_000_000_000 + ru.ru_utime.tv_usec as u64 * 1000
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a[1] == "server" {
        let svc = Service::new("bench", "1.0.0")
            .unwrap()
            .unary("echo", |req, reply| {
                reply.write(req.payload());
                Ok(())
            });
        let e = Engine::builder()
            .cores(1)
            .config(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll))
            .service(svc)
            .listen("tcp://127.0.0.1:47111")
            .build()
            .unwrap();
        println!("{}", e.endpoints()[0]);
        std::thread::sleep(Duration::from_secs(3600));
        return;
    }
    let n: usize = a[3].parse().unwrap();
    let ep: Endpoint = a[2].parse().unwrap();
    let msg = [0x5au8; 64];
    let mut core = Core::new(RuntimeConfig::default().with_idle(IdlePolicy::Adaptive {
        spin: Duration::ZERO,
    }))
    .unwrap();
    let conn = core.connect(&ep, Duration::from_secs(60)).unwrap();
    let mut slot = CallSlot::new();
    for _ in 0..100 {
        core.call(conn, b"bench@1.0.0", b"echo", &msg, None, &mut slot)
            .unwrap();
    }
    let u0 = utime_ns();
    for _ in 0..n {
        core.call(conn, b"bench@1.0.0", b"echo", &msg, None, &mut slot)
            .unwrap();
    }
    eprintln!("user {:.1} ns/call", (utime_ns() - u0) as f64 / n as f64);
}
