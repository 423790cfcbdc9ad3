//! The C and C++ examples and the C bad-calls test, built with the system compilers against
//! the library cargo just built, run against each other and against a Rust peer.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use netron_engine::{Engine, Service};

/// The libraries that a program linking `libnetron.a` needs too (`rustc --print
/// native-static-libs` for the std of x86_64/aarch64 Linux; also in netron.pc).
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/deps`, where `cargo test` builds libnetron.a and libnetron.so for this
/// run (it copies them up to `target/<profile>` only on `cargo build`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("target/<profile>/deps");
    assert!(
        dir.join("libnetron.a").exists(),
        "libnetron.a not found in {}",
        dir.display()
    );
    dir.to_path_buf()
}

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi-examples");
    std::fs::create_dir_all(&d).expect("out dir");
    d
}

fn run_compiler(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds a C program against the static library.
fn build_c(name: &str, src: &Path) -> PathBuf {
    let exe = out_dir().join(name);
    run_compiler(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(src)
            .arg(lib_dir().join("libnetron.a"))
            .args(NATIVE_LIBS)
            .arg("-o")
            .arg(&exe),
    );
    exe
}

fn server() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("c-server", &crate_dir().join("examples/c/server.c")))
}

fn client() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("c-client", &crate_dir().join("examples/c/client.c")))
}

/// The C++ client, linked against the shared library (found through its soname).
fn cpp_client() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_cpp("cpp-client", "client.cpp"))
}

/// The C++ streams and events example, linked as `cpp_client`.
fn cpp_streams() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_cpp("cpp-streams", "streams.cpp"))
}

/// Builds `examples/cpp/<source>` against the shared library (through its soname).
fn build_cpp(name: &str, source: &str) -> PathBuf {
    static LIBS: OnceLock<PathBuf> = OnceLock::new();
    let libs = LIBS.get_or_init(|| {
        let libs = out_dir().join("shared");
        std::fs::create_dir_all(&libs).expect("lib dir");
        let so = libs.join("libnetron.so.0");
        let _ = std::fs::remove_file(&so);
        std::fs::copy(lib_dir().join("libnetron.so"), &so).expect("copy libnetron.so");
        let link = libs.join("libnetron.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("libnetron.so.0", &link).expect("symlink");
        libs
    });
    let exe = out_dir().join(name);
    run_compiler(
        Command::new("c++")
            .args([
                "-std=c++17",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-g",
                "-pthread",
            ])
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg("-I")
            .arg(crate_dir().join("examples/cpp"))
            .arg(crate_dir().join("examples/cpp").join(source))
            .arg("-L")
            .arg(libs)
            .arg("-lnetron")
            .arg(format!("-Wl,-rpath,{}", libs.display()))
            .arg("-o")
            .arg(&exe),
    );
    exe
}

/// A running C server and the endpoint it printed.
struct CServer {
    child: Child,
    endpoint: String,
}

impl CServer {
    fn start() -> CServer {
        let mut child = Command::new(server())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the C server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the endpoint");
        let endpoint = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        CServer { child, endpoint }
    }

    /// Closes its stdin (it shuts down) and returns the rest of its output.
    fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out).expect("server output");
        }
        let status = self.child.wait().expect("server exit");
        assert!(status.success(), "server failed: {status:?} {out}");
        out
    }
}

impl Drop for CServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(exe: &Path, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the C client prints against a calc@1.0.0 server.
fn check_client_output(out: &str) {
    let want = [
        "add: 5",
        "add via calc@^1: 2",
        "echo: hello",
        "async: NTR_OK async",
        "nope: NTR_UNIMPLEMENTED",
        "core: 10 calls, sum 45",
        "core prepared: 10 calls, sum 45",
        "done",
    ];
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines, want, "client output:\n{out}");
    assert!(out.starts_with(&format!("libnetron {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn c_client_against_c_server() {
    let server = CServer::start();
    let out = run(client(), &[&server.endpoint]);
    check_client_output(&out);
    let rest = server.stop();
    // add, add via ^1, echo twice, 10 core calls, 10 prepared core calls ("nope" never
    // reaches a handler).
    assert_eq!(rest.trim(), "served 24 calls");
}

/// The same service in Rust.
fn rust_calc() -> Engine {
    let calc = Service::new("calc", "1.0.0")
        .expect("service")
        .unary("add", |req, reply| {
            reply.write(&[req.payload().iter().fold(0u8, |a, b| a.wrapping_add(*b))]);
            Ok(())
        })
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        });
    Engine::builder()
        .cores(1)
        .service(calc)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("engine")
}

#[test]
fn c_client_against_rust_server() {
    let engine = rust_calc();
    let out = run(client(), &[&engine.endpoints()[0].to_string()]);
    check_client_output(&out);
    engine.shutdown(Duration::from_secs(1));
}

#[test]
fn rust_client_against_c_server() {
    let server = CServer::start();
    let engine = Engine::builder().cores(1).build().expect("client engine");
    let ch = engine.client().connect(&server.endpoint).expect("connect");
    let dl = Some(Duration::from_secs(5));
    assert_eq!(
        ch.call("calc@1.0.0", "add", &b"\x01\x02\x03"[..], dl)
            .expect("add"),
        [6]
    );
    assert_eq!(
        ch.call("calc@^1.0", "echo", &b"rust"[..], dl)
            .expect("echo"),
        b"rust"
    );
    let err = ch
        .call("calc@1.0.0", "nope", &b""[..], dl)
        .expect_err("no such method");
    assert_eq!(err.code(), netron_engine::StatusCode::Unimplemented);
    drop(ch);
    engine.shutdown(Duration::from_secs(1));
    assert_eq!(server.stop().trim(), "served 2 calls");
}

#[test]
fn cpp_client_against_c_server() {
    let server = CServer::start();
    let out = run(cpp_client(), &[&server.endpoint]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "add: 12",
            "echo: from C++",
            "error: NTR_UNIMPLEMENTED",
            "done"
        ],
        "C++ client output:\n{out}"
    );
    assert_eq!(server.stop().trim(), "served 2 calls");
}

#[test]
fn cpp_client_against_rust_server() {
    let engine = rust_calc();
    let out = run(cpp_client(), &[&engine.endpoints()[0].to_string()]);
    assert!(out.starts_with("add: 12\necho: from C++\n"), "{out}");
    engine.shutdown(Duration::from_secs(1));
}

#[test]
fn cpp_streams_and_events_against_a_rust_server() {
    let engine = rust_streams();
    let out = run(cpp_streams(), &[&engine.endpoints()[0].to_string()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "server stream: 1000 chunks in order, ended 1",
            "client stream: server counted 1000 in order 1",
            "bidi: 1000 of 1000 echoed in order",
            "events: 10 in order",
            "error: NTR_PERMISSION_DENIED",
            "done"
        ],
        "C++ streams output:\n{out}"
    );
    engine.shutdown(Duration::from_secs(1));
}

#[test]
fn bad_calls_from_c() {
    let exe = build_c("bad-calls", &crate_dir().join("tests/c/bad_calls.c"));
    let out = run(&exe, &[]);
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("bad_calls: ") && last.ends_with(" passed, 0 failed"),
        "{out}"
    );
}

fn streams_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("c-streams", &crate_dir().join("tests/c/streams.c")))
}

/// Chunk `i` of tests/c/streams.c.
fn chunk(i: u32) -> Vec<u8> {
    [i, i.wrapping_mul(2_654_435_761), !i]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// The `st@1.0.0` service of tests/c/streams.c, in Rust.
fn rust_streams() -> Engine {
    use netron_engine::{Bytes, Status, StatusCode};
    let st = Service::new("st", "1.0.0")
        .expect("service")
        .server_stream("count", |_, req, mut tx| async move {
            let n = u32::from_le_bytes(
                req[..]
                    .try_into()
                    .map_err(|_| Status::new(StatusCode::InvalidArgument, "a uint32 request"))?,
            );
            for i in 0..n {
                tx.send(chunk(i)).await?;
            }
            Ok(())
        })
        .client_stream("sum", |_, mut rx| async move {
            let (mut n, mut in_order) = (0u32, 1u32);
            while let Some(m) = rx.recv().await {
                if m?[..] != chunk(n)[..] {
                    in_order = 0;
                }
                n += 1;
            }
            let mut reply = n.to_le_bytes().to_vec();
            reply.extend_from_slice(&in_order.to_le_bytes());
            Ok(Bytes::from(reply))
        })
        .bidi_stream("echo", |_, mut rx, mut tx| async move {
            while let Some(m) = rx.recv().await {
                tx.send(m?).await?;
            }
            Ok(())
        })
        .bidi_stream("cancel", |_, _, _| async move {
            Err(Status::new(
                StatusCode::Cancelled,
                "cancelled by the handler",
            ))
        })
        .bidi_stream("deny", |_, _, _| async move {
            Err(Status::new(StatusCode::PermissionDenied, "denied"))
        });
    Engine::builder()
        .cores(1)
        .service(st)
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("engine")
}

fn check_streams_output(out: &str) {
    for want in [
        "channel server stream: 10000 chunks in order",
        "channel client stream: server counted 10000 in order 1",
        "channel bidi: 10000 echoed in order",
        "core server stream: 10000 chunks in order",
        "core client stream: server counted 10000",
        "core bidi: 10000 echoed in order",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("streams: ") && last.ends_with(" passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn c_streams_against_c_streams() {
    check_streams_output(&run(streams_exe(), &[]));
}

#[test]
fn c_streams_against_a_rust_server() {
    let engine = rust_streams();
    let out = run(streams_exe(), &[&engine.endpoints()[0].to_string()]);
    check_streams_output(&out);
    engine.shutdown(Duration::from_secs(1));
}

#[test]
fn c_publish_subscribe() {
    let exe = build_c("c-events", &crate_dir().join("tests/c/events.c"));
    let out = run(&exe, &[]);
    for want in [
        "two subscribers: 100 and 100 events in order",
        "queue group: 100 events, each once",
        "engine subscription: 10 chat events",
        "core subscription: 100 events in order",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("events: ") && last.ends_with(" passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn c_core_driven_from_poll() {
    let exe = build_c("c-poll", &crate_dir().join("tests/c/poll.c"));
    for driver in ["io_uring", "epoll"] {
        let out = Command::new(&exe)
            .env("NETRON_DRIVER", driver)
            .output()
            .expect("run");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.contains(
                "poll: 20 calls answered from other threads, deadline NTR_DEADLINE_EXCEEDED, 20 events"
            ),
            "{driver}: {out}"
        );
        assert!(
            out.contains("poll streams: NTR_END_OF_STREAM, NTR_DEADLINE_EXCEEDED"),
            "{driver}: {out}"
        );
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("poll: ") && last.ends_with(" passed, 0 failed"),
            "{driver}: {out}"
        );
    }
}
