//! Pinning the calling thread to one CPU, so client and server of a measurement sit on
//! different cores for the whole run.

/// CPUs online (not `available_parallelism()`: that honours the caller's affinity mask, so a
/// thread already pinned to one CPU would see 1).
fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize
}

/// Pins the calling thread to `cpu` (modulo the number of online CPUs).
///
/// Returns `false` (and leaves the thread unpinned) if the kernel refuses.
pub fn pin_to_cpu(cpu: usize) -> bool {
    pin_exact(cpu % online_cpus())
}

/// Pins the calling thread to `cpu` exactly, whatever affinity it inherited; `false` if that
/// CPU is not online or the kernel refuses.
pub fn pin_exact(cpu: usize) -> bool {
    if cpu >= online_cpus() {
        return false;
    }
    // SAFETY: `cpu_set_t` is plain old data for which all-zero bits are a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the number of online CPUs, hence below CPU_SETSIZE on any machine
    // this runs on; CPU_SET only writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is a valid, initialised cpu_set_t and the
    // size passed is its exact size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}
