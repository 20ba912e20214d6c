//! cargo fuzz target `packed_decode`: the body is `lowfp::fuzz::packed_decode` (also run by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lowfp::fuzz::packed_decode(data));
