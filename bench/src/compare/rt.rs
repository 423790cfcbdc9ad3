//! Tokio plumbing shared by the tokio peers (tonic, tarpc): the two runtime set-ups, a server
//! thread, and the client workload (round trips, CPU per call, pipelined calls/s).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::sync::oneshot;

use super::{DEPTHS, Workload, cpu_ns};
use crate::pin::pin_exact;
use crate::stats::Samples;

/// How a tokio peer runs its two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// One `current_thread` runtime per side: client thread on cpu0, server thread on cpu1.
    CurrentThread,
    /// tokio's default `multi_thread` runtime on each side (a worker per CPU), unpinned.
    MultiThread,
}

impl Flavor {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread (pinned)",
            Flavor::MultiThread => "multi_thread (default)",
        }
    }

    fn runtime(self) -> Runtime {
        match self {
            Flavor::CurrentThread => Builder::new_current_thread().enable_all().build(),
            Flavor::MultiThread => Builder::new_multi_thread().enable_all().build(),
        }
        .expect("tokio runtime")
    }
}

/// Lets the calling thread run on every online CPU again (threads inherit their creator's
/// affinity, and the bench's main thread is pinned to cpu0).
fn unpin() {
    // SAFETY: sysconf has no preconditions.
    let n = (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize;
    // SAFETY: all-zero bits are a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..n {
        // SAFETY: cpu < online CPUs < CPU_SETSIZE; CPU_SET only writes inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is this thread; `set` is initialised and its exact size is passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// A server running on its own thread until dropped.
pub(crate) struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `serve(listener, stop)` on a server thread with `flavor`'s runtime (pinned to cpu1
/// for `CurrentThread`), on a listener bound to 127.0.0.1:0.
pub(crate) fn serve<F, Fut>(flavor: Flavor, serve: F) -> Server
where
    F: FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = oneshot::channel();
    let thread = std::thread::spawn(move || {
        match flavor {
            Flavor::CurrentThread => {
                pin_exact(1);
            }
            Flavor::MultiThread => unpin(),
        }
        let rt = flavor.runtime();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx.send(l.local_addr().expect("addr")).expect("addr");
            serve(l, stop_rx).await;
        });
    });
    let addr = addr_rx.recv().expect("server started");
    Server {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Runs `f` with a client runtime of `flavor`: on this thread (pinned to cpu0) for
/// `CurrentThread`, on an unpinned thread for `MultiThread`.
pub(crate) fn client<R: Send>(flavor: Flavor, f: impl FnOnce(&Runtime) -> R + Send) -> R {
    match flavor {
        Flavor::CurrentThread => f(&flavor.runtime()),
        Flavor::MultiThread => std::thread::scope(|s| {
            s.spawn(|| {
                unpin();
                f(&flavor.runtime())
            })
            .join()
            .expect("client thread")
        }),
    }
}

/// The client workload on an async `call`: `wl.n` timed round trips (after `n / 10` warm-up
/// ones) with the CPU time they took, then calls/s with each of [`DEPTHS`] calls in flight
/// (tasks of one client, each looping on its call).
pub(crate) async fn workload<C, Fut>(call: C, wl: &Workload) -> (Samples, f64, [f64; 3])
where
    C: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut s = Samples::with_capacity(wl.n);
    for _ in 0..wl.n / 10 {
        call().await;
    }
    let cpu0 = cpu_ns();
    for _ in 0..wl.n {
        let t = Instant::now();
        call().await;
        s.push(t.elapsed().as_nanos() as u64);
    }
    let cpu = (cpu_ns() - cpu0) as f64 / wl.n as f64;
    let mut rates = [0f64; 3];
    for (i, depth) in DEPTHS.into_iter().enumerate() {
        pipelined(&call, depth, wl.window / 4).await;
        let t = Instant::now();
        let done = pipelined(&call, depth, wl.window).await;
        rates[i] = done as f64 / t.elapsed().as_secs_f64();
    }
    (s, cpu, rates)
}

async fn pipelined<C, Fut>(call: &C, depth: usize, window: Duration) -> u64
where
    C: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..depth {
        let (call, done) = (call.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                call().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.load(Ordering::Relaxed)
}
