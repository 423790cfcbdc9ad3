//! The dispatcher on one connection pair, sans I/O: interceptors reject before the handler
//! runs and add metadata both ways; response metadata reaches the caller's slot; a deferred
//! method without a core answers at once instead of leaving the caller waiting.

use super::*;

struct Gate;

impl crate::Interceptor for Gate {
    fn before(&self, call: &mut crate::Before<'_>) -> Result<(), Status> {
        if call.metadata("deny").is_some() {
            return Err(Status::new(StatusCode::PermissionDenied, "denied"));
        }
        call.insert("x-gate", b"open");
        Ok(())
    }
    fn after(&self, call: &mut crate::After<'_>) {
        call.insert("x-after", b"1");
    }
}

fn gated() -> Pair {
    let mut p = Pair::new();
    p.registry = Registry::default();
    p.registry
        .add(
            Service::new("calc", "1.2.0")
                .unwrap()
                .unary("gate", |req, reply| {
                    reply.write(req.metadata("x-gate").unwrap_or(b"closed"));
                    reply.metadata("x-handler", b"yes");
                    Ok(())
                })
                .unary_deferred("later", |_, reply| drop(reply)),
        )
        .unwrap();
    p.registry.interceptors.push(Arc::new(Gate));
    p.pump(usize::MAX);
    p
}

fn call_with(
    p: &mut Pair,
    method: &[u8],
    metadata: &netron_codec::hpack::HeaderList,
) -> Arc<Completion> {
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    let spec = CallSpec {
        service: b"calc@1.2.0",
        method,
        payload: b"",
        deadline: None,
        idempotent: false,
        metadata: Some(metadata),
    };
    p.client.start_call(&spec, slot.clone(), p.now).unwrap();
    p.pump(usize::MAX);
    assert!(slot.is_done(), "no reply");
    slot
}

#[test]
fn interceptors_add_metadata_both_ways() {
    let mut p = gated();
    let slot = call_with(&mut p, b"gate", &Default::default());
    assert_eq!(slot.result().unwrap().unwrap(), b"open");
    let m = slot.metadata().unwrap();
    assert_eq!(m.get(b"x-handler"), Some(&b"yes"[..]));
    assert_eq!(m.get(b"x-after"), Some(&b"1"[..]));
    assert_eq!(p.stats.calls_ok, 2, "server and client count the call");
}

#[test]
fn a_rejected_call_never_reaches_its_handler() {
    let mut p = gated();
    let mut deny = netron_codec::hpack::HeaderList::default();
    deny.push(b"deny", b"1");
    let slot = call_with(&mut p, b"gate", &deny);
    let err = slot.result().unwrap().unwrap_err();
    assert_eq!(
        (err.code, &*err.message),
        (StatusCode::PermissionDenied, "denied")
    );
    assert!(slot.metadata().unwrap().is_empty());
    assert_eq!(p.stats.errors_of("rejected_by_interceptor"), 1);
}

#[test]
fn a_deferred_method_without_a_core_answers_at_once() {
    let mut p = gated();
    let slot = call_with(&mut p, b"later", &Default::default());
    assert_eq!(
        slot.result().unwrap().unwrap_err().code,
        StatusCode::Internal
    );
    assert!(p.server.inflight.is_empty());
}
