//! Middleware: a token check (`Auth`) and a rate limit (`RateLimit`) on the server, a
//! client interceptor that adds the token to every call.
//!
//! Run: `cargo run -p netron-engine --example middleware`

use std::time::Duration;

use netron_engine::middleware::{Auth, RateLimit};
use netron_engine::{Bytes, ClientInterceptor, Engine, Outgoing, Service, Status, StatusCode};

/// Adds `authorization: Bearer <token>` to every call of the client it is installed on.
struct Bearer(&'static str);

impl ClientInterceptor for Bearer {
    fn before(&self, call: &mut Outgoing<'_>) -> Result<(), Status> {
        call.insert("authorization", format!("Bearer {}", self.0).as_bytes());
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dl = Some(Duration::from_secs(5));
    let greet = Service::new("greet", "1.0.0")?.unary("hello", |req, reply| {
        // The identity the token stood for, put there by `Auth`.
        reply.write(b"hello ");
        reply.write(req.metadata(Auth::IDENTITY).unwrap_or(b"?"));
        Ok(())
    });
    let server = Engine::builder()
        .cores(1)
        // Outermost first: the token check, then the limit (5 calls, no refill here).
        .interceptor(
            Auth::new(|token: &[u8]| (token == b"s3cret").then_some("alice")).allow("$sys"),
        )
        .interceptor(RateLimit::new(0.0, 5))
        .service(greet)
        .listen("tcp://127.0.0.1:0")
        .build()?;
    let ep = server.endpoints()[0].to_string();

    let alice = server
        .client()
        .with_interceptor(Bearer("s3cret"))
        .connect(&ep)?;
    assert_eq!(
        alice.call("greet@^1", "hello", Bytes::new(), dl)?,
        b"hello alice"
    );

    let anonymous = server.client().connect(&ep)?;
    let err = anonymous
        .call("greet@1.0.0", "hello", Bytes::new(), dl)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::Unauthenticated);
    println!("{err}");

    // Four more calls fit the burst of 5; the next is refused, naming the limit.
    for _ in 0..4 {
        alice.call("greet@1.0.0", "hello", Bytes::new(), dl)?;
    }
    let err = alice
        .call("greet@1.0.0", "hello", Bytes::new(), dl)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::ResourceExhausted);
    println!("{err}");

    drop((alice, anonymous));
    server.shutdown(Duration::from_secs(1));
    Ok(())
}
