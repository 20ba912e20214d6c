//! cargo fuzz target `format_spec`: the body is `lowfp::fuzz::format_spec` (also run by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lowfp::fuzz::format_spec(data));
