//! Transport-specific: listeners of the socket transports (TCP and Unix sockets) and lifecycle
//! (issue 11, items 13–16): one engine per endpoint, shutdown that releases everything before it
//! returns, accept errors that back off, connects that try every address of a host name, TCP
//! ports and Unix socket files, endpoint strings. Each scenario runs for TCP and Unix sockets
//! where both apply. Transport-agnostic behaviour is in the conformance suite (tests/src/suite).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use netron_engine::{CallSlot, Core, CoreConfig, CoreStats, Endpoint, Engine};
use netron_tests::{TCP, Transport, UNIX, calc, unix_path};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// The socket transports, as fresh endpoint strings to listen on (TCP with port 0).
fn transports(tag: &str) -> Vec<String> {
    let sockets: [&Transport; 2] = [&TCP, &UNIX];
    sockets.iter().map(|t| (t.listen)(tag)).collect()
}

fn server(listen: &str, cores: usize) -> Result<Engine, netron_engine::EngineError> {
    Engine::builder()
        .cores(cores)
        .service(calc())
        .listen(listen)
        .build()
}

/// Connects without Netron (a plain socket) and reports how the connect ended.
fn raw_connect(ep: &Endpoint) -> std::io::Result<()> {
    match ep {
        Endpoint::Tcp(a) => std::net::TcpStream::connect(a).map(drop),
        Endpoint::Unix(p) => std::os::unix::net::UnixStream::connect(p).map(drop),
        other => panic!("unexpected endpoint {other}"),
    }
}

fn assert_calls(ep: &str, n: usize) {
    let client = Engine::builder().cores(1).build().expect("client engine");
    let c = client.client();
    for i in 0..n {
        let ch = c
            .connect(ep)
            .unwrap_or_else(|s| panic!("{ep}: connection {i}: {s}"));
        assert_eq!(
            ch.call("calc@1.2.0", "add", &[1u8, 2][..], DL)
                .unwrap_or_else(|s| panic!("{ep}: first call of connection {i}: {s}")),
            [3],
            "{ep}"
        );
    }
}

/// Polls `f` until it holds, for at most 10 s (a bound, not a timing assumption).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---- item 13: a second instance of an endpoint is refused ---------------------------------

#[test]
fn a_second_engine_on_a_live_endpoint_is_refused() {
    for listen in transports("second") {
        let a = server(&listen, 2).expect("first engine");
        let ep = a.endpoints()[0].clone();
        for cores in [1, 2] {
            let err = server(&ep.to_string(), cores)
                .expect_err("a second engine on a live endpoint must be refused")
                .to_string();
            assert!(err.contains("address in use"), "{err}");
            assert!(err.contains(&ep.to_string()), "{err}");
        }
        // Nor can a caller-driven core join it.
        let mut core = Core::new(CoreConfig::default()).expect("core");
        let e = core.listen(&ep).expect_err("a core on a live endpoint");
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("address in use"), "{e}");
        // The first engine still serves every new connection (nothing was taken from it).
        assert_calls(&ep.to_string(), 10);
        let t = a.total_stats();
        assert!(t.accepted() >= 10, "{t:?}");
    }
}

#[test]
fn the_cores_sharing_an_endpoint_take_turns_accepting() {
    for listen in transports("turns") {
        let e = server(&listen, 2).expect("engine");
        let ep = e.endpoints()[0].to_string();
        let client = Engine::builder().cores(1).build().expect("client engine");
        // One connection after another, each with a call, so every core is idle and armed.
        let chans: Vec<_> = (0..40)
            .map(|_| {
                let ch = client.client().connect(&ep).expect("connect");
                assert_eq!(ch.call("calc@1.2.0", "add", &[1u8][..], DL).unwrap(), [1]);
                ch
            })
            .collect();
        let per_core: Vec<u64> = e.stats().iter().map(|s| s.accepted()).collect();
        assert_eq!(per_core.iter().sum::<u64>(), 40, "{listen}: {per_core:?}");
        assert!(
            per_core.iter().all(|&n| n >= 10),
            "{listen}: one core took (nearly) every connection: {per_core:?}"
        );
        drop(chans);
    }
}

#[test]
fn a_stale_unix_socket_file_is_replaced_and_the_engine_removes_its_own() {
    let path = unix_path("stale");
    let _ = std::fs::remove_file(&path);
    // A listener that went away without removing its file (as a killed process does).
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(Path::new(&path).exists());
    let ep = format!("unix://{path}");
    let e = server(&ep, 2).expect("a stale file is replaced");
    assert_calls(&ep, 2);
    e.shutdown(Duration::ZERO);
    assert!(
        !Path::new(&path).exists(),
        "shutdown removes the engine's socket file"
    );

    // Dropping works the same way.
    let e = server(&ep, 1).expect("engine");
    drop(e);
    assert!(
        !Path::new(&path).exists(),
        "drop removes the engine's socket file"
    );

    // A file that is no longer the engine's own is left alone.
    let e = server(&ep, 1).expect("engine");
    std::fs::remove_file(&path).expect("remove");
    let other = std::os::unix::net::UnixListener::bind(&path).expect("rebind");
    drop(e);
    assert!(Path::new(&path).exists(), "someone else's file was removed");
    std::os::unix::net::UnixStream::connect(&path).expect("the other listener is intact");
    drop(other);
    let _ = std::fs::remove_file(&path);

    // A file that is not a socket is never removed.
    std::fs::write(&path, b"data").expect("write");
    let err = server(&ep, 1).expect_err("a regular file").to_string();
    assert!(
        err.contains("address in use") && err.contains(&path),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("still there"), b"data");
    std::fs::remove_file(&path).expect("remove");
}

// ---- item 14: shutdown and drop release everything before they return ----------------------

#[test]
fn shutdown_releases_the_endpoint_before_it_returns() {
    for listen in transports("restart") {
        let mut ep = listen.clone();
        for round in 0..6 {
            let e = server(&ep, 2).unwrap_or_else(|err| panic!("round {round}: restart: {err}"));
            let bound = e.endpoints()[0].clone();
            ep = bound.to_string();
            // Every first call of a new connection is served by this engine.
            assert_calls(&ep, 20);
            if round % 2 == 0 {
                e.shutdown(Duration::ZERO);
            } else {
                drop(e);
            }
            // Immediately refused: no listener remains in the kernel.
            let r = raw_connect(&bound);
            match (&bound, r) {
                (Endpoint::Tcp(_), Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {}
                (Endpoint::Unix(_), Err(e))
                    if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {}
                (_, r) => panic!("round {round}: {bound} after shutdown: {r:?}"),
            }
        }
    }
}

#[test]
fn shutdown_with_connections_open_returns_after_releasing_them() {
    for listen in transports("open") {
        let e = server(&listen, 2).expect("engine");
        let ep = e.endpoints()[0].to_string();
        let client = Engine::builder().cores(1).build().expect("client engine");
        let chans: Vec<_> = (0..8)
            .map(|_| client.client().connect(&ep).expect("connect"))
            .collect();
        for ch in &chans {
            assert_eq!(ch.call("calc@1.2.0", "add", &[4u8][..], DL).unwrap(), [4]);
        }
        e.shutdown(Duration::from_secs(1));
        // The connections were closed by the server: calls fail instead of hanging.
        for ch in &chans {
            assert!(ch.call("calc@1.2.0", "add", &[4u8][..], DL).is_err());
        }
        // And the endpoint is free again at once.
        let again = server(&ep, 2).expect("restart on the same endpoint");
        assert_calls(&again.endpoints()[0].to_string(), 3);
    }
}

#[test]
fn a_caller_driven_core_releases_its_listeners_when_dropped() {
    for listen in transports("core-drop") {
        let mut core = Core::new(CoreConfig::default()).expect("core");
        let bound = core.listen(&listen.parse().unwrap()).expect("listen");
        assert_eq!(bound.len(), 1);
        let ep = bound[0].clone();
        // Let the core arm its accept, then connect (the connection waits in the backlog or
        // is accepted; either way the socket is live).
        core.run_once().expect("turn");
        raw_connect(&ep).expect("live while the core exists");
        drop(core);
        match raw_connect(&ep) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) if matches!(ep, Endpoint::Unix(_)) && e.kind() == ErrorKind::NotFound => {}
            r => panic!("{ep} after the core dropped: {r:?}"),
        }
        if let Endpoint::Unix(p) = &ep {
            assert!(!p.exists(), "the core removes the socket file it created");
        }
        // Bindable again at once.
        let again = server(&ep.to_string(), 1).expect("rebind");
        assert_calls(&again.endpoints()[0].to_string(), 2);
    }
}

// ---- item 15: persistent accept errors back off --------------------------------------------

const CHILD: &str = "NETRON_LISTENERS_FD_LIMIT_CHILD";

fn errors(s: &CoreStats, label: &str) -> u64 {
    s.errors().get(label).copied().unwrap_or(0)
}

/// Runs in a child process (see the test below): lowers RLIMIT_NOFILE, exhausts descriptors
/// while a connection waits to be accepted, and checks the counters.
fn fd_limit_child() {
    let lim = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: `lim` is a valid rlimit for the whole call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let path = unix_path("fdlimit");
    let _ = std::fs::remove_file(&path);
    let srv = Engine::builder()
        .cores(1)
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .listen(&format!("unix://{path}"))
        .build()
        .expect("server");
    let client = Engine::builder().cores(1).build().expect("client engine");
    let eps: Vec<Endpoint> = srv.endpoints().to_vec();
    for (episode, ep) in eps.iter().enumerate() {
        let ch = client.client().connect(&ep.to_string()).expect("connect");
        assert_eq!(ch.call("calc@1.2.0", "add", &[5u8][..], DL).unwrap(), [5]);
        let before = srv.total_stats();
        // Take every free descriptor, then give one back for the client's socket: the
        // connection completes in the kernel's backlog, and the server has none to accept it.
        let mut hog = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
        }
        hog.pop();
        let waiting: Box<dyn std::any::Any> = match ep {
            Endpoint::Tcp(a) => Box::new(std::net::TcpStream::connect(a).expect("tcp connect")),
            Endpoint::Unix(p) => {
                Box::new(std::os::unix::net::UnixStream::connect(p).expect("unix connect"))
            }
            other => panic!("{other}"),
        };
        eventually("accept retries", || {
            srv.total_stats().accept_retries() >= before.accept_retries() + 4
        });
        // One episode, one count, however many retries.
        let during = srv.total_stats();
        assert_eq!(
            errors(&during, "accept_failed"),
            episode as u64 + 1,
            "{ep}: {during:?}"
        );
        // The existing connection is served throughout.
        for _ in 0..10 {
            assert_eq!(ch.call("calc@1.2.0", "add", &[6u8][..], DL).unwrap(), [6]);
        }
        drop(hog);
        eventually("the waiting connection is accepted", || {
            srv.total_stats().accepted() > during.accepted()
        });
        drop(waiting);
        let ch2 = client
            .client()
            .connect(&ep.to_string())
            .expect("connect after");
        assert_eq!(ch2.call("calc@1.2.0", "add", &[7u8][..], DL).unwrap(), [7]);
        let after = srv.total_stats();
        assert_eq!(
            errors(&after, "accept_failed"),
            episode as u64 + 1,
            "{after:?}"
        );
    }
    println!("fd-limit child: ok");
}

#[test]
fn accept_at_the_descriptor_limit_backs_off_and_recovers() {
    if std::env::var_os(CHILD).is_some() {
        return fd_limit_child();
    }
    // The descriptor limit is lowered in a child process, never in this one.
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "accept_at_the_descriptor_limit_backs_off_and_recovers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("fd-limit child: ok"),
        "child did not run:\n{text}"
    );
}

// ---- item 16: every resolved address is tried ----------------------------------------------

#[test]
fn connect_tries_every_address_of_a_host_name() {
    // A server only on IPv4 loopback, and a name whose first address is IPv6 loopback (where
    // nothing listens on that port).
    let e = server("tcp://127.0.0.1:0", 1).expect("engine");
    let Endpoint::Tcp(v4) = e.endpoints()[0] else {
        panic!("tcp")
    };
    let v6 = SocketAddr::new("::1".parse().unwrap(), v4.port());
    let ep = Endpoint::tcp_host(&format!("localhost:{}", v4.port()), [v6, v4]).unwrap();
    assert_eq!(ep.to_string(), format!("tcp://localhost:{}", v4.port()));
    let mut core = Core::new(CoreConfig::default()).expect("core");
    let conn = core
        .connect(&ep, Duration::from_secs(5))
        .expect("the second address answers");
    let mut slot = CallSlot::new();
    assert_eq!(
        core.call(conn, b"calc@1.2.0", b"add", &[1, 1], DL, &mut slot)
            .unwrap(),
        [2]
    );
    // Nothing listens anywhere: the error names each address.
    drop(core);
    drop(e);
    let mut core = Core::new(CoreConfig::default()).expect("core");
    let err = core.connect(&ep, Duration::from_secs(5)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, netron_engine::ConnectError::Io { .. })
            && msg.contains(&v4.to_string())
            && msg.contains(&v6.to_string()),
        "{err}"
    );
}

#[test]
fn listening_on_a_host_name_binds_and_reports_each_address() {
    let e = server("tcp://localhost:0", 1).expect("engine");
    let eps = e.endpoints().to_vec();
    assert!(!eps.is_empty());
    let port = eps[0].tcp_addrs()[0].port();
    assert_ne!(port, 0);
    for ep in &eps {
        let Endpoint::Tcp(a) = ep else { panic!("{ep}") };
        assert!(a.ip().is_loopback() && a.port() == port, "{ep}");
        assert_calls(&ep.to_string(), 1);
    }
    assert_calls(&format!("tcp://localhost:{port}"), 2);
}

#[test]
fn a_core_thread_never_resolves_names() {
    use std::sync::{Arc, OnceLock};
    // A handler (on a core's thread) that tries to connect by name: refused before any
    // resolution, so the answer is OnCoreThread, not a resolver error.
    let client: Arc<OnceLock<netron_engine::Client>> = Arc::new(OnceLock::new());
    let c = client.clone();
    let svc =
        netron_engine::Service::new("dial", "1.0.0")
            .unwrap()
            .unary("name", move |_, reply| {
                let s = c
                    .get()
                    .expect("client set")
                    .connect("tcp://no-such-host.invalid:1")
                    .unwrap_err();
                reply.write(format!("{s:?}").as_bytes());
                Ok(())
            });
    let e = Engine::builder()
        .cores(1)
        .service(svc)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("engine");
    client.set(e.client()).unwrap();
    let caller = Engine::builder().cores(1).build().expect("client engine");
    let ch = caller
        .client()
        .connect(&e.endpoints()[0].to_string())
        .expect("connect");
    let r = ch.call("dial@1.0.0", "name", &b""[..], DL).unwrap();
    assert_eq!(String::from_utf8_lossy(&r), "OnCoreThread");
}
