//! Streams: a bidirectional echo and a server stream over a `Channel` (async halves), and a
//! server stream read chunk by chunk on a caller-driven `Core` (docs/guide.md, "Streams").
//!
//! Run with `cargo run -p netron-engine --example streams`.

use std::time::Duration;

use netron_engine::{Bytes, CallOptions, Core, CoreConfig, Engine, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: a bidirectional echo and a server stream counting up to the request's byte.
    let svc = Service::new("demo", "1.0.0")?
        .bidi_stream("echo", |_req, mut rx, mut tx| async move {
            while let Some(msg) = rx.recv().await {
                tx.send(msg?).await?; // waits for credit: a slow reader holds us back
            }
            Ok(()) // ends the server's half
        })
        .server_stream("count", |_req, first, mut tx| async move {
            for i in 0..first.first().copied().unwrap_or(0) {
                tx.send(Bytes::from(vec![i])).await?;
            }
            Ok(())
        });
    let server = Engine::builder()
        .cores(1)
        .service(svc)
        .listen("tcp://127.0.0.1:0")
        .build()?;
    let ep = server.endpoints()[0].to_string();

    // A client engine; the halves are used from any thread, with any executor.
    let client = Engine::builder().cores(1).build()?;
    let ch = client.client().connect(&ep)?;
    let opts = CallOptions::new().deadline(Duration::from_secs(5)); // bounds the whole stream
    let (mut tx, mut rx) = ch.open_bidi("demo@1.0.0", "echo", &opts);
    block_on(async {
        for word in ["one", "two", "three"] {
            tx.send(word.as_bytes()).await?;
            let echo = rx.recv().await.expect("an echo")?;
            assert_eq!(&echo[..], word.as_bytes());
        }
        tx.finish(); // ends our half; the server then ends its own
        assert!(rx.recv().await.is_none());
        Ok::<(), netron_engine::Status>(())
    })?;

    let mut rx = ch.open_server_stream("demo@1.0.0", "count", vec![3u8], &opts);
    let mut got = Vec::new();
    while let Some(msg) = block_on(rx.recv()) {
        got.extend_from_slice(&msg?);
    }
    assert_eq!(got, [0, 1, 2]);

    // Caller-driven: this thread drives a core and reads each chunk in place (no allocation
    // per chunk).
    let mut core = Core::new(CoreConfig::default())?;
    let conn = core.connect(&server.endpoints()[0], Duration::from_secs(5))?;
    let stream = core.open_stream(conn, b"demo@1.0.0", b"count", Some(&[4]), true, None)?;
    let mut sum = 0u32;
    while let Some(n) = core.recv_chunk(&stream, |chunk| chunk[0] as u32)? {
        sum += n;
    }
    assert_eq!(sum, 1 + 2 + 3);
    println!("streams: echo, server stream and caller-driven stream all done");
    Ok(())
}

/// A minimal executor for the example: polls the future, parking between wake-ups.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}
