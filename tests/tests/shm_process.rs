//! `shm://` between two real processes (issue 19): the other process is this test binary
//! re-run with an environment variable naming its part (as tests/tests/epoll_fallback.rs does).
//!
//! - a server killed with SIGKILL mid-call: the in-flight call fails Unavailable (not at its
//!   deadline), later calls fail at once; before that, calls and a frame larger than the ring
//!   cross the processes;
//! - a client killed with SIGKILL mid-call: the server closes that connection, unmaps its
//!   segment and serves another client;
//! - a client that scribbles over the whole segment while its calls run: the server's core
//!   neither panics nor hangs, the connection is dropped with a counter, others are served;
//! - handlers and interceptors see a child client's uid, gid and pid (`peer_cred`); an
//!   `allow_uid` refusal is named to the client and counted by the server (one process);
//! - the same scribbler under a typed FlatBuffers handler (`Request::root`), on an untrusting server
//!   (everything above holds) and on a `trust_peer` server in a child process (only what
//!   `trust_peer` promises: it dies of a signal or still serves, never hangs).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netron_engine::{Engine, Service, StatusCode};

/// The child's part (`server`, `client`, `scribbler`) and the `shm://` name it uses.
const PART: &str = "NETRON_TESTS_SHM_PART";
const NAME: &str = "NETRON_TESTS_SHM_NAME";

/// A service whose method never answers in time (its handler sleeps a minute).
fn hang() -> Service {
    Service::new("hang", "1.0.0")
        .expect("valid service")
        .unary("forever", |_, reply| {
            std::thread::sleep(Duration::from_secs(60));
            reply.write(b"late");
            Ok(())
        })
}

/// `typed@1.0.0/describe`: a typed FlatBuffers handler (`Request::root`) that reads every
/// field of its `ErrorBody` request (status, message, each byte of details) and answers their
/// sum; counts the requests it verified and those it refused.
fn typed(seen: Arc<[AtomicU64; 2]>) -> Service {
    use netron_codec::wire::ErrorBody;
    Service::new("typed", "1.0.0")
        .expect("valid service")
        .unary("describe", move |req, reply| {
            let body = match req.root::<ErrorBody>() {
                Ok(b) => b,
                Err(e) => {
                    seen[1].fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            seen[0].fetch_add(1, Ordering::Relaxed);
            let mut sum = u64::from(body.status().0);
            sum += body.message().map_or(0, |m| m.bytes().map(u64::from).sum());
            sum += body.details().map_or(0, |d| d.iter().map(u64::from).sum());
            reply.write(&sum.to_le_bytes());
            Ok(())
        })
}

/// An `ErrorBody` request: status 7, a 40-byte message and 64 bytes of details.
fn typed_request() -> Vec<u8> {
    use netron_codec::wire::{ErrorBody, ErrorBodyArgs, StatusCode as WireStatus};
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let message = fbb.create_string(&"m".repeat(40));
    let details = fbb.create_vector(&[3u8; 64]);
    let body = ErrorBody::create(
        &mut fbb,
        &ErrorBodyArgs {
            status: WireStatus(7),
            message: Some(message),
            details: Some(details),
        },
    );
    fbb.finish_minimal(body);
    fbb.finished_data().to_vec()
}

/// What [`typed`] answers to [`typed_request`].
const TYPED_SUM: u64 = 7 + 40 * b'm' as u64 + 64 * 3;

fn fresh_name(tag: &str) -> String {
    format!("netron-shm-process-{}-{tag}", std::process::id())
}

/// Starts this binary as the child playing `part` in `test`, and waits for its "ready" line.
/// The caller waits for the child it gets (a panic on the way leaves the child to its stdin's
/// end, which ends it).
#[allow(clippy::zombie_processes)]
fn spawn(test: &str, part: &str, name: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(PART, part)
        .env(NAME, name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let status = child.wait();
            panic!("the {part} child exited before it was ready: {status:?}");
        }
        if line.trim_end().ends_with("ready") {
            return (child, out);
        }
    }
}

/// The child's part, if this process is a child: runs it and returns `true`.
fn child_part() -> bool {
    let (Some(part), Some(name)) = (std::env::var_os(PART), std::env::var_os(NAME)) else {
        return false;
    };
    let name = name.into_string().unwrap();
    match part.to_str().unwrap() {
        "server" => {
            let e = Engine::builder()
                .cores(1)
                .service(netron_tests::calc())
                .service(hang())
                .listen(&format!("shm://{name}"))
                .build()
                .unwrap();
            println!("ready");
            // Until the parent closes our stdin (or kills us).
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(e);
        }
        "client" => {
            let e = Engine::builder().cores(1).build().unwrap();
            let ch = e.client().connect(&format!("shm://{name}")).unwrap();
            assert_eq!(
                ch.call("calc@1.2.0", "add", &[1u8, 2][..], None).unwrap(),
                [3]
            );
            println!("ready");
            // Killed during these calls (the server's handler sleeps 200 ms each).
            let _ = ch.call("calc@1.2.0", "sleep", &[200u8][..], None);
            let _ = ch.call("calc@1.2.0", "sleep", &[200u8][..], None);
        }
        "whoami" => {
            let e = Engine::builder().cores(1).build().unwrap();
            let ch = e.client().connect(&format!("shm://{name}")).unwrap();
            println!("ready");
            for method in ["whoami", "whoami_async"] {
                let got = ch.call("creds@1.0.0", method, &[][..], None).unwrap();
                println!("{method} {}", String::from_utf8_lossy(&got));
            }
        }
        "scribbler" => scribble(&name, false),
        "typed-scribbler" => scribble(&name, true),
        "trusting-server" => {
            let e = Engine::builder()
                .cores(1)
                .service(netron_tests::calc())
                .service(typed(Arc::default()))
                .listen(&format!("shm://{name}?trust_peer"))
                .build()
                .unwrap();
            println!("ready");
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(e);
        }
        other => panic!("unknown part {other}"),
    }
    true
}

#[test]
fn a_server_killed_mid_call_fails_the_call_unavailable() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("server-killed");
    let (mut child, _out) = spawn(
        "a_server_killed_mid_call_fails_the_call_unavailable",
        "server",
        &name,
    );
    let e = Engine::builder().cores(1).build().unwrap();
    let ch = e.client().connect(&format!("shm://{name}")).unwrap();
    let dl = Some(Duration::from_secs(30));
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[20u8, 22][..], dl).unwrap(),
        [42]
    );
    // A frame three times the 1 MiB ring: fragmented both ways (protocol.md §26.3).
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let back = ch.call("calc@1.2.0", "echo", big.clone(), dl).unwrap();
    assert!(back == big, "the 3 MiB echo came back changed");

    let caller = {
        let ch = ch.clone();
        std::thread::spawn(move || ch.call("hang@1.0.0", "forever", &[][..], dl))
    };
    // Let the request reach the child's handler, then kill the child.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let err = caller.join().unwrap().unwrap_err();
    assert_eq!(
        err.code(),
        StatusCode::Unavailable,
        "the in-flight call must fail because the server died, not at its deadline: {err}"
    );
    let err = ch.call("calc@1.2.0", "add", &[1u8][..], dl).unwrap_err();
    assert_eq!(err.code(), StatusCode::Unavailable, "{err}");
    e.shutdown(Duration::from_secs(1));
}

/// The tests of this binary one at a time: they count this process's segment mappings.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mappings of netron-shm segments in this process.
fn segments() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:netron-shm"))
        .count()
}

/// An engine serving `calc@1.2.0` on `shm://name`.
fn calc_server(name: &str) -> Engine {
    Engine::builder()
        .cores(1)
        .service(netron_tests::calc())
        .listen(&format!("shm://{name}"))
        .build()
        .unwrap()
}

/// A client engine and its channel to `shm://name`.
fn client_of(name: &str) -> (Engine, netron_engine::Channel) {
    let c = Engine::builder().cores(1).build().unwrap();
    let ch = c.client().connect(&format!("shm://{name}")).unwrap();
    (c, ch)
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < end, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_killed_mid_call_frees_its_segment_and_others_are_served() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("client-killed");
    let e = calc_server(&name);
    let before = segments();
    let (mut child, _out) = spawn(
        "a_client_killed_mid_call_frees_its_segment_and_others_are_served",
        "client",
        &name,
    );
    assert_eq!(segments(), before + 1, "the child's segment is mapped here");
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the server closes the dead client's connection", || {
        e.total_stats().closed() >= 1
    });
    wait_until("the dead client's segment is unmapped", || {
        segments() == before
    });
    let (c, ch) = client_of(&name);
    let dl = Some(Duration::from_secs(30));
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[20u8, 22][..], dl).unwrap(),
        [42]
    );
    c.shutdown(Duration::from_secs(1));
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn a_client_scribbling_on_the_segment_is_cut_off_and_others_are_served() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("scribbler");
    let e = calc_server(&name);
    let (mut child, _out) = spawn(
        "a_client_scribbling_on_the_segment_is_cut_off_and_others_are_served",
        "scribbler",
        &name,
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "the scribbler failed: {status}");
    wait_until("the scribbler's connection is closed", || {
        e.total_stats().closed() >= 1
    });
    let stats = e.total_stats();
    let errors: u64 = stats.errors().values().sum();
    println!("counters after the scribbler: {:?}", stats.errors());
    assert!(
        errors >= 1,
        "a segment overwritten everywhere went unnoticed: {:?}",
        stats.errors()
    );
    // The core is alive and serves others.
    let (c, ch) = client_of(&name);
    let dl = Some(Duration::from_secs(30));
    for i in 0..100u8 {
        assert_eq!(
            ch.call("calc@1.2.0", "add", vec![i, 1], dl).unwrap(),
            [i.wrapping_add(1)]
        );
    }
    c.shutdown(Duration::from_secs(1));
    e.shutdown(Duration::from_secs(1));
}

/// `creds@1.0.0`: `whoami` (sync) and `whoami_async` answer `uid gid pid` of the calling
/// process as `Request::peer_cred` / `AsyncRequest::peer_cred` give them (`none` without).
fn creds() -> Service {
    fn text(c: Option<netron_engine::shm::PeerCred>) -> Vec<u8> {
        c.map_or_else(
            || b"none".to_vec(),
            |c| format!("{} {} {}", c.uid, c.gid, c.pid).into_bytes(),
        )
    }
    Service::new("creds", "1.0.0")
        .expect("valid service")
        .unary("whoami", |req, reply| {
            reply.write(&text(req.peer_cred()));
            Ok(())
        })
        .unary_async("whoami_async", |req| async move {
            Ok(text(req.peer_cred()).into())
        })
}

/// Records what `Before::peer_cred` says for every call.
#[derive(Default, Clone)]
struct SeenCreds(Arc<std::sync::Mutex<Vec<Option<netron_engine::shm::PeerCred>>>>);

impl netron_engine::Interceptor for SeenCreds {
    fn before(&self, call: &mut netron_engine::Before<'_>) -> Result<(), netron_engine::Status> {
        self.0.lock().unwrap().push(call.peer_cred());
        Ok(())
    }
}

/// Handlers (sync and async) and interceptors see the calling process's uid, gid and pid on
/// an `shm://` connection (`SO_PEERCRED` of the rendezvous socket), here a child process's;
/// and nothing on an `inproc://` one.
#[test]
fn handlers_and_interceptors_see_the_shm_callers_credentials() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("creds");
    let seen = SeenCreds::default();
    let inproc = format!("inproc://{name}");
    let e = Engine::builder()
        .cores(1)
        .service(creds())
        .interceptor(seen.clone())
        .listen(&format!("shm://{name}"))
        .listen(&inproc)
        .build()
        .unwrap();
    let (mut child, mut out) = spawn(
        "handlers_and_interceptors_see_the_shm_callers_credentials",
        "whoami",
        &name,
    );
    let mut lines = String::new();
    out.read_to_string(&mut lines).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the whoami child failed: {status}");
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let expected = format!("{uid} {gid} {}", child.id());
    for method in ["whoami", "whoami_async"] {
        assert!(
            lines.contains(&format!("{method} {expected}\n")),
            "{method}: expected the child's credentials {expected:?}, got {lines:?}"
        );
    }
    let mine = netron_engine::shm::PeerCred::clone(
        seen.0.lock().unwrap()[0]
            .as_ref()
            .expect("the interceptor saw no credentials"),
    );
    assert_eq!(
        (mine.uid, mine.gid, i64::from(mine.pid)),
        (uid, gid, i64::from(child.id()))
    );
    assert!(seen.0.lock().unwrap().iter().all(|c| *c == Some(mine)));
    // In process there is no peer process: nothing.
    let ch = e.client().connect(&inproc).unwrap();
    let dl = Some(Duration::from_secs(10));
    assert_eq!(
        ch.call("creds@1.0.0", "whoami", &[][..], dl).unwrap(),
        b"none"[..]
    );
    assert_eq!(seen.0.lock().unwrap().last(), Some(&None));
    e.shutdown(Duration::from_secs(1));
}

/// Fresh user finding 4: a client refused by `allow_uid` used to get a bare "Broken pipe" and
/// the server counted nothing. Now the client's error says the server refused it by its
/// allow_uid list, and the server counts `shm_refused_uid` (then serves an allowed client).
#[test]
fn an_allow_uid_refusal_is_named_to_the_client_and_counted_by_the_server() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("refused");
    let me = rustix::process::getuid().as_raw();
    let e = Engine::builder()
        .cores(2)
        .service(netron_tests::calc())
        .listen(&format!("shm://{name}?allow_uid={}", me.wrapping_add(1)))
        .listen(&format!("shm://{name}-ok?allow_uid={me}"))
        .build()
        .unwrap();
    let c = Engine::builder().cores(1).build().unwrap();
    for _ in 0..2 {
        let err = c
            .client()
            .connect(&format!("shm://{name}"))
            .expect_err("a user not in allow_uid connected");
        let text = err.to_string();
        assert!(
            text.contains("refused") && text.contains("allow_uid"),
            "the client's error does not name the refusal: {text}"
        );
        assert!(!text.contains("Broken pipe"), "{text}");
    }
    wait_until("the server counts both refusals", || {
        e.total_stats().errors().get("shm_refused_uid").copied() == Some(2)
    });
    let ch = c.client().connect(&format!("shm://{name}-ok")).unwrap();
    let dl = Some(Duration::from_secs(10));
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[2u8, 3][..], dl).unwrap(),
        [5]
    );
    c.shutdown(Duration::from_secs(1));
    e.shutdown(Duration::from_secs(1));
}

/// The scribbler again, its calls going to a typed FlatBuffers handler (`Request::root` and
/// reads of every field) on an untrusting server (the default): the server's core neither
/// panics, reads out of bounds nor hangs (each record is copied before it is parsed, and the
/// handler verifies that private copy), the connection is dropped with a counter, and another
/// client's typed calls are answered exactly.
#[test]
fn a_client_scribbling_under_typed_handlers_is_cut_off_and_others_are_served() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("typed-scribbler");
    let seen: Arc<[AtomicU64; 2]> = Arc::default();
    let e = Engine::builder()
        .cores(1)
        .service(typed(seen.clone()))
        .listen(&format!("shm://{name}"))
        .build()
        .unwrap();
    let (mut child, _out) = spawn(
        "a_client_scribbling_under_typed_handlers_is_cut_off_and_others_are_served",
        "typed-scribbler",
        &name,
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "the scribbler failed: {status}");
    wait_until("the scribbler's connection is closed", || {
        e.total_stats().closed() >= 1
    });
    let stats = e.total_stats();
    let errors: u64 = stats.errors().values().sum();
    println!(
        "typed handler: {} requests verified, {} refused; counters: {:?}",
        seen[0].load(Ordering::Relaxed),
        seen[1].load(Ordering::Relaxed),
        stats.errors()
    );
    assert!(
        errors >= 1,
        "a segment overwritten everywhere went unnoticed: {:?}",
        stats.errors()
    );
    assert!(
        seen[0].load(Ordering::Relaxed) + seen[1].load(Ordering::Relaxed) >= 1,
        "no scribbled call reached the typed handler"
    );
    let (c, ch) = client_of(&name);
    let dl = Some(Duration::from_secs(30));
    let req = typed_request();
    for _ in 0..100 {
        let got = ch.call("typed@1.0.0", "describe", req.clone(), dl).unwrap();
        assert_eq!(got, TYPED_SUM.to_le_bytes());
    }
    c.shutdown(Duration::from_secs(1));
    e.shutdown(Duration::from_secs(1));
}

/// The typed scribbler against a server that trusts its peer (`shm://name?trust_peer`),
/// which runs in a child process of its own. What `trust_peer` promises (docs/shm.md,
/// "Lending ring memory"): the engine's own lengths and offsets are read once, so its own
/// bounds checks hold whatever the peer writes; what it does not promise: a handler's typed
/// reads verify the payload in place, in shared memory, so a peer rewriting it after the
/// verification can send FlatBuffers accessors (which do not re-check offsets) anywhere: the
/// server may read garbage or die of a memory fault. The test asserts only what is promised
/// either way: the server either died of a signal, or still answers a new client in time (no
/// hang, no core wedged); it prints which.
#[test]
fn a_scribbler_against_a_trusting_server_is_not_promised_typed_reads() {
    if child_part() {
        return;
    }
    let _serial = serial();
    let name = fresh_name("trusting");
    let test = "a_scribbler_against_a_trusting_server_is_not_promised_typed_reads";
    let (mut server, _sout) = spawn(test, "trusting-server", &name);
    let (mut scribbler, _out) = spawn(test, "typed-scribbler", &name);
    let status = scribbler.wait().unwrap();
    assert!(status.success(), "the scribbler failed: {status}");
    std::thread::sleep(Duration::from_millis(200));
    match server.try_wait().unwrap() {
        Some(st) => {
            use std::os::unix::process::ExitStatusExt;
            println!("trust_peer: the server died: {st}");
            assert!(
                st.signal().is_some(),
                "the trusting server exited without a signal: {st}"
            );
        }
        None => {
            let (c, ch) = client_of(&name);
            let got = ch
                .call(
                    "typed@1.0.0",
                    "describe",
                    typed_request(),
                    Some(Duration::from_secs(10)),
                )
                .unwrap();
            assert_eq!(got, TYPED_SUM.to_le_bytes());
            println!("trust_peer: the server survived and serves a new client");
            c.shutdown(Duration::from_secs(1));
            drop(server.stdin.take());
            server.wait().unwrap();
        }
    }
}

/// The hostile client: a hand-made Netron client on the raw rings (to `typed@1.0.0` when
/// `typed`, else `calc@1.2.0`) that has one batch of clean calls answered (so the handler
/// has run), then sends calls while a second thread writes random bytes at random places of
/// everything in the segment the server reads (the header, ring 1's control block, ring 0's
/// data); at the end it fills the whole client → server ring with garbage and rings the
/// server's doorbell. While scribbling it reads nothing and leaves ring 0's control block (read only by its own producer) alone, so it never
/// finds the segment corrupt and closes first: the server has to notice by itself.
fn scribble(name: &str, typed: bool) {
    use netron_codec::hpack::HeaderEncoder;
    use netron_codec::{BatchEncoder, Limits};

    let conn = netron_shm::ShmConnection::connect(name).unwrap();
    let (base, len) = conn.raw_segment();
    let (mut tx, mut rx) = conn.split();
    let mut hello = Vec::new();
    netron_codec::handshake::ClientHandshake::new(Default::default())
        .start(&mut hello)
        .unwrap();
    let pre = netron_codec::handshake::PREFACE.len();
    tx.send(&hello[..pre]).unwrap();
    tx.send(&hello[pre..]).unwrap();
    tx.publish().unwrap();
    rx.wait(Some(Instant::now() + Duration::from_secs(10)))
        .unwrap();
    rx.read().unwrap().expect("the Welcome");
    rx.release();
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut id = 1u32;
    let (service, method, payload): (&[u8], &[u8], Vec<u8>) = if typed {
        (b"typed@1.0.0", b"describe", typed_request())
    } else {
        (b"calc@1.2.0", b"add", vec![20, 22])
    };
    // One batch of clean calls answered before any scribbling: the handler has run.
    let clean = batch(&mut b, &mut enc, &mut id, (service, method, &payload));
    tx.send(clean).unwrap();
    tx.publish().unwrap();
    rx.wait(Some(Instant::now() + Duration::from_secs(10)))
        .unwrap();
    rx.read().unwrap().expect("the first replies");
    rx.release();
    println!("ready");

    // SAFETY: `base..base + len` is this process's mapping of the segment, alive while `tx`
    // and `rx` are (they hold it): it is read here before any scribbling starts.
    let word = |off: usize| unsafe { base.wrapping_add(off).cast::<u64>().read_volatile() };
    let (data0, cap0) = (word(40) as usize, word(48) as usize);
    let base_addr = base as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // The header and ring 1's control block (0..640), or ring 0's data.
                let pick = (x >> 16) as usize % (256 + cap0);
                let off = match pick {
                    0..128 => pick,
                    128..256 => 384 + 2 * (pick - 128),
                    _ => data0 + (pick - 256),
                };
                if off >= len {
                    continue;
                }
                // SAFETY: `off < len`, inside the mapping, which outlives this thread (it is
                // joined before `tx` and `rx` drop). The other process may write the same
                // bytes: that is the point (shared memory, volatile byte stores).
                unsafe { ((base_addr + off) as *mut u8).write_volatile(x as u8) };
                n += 1;
                if n % 256 == 0 {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        })
    };
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        let calls = batch(&mut b, &mut enc, &mut id, (service, method, &payload));
        if tx.send(calls).is_err() || tx.publish().is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    scribbler.join().unwrap();
    if data0.checked_add(cap0).is_some_and(|e| e <= len) {
        // SAFETY: the client → server data area, inside the mapping (checked above).
        unsafe { std::ptr::write_bytes(base.wrapping_add(data0), 0xA5, cap0) };
    }
    if let Some(fd) = tx.doorbell_fd() {
        let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
    }
    // Give the server time to look before our exit closes the connection anyway.
    std::thread::sleep(Duration::from_millis(300));
    println!("scribbled");
}

/// Eight requests of `(service, method, payload)` in `b` (cleared first), ids from `id` on.
fn batch<'b>(
    b: &'b mut netron_codec::BatchEncoder,
    enc: &mut netron_codec::hpack::HeaderEncoder,
    id: &mut u32,
    (service, method, payload): (&[u8], &[u8], &[u8]),
) -> &'b [u8] {
    use netron_codec::hpack::Header;
    b.clear();
    for _ in 0..8 {
        let r = b
            .request(*id, None)
            .and_then(|f| f.headers(enc, &[Header::service(service), Header::method(method)]));
        match r {
            Ok(f) => {
                let _ = f.payload(payload).finish();
            }
            Err(_) => break,
        }
        *id += 2;
    }
    b.as_slice()
}
