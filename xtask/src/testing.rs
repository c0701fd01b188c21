//! What the crate's own tests share, whichever module they test: the
//! proptest configuration every property test uses (its case count comes
//! from `DAX_SEAL_FUZZ_CASES`, which `cargo xtask fuzz` raises).

pub fn proptest_config() -> proptest::test_runner::Config {
    let cases = dax_seal_protocol::fuzz_cases();
    proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
}
