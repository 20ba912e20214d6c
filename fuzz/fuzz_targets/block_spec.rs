//! cargo fuzz target `block_spec`: the body is `lowfp::fuzz::block_spec` (also run by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lowfp::fuzz::block_spec(data));
