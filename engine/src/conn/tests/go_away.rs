//! GoAway's `last_id` when exchanges arrive out of order, as they do over QUIC, one stream per
//! exchange (docs/protocol.md §14.4, §27.2).

use super::*;

/// Each Request frame of a batch: its id and bytes.
type Frames = Vec<(u32, Vec<u8>)>;

/// The client's next `n` calls of `method`, sent as one batch; returns their slots and each
/// Request frame.
fn calls(p: &mut Pair, method: &[u8], n: usize) -> (Vec<Arc<Completion>>, Frames) {
    let mut slots = Vec::new();
    for _ in 0..n {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        p.client
            .start_call(&Pair::spec(method, &[1, 2]), slot.clone(), p.now)
            .unwrap();
        slots.push(slot);
    }
    let (batch, _) = p.client.poll_transmit().unwrap();
    let frames = netron_codec::decode_batch(&batch, &netron_codec::Limits::default())
        .map(|f| {
            let f = f.unwrap();
            (f.id(), f.as_bytes().to_vec())
        })
        .collect();
    (slots, frames)
}

fn to_server(p: &mut Pair, frame: &[u8]) {
    let mut env = conn_env!(p);
    deliver(&mut p.server, frame, usize::MAX, false, &mut env);
}

fn server_to_client(p: &mut Pair) {
    while let Some((buf, _)) = p.server.poll_transmit() {
        let mut env = conn_env!(p);
        deliver(&mut p.client, &buf, usize::MAX, false, &mut env);
    }
}

/// Requests 1, 5, 3 arrive in that order (ids 5 and 3 overtook each other on their QUIC
/// streams) and all are being served when the server sends GoAway: its `last_id` is 5, the
/// latest id, so the client keeps waiting for call 5. With the id that arrived last (3), the
/// client failed call 5 as "not processed, safe to retry elsewhere" while the server ran it
/// (a retry elsewhere would run a non-idempotent call twice).
#[test]
fn go_away_names_the_latest_id_not_the_last_to_arrive() {
    let mut p = Pair::open();
    let (slots, frames) = calls(&mut p, b"never", 3);
    assert_eq!(
        frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        [1, 3, 5],
        "the client's ids"
    );
    for i in [0, 2, 1] {
        to_server(&mut p, &frames[i].1);
    }
    p.server.go_away("test");
    server_to_client(&mut p);
    assert!(p.client.peer_going_away);
    for (i, slot) in slots.iter().enumerate() {
        assert!(
            !slot.is_done(),
            "call {} the server is running was failed: {:?}",
            frames[i].0,
            slot.result().map(|r| r.map(<[u8]>::to_vec))
        );
    }
}

/// Requests 1 and 5 arrive, the server sends GoAway (`last_id` 5), then request 3 arrives
/// (its QUIC stream was slower): the client was told it may have been processed and waits for
/// it, so the server serves it; one opened after `last_id` is refused as before.
#[test]
fn an_exchange_up_to_last_id_arriving_after_go_away_is_served() {
    let mut p = Pair::open();
    let (slots, frames) = calls(&mut p, b"add", 3);
    to_server(&mut p, &frames[0].1);
    to_server(&mut p, &frames[2].1);
    p.server.go_away("test");
    to_server(&mut p, &frames[1].1);
    server_to_client(&mut p);
    for (slot, (id, _)) in slots.iter().zip(&frames) {
        assert!(slot.is_done(), "call {id}");
        assert_eq!(
            slot.result().unwrap().map(<[u8]>::to_vec),
            Ok(vec![3]),
            "call {id}"
        );
    }
    // Id 7 comes after last_id 5: refused (the client never sent it; a peer that ignores the
    // GoAway).
    p.client_sends(request_frame(7, None, &ADD));
    let (buf, _) = p.client.poll_transmit().unwrap();
    to_server(&mut p, &buf);
    let (out, _) = p.server.poll_transmit().unwrap();
    let f = netron_codec::decode_batch(&out, &netron_codec::Limits::default())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((f.kind(), f.id()), (FrameKind::Error, 7));
}
