//! How connections end, over every transport, with a raw peer written from docs/protocol.md §14.4
//! (issue 10 item 7, issue 11 item 12): a Request followed by the peer's FIN is still
//! answered, a client's GoAway is answered with the server's own and the connection drains,
//! and a frame trickled byte by byte is cut off at the stall timeout of its first byte.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use netron_codec::control::ControlEncoder;
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits, StatusCode};
use netron_engine::CoreConfig;
use netron_tests::{RawPeer, calc, engines};

fn add(b: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32) {
    b.request(id, None)
        .unwrap()
        .headers(
            enc,
            &[Header::service(b"calc@1.2.0"), Header::method(b"add")],
        )
        .unwrap()
        .payload(&[20, 22])
        .finish()
        .unwrap();
}

fn kinds(bytes: &[u8]) -> Vec<(FrameKind, u32, Vec<u8>)> {
    FrameIter::new(bytes, &Limits::default())
        .map_while(Result::ok)
        .map(|f| (f.kind(), f.id(), f.payload().to_vec()))
        .collect()
}

#[test]
fn a_request_then_fin_in_one_read_is_still_answered() {
    for (e, addr) in engines(CoreConfig::default(), &[calc()], "fin") {
        for _ in 0..20 {
            let mut p = RawPeer::handshake(&addr);
            let mut b = BatchEncoder::new(Limits::default());
            let mut enc = HeaderEncoder::new(4096);
            add(&mut b, &mut enc, 1);
            add(&mut b, &mut enc, 3);
            p.stream.write_all(b.as_slice()).unwrap();
            p.stream.shutdown(Shutdown::Write).unwrap();
            let got = kinds(&p.read_to_close().unwrap());
            assert_eq!(
                got,
                vec![
                    (FrameKind::Response, 1, vec![42]),
                    (FrameKind::Response, 3, vec![42])
                ]
            );
        }
        e.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn a_clients_go_away_is_answered_and_the_connection_drains() {
    for (e, addr) in engines(CoreConfig::default(), &[calc()], "goaway") {
        let mut p = RawPeer::handshake(&addr);
        let mut b = BatchEncoder::new(Limits::default());
        let mut enc = HeaderEncoder::new(4096);
        add(&mut b, &mut enc, 1);
        ControlEncoder::new()
            .go_away(&mut b, 0, StatusCode::Unavailable, "client leaving")
            .unwrap();
        p.stream.write_all(b.as_slice()).unwrap();
        // The server answers the call, answers GoAway with its own (last_id = 1), and closes
        // once nothing is in flight: the read ends without our FIN.
        let got = kinds(&p.read_to_close().unwrap());
        assert_eq!(got[0], (FrameKind::Response, 1, vec![42]), "{got:?}");
        assert_eq!(got[1].0, FrameKind::GoAway, "{got:?}");
        assert_eq!(
            got[1].1, 1,
            "GoAway's last_id is the last id the client opened"
        );
        assert_eq!(got.len(), 2, "{got:?}");
        e.shutdown(Duration::from_secs(1));
    }
}

#[test]
fn a_trickled_frame_is_cut_off_at_the_stall_timeout_of_its_first_byte() {
    let stall = Duration::from_millis(300);
    for (e, addr) in engines(
        CoreConfig::default().with_stall_timeout(stall),
        &[calc()],
        "trickle",
    ) {
        let mut p = RawPeer::handshake(&addr);
        let mut b = BatchEncoder::new(Limits::default());
        let mut enc = HeaderEncoder::new(4096);
        add(&mut b, &mut enc, 1);
        // 40 bytes at one byte every 50 ms would take 2 s; the frame has 300 ms.
        let frame = b.as_slice().to_vec();
        let mut cut = false;
        for byte in &frame[..frame.len() - 1] {
            if p.stream.write_all(std::slice::from_ref(byte)).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            if e.total_stats().errors_of("stalled") > 0 {
                cut = true;
                break;
            }
        }
        assert!(cut, "the server kept the trickled frame open");
        // The server sent an Error(0, DeadlineExceeded) before closing.
        p.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = p.stream.read_to_end(&mut rest);
        let got = kinds(&rest);
        assert_eq!(
            got.last().map(|k| (k.0, k.1)),
            Some((FrameKind::Error, 0)),
            "{got:?}"
        );
        e.shutdown(Duration::from_secs(1));
    }
}
