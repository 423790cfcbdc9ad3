//! The conformance suite (tests/src/suite), run over every transport: each test is
//! `<transport>::<area>::<test>`, e.g. `unix::endings::request_then_fin_is_answered`.
//!
//! The counting allocator is this binary's global allocator for the allocation-count area;
//! those tests run each in a child process of their own (`isolated` in the suite's list), so
//! no other test's allocations are counted. The last test runs the whole binary again on the
//! epoll driver.

#[global_allocator]
static GLOBAL: netron_tests::CountingAlloc = netron_tests::CountingAlloc;

netron_tests::conformance!();

/// `quic://` (docs/quic.md "In the engine", step 3): the suite's tests that pass over QUIC so
/// far, in the suite's order. The ones left out, and why, are listed in docs/quic.md
/// ("Conformance over quic://"); each joins this list when it passes.
#[allow(missing_docs)]
pub mod quic {
    netron_tests::conformance!(@areas quic, QUIC;
    unary {
        calls_answer_fail_and_go_on,
        many_threads_many_connections,
        requests_that_arrive_together_are_answered_in_one_batch,
        alone a_caller_driven_core_makes_calls,
        a_handler_calls_another_service_on_its_own_core,
        header_table_size_zero,
        a_zero_copy_threshold_keeps_large_replies_intact,
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
        a_connection_bounds_what_all_its_streams_queue,
        a_reader_of_one_stream_is_not_stalled_by_unread_others,
        streams_open_by_requirement_like_calls,
        a_failed_half_delivers_its_status_both_ways,
        compressible_stream_messages_go_compressed_and_arrive_intact,
        a_caller_driven_core_streams_with_would_block,
        a_configured_window_bounds_a_stream_and_with_server_keeps_streams,
        empty_messages_take_credit_when_sent,
        rejected_uploads_keep_the_connection,
        an_empty_message_flood_is_stopped_by_the_window,
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
        interleaved_cancel_half_keeps_connection,
        pipelined_client_cancelling_half_its_calls_keeps_connection,
    }
    bad_input {
        misbehaving_peers_are_cut_off_and_others_lose_nothing,
        alone misbehaving_peers_on_hot_connections_are_cut_off,
        handshake_trickle_is_bounded,
        frame_trickle_is_bounded,
    }
    limits {
        message_size_limits_fail_one_call_only,
        a_peer_that_stops_reading_is_disconnected,
        metadata_above_the_header_list_limit_fails_one_call_only,
        huge_metadata_is_refused_without_echo,
        ping_rate_just_below_budget_keeps_connection,
        ping_flood_without_reading_is_closed,
        rapid_reset_and_empty_frame_floods_are_cut_off,
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
    hot {
        alone echoes_stay_intact_across_promotion_direct_reads_and_demotion,
        alone concurrent_callers_share_hot_connections,
        alone a_hot_connection_sees_its_peer_go,
        alone turning_direct_reads_off_keeps_every_byte_on_the_ring,
    }
    peers {
        a_request_with_the_wrong_id_parity_is_cut_off,
        a_sync_handlers_blocking_callback_is_an_error_not_a_deadlock,
        a_sync_handlers_blocking_stream_is_an_error_not_a_deadlock,
        both_sides_call_each_other_at_once,
        peer_services_vanish_with_the_connection,
        a_server_calls_back_into_the_clients_services_mid_call_and_after,
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

/// The whole suite again on the epoll driver (docs/architecture.md, "The epoll driver"): this
/// binary re-run with `NETRON_DRIVER=epoll`, every test above in it.
#[test]
fn every_test_passes_on_the_epoll_driver() {
    netron_tests::suite::rerun_with_driver("epoll", "every_test_passes_on_the_epoll_driver");
}
