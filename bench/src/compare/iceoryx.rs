//! iceoryx2 (ipc::Service, default configuration): request-response and a publish-subscribe
//! ping-pong of 64-byte payloads between two threads pinned to cpu0 and cpu1, both sides
//! polling `receive()` in a loop as iceoryx2's own benchmarks do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;

use super::{SIZE, Workload};
use crate::pin::pin_exact;
use crate::stats::Samples;

type Payload = [u8; SIZE];
type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

fn name(kind: &str) -> Res<ServiceName> {
    format!("netron-bench/{}/{kind}", std::process::id())
        .as_str()
        .try_into()
        .map_err(err)
}

/// The two iceoryx2 rows (or nothing, with a message, if iceoryx2 fails here).
pub(crate) fn rows(wl: &Workload) -> Vec<(String, Samples)> {
    // Only errors (iceoryx2's env variable still wins): its "no config file, using defaults"
    // warning is what this comparison wants, not news.
    set_log_level_from_env_or(LogLevel::Error);
    let mut rows = Vec::new();
    match request_response(wl.n) {
        Ok(s) => rows.push((
            "iceoryx2 request-response (two threads, polling)".to_owned(),
            s,
        )),
        Err(e) => eprintln!("netron-bench compare: iceoryx2 request-response failed: {e}"),
    }
    match pub_sub(wl.n) {
        Ok(s) => rows.push((
            "iceoryx2 publish-subscribe ping-pong (two threads, polling)".to_owned(),
            s,
        )),
        Err(e) => eprintln!("netron-bench compare: iceoryx2 publish-subscribe failed: {e}"),
    }
    rows
}

/// Runs `server` on a thread pinned to cpu1 until `client` (on this thread) returns.
fn with_server(
    server: impl FnOnce(&AtomicBool, std::sync::mpsc::Sender<()>) -> Res<()> + Send + 'static,
    client: impl FnOnce() -> Res<Samples>,
) -> Res<Samples> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        pin_exact(1);
        server(&s2, ready_tx)
    });
    let r = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "server did not start".to_owned())
        .and_then(|()| client());
    stop.store(true, Ordering::Relaxed);
    let served = t.join().map_err(|_| "server panicked".to_owned())?;
    let s = r?;
    served?;
    Ok(s)
}

fn request_response(n: usize) -> Res<Samples> {
    let server = |stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>| -> Res<()> {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let svc = node
            .service_builder(&name("rr")?)
            .request_response::<Payload, Payload>()
            .open_or_create()
            .map_err(err)?;
        let server = svc.server_builder().create().map_err(err)?;
        let _ = ready.send(());
        while !stop.load(Ordering::Relaxed) {
            while let Some(req) = server.receive().map_err(err)? {
                let payload: Payload = *req;
                req.loan_uninit()
                    .map_err(err)?
                    .write_payload(payload)
                    .send()
                    .map_err(err)?;
            }
        }
        Ok(())
    };
    with_server(server, || {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let svc = node
            .service_builder(&name("rr")?)
            .request_response::<Payload, Payload>()
            .open_or_create()
            .map_err(err)?;
        let client = svc.client_builder().create().map_err(err)?;
        let one = |patient: bool| -> Res<bool> {
            let pending = client
                .loan_uninit()
                .map_err(err)?
                .write_payload([0x5a; SIZE])
                .send()
                .map_err(err)?;
            let give_up = Instant::now() + Duration::from_millis(if patient { 10_000 } else { 20 });
            loop {
                if let Some(r) = pending.receive().map_err(err)? {
                    return Ok(r.len() == SIZE);
                }
                if Instant::now() > give_up {
                    return Ok(false);
                }
            }
        };
        // Warm-up, also until the server has seen the client (connections are set up lazily).
        warm_up(n, "no response from the iceoryx2 server", &one)?;
        measure(n, "lost response", &one)
    })
}

/// Runs `n / 10` round trips that may time out (a server or subscriber found late), failing
/// with `silent` if none succeed within 10 s.
fn warm_up(n: usize, silent: &str, one: &impl Fn(bool) -> Res<bool>) -> Res<()> {
    let mut warm = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while warm < n / 10 {
        if one(false)? {
            warm += 1;
        } else if Instant::now() > until {
            return Err(silent.into());
        }
    }
    Ok(())
}

/// Times `n` round trips, each allowed to wait (`one(true)`); failing with `lost` if one
/// never completes.
fn measure(n: usize, lost: &str, one: &impl Fn(bool) -> Res<bool>) -> Res<Samples> {
    let mut s = Samples::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if !one(true)? {
            return Err(lost.into());
        }
        s.push(t.elapsed().as_nanos() as u64);
    }
    Ok(s)
}

fn pub_sub(n: usize) -> Res<Samples> {
    let server = |stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>| -> Res<()> {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let ping = node
            .service_builder(&name("ping")?)
            .publish_subscribe::<Payload>()
            .open_or_create()
            .map_err(err)?;
        let pong = node
            .service_builder(&name("pong")?)
            .publish_subscribe::<Payload>()
            .open_or_create()
            .map_err(err)?;
        let sub = ping.subscriber_builder().create().map_err(err)?;
        let publ = pong.publisher_builder().create().map_err(err)?;
        let _ = ready.send(());
        while !stop.load(Ordering::Relaxed) {
            while let Some(sample) = sub.receive().map_err(err)? {
                let payload: Payload = *sample;
                publ.loan_uninit()
                    .map_err(err)?
                    .write_payload(payload)
                    .send()
                    .map_err(err)?;
            }
        }
        Ok(())
    };
    with_server(server, || {
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let ping = node
            .service_builder(&name("ping")?)
            .publish_subscribe::<Payload>()
            .open_or_create()
            .map_err(err)?;
        let pong = node
            .service_builder(&name("pong")?)
            .publish_subscribe::<Payload>()
            .open_or_create()
            .map_err(err)?;
        let publ = ping.publisher_builder().create().map_err(err)?;
        let sub = pong.subscriber_builder().create().map_err(err)?;
        let one = |patient: bool| -> Res<bool> {
            publ.loan_uninit()
                .map_err(err)?
                .write_payload([0x5a; SIZE])
                .send()
                .map_err(err)?;
            let give_up = Instant::now() + Duration::from_millis(if patient { 10_000 } else { 20 });
            loop {
                if let Some(r) = sub.receive().map_err(err)? {
                    return Ok(r.len() == SIZE);
                }
                if Instant::now() > give_up {
                    return Ok(false);
                }
            }
        };
        warm_up(n, "no pong from the iceoryx2 server", &one)?;
        // Drain pongs of warm-up pings that timed out, so every timed pong answers its ping.
        std::thread::sleep(Duration::from_millis(50));
        while sub.receive().map_err(err)?.is_some() {}
        measure(n, "lost pong", &one)
    })
}
