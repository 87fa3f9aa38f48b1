//! cargo-fuzz target `cid`: see `targets::cid` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::cid(data));
