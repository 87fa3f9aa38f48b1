//! cargo-fuzz target `nar_unpack`: see `targets::nar_unpack` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::nar_unpack(data));
