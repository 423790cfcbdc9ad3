//! Control bodies that had no test besides fuzzing: Subscribe, the `$sys.list` ServiceList and
//! the error of a StreamEnd. Each round-trips with its fields intact, and garbage in its place
//! is `InvalidBody` naming the table.

use netron_codec::control::{self, ControlEncoder};
use netron_codec::wire::{
    MethodDescriptor, MethodDescriptorArgs, MethodKind, ServiceDescriptor, ServiceDescriptorArgs,
    ServiceList, ServiceListArgs,
};
use netron_codec::{BatchEncoder, DecodeError, Frame, FrameKind, Limits, StatusCode};

/// Garbage that no verifier accepts: a root offset far past the end.
const GARBAGE: [u8; 8] = [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];

fn garbage_frame(batch: &mut BatchEncoder, kind: FrameKind, id: u32) -> Frame<'_> {
    batch.clear();
    batch
        .frame(kind, id)
        .unwrap()
        .payload(&GARBAGE)
        .finish()
        .unwrap();
    Frame::parse(batch.as_slice(), &Limits::default()).unwrap()
}

fn assert_invalid(e: DecodeError, kind: FrameKind, table: &str) {
    match &e {
        DecodeError::InvalidBody {
            kind: k, table: t, ..
        } => {
            assert_eq!((*k, *t), (kind, table), "{e}")
        }
        other => panic!("expected InvalidBody for {table}, got {other:?}"),
    }
    assert_eq!(e.counter(), "invalid_body");
}

#[test]
fn subscribe_round_trips() {
    let mut batch = BatchEncoder::new(Limits::default());
    let mut enc = ControlEncoder::new();
    for (id, pattern, depth) in [(3u32, "orders.*", 64u32), (5, "orders.>", 0), (7, "", 1)] {
        batch.clear();
        enc.subscribe(&mut batch, id, pattern, depth).unwrap();
        let f = Frame::parse(batch.as_slice(), &Limits::default()).unwrap();
        assert_eq!((f.kind(), f.id()), (FrameKind::Subscribe, id));
        control::verify_body(&f).unwrap();
        let s = control::read_subscribe(&f).unwrap();
        assert_eq!(s.pattern(), Some(pattern));
        assert_eq!(s.queue_depth(), depth);
        // Read as another kind's body: refused.
        assert!(control::read_error(&f).is_err());
    }
}

#[test]
fn subscribe_garbage_is_invalid_body() {
    let mut batch = BatchEncoder::new(Limits::default());
    let f = garbage_frame(&mut batch, FrameKind::Subscribe, 3);
    assert_invalid(
        control::read_subscribe(&f).unwrap_err(),
        FrameKind::Subscribe,
        "Subscribe",
    );
    assert_invalid(
        control::verify_body(&f).unwrap_err(),
        FrameKind::Subscribe,
        "Subscribe",
    );
}

/// (name, version, [(method, kind)]) of one listed service.
type Service = (String, String, Vec<(String, u8)>);

fn service_list() -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut services = Vec::new();
    for (name, version, methods) in [
        (
            "calc",
            "1.2.0",
            &[
                ("add", MethodKind::Unary),
                ("sum", MethodKind::ClientStream),
            ][..],
        ),
        ("$sys", "1.0.0", &[("list", MethodKind::Unary)][..]),
        ("empty", "0.1.0", &[][..]),
    ] {
        let ms: Vec<_> = methods
            .iter()
            .map(|(m, kind)| {
                let name = Some(fbb.create_string(m));
                MethodDescriptor::create(&mut fbb, &MethodDescriptorArgs { name, kind: *kind })
            })
            .collect();
        let methods = Some(fbb.create_vector(&ms));
        let name = Some(fbb.create_string(name));
        let version = Some(fbb.create_string(version));
        services.push(ServiceDescriptor::create(
            &mut fbb,
            &ServiceDescriptorArgs {
                name,
                version,
                methods,
            },
        ));
    }
    let services = Some(fbb.create_vector(&services));
    let root = ServiceList::create(
        &mut fbb,
        &ServiceListArgs {
            services,
            features: 0,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

#[test]
fn service_list_round_trips() {
    let bytes = service_list();
    let list = control::read_service_list(&bytes).unwrap();
    let got: Vec<Service> = list
        .services()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s.name().to_owned(),
                s.version().to_owned(),
                s.methods()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| (m.name().to_owned(), m.kind().0))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        got,
        vec![
            (s("calc"), s("1.2.0"), vec![(s("add"), 0), (s("sum"), 2)]),
            (s("$sys"), s("1.0.0"), vec![(s("list"), 0)]),
            (s("empty"), s("0.1.0"), vec![]),
        ]
    );
}

#[test]
fn service_list_garbage_is_invalid_body() {
    assert_invalid(
        control::read_service_list(&GARBAGE).unwrap_err(),
        FrameKind::Response,
        "ServiceList",
    );
    // A list whose required service name is missing is refused too.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    // (Built by hand: the generated builder refuses to omit a required field.)
    let start = fbb.start_table();
    let empty = fbb.end_table(start);
    let d = flatbuffers::WIPOffset::<ServiceDescriptor>::new(empty.value());
    let services = Some(fbb.create_vector(&[d]));
    let root = ServiceList::create(
        &mut fbb,
        &ServiceListArgs {
            services,
            features: 0,
        },
    );
    fbb.finish_minimal(root);
    assert_invalid(
        control::read_service_list(fbb.finished_data()).unwrap_err(),
        FrameKind::Response,
        "ServiceList",
    );
    // A truncated list.
    let bytes = service_list();
    assert!(control::read_service_list(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn stream_end_error_round_trips() {
    let mut batch = BatchEncoder::new(Limits::default());
    let mut enc = ControlEncoder::new();
    enc.stream_end_error(&mut batch, 9, StatusCode::ResourceExhausted, "queue full")
        .unwrap();
    let f = Frame::parse(batch.as_slice(), &Limits::default()).unwrap();
    assert_eq!((f.kind(), f.id()), (FrameKind::StreamEnd, 9));
    control::verify_body(&f).unwrap();
    let body = control::read_stream_end(&f)
        .unwrap()
        .expect("an error body");
    assert_eq!(
        control::status(body.status()),
        StatusCode::ResourceExhausted
    );
    assert_eq!(body.message(), Some("queue full"));
    // A StreamEnd without a body ended the stream OK.
    batch.clear();
    batch.empty_frame(FrameKind::StreamEnd, 11, 0).unwrap();
    let f = Frame::parse(batch.as_slice(), &Limits::default()).unwrap();
    assert!(control::read_stream_end(&f).unwrap().is_none());
    // Not a StreamEnd: refused.
    batch.clear();
    enc.subscribe(&mut batch, 3, "x", 0).unwrap();
    let f = Frame::parse(batch.as_slice(), &Limits::default()).unwrap();
    assert!(control::read_stream_end(&f).is_err());
}

#[test]
fn stream_end_garbage_is_invalid_body() {
    let mut batch = BatchEncoder::new(Limits::default());
    let f = garbage_frame(&mut batch, FrameKind::StreamEnd, 9);
    assert_invalid(
        control::read_stream_end(&f).unwrap_err(),
        FrameKind::StreamEnd,
        "ErrorBody",
    );
    assert_invalid(
        control::verify_body(&f).unwrap_err(),
        FrameKind::StreamEnd,
        "ErrorBody",
    );
}
