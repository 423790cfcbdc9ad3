//! Bounds on how long the suite may wait, so a hang fails fast and names itself instead of
//! holding a CI run until its job is killed with no word of which test hung:
//!
//! - [`Armed`]: every suite test body runs with one; a test still running after [`hang`] is
//!   taken for a hang: its name and how long it ran are printed and the process aborts (the
//!   test harness cannot stop one thread; a parent running this binary sees the abort).
//! - [`run_child`]: child processes of the suite (isolated tests, the re-run on another
//!   driver) write into files, not pipes (a grandchild that keeps a pipe open cannot hold us),
//!   and are killed at their deadline, the failure carrying what they printed.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one suite test may run (lock waits excluded) before it is taken for a hang: 30×
/// the slowest test's time on the 2-CPU CI machine (the streams of 100k chunks, ~10 s under
/// load), so a slow machine is not mistaken for a hang. `NETRON_TESTS_HANG` (seconds)
/// overrides it, e.g. to see the watchdog fire.
pub fn hang() -> Duration {
    static HANG: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *HANG.get_or_init(|| {
        std::env::var("NETRON_TESTS_HANG")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(300), Duration::from_secs)
    })
}

/// The tests running now: id → (name, started).
static RUNNING: Mutex<Option<HashMap<u64, (String, Instant)>>> = Mutex::new(None);
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A suite test being watched; dropping it (the test ended, or panicked) stops the watch.
pub struct Armed(u64);

impl Armed {
    /// Watches the calling thread's test (libtest names each test's thread after the test).
    pub fn arm() -> Self {
        let name = std::thread::current()
            .name()
            .unwrap_or("(an unnamed test thread)")
            .to_owned();
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_none() {
            std::thread::Builder::new()
                .name("netron-tests watchdog".into())
                .spawn(watch)
                .expect("spawn the suite's watchdog thread");
        }
        running
            .get_or_insert_with(HashMap::new)
            .insert(id, (name, Instant::now()));
        Self(id)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = running.as_mut() {
            map.remove(&self.0);
        }
    }
}

/// The watchdog thread: once a second, aborts the process if a test has run past [`hang`].
fn watch() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let limit = hang();
        let hung = running
            .iter()
            .flatten()
            .find(|(_, (_, t))| t.elapsed() > limit);
        if let Some((_, (name, started))) = hung {
            let msg = format!(
                "netron-tests watchdog: {name} has run for {:?} (the limit, NETRON_TESTS_HANG, is {limit:?}): \
                 taken for a hang, aborting the test process",
                started.elapsed()
            );
            // Both streams, written directly: `println!` from this thread would go into the
            // capture buffer of the test that started it (spawned threads inherit it), lost at
            // the abort; and a parent process may read only one of the streams.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{msg}").and_then(|()| std::io::stdout().flush());
            let _ = writeln!(std::io::stderr(), "{msg}");
            std::process::abort();
        }
    }
}

/// What a child process left: its exit status (`None`: killed at its deadline) and
/// everything it wrote on stdout and stderr.
pub struct ChildOutput {
    /// The exit status, or `None` if the child was killed at its deadline.
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ChildOutput {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// How the child ended, in words, for failure messages.
    pub fn ending(&self, limit: Duration) -> String {
        match self.status {
            Some(s) => format!("{s}"),
            None => format!(
                "killed after {limit:?}, taken for a hang (tests it reported as running long: {})",
                self.stdout
                    .lines()
                    .filter(|l| l.contains("has been running for over"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Runs `cmd` with its stdout and stderr in temporary files and no stdin, killing it if it
/// has not exited after `limit`.
///
/// # Panics
/// If the files cannot be made or the child cannot be started (a harness failure, named).
pub fn run_child(mut cmd: Command, limit: Duration) -> ChildOutput {
    let out = tempfile("stdout");
    let err = tempfile("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup the child's stdout file"))
        .stderr(err.try_clone().expect("dup the child's stderr file"))
        .spawn()
        .expect("run the child");
    let end = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for the child") {
            Some(s) => break Some(s),
            None if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    ChildOutput {
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

/// An anonymous temporary file (unlinked at once: nothing is left behind, whatever happens).
fn tempfile(what: &str) -> std::fs::File {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "netron-tests-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("the child's {what} file {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    file
}

fn read_all(mut file: std::fs::File) -> String {
    use std::io::Seek;
    let mut bytes = Vec::new();
    let _ = file.seek(std::io::SeekFrom::Start(0));
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
