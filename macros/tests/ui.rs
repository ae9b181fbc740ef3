//! Compile tests for the macros: what must build, and the exact errors for what must not.
//!
//! The cases in `ui/pass` and `ui/fail` use the mock runtime in `ui/mock_rt.rs` because
//! this crate cannot depend on greenrt. After a deliberate change to a message, refresh
//! the `.stderr` snapshots with `TRYBUILD=overwrite cargo test -p greenrt-macros --test ui`
//! and read the diff: the snapshots are the review of where each error points.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
