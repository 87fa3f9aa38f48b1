//! cargo-fuzz target `fsutil`: see `targets::fsutil` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::fsutil(data));
