//! Stream sequence and flow-control state (`netron_codec::stream`) driven by arbitrary frame
//! events, each byte one event for the opener's or the callee's view (bit 0), with the next
//! four bytes as its argument. No panic; a refused event leaves the state unchanged; a window
//! never holds more than 2^31 - 1 bytes of credit nor less than 1 - 2^32; a finished stream
//! refuses everything but is never half-open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netron_codec::stream::{MAX_WINDOW, Role, Stream, Window, consume_both};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut sides = [
        Stream::new(Role::Opener, first & 1 != 0),
        Stream::new(Role::Callee, first & 1 != 0),
    ];
    let mut windows = [Window::new(first as u32 * 1000), Window::new(u32::MAX)];
    while let Some((&op, tail)) = rest.split_first() {
        let (arg, tail) = match tail.split_first_chunk::<4>() {
            Some((a, t)) => (u32::from_le_bytes(*a), t),
            None => (0, &tail[..0]),
        };
        rest = tail;
        let s = &mut sides[(op & 1) as usize];
        let before = s.clone();
        let r = match (op >> 1) % 10 {
            0 => s.recv_data(arg, op & 0x80 != 0).map(|_| ()),
            1 => s.recv_end(op & 0x80 != 0).map(|_| ()),
            2 => s.recv_error().map(|_| ()),
            3 => s.recv_cancel().map(|_| ()),
            4 => s.send_data(op & 0x80 != 0).map(|_| ()),
            5 => s.send_end(op & 0x80 != 0),
            6 => s.send_error(),
            7 => s.send_cancel(),
            8 => {
                let w = windows[(op >> 7) as usize];
                let r = windows[(op >> 7) as usize].grant(arg);
                if r.is_err() {
                    assert_eq!(windows[(op >> 7) as usize], w);
                }
                r
            }
            _ => {
                let [a, b] = &mut windows;
                let (a0, b0) = (*a, *b);
                let r = consume_both(a, b, arg);
                if r.is_err() {
                    assert_eq!((*a, *b), (a0, b0));
                }
                r
            }
        };
        if let Err(e) = r {
            let _ = (e.counter(), e.status(), e.to_string());
            if (op >> 1) % 10 < 8 {
                assert_eq!(*s, before, "a refused event changed the state");
            }
        }
        if s.is_finished() {
            assert!(s.recv_data(s.next_recv_seq(), false).is_err());
        }
        for w in &windows {
            assert!(w.credit() <= MAX_WINDOW as i64);
            assert!(w.credit() > -(u32::MAX as i64) - 1);
        }
    }
});
