//! Ready-made server interceptors for what users write first (docs/architecture.md,
//! "Middleware"): a token check on `authorization` ([`Auth`]), a token-bucket rate limit per
//! peer and method ([`RateLimit`]), and a call log with per-method latency through `tracing`
//! ([`Trace`]). Each is an ordinary [`crate::Interceptor`]: install it engine-wide
//! ([`crate::EngineBuilder::interceptor`]) or on one service ([`crate::Service::interceptor`]).
//!
//! ```
//! use netron_engine::middleware::{Auth, RateLimit, Trace};
//! use netron_engine::{Engine, Service};
//!
//! let svc = Service::new("calc", "1.0.0")?.unary("whoami", |req, reply| {
//!     reply.write(req.metadata(Auth::IDENTITY).unwrap_or_default());
//!     Ok(())
//! });
//! let engine = Engine::builder()
//!     .cores(1)
//!     .interceptor(Trace::new())
//!     .interceptor(Auth::new(|token: &[u8]| (token == b"s3cret").then_some("alice")))
//!     .interceptor(RateLimit::new(1_000.0, 100))
//!     .service(svc)
//!     .build()?;
//! # drop(engine);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod rate_limit;
mod trace;

pub use auth::Auth;
pub use rate_limit::RateLimit;
pub use trace::Trace;
