//! Transport-specific: `inproc://` connections when the process runs out of descriptors.
//! Alone in its binary: it lowers the process's `RLIMIT_NOFILE`.

use std::time::Duration;

use netron_engine::Engine;
use netron_tests::calc;

const DL: Option<Duration> = Some(Duration::from_secs(5));

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// Sets the soft limit on descriptors; returns the previous one.
fn set_nofile(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let old = lim.rlim_cur;
    lim.rlim_cur = n.min(lim.rlim_max);
    // SAFETY: `lim` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

/// An in-process connection costs descriptors (eventfd doorbells and their duplicates). When
/// the process has none left, a connect fails with the OS's reason; it must not blame
/// `RuntimeConfig::max_connections`, which a user would then raise for nothing (the client
/// core's link setup, which duplicates the doorbell, used to report exactly that). Connections
/// made before keep working, and connects work again once descriptors are available.
#[test]
fn connects_that_run_out_of_descriptors_say_so() {
    let ep = format!("inproc://netron-fd-limit-{}", std::process::id());
    let _server = Engine::builder()
        .cores(1)
        .service(calc())
        .listen(&ep)
        .build()
        .unwrap();
    let c = Engine::builder().cores(1).build().unwrap();
    let mut chans = Vec::new();
    let mut errors = Vec::new();
    for room in [2, 3, 4, 40] {
        // Room for the connection's two eventfds, and for few or none of their duplicates.
        let saved = set_nofile(open_fds() + room);
        for _ in 0..3 {
            match c.client().connect_timeout(&ep, Duration::from_secs(5)) {
                Ok(ch) => chans.push(ch),
                Err(s) => errors.push(s),
            }
        }
        set_nofile(saved);
    }
    assert!(
        !errors.is_empty(),
        "connects with no descriptors left succeeded"
    );
    for s in &errors {
        assert!(
            !s.to_string().contains("max_connections"),
            "a connect that ran out of descriptors blames the connection limit: {s}"
        );
    }
    for ch in &chans {
        assert_eq!(
            ch.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
            [3]
        );
    }
    let ch = c.client().connect(&ep).unwrap();
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
}
