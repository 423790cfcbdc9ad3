//! Where io_uring is blocked (a seccomp filter, as the default profiles of recent container
//! runtimes install), an engine starts on the epoll driver, reports the fallback and why, and
//! serves calls; a core told to use io_uring only fails with a clear error instead. The filter
//! is installed in a child process (this test re-run), so the rest of the run keeps io_uring.

use std::time::Duration;

use netron_engine::{
    Core, CoreConfig, DRIVER_ENV, DriverChoice, DriverKind, Engine, RuntimeConfig,
};

const CHILD: &str = "NETRON_TESTS_SECCOMP_CHILD";
const NAME: &str = "an_engine_falls_back_to_epoll_where_seccomp_blocks_io_uring";

#[test]
fn an_engine_falls_back_to_epoll_where_seccomp_blocks_io_uring() {
    if std::env::var_os(CHILD).is_some() {
        in_the_child();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove(DRIVER_ENV)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("fallback checked"),
        "the child failed:\n{text}"
    );
}

fn in_the_child() {
    // Before the filter: io_uring works here, or the host already blocks it (a container):
    // then the filter changes nothing and the fallback below is the host's own.
    let before = Core::new(CoreConfig::default()).unwrap();
    if before.driver().kind != DriverKind::IoUring {
        println!(
            "io_uring is already blocked here: {:?}",
            before.driver().fallback
        );
    }
    drop(before);

    seccomp::refuse_io_uring();

    let engine = Engine::builder()
        .cores(1)
        .service(netron_tests::calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("an engine starts without io_uring");
    let info = &engine.drivers()[0];
    assert_eq!(info.kind, DriverKind::Epoll);
    let why = info.fallback.clone().expect("the fallback says why");
    assert!(why.contains("io_uring"), "{why}");
    let ch = engine
        .client()
        .connect(&engine.endpoints()[0].to_string())
        .unwrap();
    for i in 0..100u8 {
        let args = netron_engine::Bytes::copy_from_slice(&[i, 1]);
        let r = ch
            .call("calc@1.2.0", "add", args, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(r, [i.wrapping_add(1)]);
    }
    // Told to use io_uring only: a clear error, no core.
    let err = Core::new(RuntimeConfig::default().with_driver(DriverChoice::IoUring)).unwrap_err();
    assert!(err.to_string().contains("io_uring"), "{err}");
    engine.shutdown(Duration::from_secs(1));
    println!("fallback checked: {why}");
}

/// A seccomp filter that makes `io_uring_setup`, `io_uring_enter` and `io_uring_register`
/// fail with `EPERM`, as Docker's and containerd's default profiles do.
mod seccomp {
    /// `struct sock_filter` (linux/filter.h).
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }

    /// `struct sock_fprog` (linux/filter.h).
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }

    const fn stmt(code: u32, k: u32) -> SockFilter {
        SockFilter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// The io_uring system calls share their numbers on every architecture (asm-generic).
    const IO_URING_SETUP: u32 = 425;
    const IO_URING_REGISTER: u32 = 427;

    pub(super) fn refuse_io_uring() {
        // seccomp_data: nr at offset 0.
        let ld_nr = stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0);
        let prog = [
            ld_nr,
            // nr < 425 → allow; nr <= 427 → EPERM; else allow.
            SockFilter {
                code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
                jt: 0,
                jf: 2,
                k: IO_URING_SETUP,
            },
            SockFilter {
                code: (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16,
                jt: 1,
                jf: 0,
                k: IO_URING_REGISTER,
            },
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            ),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let fprog = SockFprog {
            len: prog.len() as u16,
            filter: prog.as_ptr(),
        };
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only; it lets an
        // unprivileged process install a filter.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fprog` points to `prog`, a valid classic BPF program of `len` instructions
        // that outlives the call (the kernel copies it); the filter applies to this thread
        // and, with TSYNC, every thread of the process.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &fprog as *const SockFprog,
            )
        };
        assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}
