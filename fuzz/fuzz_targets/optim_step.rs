//! cargo fuzz target `optim_step`: the body is `lowfp::fuzz::optim_step` (also run by `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lowfp::fuzz::optim_step(data));
