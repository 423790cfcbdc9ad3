//! Setting up a core's `io_uring`, with an error that says why when it cannot be done.

use std::io;

use io_uring::IoUring;

/// `io_uring` could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("io_uring is not available: {reason} ({source})")]
pub struct RingError {
    /// What most likely stopped it, and what to do.
    pub reason: String,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Builds a ring of `entries` for a single-threaded core: SINGLE_ISSUER + DEFER_TASKRUN
/// (completions run only when this thread asks) + TASKRUN_FLAG (the kernel says in shared
/// memory when there is something to run), falling back to COOP_TASKRUN on kernels that lack
/// DEFER_TASKRUN.
pub(crate) fn build(entries: u32) -> Result<IoUring, RingError> {
    let ring = build_ring(entries)?;
    // Registering the ring's own descriptor saves a descriptor lookup on every
    // io_uring_enter (one per loop turn); optional, so a failure is ignored.
    let _ = ring.submitter().register_ring_fd();
    Ok(ring)
}

/// Submits one NOP and waits for its completion: proves `io_uring_enter` works (a seccomp
/// filter can allow `io_uring_setup` and block `io_uring_enter`).
///
/// # Errors
/// [`RingError`] saying that `io_uring_enter` is refused and why it may be.
pub(crate) fn probe_enter(ring: &mut IoUring) -> Result<(), RingError> {
    let nop = io_uring::opcode::Nop::new().build().user_data(u64::MAX);
    let mut sq = ring.submission();
    // SAFETY: a NOP references no memory.
    let pushed = unsafe { sq.push(&nop) }.is_ok();
    drop(sq);
    let enter_failed = |e: io::Error| {
        RingError {
        reason: match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => "io_uring_enter is refused (permission denied): a seccomp filter allows setting a ring up but blocks using it".into(),
            _ => "io_uring_enter failed on a freshly set up ring".into(),
        },
        source: e,
    }
    };
    if !pushed {
        return Err(enter_failed(io::Error::other("submission queue full")));
    }
    ring.submitter().submit_and_wait(1).map_err(enter_failed)?;
    for c in ring.completion() {
        if c.user_data() == u64::MAX && c.result() < 0 {
            return Err(enter_failed(io::Error::from_raw_os_error(-c.result())));
        }
    }
    Ok(())
}

fn build_ring(entries: u32) -> Result<IoUring, RingError> {
    // TASKRUN_FLAG: the kernel raises IORING_SQ_TASKRUN in shared memory when completions
    // wait to be run, so a polling core enters the kernel only when there is work.
    let first = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(entries * 4)
        .build(entries);
    match first {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(entries * 4)
            .build(entries)
            .map_err(explain),
        Err(e) => Err(explain(e)),
    }
}

fn explain(e: io::Error) -> RingError {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let reason = match (e.raw_os_error(), sysctl.as_deref().map(str::trim)) {
        (_, Some("2")) => "the sysctl kernel.io_uring_disabled is 2 (io_uring disabled for everyone); set it to 0".into(),
        (Some(libc::EPERM), Some("1")) => "the sysctl kernel.io_uring_disabled is 1 (only the io_uring_group may use it); set it to 0 or run in that group".into(),
        (Some(libc::ENOSYS), _) => "the kernel has no io_uring (built without CONFIG_IO_URING, or older than 5.1)".into(),
        (Some(libc::EPERM), _) => "permission denied: a seccomp filter (e.g. a container runtime's default profile) blocks io_uring_setup".into(),
        (Some(libc::ENOMEM), _) => "not enough locked memory for the ring: raise RLIMIT_MEMLOCK or use fewer entries".into(),
        (Some(libc::EINVAL), _) => "the kernel rejected the ring parameters: it is too old for the features Netron needs (5.19+), or the ring is larger than it allows".into(),
        _ => "io_uring_setup failed".into(),
    };
    RingError { reason, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_explained() {
        let e = explain(io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(
            e.reason.contains("kernel") || e.reason.contains("sysctl"),
            "{}",
            e.reason
        );
        let e = explain(io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            e.reason.contains("seccomp") || e.reason.contains("io_uring_disabled"),
            "{}",
            e.reason
        );
        let e = explain(io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(
            e.to_string().starts_with("io_uring is not available: "),
            "{e}"
        );
    }

    #[test]
    fn a_ring_builds_here() {
        // The machines this project runs on have io_uring; if this fails, the message says why.
        if let Err(e) = build(8) {
            panic!("{e}");
        }
    }
}
