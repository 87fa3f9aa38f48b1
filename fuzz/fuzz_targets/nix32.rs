//! cargo-fuzz target `nix32`: see `targets::nix32` in `fuzz/targets_common.rs`.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::nix32(data));
