//! cargo-fuzz target `nar`: see `targets::nar` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::nar(data));
