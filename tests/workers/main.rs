//! Tests with real worker processes. The test binary is its own worker: it
//! is re-run with a worker entry in the environment, and `main` hands over
//! to the worker runtime before the test harness starts.

mod basics;
mod common;
mod delivery;
mod errors;
mod faults;
mod fds;
mod floods;
mod hostile;
mod lifecycle;
mod load;
mod misuse;
mod requests;
mod startup;
mod stream;
mod supervise;

use libtest_mimic::Arguments;

#[macro_export]
macro_rules! trials {
    ($($module:ident :: $test:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::test(concat!(stringify!($module), "::", stringify!($test)), || {
            $crate::$module::$test();
            Ok(())
        })),*]
    };
}

/// Tests that only run when another test starts them in a process of their
/// own (they count the whole process's descriptors, or get killed).
#[macro_export]
macro_rules! inner {
    ($($module:ident :: $test:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::test(concat!(stringify!($module), "::", stringify!($test)), || {
            if std::env::var_os("AWW_ISOLATED").is_some() {
                $crate::$module::$test();
            }
            Ok(())
        }).with_ignored_flag(true)),*]
    };
}

fn main() {
    hostile::run_if_raw_worker();
    actix_webworker::run_if_worker(common::entries());

    let args = Arguments::from_args();
    let mut tests = trials![
        basics::posted_before_handshake_is_delivered,
        basics::ten_thousand_each_way_in_order,
        basics::a_burst_under_a_small_limit_arrives_in_order,
        basics::sixteen_mib_round_trip,
        basics::over_limit_is_refused_and_both_keep_working,
        basics::exit_code_is_reported,
        basics::sigkill_is_reported,
        basics::terminate_kills_a_stuck_worker_after_the_grace_period,
        basics::on_close_runs_before_exit_on_terminate,
        basics::close_from_inside_runs_on_close_and_exits_zero,
        basics::panic_in_handler_is_reported_and_the_worker_goes_on,
        basics::mismatched_worker_is_refused,
        basics::parent_death_takes_the_worker_down,
        hostile::garbage_bytes,
        hostile::truncated_frame,
        hostile::four_gib_frame,
        hostile::text_frame,
        hostile::unknown_kind,
        hostile::other_protocol_version,
        hostile::batch_with_an_entry_cut_short,
        hostile::batch_inside_a_batch,
        hostile::undecodable_payload_leaves_the_connection_up,
        hostile::claimed_descriptors_that_never_came,
        hostile::descriptors_no_message_claims_are_reported_and_closed,
        errors::panic_in_a_timer_reaches_the_parent,
        errors::on_error_that_handles_keeps_it_from_the_parent,
        errors::panic_in_started_is_reported_before_the_exit,
        errors::terminate_twice_and_after_the_exit_do_nothing,
        errors::infinite_grace_never_kills,
        errors::println_in_a_worker_reaches_the_parents_stdout,
        errors::captured_output_becomes_tracing_events,
        errors::backtrace_when_rust_backtrace_asks,
        basics::dropping_the_last_address_terminates_the_worker,
        fds::pipe_write_end_to_the_worker,
        fds::file_opened_by_the_parent_is_read_by_the_worker,
        fds::worker_sends_a_descriptor_back,
        fds::listening_socket_accepts_in_the_worker,
        fds::too_many_descriptors_is_a_typed_error,
        fds::ten_thousand_mixed_both_ways_stay_matched,
        fds::descriptor_counts_return_to_their_start,
        supervise::a_crash_is_restarted_and_the_same_address_works,
        supervise::a_clean_exit_is_not_restarted_on_failure,
        supervise::a_crash_loop_stops_at_the_intensity,
        supervise::backoff_delays_are_at_least_the_configured_ones,
        supervise::messages_sent_while_down_arrive_once_in_order,
        supervise::requests_in_flight_fail_and_are_not_resent,
        supervise::terminate_stops_a_supervised_worker_for_good,
        supervise::fifty_crash_restart_cycles_leak_nothing,
        faults::sigsegv_is_reported,
        faults::sigabrt_is_reported,
        faults::exit_137_is_a_code_not_a_signal,
        faults::sigkill_by_someone_else_is_reported,
        faults::a_segfaulting_worker_is_restarted_as_configured,
        faults::a_worker_that_ignores_sigterm_is_killed_within_grace_plus_one_second,
        faults::terminate_takes_the_workers_own_children_down,
        faults::parent_killed_under_load_takes_all_workers_down,
        faults::parent_killed_with_idle_workers_takes_their_children_down_fifty_times,
        faults::no_descriptor_of_the_parent_leaks_into_a_worker,
        faults::a_clean_environment_is_only_what_the_builder_says,
        faults::a_worker_over_its_memory_limit_dies_and_is_reported,
        load::a_full_queue_refuses_when_told_to_fail,
        load::a_full_queue_makes_send_wait_and_loses_nothing,
        load::sixty_four_workers_ten_thousand_requests_each,
        load::a_worker_dying_while_sending_16_mib_is_a_typed_error,
        load::a_worker_dying_while_receiving_16_mib_is_a_typed_error,
        load::a_thousand_crash_restarts_leave_nothing_behind,
        requests::typed_answers,
        requests::ten_thousand_concurrent_requests_each_get_their_answer,
        requests::timeout_gives_a_typed_error_and_late_answers_are_dropped,
        requests::pending_requests_fail_when_the_worker_dies,
        requests::handler_panic_fails_that_request_only,
        requests::worker_asks_the_parent,
        requests::worker_asking_an_unserved_request_gets_unhandled,
        requests::posts_and_requests_keep_their_order,
    ];
    tests.extend(delivery::trials());
    tests.extend(misuse::trials());
    tests.extend(startup::trials());
    tests.extend(stream::trials());
    tests.extend(hostile::trials());
    tests.extend(floods::trials());
    tests.extend(floods::roles());
    tests.extend(lifecycle::trials());
    tests.extend(lifecycle::roles());
    tests.extend(inner![
        basics::parent_role,
        errors::print_role,
        fds::fd_counts_inner,
        supervise::cycles_inner,
        faults::doomed_parent_role,
        load::storm_inner,
    ]);
    libtest_mimic::run(&args, tests).exit();
}
