//! The conformance suite: every area written once, as functions taking the [`Transport`],
//! and instantiated for every transport by [`crate::conformance!`] (tests/tests/conformance.rs)
//! as `<transport>::<area>::<test>`, so each (area, transport) pair is its own named test and
//! every failure message starts with the transport's name.
//!
//! | area          | what it checks                                                       |
//! |---------------|----------------------------------------------------------------------|
//! | [`unary`]     | calls answered, large payloads, batching, caller-driven cores        |
//! | [`errors`]    | statuses of failing, unknown and panicking calls; a failing ring     |
//! | [`dispatch`]  | interceptors, metadata both ways, deferred replies                  |
//! | [`deadlines`] | caller and server deadlines, late replies, `Duration::MAX`           |
//! | [`cancel`]    | Cancel frames, dropped futures, cancel-heavy clients                 |
//! | [`bad_input`] | misbehaving raw peers cut off with a counter, others served          |
//! | [`limits`]    | message sizes, backlogs, frame budgets, connection limits, settings  |
//! | [`endings`]   | FIN, GoAway, trickles, stall timeouts, shutdown, engines dropped     |
//! | [`alloc`]     | allocation counts per call (each test in its own process)            |
//! | [`counts`]    | writes, frames and `io_uring_enter` calls per call (parked cores)    |
//! | [`hot`]       | busy-poll cores' direct reads (hot connections)                      |
//! | [`values`]    | arbitrary call arguments and settings (property tests)               |
//! | [`peers`]     | symmetric peers: callbacks mid-call and after, both ways, vanishing  |
//! | [`middleware`]| interceptor order (engine, service), client-side and async interceptors, the ready `auth`, `rate_limit` and `trace` interceptors |
//! | [`typed`]     | typed FlatBuffers methods: requests built, replies verified      |
//! | [`sys`]       | `$sys` listing, requirement resolution (semver, pre-releases), NotFound and InvalidArgument texts, services added and removed at run time |
//! | [`streams`]   | the three stream shapes, flow control bounding a slow reader and a connection's many streams, cancel, deadline, peer death, bad stream input, frames for finished streams, a Response overtaking a flood, compressed messages |
//! | [`events`]    | publish/subscribe: fan-out across both cores and in-process, slow-subscriber policies, queue groups, cleanup, bad event input, `Peer` and caller-driven `Core` |
//! | [`config`]    | settings refused by rule, advertised keepalive, handshake and connect timeouts, `ConnectError`/`CallError` variants |
//!
//! Where a byte stream and a record transport must differ (a frame split over two writes is
//! legal on a stream and `Incomplete` in a record, docs/protocol.md §10.2, §26.2), the test
//! branches on [`Transport::kind`] explicitly.

pub mod alloc;
pub mod bad_input;
pub mod cancel;
pub mod config;
pub mod counts;
pub mod deadlines;
pub mod dispatch;
pub mod endings;
pub mod errors;
pub mod events;
pub mod hot;
pub mod limits;
pub mod middleware;
pub mod peers;
pub mod streams;
pub mod sys;
pub mod typed;
pub mod unary;
pub mod values;
pub mod watchdog;

mod util;

use crate::Transport;

/// Instantiates the conformance suite for every transport: one module per transport, one
/// module per area in it, one `#[test]` per suite function. Invoke it once, with no
/// arguments, in a test binary that declares the counting allocator:
///
/// ```text
/// #[global_allocator]
/// static GLOBAL: netron_tests::CountingAlloc = netron_tests::CountingAlloc;
/// netron_tests::conformance!();
/// ```
///
/// A test listed as `alone name` runs while no other suite test of the binary runs (it
/// busy-polls: on a small machine its spinning cores would starve the others' bounded waits):
/// see [`run_alone`]. A test listed as `isolated name` runs alone too, and in a child process
/// of its own (allocation counts, process-wide panic hooks): see [`isolated`].
#[macro_export]
macro_rules! conformance {
    () => {
        // THE transport list. A new transport adds one `name => STATIC` entry here (and its
        // `Transport` static in tests/src/transport.rs), e.g. `inproc => INPROC`.
        $crate::conformance!(tcp => TCP, unix => UNIX, inproc => INPROC, shm => SHM, shm2p => SHM2P);
    };
    ($($name:ident => $t:ident),+ $(,)?) => {
        $(
            #[allow(missing_docs)]
            pub mod $name {
                $crate::conformance!(@areas $name, $t;
                    unary {
                        calls_answer_fail_and_go_on,
                        many_threads_many_connections,
                        requests_that_arrive_together_are_answered_in_one_batch,
                        alone a_caller_driven_core_makes_calls,
                        a_handler_calls_another_service_on_its_own_core,
                        header_table_size_zero,
                        a_zero_copy_threshold_keeps_large_replies_intact,
                        alone pipelined_bursts_and_large_replies_stay_intact_around_in_place_batches,
                    }
                    streams {
                        server_client_and_bidi_streams_work,
                        alone a_bidi_echo_of_100k_chunks_arrives_complete_and_in_order,
                        alone a_slow_reader_bounds_what_the_writer_buffers,
                        cancel_from_either_side_mid_stream,
                        a_deadline_ends_the_stream_midway,
                        a_peer_killed_mid_stream_fails_it_unavailable,
                        bad_stream_input_gets_a_connection_error_and_a_counter,
                        a_handler_streams_into_its_calling_peer,
                        interceptors_run_around_the_whole_stream,
                        a_caller_driven_core_streams_with_would_block,
                        a_configured_window_bounds_a_stream_and_with_server_keeps_streams,
                        empty_messages_take_credit_when_sent,
                        rejected_uploads_keep_the_connection,
                        an_empty_message_flood_is_stopped_by_the_window,
                        a_connection_bounds_what_all_its_streams_queue,
                        a_reader_of_one_stream_is_not_stalled_by_unread_others,
                        streams_open_by_requirement_like_calls,
                        a_failed_half_delivers_its_status_both_ways,
                        frames_for_a_finished_stream_are_ignored_and_counted,
                        a_response_overtakes_a_flooding_stream,
                        compressible_stream_messages_go_compressed_and_arrive_intact,
                    }
                    events {
                        fan_out_reaches_every_subscriber_across_both_cores,
                        an_event_no_frame_can_carry_is_refused_when_published,
                        slow_subscribers_drop_or_are_ended_and_others_lose_nothing,
                        queue_groups_give_each_event_to_one_member,
                        unsubscribe_and_disconnect_clean_up,
                        bad_event_input_gets_defined_errors_and_counters,
                        peers_and_caller_driven_cores_publish_and_subscribe,
                    }
                    config {
                        invalid_settings_are_refused_with_the_setting_and_the_rule,
                        the_welcome_advertises_the_configured_keepalive,
                        a_client_pings_at_the_servers_shorter_keepalive,
                        a_silent_client_is_closed_at_the_handshake_timeout,
                        a_silent_server_fails_connect_naming_the_timeout,
                        connect_errors_name_their_cause,
                        call_errors_name_their_cause,
                    }
                    errors {
                        a_panicking_handler_fails_its_call_only,
                        hostile_handlers_fail_their_call_only,
                        unknown_names_are_not_echoed,
                        a_core_whose_ring_fails_reports_it_everywhere,
                        a_server_that_vanishes_mid_call_fails_the_call,
                    }
                    dispatch {
                        interceptors_run_in_order_then_in_reverse,
                        a_rejecting_interceptor_stops_the_call,
                        metadata_travels_both_ways,
                        traceparents_arrive_exactly_as_sent,
                        an_interceptor_times_the_call,
                        deferred_replies_answer_from_other_threads,
                        dropped_deferred_replies_answer_the_caller,
                        a_deferred_answer_after_the_deadline_is_dropped,
                        a_deferred_reply_outliving_its_engine_is_harmless,
                        a_deferred_answer_reaches_only_its_own_core,
                    }
                    deadlines {
                        deadline_exceeded_and_the_caller_moves_on,
                        duration_max_deadline_means_never,
                        duration_max_deadline_means_never_async,
                        connect_timeout_duration_max_does_not_panic,
                        connect_timeout_zero_is_prompt,
                        a_zero_deadline_fails_at_once_and_sends_nothing,
                        alone the_callers_deadline_holds_while_a_handler_blocks_the_core,
                        caller_deadline_while_core_blocked,
                        given_up_call_does_not_poison_next,
                        the_server_enforces_deadlines_without_help_from_the_caller,
                        abandoned_calls_to_a_silent_server_fail_on_close,
                    }
                    cancel {
                        alone async_handlers_answer_fail_expire_and_cancel,
                        async_calls_resolve_and_dropping_one_cancels_it,
                        racing_calls_and_cancels_on_one_connection,
                        pipelined_client_cancelling_half_its_calls_keeps_connection,
                        interleaved_cancel_half_keeps_connection,
                    }
                    bad_input {
                        misbehaving_peers_are_cut_off_and_others_lose_nothing,
                        alone misbehaving_peers_on_hot_connections_are_cut_off,
                        a_flood_without_reading_is_cut_off,
                        alone a_flood_on_a_hot_connection_is_cut_off,
                        replies_from_client_to_server_are_ignored,
                        handshake_trickle_is_bounded,
                        frame_trickle_is_bounded,
                    }
                    limits {
                        message_size_limits_fail_one_call_only,
                        metadata_above_the_header_list_limit_fails_one_call_only,
                        a_peer_that_stops_reading_is_disconnected,
                        rapid_reset_and_empty_frame_floods_are_cut_off,
                        huge_metadata_is_refused_without_echo,
                        ping_rate_just_below_budget_keeps_connection,
                        ping_flood_without_reading_is_closed,
                        connection_limit_refuses_extra_connections,
                        bad_settings_are_refused_by_name,
                    }
                    endings {
                        a_request_then_fin_in_one_read_is_still_answered,
                        request_then_fin_is_answered,
                        a_clients_go_away_is_answered_and_the_connection_drains,
                        go_away_from_client_is_answered_and_drained,
                        go_away_odd_last_id_and_request_after_it,
                        a_trickled_frame_is_cut_off_at_the_stall_timeout_of_its_first_byte,
                        shutdown_drains_and_refuses_new_calls,
                        calls_on_a_stopped_engine_fail_at_once,
                        calls_after_shutdown_fail_at_once,
                        engine_dropped_from_inside_a_handler,
                        isolated engine_dropped_from_inside_a_handler_does_not_panic_its_core,
                    }
                    alloc {
                        isolated steady_state_sync_calls_allocate_nothing,
                        isolated channel_and_async_paths_stay_within_their_allocation_budgets,
                        isolated one_interceptor_costs_what_the_docs_say,
                        isolated no_middleware_installed_costs_nothing,
                        isolated steady_state_stream_chunks_allocate_nothing,
                    }
                    counts {
                        isolated a_parked_sync_call_costs_fixed_writes_frames_and_enters,
                        a_parked_burst_is_written_in_pieces_and_every_call_answered,
                    }
                    hot {
                        alone echoes_stay_intact_across_promotion_direct_reads_and_demotion,
                        alone concurrent_callers_share_hot_connections,
                        alone a_hot_connection_sees_its_peer_go,
                        alone turning_direct_reads_off_keeps_every_byte_on_the_ring,
                    }
                    peers {
                        a_server_calls_back_into_the_clients_services_mid_call_and_after,
                        a_sync_handlers_blocking_callback_is_an_error_not_a_deadlock,
                        a_sync_handlers_blocking_stream_is_an_error_not_a_deadlock,
                        both_sides_call_each_other_at_once,
                        peer_services_vanish_with_the_connection,
                        a_request_with_the_wrong_id_parity_is_cut_off,
                    }
                    middleware {
                        engine_wide_then_per_service_in_a_defined_order,
                        client_interceptors_see_both_ways_and_refuse_locally,
                        async_interceptors_await_before_any_handler,
                        a_caller_driven_core_runs_client_interceptors,
                        auth_checks_tokens_and_hands_the_identity_to_the_handler,
                        rate_limit_rejects_over_the_burst_per_peer_and_method,
                        trace_logs_every_call_with_its_latency,
                    }
                    sys {
                        requirements_resolve_to_the_highest_matching_version,
                        not_found_names_the_versions_that_exist,
                        sys_lists_services_versions_and_methods,
                        services_added_and_removed_at_run_time,
                        a_caller_driven_core_resolves_and_serves_changes,
                        a_handler_calls_its_peer_back_by_requirement,
                    }
                    typed {
                        a_typed_method_builds_requests_and_verifies_replies,
                    }
                    values {
                        arbitrary_call_arguments_never_panic,
                        arbitrary_settings_are_validated_or_work,
                        ring_entries_at_the_bound,
                    }
                );
            }
        )+
    };
    (@areas $name:ident, $t:ident; $($area:ident { $($tests:tt)* })*) => {
        $(
            pub mod $area {
                $crate::conformance!(@tests $name, $t, $area; $($tests)*);
            }
        )*
    };
    (@tests $name:ident, $t:ident, $area:ident;) => {};
    (@tests $name:ident, $t:ident, $area:ident; isolated $test:ident $(, $($rest:tt)*)?) => {
        #[test]
        fn $test() {
            $crate::suite::isolated(
                concat!(stringify!($name), "::", stringify!($area), "::", stringify!($test)),
                &$crate::transport::$t,
                $crate::suite::$area::$test,
            );
        }
        $crate::conformance!(@tests $name, $t, $area; $($($rest)*)?);
    };
    (@tests $name:ident, $t:ident, $area:ident; alone $test:ident $(, $($rest:tt)*)?) => {
        #[test]
        fn $test() {
            $crate::suite::run_alone(&$crate::transport::$t, $crate::suite::$area::$test);
        }
        $crate::conformance!(@tests $name, $t, $area; $($($rest)*)?);
    };
    (@tests $name:ident, $t:ident, $area:ident; $test:ident $(, $($rest:tt)*)?) => {
        #[test]
        fn $test() {
            $crate::suite::run(&$crate::transport::$t, $crate::suite::$area::$test);
        }
        $crate::conformance!(@tests $name, $t, $area; $($($rest)*)?);
    };
}

/// Held shared by every suite test, and exclusively by the tests that must run alone
/// ([`run_alone`], [`isolated`]).
static CPUS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs one suite test over `t`, beside other suite tests; a failure is re-raised with the
/// transport's name in front of its message (`[unix] assertion failed: ...`).
pub fn run(t: &Transport, body: fn(&Transport)) {
    let _shared = CPUS.read().unwrap_or_else(|e| e.into_inner());
    run_here(t, body);
}

/// Runs one suite test over `t` while no other suite test of this process runs: for tests
/// whose busy-polling cores would starve the bounded waits of tests beside them on a 2-CPU
/// machine (before the suite, each of these sat in a binary without timing-sensitive tests).
pub fn run_alone(t: &Transport, body: fn(&Transport)) {
    let _all = CPUS.write().unwrap_or_else(|e| e.into_inner());
    run_here(t, body);
}

fn run_here(t: &Transport, body: fn(&Transport)) {
    let _watched = watchdog::Armed::arm();
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(t))) {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(a panic without a message)");
        panic!("[{}] {msg}", t.name);
    }
}

/// The environment variable that tells a child process which isolated test to run.
const ISOLATED: &str = "NETRON_TESTS_ISOLATED";

/// Runs one suite test over `t` in a child process of its own: this test binary, re-run with
/// `--exact <test>` and one test thread, so nothing else runs in the process it measures
/// (allocation counts, panic hooks). `test` is the test's full name in this binary.
pub fn isolated(test: &str, t: &Transport, body: fn(&Transport)) {
    if std::env::var(ISOLATED).as_deref() == Ok(test) {
        run_here(t, body);
        println!("isolated {test}: ok");
        return;
    }
    // Alone: the children busy-poll (allocation counts) or must not be slowed into a hang.
    let _all = CPUS.write().unwrap_or_else(|e| e.into_inner());
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ISOLATED, test);
    // The child's own watchdog names a hung test first; this catches a child stuck after it.
    let limit = watchdog::hang() + std::time::Duration::from_secs(30);
    let out = watchdog::run_child(cmd, limit);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.success(),
        "[{}] {test} failed in its child process ({}):\n{text}",
        t.name,
        out.ending(limit)
    );
    assert!(
        text.contains(&format!("isolated {test}: ok")),
        "[{}] {test} did not run in its child process:\n{text}",
        t.name
    );
}

/// Runs this whole test binary again with [`netron_engine::DRIVER_ENV`] = `driver`, so every
/// suite test also runs on that I/O backend (the same suite body; docs/architecture.md, "The
/// epoll driver"), and fails with the child's failures if any test fails there. `this` is the
/// calling test's name, skipped in the child. Runs alone (the child runs its own tests in
/// parallel). In a process that already has the variable set (the child itself, or a user who
/// forced a driver for the whole run) it does nothing.
pub fn rerun_with_driver(driver: &str, this: &str) {
    if std::env::var_os(netron_engine::DRIVER_ENV).is_some() {
        println!(
            "{} is set: this run is already on one driver",
            netron_engine::DRIVER_ENV
        );
        return;
    }
    let _all = CPUS.write().unwrap_or_else(|e| e.into_inner());
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--skip", this])
        .env(netron_engine::DRIVER_ENV, driver);
    let out = watchdog::run_child(cmd, RERUN_LIMIT);
    let failed: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.ends_with("FAILED") || l.starts_with("test result"))
        .collect();
    assert!(
        out.success() && out.stdout.contains("test result: ok"),
        "the suite failed on the {driver} driver ({}):\n{}\n\n{}\n{}",
        out.ending(RERUN_LIMIT),
        failed.join("\n"),
        out.stdout,
        out.stderr
    );
    println!("{driver}: {}", failed.join(" "));
}

/// How long the whole suite may take when re-run on another driver before it is taken for a
/// hang: its own watchdog ([`watchdog::hang`] per test) ends a hung test sooner; this bounds
/// what the per-test watchdog cannot see (a child that never exits after its tests).
const RERUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(40 * 60);

/// The configuration of the independent review's engine (tests moved from review.rs): an
/// adaptive core with a short spin, so it parks often, and a 500 ms stall timeout.
pub(crate) fn review_cfg() -> netron_engine::CoreConfig {
    let ms500 = std::time::Duration::from_millis(500);
    netron_engine::CoreConfig::new(
        netron_engine::RuntimeConfig::default().with_idle(netron_engine::IdlePolicy::Adaptive {
            spin: std::time::Duration::from_micros(20),
        }),
        netron_engine::ProtocolConfig::default()
            .with_stall_timeout(ms500)
            .with_handshake_timeout(ms500),
    )
}

/// A one-core engine serving `svc` with `cfg` on a fresh endpoint of `t`.
pub(crate) fn review_engine(
    t: &Transport,
    cfg: netron_engine::CoreConfig,
    svc: netron_engine::Service,
) -> (netron_engine::Engine, String) {
    crate::engine(t, cfg, &[svc], "review")
}
