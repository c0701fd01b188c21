//! VM tests: see vm.rs.
