//! cargo-fuzz target `store_path`: see `targets::store_path` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::store_path(data));
