//! Typed FlatBuffers helpers: read a request or reply in place after verification, write a
//! reply from a builder.
//!
//! Payloads are opaque bytes on the wire; these helpers are for applications that send
//! FlatBuffers (encouraged: they are read in place, without parsing or copying).
//!
//! ```
//! use netron_engine::{Engine, Service, StatusCode, typed};
//! use std::time::Duration;
//! // Any flatc-generated table works; here one of Netron's own.
//! use netron_codec::wire::{self, ErrorBody, ErrorBodyArgs};
//!
//! let svc = Service::new("errors", "1.0.0")?.unary("describe", |req, reply| {
//!     let body = req.root::<ErrorBody>()?; // verified, borrowed from the receive buffer
//!     let mut fbb = flatbuffers::FlatBufferBuilder::new();
//!     let msg = fbb.create_string(&format!("code {}", body.status().0));
//!     let out = ErrorBody::create(&mut fbb, &ErrorBodyArgs { status: body.status(), message: Some(msg), details: None });
//!     fbb.finish_minimal(out);
//!     reply.flatbuffer(&fbb);
//!     Ok(())
//! });
//! let engine = Engine::builder().cores(1).service(svc).listen("tcp://127.0.0.1:0").build()?;
//! let channel = engine.client().connect(&engine.endpoints()[0].to_string())?;
//! let dl = Some(Duration::from_secs(5));
//!
//! // A typed request, a typed reply read in place.
//! let mut fbb = flatbuffers::FlatBufferBuilder::new();
//! let req = ErrorBody::create(&mut fbb, &ErrorBodyArgs { status: wire::StatusCode(5), ..Default::default() });
//! fbb.finish_minimal(req);
//! let bytes = channel.call("errors@1.0.0", "describe", fbb.finished_data().to_vec(), dl)?;
//! let reply = typed::root::<ErrorBody>(&bytes)?;
//! assert_eq!((reply.status().0, reply.message()), (5, Some("code 5")));
//!
//! // A payload that is not the FlatBuffer the handler expects is refused before it runs.
//! let e = channel.call("errors@1.0.0", "describe", &[0xffu8; 7][..], dl).unwrap_err();
//! assert_eq!(e.code(), StatusCode::InvalidArgument);
//! engine.shutdown(Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use flatbuffers::{Follow, Verifiable, VerifierOptions};

use crate::{Reply, Request, Status, StatusCode};

/// Verifier limits for application payloads: depth 64, 1,000,000 tables, 64 MiB apparent size.
pub fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        max_depth: 64,
        max_tables: 1_000_000,
        max_apparent_size: 64 << 20,
        ..VerifierOptions::default()
    }
}

/// Verifies `bytes` as a FlatBuffer whose root is `T` and returns the zero-copy view.
/// A payload that fails verification is `InvalidArgument` (for a request) — the caller
/// decides for replies.
pub fn root<'a, T>(bytes: &'a [u8]) -> Result<T::Inner, Status>
where
    T: Follow<'a> + Verifiable + 'a,
{
    flatbuffers::root_with_opts::<T>(&verifier_options(), bytes).map_err(|e| {
        Status::new(
            StatusCode::InvalidArgument,
            format!("payload is not a valid FlatBuffer: {e}"),
        )
    })
}

impl<'a> Request<'a> {
    /// The request payload as a verified FlatBuffers table `T`, borrowed in place.
    pub fn root<T>(&self) -> Result<T::Inner, Status>
    where
        T: Follow<'a> + Verifiable + 'a,
    {
        root::<T>(self.payload())
    }
}

impl Reply<'_, '_> {
    /// Writes the finished bytes of `fbb` as the reply.
    pub fn flatbuffer<A: flatbuffers::Allocator>(
        &mut self,
        fbb: &flatbuffers::FlatBufferBuilder<'_, A>,
    ) {
        self.write(fbb.finished_data());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netron_codec::wire::{ErrorBody, ErrorBodyArgs};

    #[test]
    fn verified_roots_and_garbage() {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let m = fbb.create_string("hello");
        let t = ErrorBody::create(
            &mut fbb,
            &ErrorBodyArgs {
                status: netron_codec::wire::StatusCode(5),
                message: Some(m),
                details: None,
            },
        );
        fbb.finish_minimal(t);
        let body = root::<ErrorBody>(fbb.finished_data()).unwrap();
        assert_eq!(body.message(), Some("hello"));
        assert_eq!(
            root::<ErrorBody>(&[0xff; 7]).unwrap_err().code,
            StatusCode::InvalidArgument
        );
    }
}
