//! The epoll driver against the io_uring driver's contract: the same operations give the same
//! events (`driver/uring/mod.rs` tests the other side).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::*;
use crate::driver::token::Op as Kind;

fn tag(key: usize) -> Token {
    Token::new(Kind::Recv, key, 1)
}

/// Runs the driver until `want` completions were reported or nothing is in flight.
fn run(e: &mut Epoll, want: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let mut cqes = Vec::new();
    for _ in 0..1000 {
        e.wait(Duration::from_millis(5)).unwrap();
        e.drain(&mut cqes);
        out.extend(cqes.iter().filter_map(|c| e.complete(*c)));
        if out.len() >= want || e.in_flight() == 0 {
            break;
        }
    }
    out
}

fn pair() -> (UnixStream, Rc<OwnedFd>) {
    let (a, b) = UnixStream::pair().unwrap();
    (a, Rc::new(OwnedFd::from(b)))
}

#[test]
fn send_and_receive_through_the_ops() {
    let mut e = Epoll::new(8, 4096).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let (a, b) = (Rc::new(OwnedFd::from(a)), Rc::new(OwnedFd::from(b)));
    let r = e.recv_multi(&b, tag(2));
    e.send(&a, b"hello".to_vec(), 1, tag(1));
    let got = run(&mut e, 2);
    let mut bytes = Vec::new();
    for c in got {
        match c.event {
            Event::Sent { wrote, done, more } => {
                assert_eq!((c.tag, more), (tag(1), false));
                assert_eq!(wrote, Some(4));
                assert_eq!(done.as_deref(), Some(&b"hello"[..]));
            }
            Event::Received { result, buf, more } => {
                assert_eq!((c.op, c.tag, more), (r, tag(2), true));
                let bid = buf.unwrap();
                bytes.extend_from_slice(e.recv_data(bid, result as usize).unwrap());
                e.recycle(bid);
            }
            ev => panic!("unexpected {ev:?}"),
        }
    }
    assert_eq!(bytes, b"ello");
    // Cancelled: the final completion arrives and frees the slot.
    e.cancel(r);
    let got = run(&mut e, 1);
    assert!(matches!(
        got[0].event,
        Event::Received {
            more: false,
            result,
            ..
        } if result == -libc::ECANCELED
    ));
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn eof_ends_a_receive_and_a_full_pool_ends_it_with_enobufs() {
    let mut e = Epoll::new(2, 4).unwrap();
    let (mut a, b) = pair();
    e.recv_multi(&b, tag(1));
    a.write_all(b"0123456789ab").unwrap(); // three buffers' worth, two buffers
    let got = run(&mut e, 3);
    let results: Vec<_> = got
        .iter()
        .map(|c| match c.event {
            Event::Received { result, more, .. } => (result, more),
            ref ev => panic!("unexpected {ev:?}"),
        })
        .collect();
    assert_eq!(results, [(4, true), (4, true), (-libc::ENOBUFS, false)]);
    // Re-armed after the owner gives the buffers back: the rest, then EOF.
    for c in &got {
        if let Event::Received { buf: Some(bid), .. } = c.event {
            e.recycle(bid);
        }
    }
    e.recv_multi(&b, tag(1));
    drop(a);
    let got = run(&mut e, 2);
    assert!(matches!(
        got[0].event,
        Event::Received {
            result: 4,
            more: true,
            ..
        }
    ));
    assert!(matches!(
        got[1].event,
        Event::Received {
            result: 0,
            more: false,
            buf: None
        }
    ));
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn a_send_into_a_full_socket_waits_for_room_and_returns_its_buffer() {
    let mut e = Epoll::new(2, 4096).unwrap();
    let (mut reader, w) = pair();
    let big = vec![7u8; 4 << 20];
    e.send(&w, big, 0, tag(1));
    // Drain on another thread while the driver waits for room.
    let t = std::thread::spawn(move || {
        let mut got = vec![0u8; 4 << 20];
        reader.read_exact(&mut got).unwrap();
        got
    });
    let mut wrote = 0i64;
    let mut done = None;
    for _ in 0..10_000 {
        for c in run(&mut e, 1) {
            if let Event::Sent {
                wrote: w, done: d, ..
            } = c.event
            {
                wrote += w.unwrap() as i64;
                if d.is_some() {
                    done = d;
                }
            }
        }
        if done.is_some() {
            break;
        }
    }
    assert_eq!(wrote, 4 << 20);
    assert_eq!(done.map(|b| b.len()), Some(4 << 20));
    assert!(t.join().unwrap().iter().all(|b| *b == 7));
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn a_forgotten_op_keeps_its_resources_until_its_completion() {
    let mut e = Epoll::new(8, 4096).unwrap();
    let (mut a, b) = pair();
    let r = e.recv_multi(&b, tag(3));
    e.forget(r);
    drop(b); // the operation keeps the descriptor open
    assert_eq!(e.in_flight(), 1);
    a.write_all(b"x").unwrap();
    drop(a); // EOF ends the receive
    let got = run(&mut e, 1);
    assert!(got.is_empty(), "an ignored operation reports nothing");
    assert_eq!(e.in_flight(), 0);
    assert_eq!(e.pool.free.len(), 8, "its buffer came back");
}

#[test]
fn poll_timeout_eventfd_read_and_accept() {
    let mut e = Epoll::new(8, 4096).unwrap();
    let t = e.timeout(Duration::from_millis(1), tag(4));
    let got = run(&mut e, 1);
    assert_eq!(got[0].op, t);
    assert!(matches!(got[0].event, Event::TimedOut { result } if result == -libc::ETIME));
    let t = e.timeout(Duration::from_secs(60), tag(4));
    e.cancel(t);
    let got = run(&mut e, 1);
    assert!(matches!(got[0].event, Event::TimedOut { result } if result == -libc::ECANCELED));

    let (mut a, b) = pair();
    e.poll(&b, libc::POLLIN as u32, tag(5));
    a.write_all(b"x").unwrap();
    let got = run(&mut e, 1);
    assert!(
        matches!(got[0].event, Event::Polled { result, more: false } if result & libc::POLLIN as i32 != 0)
    );

    let inbox = crate::inbox::Inbox::new().unwrap();
    let efd = Rc::new(inbox.eventfd().try_clone().unwrap());
    e.eventfd_read(&efd, Box::new([0; 8]), tag(6));
    let mut cqes = Vec::new();
    for _ in 0..3 {
        e.wait(Duration::from_millis(2)).unwrap();
        e.drain(&mut cqes);
        assert!(cqes.is_empty(), "the read completed with nothing written");
    }
    let ring = std::fs::File::from(efd.try_clone().unwrap());
    (&ring).write_all(&1u64.to_ne_bytes()).unwrap();
    let got = run(&mut e, 1);
    match &got[0].event {
        Event::EventfdRead { result, buf } => {
            assert_eq!(*result, 8);
            assert_eq!(u64::from_ne_bytes(**buf), 1);
        }
        ev => panic!("unexpected {ev:?}"),
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let l = Rc::new(OwnedFd::from(listener));
    e.accept(&l, tag(7));
    let _c = std::net::TcpStream::connect(addr).unwrap();
    let got = run(&mut e, 1);
    assert!(matches!(
        got[0].event,
        Event::Accepted {
            fd: Ok(_),
            more: false
        }
    ));
    assert_eq!(e.in_flight(), 0);
}

/// Zero-timeout waits that keep finding nothing back off linearly up to
/// `MAX_POLL_BACKOFF - 1` skipped turns; readiness found resets the backoff, and a readiness
/// arriving while turns are skipped is found within `MAX_POLL_BACKOFF` turns.
#[test]
fn empty_polls_back_off_and_readiness_resets_them() {
    let mut e = Epoll::new(8, 4096).unwrap();
    // Turns between two waits, for the first few empty waits: 0, 1, 2, ... then capped.
    let mut gaps = Vec::new();
    let mut gap = 0;
    while gaps.len() < MAX_POLL_BACKOFF as usize + 2 {
        if e.should_poll() {
            e.wait(Duration::ZERO).unwrap();
            gaps.push(gap);
            gap = 0;
        } else {
            gap += 1;
        }
    }
    let cap = MAX_POLL_BACKOFF - 1;
    let want: Vec<u32> = (0..gaps.len() as u32).map(|k| k.min(cap)).collect();
    assert_eq!(gaps, want);

    // Readiness while the waits are backed off: found within MAX_POLL_BACKOFF turns.
    let (mut a, b) = pair();
    e.poll(&b, libc::POLLIN as u32, tag(5));
    a.write_all(b"x").unwrap();
    let mut cqes = Vec::new();
    let mut turns = 0;
    loop {
        turns += 1;
        if e.should_poll() {
            e.wait(Duration::ZERO).unwrap();
        }
        e.drain(&mut cqes);
        if !cqes.is_empty() {
            break;
        }
        assert!(turns <= MAX_POLL_BACKOFF, "not found after {turns} turns");
    }
    assert!(matches!(
        e.complete(cqes[0]).map(|c| c.event),
        Some(Event::Polled { .. })
    ));
    // ... and the wait that found it reset the backoff: the next turn polls again.
    assert!(e.should_poll());
}
