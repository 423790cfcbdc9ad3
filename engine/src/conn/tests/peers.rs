//! Symmetric peers on one connection pair, sans I/O: the accepting side opens calls too (even
//! ids), the connecting side serves them from its registry, and calls in both directions at
//! once never collide.

use super::*;

fn spec<'a>(method: &'a [u8], payload: &'a [u8]) -> CallSpec<'a> {
    CallSpec {
        service: b"calc@1.2.0",
        method,
        payload,
        deadline: Some(Duration::from_secs(1)),
        idempotent: false,
        metadata: None,
    }
}

/// Both sides open calls in the same turn, interleaved, many each way: the initiator's ids are
/// odd, the acceptor's even, every call gets its own answer, and no id counter moves.
#[test]
fn both_sides_call_each_other_at_once() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    assert!(p.client.is_open() && p.server.is_open());
    let mut slots = Vec::new();
    for i in 0..200u8 {
        for (from_server, conn) in [(false, &mut p.client), (true, &mut p.server)] {
            let slot = Arc::new(Completion::new());
            assert!(slot.arm());
            let id = conn
                .start_call(
                    &spec(b"add", &[i, u8::from(from_server)]),
                    slot.clone(),
                    p.now,
                )
                .unwrap();
            assert_eq!(id % 2 == 0, from_server, "id {id}");
            slots.push((slot, i.wrapping_add(u8::from(from_server))));
        }
        if i % 7 == 0 {
            p.pump(usize::MAX);
        }
    }
    p.pump(usize::MAX);
    for (slot, want) in &slots {
        assert_eq!(slot.result().unwrap().unwrap(), [*want]);
    }
    assert_eq!(p.stats.calls_in, 400);
    for c in [
        "wrong_id_parity",
        "duplicate_id",
        "unknown_id",
        "late_reply",
    ] {
        assert_eq!(p.stats.errors_of(c), 0, "{c}");
    }
    assert_eq!((p.client.calls.len(), p.server.calls.len()), (0, 0));
}

/// A connection closing fails the calls its side opened, whichever side that is: the
/// acceptor's calls into the initiator's services go with the connection.
#[test]
fn the_acceptors_calls_fail_when_the_connection_closes() {
    let mut p = Pair::new();
    p.pump(usize::MAX);
    let slot = Arc::new(Completion::new());
    assert!(slot.arm());
    p.server
        .start_call(&spec(b"add", &[1, 2]), slot.clone(), p.now)
        .unwrap();
    p.server.handle_eof(p.now);
    let e = slot.result().unwrap().unwrap_err();
    assert_eq!(e.code, StatusCode::Unavailable, "{e}");
    assert!(e.message.contains("closed"), "{e}");
}
