//! Typed clients (`netron_engine::typed`): a FlatBuffers request/reply pair bound once as a
//! [`TypedMethod`], the reply verified before it is handed back, blocking and async.

use std::time::Duration;

use netron_codec::wire::{self, ErrorBody, ErrorBodyArgs};
use netron_engine::typed::TypedMethod;
use netron_engine::{CoreConfig, Service, StatusCode};

use crate::{Transport, block_on};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// `describe` answers an ErrorBody with the request's status and `code N`; `garbage`
/// answers bytes that are no FlatBuffer.
fn errors() -> Service {
    Service::new("errors", "1.0.0")
        .unwrap()
        .unary("describe", |req, reply| {
            let body = req.root::<ErrorBody>()?;
            let mut fbb = flatbuffers::FlatBufferBuilder::new();
            let msg = fbb.create_string(&format!("code {}", body.status().0));
            let out = ErrorBody::create(
                &mut fbb,
                &ErrorBodyArgs {
                    status: body.status(),
                    message: Some(msg),
                    details: None,
                },
            );
            fbb.finish_minimal(out);
            reply.flatbuffer(&fbb);
            Ok(())
        })
        .unary("garbage", |_, reply| {
            reply.write(&[0xff; 7]);
            Ok(())
        })
}

/// A request table asking about status `code`.
fn request<'b>(
    fbb: &mut flatbuffers::FlatBufferBuilder<'b>,
    code: u16,
) -> flatbuffers::WIPOffset<ErrorBody<'b>> {
    ErrorBody::create(
        fbb,
        &ErrorBodyArgs {
            status: wire::StatusCode(code),
            ..Default::default()
        },
    )
}

/// A typed call round trip (blocking and async), and a reply that is not the declared type
/// failing with `Internal` naming it.
pub fn a_typed_method_builds_requests_and_verifies_replies(t: &Transport) {
    let (e, addr) = crate::engine(t, CoreConfig::default(), &[errors()], "typed");
    let ch = e.client().connect(&addr).unwrap();
    let describe: TypedMethod<ErrorBody<'static>, ErrorBody<'static>> =
        TypedMethod::new(&ch, "errors@1.0.0", "describe");
    let r = describe.call(|fbb| request(fbb, 5), DL).unwrap();
    assert_eq!(
        (r.get().status().0, r.get().message()),
        (5, Some("code 5")),
        "{}",
        t.name
    );
    let r = block_on(describe.call_async(|fbb| request(fbb, 7), DL)).unwrap();
    assert_eq!(r.get().message(), Some("code 7"));
    let garbage: TypedMethod<ErrorBody<'static>, ErrorBody<'static>> =
        TypedMethod::new(&ch, "errors@1.0.0", "garbage");
    let err = garbage.call(|fbb| request(fbb, 1), DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::Internal);
    assert!(err.status().message.contains("ErrorBody"), "{err}");
    drop(ch);
    e.shutdown(Duration::from_secs(1));
}
