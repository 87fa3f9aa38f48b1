//! cargo-fuzz target `hydra_build`: see `targets::hydra_build` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::hydra_build(data));
