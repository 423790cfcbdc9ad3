//! Bad values from the API user: no argument value or configuration value may panic a core
//! (issue 10, item 2a). Property tests throw arbitrary argument values at `Core::call` and
//! arbitrary configuration values at `CoreConfig::validate` and `Core::new`.

use std::time::Duration;

use netron_engine::{
    CallSlot, ConnectError, CoreConfig, DirectRecv, FrameBudget, IdlePolicy, ProtocolConfig,
    RuntimeConfig, StatusCode,
};
use proptest::prelude::*;

use crate::Transport;

const DL: Option<Duration> = Some(Duration::from_secs(10));
const LIMIT: usize = 16 << 20;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        (0u64..5_000).prop_map(Duration::from_micros),
        (0u64..100_000).prop_map(Duration::from_secs),
        Just(Duration::from_secs(u64::MAX / 2)),
        Just(Duration::MAX),
    ]
}

/// Arbitrary argument values: every call returns (a reply or a status), none panics, and
/// the connection serves a normal call afterwards.
pub fn arbitrary_call_arguments_never_panic(t: &Transport) {
    let (server, _) = crate::calc_server(t);
    let ep = crate::dial_of(t, &server).clone();
    let cfg = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(
        service in prop_oneof![Just(b"calc@1.2.0".to_vec()), proptest::collection::vec(any::<u8>(), 0..64), Just(vec![b's'; 70_000])],
        method in prop_oneof![Just(b"add".to_vec()), Just(b"echo".to_vec()), proptest::collection::vec(any::<u8>(), 0..16)],
        payload_len in prop_oneof![0usize..300, Just(LIMIT - 40), Just(LIMIT), Just(LIMIT + 1)],
        deadline in proptest::option::of(duration())
    )| {
        let mut core = crate::new_core(t, CoreConfig::default()).unwrap();
        let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
        let mut slot = CallSlot::new();
        let payload = vec![5u8; payload_len];
        let _ = core.call(conn, &service, &method, &payload, deadline, &mut slot);
        let r = core.call(conn, b"calc@1.2.0", b"add", &[2, 2], DL, &mut slot).map(<[u8]>::to_vec);
        prop_assert_eq!(r, Ok(vec![4]));
    });
    server.shutdown(Duration::from_secs(1));
}

/// Arbitrary configuration values: validation either refuses them by name or a core
/// built from them works; nothing panics.
pub fn arbitrary_settings_are_validated_or_work(t: &Transport) {
    let (server, _) = crate::calc_server(t);
    let ep = crate::dial_of(t, &server).clone();
    let cfg = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(
        ring_entries in prop_oneof![Just(0u32), 1u32..64, Just(16_384), Just(16_385), Just(32_768), Just(u32::MAX)],
        recv_buffers in prop_oneof![Just(0u16), Just(3), Just(4), Just(64), Just(u16::MAX)],
        recv_buffer_size in prop_oneof![Just(0usize), Just(511), Just(512), Just(4096), Just(usize::MAX)],
        keepalive in duration(),
        dead_after in duration(),
        stall in duration(),
        linger in duration(),
        backlog in prop_oneof![Just(0usize), Just(1 << 20), Just(32 << 20), Just(usize::MAX)],
        buffers in prop_oneof![Just(0usize), Just(1 << 20), Just(256 << 20), Just(usize::MAX)],
        burst in prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        per_sec in prop_oneof![Just(0u32), Just(1), Just(u32::MAX)],
        spin in duration(),
        direct in proptest::option::of((0usize..10, duration())),
        max_connections in prop_oneof![Just(0usize), Just(1), Just(usize::MAX)]
    )| {
        let runtime = RuntimeConfig::default()
            .with_idle(IdlePolicy::Adaptive { spin })
            .with_direct_recv(direct.map(|(max_conns, idle)| DirectRecv::new(max_conns, idle)))
            .with_max_connections(max_connections)
            .with_recv_buffers(recv_buffers, recv_buffer_size)
            .with_ring_entries(ring_entries);
        let protocol = ProtocolConfig::default()
            .with_keepalive(keepalive, dead_after)
            .with_stall_timeout(stall)
            .with_handshake_timeout(stall)
            .with_connect_timeout(stall)
            .with_close_linger(linger)
            .with_max_backlog_bytes(backlog)
            .with_max_buffer_bytes(buffers)
            .with_idle_frame_budget(FrameBudget::new(burst, per_sec));
        let cfg = CoreConfig::new(runtime, protocol);
        match cfg.validate() {
            Err(e) => prop_assert!(
                e.to_string().contains("RuntimeConfig::") || e.to_string().contains("ProtocolConfig::"),
                "{e}"
            ),
            Ok(()) => {
                let mut core = crate::new_core(t, cfg).unwrap();
                let conn = match core.connect(&ep, Duration::from_secs(5)) {
                    Ok(c) => c,
                    Err(s) => {
                        // Tiny but valid timers may end the handshake: a clean error.
                        prop_assert!(
                            matches!(
                                s,
                                ConnectError::Closed { .. } | ConnectError::Timeout { .. }
                            ),
                            "{:?}",
                            s
                        );
                        return Ok(());
                    }
                };
                let mut slot = CallSlot::new();
                // Tiny but valid timers (a 1 ms stall or dead-peer timeout) may close the
                // connection on a loaded machine: that must be a clean status, never a panic.
                match core.call(conn, b"calc@1.2.0", b"add", &[1, 2], DL, &mut slot) {
                    Ok(v) => prop_assert_eq!(v, &[3][..]),
                    Err(s) => prop_assert!(
                        matches!(s.code(), StatusCode::Unavailable | StatusCode::DeadlineExceeded)
                            && !s.status().message.is_empty(),
                        "{s:?}"
                    ),
                }
            }
        }
    });
    server.shutdown(Duration::from_secs(1));
}

/// The ring-size bound at its edge: the largest accepted ring really sets up (the proptest
/// above found 32 768 validated but refused by the kernel), one more is refused by name.
pub fn ring_entries_at_the_bound(t: &Transport) {
    let (server, _) = crate::calc_server(t);
    let ep = crate::dial_of(t, &server).clone();
    let cfg = RuntimeConfig::default().with_ring_entries(16_384);
    let mut core = crate::new_core(t, cfg.clone()).unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).unwrap();
    let mut slot = CallSlot::new();
    assert_eq!(
        core.call(conn, b"calc@1.2.0", b"add", &[1, 2], DL, &mut slot)
            .unwrap(),
        [3]
    );
    let e = CoreConfig::from(cfg.with_ring_entries(16_385))
        .validate()
        .unwrap_err();
    assert_eq!(e.setting, "RuntimeConfig::ring_entries");
    server.shutdown(Duration::from_secs(1));
}
