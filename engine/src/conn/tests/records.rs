//! Two connections exchanging records (docs/protocol.md §26.1–§26.3): the sender's cut
//! ([`for_each_record`]) and the receiver's rules ([`Connection::handle_record`]), checked
//! against `netron_codec::record::RecordReader` record by record.

use netron_codec::record::{Record, RecordReader};

use super::super::record::for_each_record;
use super::*;

/// `len` bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Records of one batch as owned vectors.
fn cut(batch: &[u8], first: Option<Role>, limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for_each_record(batch, first, limit, |r| out.push(r.to_vec()));
    out
}

/// Moves every batch `from` has into `to` as records of at most `limit` bytes; `first`: the
/// next batch is `from`'s first (its handshake). Returns the records, and whether any moved.
fn move_records(
    from: &mut Connection<Arc<Completion>>,
    to: &mut Connection<Arc<Completion>>,
    first: &mut Option<Role>,
    limit: usize,
    env: &mut Env<'_>,
) -> Vec<Vec<u8>> {
    let mut moved = Vec::new();
    while let Some((buf, _)) = from.poll_transmit() {
        for r in cut(&buf, first.take(), limit) {
            assert!(r.len() <= limit, "record of {} > {limit}", r.len());
            let _ = to.handle_record(&r, limit, env);
            moved.push(r);
        }
    }
    moved
}

impl Pair {
    /// Moves batches both ways as records of at most `limit` bytes until quiet; returns every
    /// record the client sent, in order. `handshake`: the first batch of each side holds its
    /// handshake (the first pump of a pair).
    fn pump_records(&mut self, limit: usize, handshake: bool) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        let mut client_first = handshake.then_some(Role::Client);
        let mut server_first = handshake.then_some(Role::Server);
        for _ in 0..100 {
            let mut env = conn_env!(self);
            let up = move_records(
                &mut self.client,
                &mut self.server,
                &mut client_first,
                limit,
                &mut env,
            );
            let down = move_records(
                &mut self.server,
                &mut self.client,
                &mut server_first,
                limit,
                &mut env,
            );
            if up.is_empty() && down.is_empty() {
                return sent;
            }
            sent.extend(up);
        }
        panic!("pump did not settle");
    }

    fn call_records(&mut self, method: &[u8], payload: &[u8], limit: usize) -> Vec<u8> {
        let slot = Arc::new(Completion::new());
        assert!(slot.arm());
        let spec = CallSpec {
            service: b"calc@1.2.0",
            method,
            payload,
            deadline: Some(Duration::from_secs(1)),
            idempotent: false,
            metadata: None,
        };
        self.client
            .start_call(&spec, slot.clone(), self.now)
            .unwrap_or_else(|e| panic!("limit {limit}, payload {}: {e:?}", payload.len()));
        self.pump_records(limit, false);
        assert!(slot.is_done(), "no reply over {limit}-byte records");
        slot.result()
            .unwrap()
            .unwrap_or_else(|e| panic!("limit {limit}, payload {}: {e:?}", payload.len()))
            .to_vec()
    }
}

#[test]
fn calls_cross_records_of_any_size_whole_or_fragmented() {
    for limit in [16, 17, 40, 64, 256, 4096, 1 << 16, 1 << 20] {
        let mut p = Pair::new();
        let hs = p.pump_records(limit, true);
        assert!(p.client.is_open() && p.server.is_open(), "limit {limit}");
        // §26.1: the preface alone, then the Hello (whole, or fragmented if it cannot fit).
        assert_eq!(hs[0], netron_codec::handshake::PREFACE, "limit {limit}");
        for len in [0usize, 1, 100, 5_000, 300_000] {
            let payload = noise(len);
            assert_eq!(
                p.call_records(b"echo", &payload, limit),
                payload,
                "limit {limit}, payload {len}"
            );
        }
        assert!(
            p.stats.errors.is_empty(),
            "limit {limit}: {:?}",
            p.stats.errors
        );
    }
}

#[test]
fn the_sender_groups_whole_frames_and_fragments_only_what_cannot_fit() {
    let mut p = Pair::new();
    p.pump_records(1 << 16, true);
    for _ in 0..5 {
        p.client
            .start_call(
                &Pair::spec(b"echo", &[1; 100]),
                Arc::new(Completion::new()),
                p.now,
            )
            .unwrap();
    }
    let (batch, frames) = p.client.poll_transmit().unwrap();
    assert_eq!(frames, 5);
    let limits = netron_codec::Limits::default();
    // Large records: the whole batch in one.
    assert_eq!(cut(&batch, None, 1 << 16), vec![batch.clone()]);
    // Records that hold two frames: every record is whole frames (a batch of 1 or 2).
    let one = netron_codec::Frame::parse(&batch, &limits).unwrap().len();
    let recs = cut(&batch, None, 2 * one + 1);
    assert!(recs.len() >= 3, "{}", recs.len());
    for r in &recs {
        let mut n = 0;
        for f in netron_codec::decode_batch(r, &limits) {
            f.unwrap();
            n += 1;
        }
        assert!((1..=2).contains(&n) && r.len() <= 2 * one + 1);
    }
    assert_eq!(recs.concat(), batch, "nothing lost or reordered");
    // Records smaller than a frame: each frame alone, in fragments of a quarter of the
    // record limit (at least a frame header), so a ring holds several at once.
    let recs = cut(&batch[..one], None, 40);
    assert_eq!(recs.len(), one.div_ceil(16));
    assert!(recs.iter().all(|r| r.len() <= 16));
    let recs_large = cut(&batch[..one], None, 64);
    assert_eq!(recs_large.len(), one.div_ceil(16));
    assert_eq!(recs_large.concat(), &batch[..one]);
    let mut rx = RecordReader::new(limits, 40);
    for (i, r) in recs.iter().enumerate() {
        match rx.push(r).unwrap() {
            Record::Fragment { .. } => assert!(i + 1 < recs.len()),
            Record::Reassembled(f) => {
                assert_eq!(i + 1, recs.len());
                assert_eq!(f.as_bytes(), &batch[..one]);
            }
            Record::Batch(_) => panic!("a 40-byte record cannot hold a {one}-byte frame"),
        }
    }
}

#[test]
fn a_large_batch_of_small_frames_goes_in_groups_a_busy_reader_can_answer_one_by_one() {
    use super::super::record::GROUP_BYTES;
    let mut p = Pair::new();
    p.pump_records(1 << 20, true);
    // Small calls: their batch (at most 128 frames) is larger than a group.
    let calls = 120;
    for _ in 0..calls {
        p.client
            .start_call(
                &Pair::spec(b"echo", &[7; 100]),
                Arc::new(Completion::new()),
                p.now,
            )
            .unwrap();
    }
    let (batch, frames) = p.client.poll_transmit().unwrap();
    assert_eq!(frames, calls);
    assert!(batch.len() > GROUP_BYTES, "{}", batch.len());
    let limits = netron_codec::Limits::default();
    let mut recs = cut(&batch, None, 1 << 20);
    assert!(recs.len() >= 2, "{} records", recs.len());
    let mut seen = 0;
    for (i, r) in recs.iter().enumerate() {
        let mut n = 0;
        for f in netron_codec::decode_batch(r, &limits) {
            f.unwrap();
            n += 1;
        }
        seen += n;
        assert!(
            n >= 1 && r.len() <= GROUP_BYTES,
            "record {i}: {} bytes",
            r.len()
        );
    }
    assert_eq!(seen, calls as usize);
    assert_eq!(recs.concat(), batch, "nothing lost or reordered");
    // A frame larger than a group but smaller than a record goes whole, alone.
    p.client
        .start_call(
            &Pair::spec(b"echo", &noise(3 * GROUP_BYTES)),
            Arc::new(Completion::new()),
            p.now,
        )
        .unwrap();
    let (big, _) = p.client.poll_transmit().unwrap();
    assert_eq!(cut(&big, None, 1 << 20), vec![big.clone()]);
    recs.push(big);
    // The receiver answers them all, whatever the cut.
    let mut env = conn_env!(p);
    for r in &recs {
        p.server.handle_record(r, 1 << 20, &mut env).unwrap();
    }
}

/// What the codec's reference reader says of a sequence of records: `None` if all pass,
/// else the counter of the first error.
fn reference(records: &[&[u8]], limit: usize) -> Option<&'static str> {
    let limits = netron_codec::Limits::default();
    let mut rx = RecordReader::new(limits, limit as u32);
    for r in records {
        match rx.push(r) {
            Err(e) => return Some(e.counter()),
            Ok(Record::Batch(frames)) => {
                for f in frames {
                    if let Err(e) = f {
                        return Some(e.counter());
                    }
                }
            }
            Ok(_) => {}
        }
    }
    None
}

/// Feeds records to an open server connection; `None` if all pass, else the error counter.
fn engine(records: &[&[u8]], limit: usize) -> Option<&'static str> {
    let mut p = Pair::new();
    p.pump_records(limit, true);
    for r in records {
        let mut env = conn_env!(p);
        if let Err(e) = p.server.handle_record(r, limit, &mut env) {
            assert!(p.server.is_closing());
            return Some(e.counter);
        }
    }
    None
}

#[test]
fn broken_records_are_refused_as_the_reference_reader_refuses_them() {
    let mut p = Pair::new();
    p.pump_records(1 << 16, true);
    // Two Pings (frames that need no service) and a 300-byte Request, as bytes.
    let ping = {
        let mut b = netron_codec::BatchEncoder::new(netron_codec::Limits::default());
        b.frame(netron_codec::FrameKind::Ping, 0)
            .unwrap()
            .payload(&[0; 8])
            .finish()
            .unwrap();
        b.as_slice().to_vec()
    };
    p.client
        .start_call(
            &Pair::spec(b"echo", &[9; 300]),
            Arc::new(Completion::new()),
            p.now,
        )
        .unwrap();
    let (req, _) = p.client.poll_transmit().unwrap();
    let two_pings = [ping.clone(), ping.clone()].concat();
    let frag_then_ping = [&req[64..], &ping[..]].concat();
    let overrun = [&req[64..], &[0u8; 1][..]].concat();
    let limit = 64;
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("a ping", vec![&ping]),
        ("two pings in one record", vec![&two_pings]),
        (
            "a record ending inside a frame that fits",
            vec![&ping[..20]],
        ),
        ("a header cut short", vec![&ping[..10]]),
        (
            "a whole frame then a partial one",
            vec![&two_pings[..ping.len() + 3]],
        ),
        ("a fragmented request", req.chunks(limit).collect()),
        (
            "a fragment then a whole frame in a record",
            vec![&req[..64], &frag_then_ping],
        ),
        ("an empty record inside a fragment", vec![&req[..64], &[]]),
        (
            "a continuation longer than what is missing",
            vec![&req[..64], &overrun],
        ),
        (
            "a first fragment of a frame that would fit",
            vec![&req[..50]],
        ),
        ("an empty record between batches", vec![&ping, &[], &ping]),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (what, records) in cases {
        let want = reference(&records, limit);
        let got = engine(&records, limit);
        assert_eq!(got, want, "{what}");
        seen.insert(want);
    }
    // The table covers acceptance and every record-specific refusal.
    for c in [
        None,
        Some("incomplete"),
        Some("fragment_empty"),
        Some("fragment_overrun"),
    ] {
        assert!(seen.contains(&c), "no case for {c:?}: {seen:?}");
    }
}

/// An open pair over 1 KiB records and the first 1 KiB fragment of a `len`-byte echo request
/// from its client, fed to its server.
fn first_fragment(cfg: ConnConfig, len: usize) -> (Pair, Result<(), ConnError>) {
    let mut p = Pair::with(cfg);
    p.pump_records(1 << 10, true);
    p.client
        .start_call(
            &Pair::spec(b"echo", &noise(len)),
            Arc::new(Completion::new()),
            p.now,
        )
        .unwrap();
    let (req, _) = p.client.poll_transmit().unwrap();
    let mut env = conn_env!(p);
    let r = p.server.handle_record(&req[..1024], 1024, &mut env);
    (p, r)
}

#[test]
fn a_fragmented_frame_counts_against_the_buffer_budget_and_the_stall_timer() {
    // A 200 KB request over 1 KiB records: its first fragment asks for more than the budget.
    let mut cfg = test_cfg();
    cfg.buffers = std::rc::Rc::new(BufferBudget::new(64 << 10));
    let (_, r) = first_fragment(cfg, 200_000);
    assert_eq!(r.unwrap_err().counter, "buffer_budget");

    // Within budget, an unfinished fragment is a partial frame: the stall timer closes it.
    let (mut p, r) = first_fragment(test_cfg(), 20_000);
    r.unwrap();
    assert!(p.server.awaiting_more());
    let later = p.now + test_cfg().stall_timeout + Duration::from_millis(1);
    let mut env = conn_env!(p, later);
    let e = p
        .server
        .handle_timeout(&mut env, &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.counter, "stalled", "{e:?}");
}
