//! The conformance suite (tests/src/suite), run over every transport: each test is
//! `<transport>::<area>::<test>`, e.g. `unix::endings::request_then_fin_is_answered`.
//!
//! The counting allocator is this binary's global allocator for the allocation-count area;
//! those tests run each in a child process of their own (`isolated` in the suite's list), so
//! no other test's allocations are counted.

#[global_allocator]
static GLOBAL: netron_tests::CountingAlloc = netron_tests::CountingAlloc;

netron_tests::conformance!();
