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

/// The whole suite again on the epoll driver (docs/architecture.md, "The epoll driver"): this
/// binary re-run with `NETRON_DRIVER=epoll`, every test above in it.
#[test]
fn every_test_passes_on_the_epoll_driver() {
    netron_tests::suite::rerun_with_driver("epoll", "every_test_passes_on_the_epoll_driver");
}
