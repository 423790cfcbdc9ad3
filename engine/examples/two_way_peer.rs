//! Two-way peers: a server handler asks the connected client for progress while it works,
//! over the same connection (the client registers `progress` on its own engine; no
//! listener on the client side).
//!
//! Run: `cargo run -p netron-engine --example two_way_peer`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netron_engine::{Bytes, Engine, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dl = Some(Duration::from_secs(5));
    // Server: `jobs/run` does three steps and, after each, asks the caller's
    // `progress@^1/report` (resolved through the client's `$sys`) whether to go on.
    let jobs = Service::new("jobs", "1.0.0")?.unary_async("run", move |req| {
        let peer = req.peer();
        async move {
            let mut done = 0u8;
            for step in 1..=3u8 {
                let answer = peer
                    .call_by("progress@^1", "report", vec![step], dl)
                    .await
                    .map_err(|e| e.status().clone())?;
                if answer != b"go on" {
                    break;
                }
                done = step;
            }
            Ok(Bytes::from(vec![done]))
        }
    });
    let server = Engine::builder()
        .cores(1)
        .service(jobs)
        .listen("tcp://127.0.0.1:0")
        .build()?;

    // Client: serves `progress@1.0.0` on its own engine; it stops the job after step 2.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let progress = Service::new("progress", "1.0.0")?.unary("report", move |req, reply| {
        let step = req.payload().first().copied().unwrap_or(0);
        log.lock()
            .map_err(|_| netron_engine::Status::internal("poisoned"))?
            .push(step);
        reply.write(if step < 2 { b"go on" } else { b"stop!" });
        Ok(())
    });
    let client = Engine::builder().cores(1).service(progress).build()?;
    let ch = client
        .client()
        .connect(&server.endpoints()[0].to_string())?;

    let done = ch.call("jobs@1.0.0", "run", Bytes::new(), dl)?;
    assert_eq!(done, [1]);
    assert_eq!(*seen.lock().map_err(|_| "poisoned")?, [1, 2]);
    println!(
        "the server reported steps {:?} and stopped after step {}",
        seen.lock().map_err(|_| "poisoned")?,
        done[0]
    );

    drop(ch);
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
    Ok(())
}
