//! A consumer that waits inside its own io_uring, as an engine core does: it announces sleep,
//! then has the ring poll the doorbell eventfd and the liveness socket; the producer's
//! publication wakes it through the doorbell, and the producer's end through the socket.
//! (Real rendezvous, memfd and eventfds; the two sides are threads of this process.)

#![cfg(not(loom))]

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use netron_shm::{Error, ShmConnection, ShmListener};

const RECORDS: u32 = 3000;
const BELL: u64 = 1;
const LIVENESS: u64 = 2;

fn deadline() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(10))
}

/// Adds a one-shot poll of `fd` for readability (and hang-up) to the ring.
fn poll(ring: &mut IoUring, fd: RawFd, user_data: u64) {
    let mask = (libc::POLLIN | libc::POLLRDHUP | libc::POLLHUP) as u32;
    let sqe = opcode::PollAdd::new(types::Fd(fd), mask)
        .build()
        .user_data(user_data);
    // SAFETY: a poll entry references no memory; `fd` stays open while the ring lives (the
    // connection it belongs to is dropped after the ring).
    unsafe { ring.submission().push(&sqe) }.expect("submission queue has room");
}

/// Takes the doorbell's count (the eventfd is non-blocking; 0 if nothing was rung).
fn drain_eventfd(fd: RawFd) -> u64 {
    let mut count = 0u64;
    // SAFETY: reads at most 8 bytes into a local u64; the fd is open.
    let n = unsafe { libc::read(fd, (&raw mut count).cast(), 8) };
    if n == 8 { count } else { 0 }
}

#[test]
fn a_consumer_sleeps_in_io_uring_on_the_doorbell_and_sees_the_producer_go() {
    let name = format!("uring-wait-{}", std::process::id());
    let listener = ShmListener::bind(&name).unwrap();
    let producer = std::thread::spawn(move || {
        let mut conn = ShmConnection::connect(&name).unwrap();
        for i in 0..RECORDS {
            let p = conn.producer();
            p.send_wait(&i.to_le_bytes(), deadline()).unwrap();
            p.publish().unwrap();
            if i % 50 == 0 {
                // Idle long enough for the consumer to give up spinning and sleep.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Dropping the connection closes the liveness socket.
    });

    let conn = listener.accept_timeout(deadline()).unwrap();
    let (_p, mut c) = conn.split();
    let bell = c.doorbell_fd().unwrap().as_raw_fd();
    let liveness = c.liveness_fd().unwrap().as_raw_fd();
    let mut ring = IoUring::new(8).unwrap();
    let (mut next, mut sleeps, mut wakes_by_bell) = (0u32, 0u32, 0u32);
    let (mut bell_armed, mut liveness_armed, mut peer_closed) = (false, false, false);
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(r) = c.read().unwrap() {
            assert_eq!(r, next.to_le_bytes(), "records in order, each once");
            next += 1;
        }
        c.release();
        if peer_closed {
            break;
        }
        assert!(Instant::now() < give_up, "stuck at record {next}");
        match c.announce_sleep() {
            Ok(true) => {}
            Ok(false) => continue, // a record came in meanwhile
            Err(e) => panic!("announce_sleep: {e}"),
        }
        sleeps += 1;
        if !bell_armed {
            poll(&mut ring, bell, BELL);
            bell_armed = true;
        }
        if !liveness_armed {
            poll(&mut ring, liveness, LIVENESS);
            liveness_armed = true;
        }
        ring.submit_and_wait(1).unwrap();
        c.cancel_sleep();
        for cqe in ring.completion() {
            assert!(cqe.result() >= 0, "poll failed: {}", cqe.result());
            match cqe.user_data() {
                BELL => {
                    bell_armed = false;
                    if drain_eventfd(bell) > 0 {
                        wakes_by_bell += 1;
                    }
                }
                LIVENESS => {
                    liveness_armed = false;
                    peer_closed = true;
                }
                other => panic!("unexpected completion {other}"),
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(
        next, RECORDS,
        "every record published before the close was read"
    );
    assert!(sleeps > 0, "the consumer never slept in the ring");
    assert!(wakes_by_bell > 0, "no publication rang the doorbell");
    // The connection knows the peer is gone too.
    assert!(matches!(c.wait(deadline()), Err(Error::PeerGone)));
}
