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

/// A FlatBuffers table type, for [`TypedMethod`]: names the table's view for every borrow
/// lifetime. Implement it with [`crate::typed_table!`] for a flatc-generated table:
/// `netron_engine::typed_table!(my_schema::Point);` implements it for `Point<'static>`,
/// whose `View<'a>` is `Point<'a>`.
pub trait Table: 'static {
    /// The table's view, borrowing a buffer for `'a`.
    type View<'a>: Follow<'a, Inner = Self::View<'a>> + Verifiable + 'a;
}

/// Implements [`Table`] for a flatc-generated table type `T<'a>` (give the path without the
/// lifetime): `typed_table!(my_schema::Point)`.
#[macro_export]
macro_rules! typed_table {
    ($($seg:ident)::+) => {
        impl $crate::typed::Table for $($seg)::+<'static> {
            type View<'a> = $($seg)::+<'a>;
        }
    };
}

typed_table!(netron_codec::wire::ErrorBody);

/// A method bound to a channel with its request and reply table types: the service and
/// method names are given once, the request is built with a FlatBuffers builder, and the
/// reply is verified as a `Rep` before it is handed back (so a caller never passes names as
/// strings at each call, nor reads an unverified reply).
///
/// ```
/// use netron_engine::{Engine, Service, typed::{self, TypedMethod}};
/// use netron_codec::wire::{self, ErrorBody, ErrorBodyArgs};
/// use std::time::Duration;
///
/// // The server: `describe` answers an ErrorBody saying which code it got.
/// let svc = Service::new("errors", "1.0.0")?.unary("describe", |req, reply| {
///     let body = req.root::<ErrorBody>()?;
///     let mut fbb = flatbuffers::FlatBufferBuilder::new();
///     let msg = fbb.create_string(&format!("code {}", body.status().0));
///     let out = ErrorBody::create(&mut fbb, &ErrorBodyArgs { status: body.status(), message: Some(msg), details: None });
///     fbb.finish_minimal(out);
///     reply.flatbuffer(&fbb);
///     Ok(())
/// });
/// let engine = Engine::builder().cores(1).service(svc).listen("tcp://127.0.0.1:0").build()?;
/// let channel = engine.client().connect(&engine.endpoints()[0].to_string())?;
///
/// // The client: a typed method, bound once.
/// let describe: TypedMethod<ErrorBody<'static>, ErrorBody<'static>> =
///     TypedMethod::new(&channel, "errors@1.0.0", "describe");
/// let reply = describe.call(
///     |fbb| ErrorBody::create(fbb, &ErrorBodyArgs { status: wire::StatusCode(5), ..Default::default() }),
///     Some(Duration::from_secs(5)),
/// )?;
/// let body = reply.get(); // verified when it arrived; read in place
/// assert_eq!((body.status().0, body.message()), (5, Some("code 5")));
/// drop(channel);
/// engine.shutdown(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedMethod<Req, Rep> {
    method: crate::Method,
    _types: std::marker::PhantomData<fn(Req) -> Rep>,
}

impl<Req, Rep> Clone for TypedMethod<Req, Rep> {
    fn clone(&self) -> Self {
        Self {
            method: self.method.clone(),
            _types: std::marker::PhantomData,
        }
    }
}

impl<Req, Rep> std::fmt::Debug for TypedMethod<Req, Rep> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedMethod")
            .field("method", &self.method)
            .finish()
    }
}

/// A reply verified as a `Rep` table: owns the bytes, hands out the view in place.
pub struct TypedReply<Rep> {
    bytes: Vec<u8>,
    _type: std::marker::PhantomData<fn() -> Rep>,
}

impl<Rep> std::fmt::Debug for TypedReply<Rep> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedReply")
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl<Rep: Table> TypedReply<Rep> {
    /// Verifies `bytes` as a `Rep` ([`verifier_options`]).
    ///
    /// # Errors
    ///
    /// `Internal` (the callee answered something that is not a `Rep`), naming the type and
    /// the verifier's complaint.
    pub fn new(bytes: Vec<u8>) -> Result<Self, Status> {
        flatbuffers::root_with_opts::<Rep::View<'_>>(&verifier_options(), &bytes).map_err(|e| {
            Status::new(
                StatusCode::Internal,
                format!(
                    "the reply is not a valid {} FlatBuffer: {e}",
                    std::any::type_name::<Rep>()
                ),
            )
        })?;
        Ok(Self {
            bytes,
            _type: std::marker::PhantomData,
        })
    }

    /// The reply table, read in place.
    pub fn get(&self) -> Rep::View<'_> {
        // SAFETY: `bytes` was verified as a `Rep` by `new` with the same verifier, and it is
        // owned by `self` and never mutated after, so the buffer is still a valid `Rep`.
        unsafe { flatbuffers::root_unchecked::<Rep::View<'_>>(&self.bytes) }
    }

    /// The reply's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<Req: Table, Rep: Table> TypedMethod<Req, Rep> {
    /// Binds `method` of `service` (an exact `name@VERSION`; resolve a requirement first with
    /// [`crate::Channel::resolve`]) on `channel`.
    pub fn new(channel: &crate::Channel, service: &str, method: &str) -> Self {
        Self {
            method: channel.method(service, method),
            _types: std::marker::PhantomData,
        }
    }

    /// Builds the request with `build` (which returns the root table, finished here),
    /// calls the method (blocking) and verifies the reply. Costs a fresh builder and the
    /// request's copy to hand it to the core (this is not the zero-allocation path).
    ///
    /// # Errors
    ///
    /// As [`crate::Method::call`]; a reply that is not a `Rep` fails with `Internal`
    /// ([`TypedReply::new`]).
    pub fn call(
        &self,
        build: impl for<'b> FnOnce(
            &mut flatbuffers::FlatBufferBuilder<'b>,
        ) -> flatbuffers::WIPOffset<Req::View<'b>>,
        deadline: Option<std::time::Duration>,
    ) -> Result<TypedReply<Rep>, crate::CallError> {
        let payload = encode::<Req>(build);
        let bytes = self.method.call(payload, deadline)?;
        TypedReply::new(bytes).map_err(crate::CallError::Status)
    }

    /// [`TypedMethod::call`] without blocking (see [`crate::Method::call_async`]).
    ///
    /// # Errors
    ///
    /// As [`TypedMethod::call`].
    pub async fn call_async(
        &self,
        build: impl for<'b> FnOnce(
            &mut flatbuffers::FlatBufferBuilder<'b>,
        ) -> flatbuffers::WIPOffset<Req::View<'b>>,
        deadline: Option<std::time::Duration>,
    ) -> Result<TypedReply<Rep>, crate::CallError> {
        let payload = encode::<Req>(build);
        let bytes = self.method.call_async(payload, deadline).await?;
        TypedReply::new(bytes).map_err(crate::CallError::Status)
    }
}

fn encode<Req: Table>(
    build: impl for<'b> FnOnce(
        &mut flatbuffers::FlatBufferBuilder<'b>,
    ) -> flatbuffers::WIPOffset<Req::View<'b>>,
) -> bytes::Bytes {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let root = build(&mut fbb);
    fbb.finish_minimal(root);
    bytes::Bytes::copy_from_slice(fbb.finished_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netron_codec::wire::{ErrorBody, ErrorBodyArgs};

    #[test]
    fn typed_replies_are_verified() {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let t = ErrorBody::create(
            &mut fbb,
            &ErrorBodyArgs {
                status: netron_codec::wire::StatusCode(3),
                message: None,
                details: None,
            },
        );
        fbb.finish_minimal(t);
        let r = TypedReply::<ErrorBody<'static>>::new(fbb.finished_data().to_vec()).unwrap();
        assert_eq!(r.get().status().0, 3);
        let e = TypedReply::<ErrorBody<'static>>::new(vec![0xff; 7]).unwrap_err();
        assert_eq!(e.code, StatusCode::Internal);
        assert!(e.message.contains("ErrorBody"), "{}", e.message);
    }

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
