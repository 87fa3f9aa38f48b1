//! cargo-fuzz target `hydra_eval`: see `targets::hydra_eval` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::hydra_eval(data));
