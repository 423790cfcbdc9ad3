//! Rendezvous behaviour within one process (real sockets, memfds and eventfds).

#![cfg(not(loom))]

use std::os::linux::net::SocketAddrExt;
use std::time::{Duration, Instant};

use netron_shm::{Config, Error, ShmConnection, ShmListener};

fn deadline() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(10))
}

/// Several clients on one name each get their own segment: records never cross.
#[test]
fn several_clients_per_name_each_get_their_own_segment() {
    const CLIENTS: u8 = 3;
    const ROUNDS: u32 = 2000;
    let name = format!("multi-{}", std::process::id());
    let listener = ShmListener::bind(&name).unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut cfg = Config::default();
                cfg.ring_capacities(4096, 8192);
                let mut conn = ShmConnection::connect_with(&name, &cfg).unwrap();
                for round in 0..ROUNDS {
                    let msg = [id, round as u8, (round >> 8) as u8];
                    conn.producer().send_wait(&msg, deadline()).unwrap();
                    conn.producer().publish().unwrap();
                    let c = conn.consumer();
                    c.wait(deadline()).unwrap();
                    let echo = c.read().unwrap().unwrap();
                    assert_eq!(echo, [msg[0] ^ 0xFF, msg[1], msg[2]]);
                    c.release();
                }
            })
        })
        .collect();
    let mut servers = Vec::new();
    for _ in 0..CLIENTS {
        let conn = listener.accept_timeout(deadline()).unwrap();
        servers.push(std::thread::spawn(move || {
            let (mut p, mut c) = conn.split();
            let mut id = None;
            for _ in 0..ROUNDS {
                c.wait(deadline()).unwrap();
                let m = c.read().unwrap().unwrap().to_vec();
                c.release();
                // A connection only ever carries one client's records.
                assert_eq!(*id.get_or_insert(m[0]), m[0]);
                p.send_wait(&[m[0] ^ 0xFF, m[1], m[2]], deadline()).unwrap();
                p.publish().unwrap();
            }
            id.unwrap()
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    let mut ids: Vec<u8> = servers.into_iter().map(|s| s.join().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..CLIENTS).collect::<Vec<_>>());
}

#[test]
fn filesystem_names_work_and_are_removed() {
    let dir = std::env::temp_dir().join(format!("netron-shm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let path = path.to_str().unwrap().to_owned();
    {
        let listener = ShmListener::bind(&path).unwrap();
        let t = {
            let path = path.clone();
            std::thread::spawn(move || ShmConnection::connect(&path).unwrap())
        };
        let _server = listener.accept_timeout(deadline()).unwrap();
        let _client = t.join().unwrap();
        assert!(std::path::Path::new(&path).exists());
    }
    assert!(
        !std::path::Path::new(&path).exists(),
        "socket file left behind"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shm_url_names_and_missing_servers() {
    let name = format!("url-{}", std::process::id());
    let listener = ShmListener::bind(&format!("shm://{name}")).unwrap();
    let t = std::thread::spawn(move || ShmConnection::connect(&name).map(|_| ()));
    listener.accept_timeout(deadline()).unwrap();
    t.join().unwrap().unwrap();
    let err = ShmConnection::connect("no-such-server-anywhere").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn accept_times_out_and_a_silent_client_cannot_block_the_server() {
    let name = format!("silent-{}", std::process::id());
    let mut cfg = Config::default();
    cfg.handshake_timeout(Duration::from_millis(200));
    let listener = ShmListener::bind_with(&name, cfg).unwrap();
    let r = listener.accept_timeout(Some(Instant::now() + Duration::from_millis(50)));
    assert!(matches!(r, Err(Error::Timeout)));
    // A client that connects but never says hello.
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(format!("netron-shm/{name}")).unwrap();
    let _silent = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    let r = listener.accept_timeout(deadline());
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
}

/// A server that sends its reply one byte at a time cannot hold a connect past its handshake
/// timeout: the whole reply is due by then (a per-read timeout let it take 32 times as long,
/// fresh user R11's finding 6). Bounds checked generously: they are deadlines, not speed.
#[test]
fn a_trickling_server_cannot_hold_a_connect_past_its_timeout() {
    let name = format!("trickle-server-{}", std::process::id());
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(format!("netron-shm/{name}")).unwrap();
    let fake = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = fake.accept().unwrap();
        let mut hello = [0u8; 32];
        s.read_exact(&mut hello).unwrap();
        for _ in 0..32 {
            if s.write_all(&[0]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut cfg = Config::default();
    cfg.handshake_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let r = ShmConnection::connect_with(&name, &cfg);
    let took = started.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took < Duration::from_secs(2), "connect took {took:?}");
    server.join().unwrap();
}

/// A listener whose backlog is full (it accepts nothing) cannot hold a connect past its
/// timeout: a blocking connect to a Unix socket waits for backlog room without limit (fresh
/// user R12's finding 2: still waiting after 20 s for 300 ms).
#[test]
fn a_full_backlog_cannot_hold_a_connect_past_its_timeout() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let name = format!("full-backlog-{}", std::process::id());
    let addr = SocketAddrUnix::new_abstract_name(format!("netron-shm/{name}").as_bytes()).unwrap();
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    // Fill the backlog with connections nobody accepts.
    let mut queued = Vec::new();
    loop {
        let s = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        match rustix::net::connect(&s, &addr) {
            Ok(()) => queued.push(s),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the backlog never filled");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cfg = Config::default();
        cfg.handshake_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let r = ShmConnection::connect_with(&name, &cfg).map(drop);
        let _ = tx.send((r, started.elapsed()));
    });
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("connect still waiting after 10 s");
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took < Duration::from_secs(2), "connect took {took:?}");
    drop(queued);
}

/// `accept_timeout` honours its deadline when the client it accepted stays silent: the
/// rendezvous gives up at the caller's deadline, not at the (longer) handshake timeout
/// (R11's finding 7: 5.15 s for 200 ms).
#[test]
fn accept_timeout_honours_its_deadline_with_a_silent_client() {
    let name = format!("silent-deadline-{}", std::process::id());
    let mut cfg = Config::default();
    cfg.handshake_timeout(Duration::from_secs(5));
    let listener = ShmListener::bind_with(&name, cfg).unwrap();
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(format!("netron-shm/{name}")).unwrap();
    let _silent = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    let started = Instant::now();
    let r = listener.accept_timeout(Some(Instant::now() + Duration::from_millis(200)));
    let took = started.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        took < Duration::from_secs(2),
        "accept_timeout took {took:?}"
    );
}

#[test]
fn closing_one_side_is_seen_by_the_other() {
    let name = format!("close-{}", std::process::id());
    let listener = ShmListener::bind(&name).unwrap();
    let t = std::thread::spawn(move || ShmConnection::connect(&name).unwrap());
    let mut server = listener.accept_timeout(deadline()).unwrap();
    let mut client = t.join().unwrap();
    client.producer().send(b"last words").unwrap();
    client.producer().publish().unwrap();
    client.check_peer().unwrap();
    drop(client);
    // What was published before the close is still delivered, then PeerGone.
    let c = server.consumer();
    c.wait(deadline()).unwrap();
    assert_eq!(c.read().unwrap().unwrap(), b"last words");
    c.release();
    assert!(matches!(c.wait(deadline()), Err(Error::PeerGone)));
    assert!(matches!(server.check_peer(), Err(Error::PeerGone)));
}

/// A writer that never waits (`reserve`, no `reserve_wait`) to a peer that stopped reading and
/// then went away: once the ring is full, its retries report `PeerGone`, not `Full` forever
/// (it has no other way to learn: nothing it does waits on the liveness socket).
#[test]
fn a_non_blocking_writer_to_a_gone_peer_gets_peer_gone_not_full_forever() {
    let name = format!("gone-writer-{}", std::process::id());
    let listener = ShmListener::bind(&name).unwrap();
    let t = std::thread::spawn(move || ShmConnection::connect(&name).unwrap());
    let server = listener.accept_timeout(deadline()).unwrap();
    let mut client = t.join().unwrap();
    let p = client.producer();
    let record = [7u8; 1024];
    let mut sent = 0usize;
    loop {
        match p.send(&record) {
            Ok(()) => sent += 1,
            Err(Error::Full) => break,
            Err(e) => panic!("filling the ring: {e:?}"),
        }
        assert!(sent < 1 << 20, "the ring never filled");
    }
    p.publish().unwrap();
    assert!(
        matches!(p.reserve(record.len()), Err(Error::Full)),
        "the peer is alive"
    );
    drop(server);
    let give_up = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        match p.reserve(record.len()) {
            Err(Error::Full) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => break e,
            Ok(_) => panic!("room appeared in a ring nobody reads"),
        }
    };
    assert!(matches!(outcome, Error::PeerGone), "got {outcome:?}");
    // The consumer half learns it from the same look.
    assert!(client.consumer().peer_gone());
    assert!(matches!(
        client.producer().check_peer(),
        Err(Error::PeerGone)
    ));
}

/// A client whose user id is not in `allow_uids` is refused, and both sides say why: the
/// listener's accept returns `Refused`, and the client's connect gets the server's refusal
/// (not a bare "Broken pipe") naming the allow_uids list. A listed user is served.
#[test]
fn a_user_not_in_allow_uids_is_refused_and_told_why() {
    let me = rustix::process::getuid().as_raw();
    let name = format!("netron-shm-refused-{}", std::process::id());
    let mut cfg = Config::default();
    cfg.allow_uids(&[me.wrapping_add(1)]);
    let listener = ShmListener::bind_with(&name, cfg).unwrap();
    for _ in 0..3 {
        let client = {
            let name = name.clone();
            std::thread::spawn(move || ShmConnection::connect(&name).map(drop))
        };
        let e = listener.accept_pending(deadline()).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        let e = client.join().unwrap().unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(e.to_string().contains("allow_uids"), "{e}");
    }
    drop(listener);
    let mut cfg = Config::default();
    cfg.allow_uids(&[me]);
    let listener = ShmListener::bind_with(&name, cfg).unwrap();
    serve_one(&listener, &name);
}

/// A fresh filesystem socket path for this test process.
fn socket_path(tag: &str) -> String {
    let p = std::env::temp_dir().join(format!("netron-shm-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_str().unwrap().to_owned()
}

fn serve_one(listener: &ShmListener, name: &str) {
    let t = {
        let name = name.to_owned();
        std::thread::spawn(move || ShmConnection::connect(&name).map(drop))
    };
    // A second bind's liveness probe is a connection that closes without a hello: that
    // accept fails (for that client only), the next one serves.
    let mut probes = 0;
    while let Err(e) = listener.accept_timeout(deadline()) {
        assert!(matches!(e, Error::Handshake { .. }), "{e}");
        probes += 1;
        assert!(probes <= 1, "more than the one probe failed");
    }
    t.join().unwrap().unwrap();
}

const OWNER_VAR: &str = "NETRON_SHM_RENDEZVOUS_OWNER";

/// Entry point of the re-executed owner process: binds the name given in the environment,
/// says so on stdout, and waits to be killed. A no-op in the normal test run.
#[test]
fn owner_process_entry() {
    let Ok(name) = std::env::var(OWNER_VAR) else {
        return;
    };
    let _l = ShmListener::bind(&name).unwrap();
    println!("bound");
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

#[test]
fn a_path_name_binds_again_after_its_owner_was_killed() {
    use std::io::BufRead;
    let path = socket_path("killed");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "owner_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWNER_VAR, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("re-exec the test binary");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("bound") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the owner exited early"
        );
    }
    // While the owner lives, its name is refused.
    let err = ShmListener::bind(&path).unwrap_err();
    assert!(matches!(err, Error::AddrInUse { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("address in use") && text.contains(&path),
        "{text}"
    );
    // kill -9: the socket file stays behind, with nothing listening on it.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::path::Path::new(&path).exists());
    let listener = ShmListener::bind(&path).expect("a stale socket file is replaced");
    serve_one(&listener, &path);
    drop(listener);
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn a_live_name_is_refused_on_every_kind_of_name() {
    let abstract_name = format!("shm://live-{}", std::process::id());
    for name in [socket_path("live"), abstract_name] {
        let first = ShmListener::bind(&name).unwrap();
        let err = ShmListener::bind(&name).unwrap_err();
        assert!(matches!(err, Error::AddrInUse { .. }), "{name}: {err}");
        assert!(err.to_string().contains("address in use"), "{err}");
        // The first listener still serves.
        serve_one(&first, &name);
    }
}

#[test]
fn only_the_listeners_own_socket_file_is_removed() {
    let path = socket_path("own");
    // Someone else's file replaced ours: left alone on drop.
    let ours = ShmListener::bind(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(ours);
    assert!(std::path::Path::new(&path).exists());
    drop(theirs);
    // A file that is not a socket is never taken over.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"data").unwrap();
    let err = ShmListener::bind(&path).unwrap_err();
    assert!(matches!(err, Error::AddrInUse { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
    std::fs::remove_file(&path).unwrap();
}
