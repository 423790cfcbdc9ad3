//! `$sys` resolution: a client names `calc@^1.2` and gets the best version the server
//! exposes; services added and removed while the engine runs show up at once.
//!
//! Run: `cargo run -p netron-engine --example sys_resolution`

use std::time::Duration;

use netron_engine::{Bytes, Engine, Service, StatusCode};

/// `calc` at `version`; `which` answers the version that served the call.
fn calc(version: &'static str) -> Result<Service, netron_engine::ServiceError> {
    Ok(
        Service::new("calc", version)?.unary("which", move |_, reply| {
            reply.write(version.as_bytes());
            Ok(())
        }),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dl = Some(Duration::from_secs(5));
    let server = Engine::builder()
        .cores(1)
        .service(calc("1.2.0")?)
        .service(calc("1.4.1")?)
        .service(calc("2.0.0-beta.1")?)
        .listen("tcp://127.0.0.1:0")
        .build()?;
    let ch = server
        .client()
        .connect(&server.endpoints()[0].to_string())?;

    // One `$sys.list` per connection, then the highest match by the semver crate's rules.
    assert_eq!(ch.resolve("calc@^1.2", dl)?, "calc@1.4.1");
    assert_eq!(ch.call("calc@~1.2", "which", Bytes::new(), dl)?, b"1.2.0");
    // Pre-releases only for a requirement that names one.
    assert_eq!(ch.resolve("calc", dl)?, "calc@1.4.1");
    assert_eq!(ch.resolve("calc@^2.0.0-beta", dl)?, "calc@2.0.0-beta.1");
    // No match: NotFound naming what exists.
    let err = ch.resolve("calc@^3", dl).unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    println!("{err}");

    // Services change while the engine runs; a stale pick is refreshed after NotFound.
    server.add_service(calc("1.5.0")?)?;
    server.remove_service("calc@1.4.1")?;
    assert_eq!(ch.call("calc@^1.2", "which", Bytes::new(), dl)?, b"1.5.0");

    drop(ch);
    server.shutdown(Duration::from_secs(1));
    Ok(())
}
