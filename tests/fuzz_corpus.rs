//! The fuzz targets of `fuzz/` on the stable toolchain: every target runs over its committed
//! seeds in `fuzz/seeds/<target>/` and over a few thousand deterministic mutations of them
//! (bytes flipped, inserted, deleted, duplicated, seeds spliced), checking that nothing panics
//! and that the targets' round-trip properties hold.
//!
//! The mutations come from a PRNG seeded with the target name, so a failure repeats; its
//! message shows the failing input. `NIXIPFS_FUZZ_ITERATIONS` sets the number of mutations per
//! target (default [`DEFAULT_ITERATIONS`]).

#[path = "../fuzz/targets_common.rs"]
mod targets;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutations per target when `NIXIPFS_FUZZ_ITERATIONS` is not set.
const DEFAULT_ITERATIONS: usize = 3000;

/// The longest input a mutation may grow to.
const MAX_INPUT_LEN: usize = 64 * 1024;

/// Values that make parsers take their edge cases: lengths at and around limits, as the
/// little-endian u64s of NARs and as varints.
const INTERESTING: &[&[u8]] = &[
    &[0],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x01, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ],
    b"\n",
    b"/",
    b"/..",
    b":",
    b"-",
    b"\"",
    b"null",
    b"[]",
    b"{}",
    "\u{e9}".as_bytes(),
    "\u{1f600}".as_bytes(),
];

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("seed directory entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display())))
        .collect()
}

/// A small FNV-1a hash of the target name, to seed its PRNG.
fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Applies one to four random edits to `input`.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..9) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            // Replace a byte.
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = rng.gen();
            }
            // Insert random bytes.
            2 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            // Delete a range.
            3 if len > 0 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 16));
                input.drain(start..end);
            }
            // Duplicate a range.
            4 if len > 0 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 64));
                let at = rng.gen_range(0..=len);
                let copy = input[start..end].to_vec();
                input.splice(at..at, copy);
            }
            // Overwrite with an interesting value.
            5 => {
                let value = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let at = rng.gen_range(0..=len);
                let end = (at + value.len()).min(len);
                input.splice(at..end, value.iter().copied());
            }
            // Insert an interesting value.
            6 => {
                let value = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let at = rng.gen_range(0..=len);
                input.splice(at..at, value.iter().copied());
            }
            // Splice: our head, another seed's tail.
            7 if !seeds.is_empty() => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            // Truncate.
            8 if len > 0 => input.truncate(rng.gen_range(0..len)),
            _ => {}
        }
    }
    input.truncate(MAX_INPUT_LEN);
}

/// Runs `body` on `input`, turning a panic into one that shows the input.
fn run_one(name: &str, body: targets::Target, input: &[u8], origin: &str) {
    if let Err(cause) = panic::catch_unwind(AssertUnwindSafe(|| body(input))) {
        let message = cause
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| cause.downcast_ref::<&str>().copied())
            .unwrap_or("(not a string)");
        panic!(
            "fuzz target {name} failed on {origin}: {message}\ninput ({} bytes): {:?}\nas text: {:?}",
            input.len(),
            input,
            String::from_utf8_lossy(input)
        );
    }
}

fn run_target(name: &str) {
    let body = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1;
    let seeds = seeds_of(name);
    assert!(!seeds.is_empty(), "no seeds for {name}");
    for (i, seed) in seeds.iter().enumerate() {
        run_one(name, body, seed, &format!("seed {i}"));
    }
    let iterations = std::env::var("NIXIPFS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let mut rng = StdRng::seed_from_u64(seed_for(name));
    let mut input = Vec::new();
    for i in 0..iterations {
        // Mostly mutate a fresh seed; sometimes keep mutating the last input.
        if i % 4 == 0 || input.is_empty() {
            input = seeds[rng.gen_range(0..seeds.len())].clone();
        }
        mutate(&mut rng, &mut input, &seeds);
        run_one(name, body, &input, &format!("mutation {i}"));
    }
}

/// Every target in `targets::TARGETS` has a test below and a seed directory.
#[test]
fn every_target_is_tested() {
    let source = include_str!("fuzz_corpus.rs");
    for (name, _) in targets::TARGETS {
        assert!(
            source.contains(&format!("corpus_test!({name});")),
            "{name} has no corpus test"
        );
        assert!(!seeds_of(name).is_empty(), "{name} has no seeds");
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}

macro_rules! corpus_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            run_target(stringify!($name));
        }
    };
}

corpus_test!(narinfo);
corpus_test!(nar);
corpus_test!(nar_extract);
corpus_test!(nar_unpack);
corpus_test!(decompress);
corpus_test!(hydra_build);
corpus_test!(hydra_eval);
corpus_test!(config);
corpus_test!(store_path);
corpus_test!(nix32);
corpus_test!(fsutil);
corpus_test!(signature);
corpus_test!(cid);
corpus_test!(car);
corpus_test!(dagpb);

/// The xz decoder has a memory limit: a stream whose header declares a 4 GiB dictionary (found by
/// the `decompress` fuzz target: 13 bytes of a legacy `.lzma` header made liblzma allocate
/// 4 GiB) is refused, while the 64 MiB dictionary of `xz -9` still decodes.
#[test]
fn xz_dictionary_size_is_bounded() {
    use std::io::Read;

    use nixipfs::compression::{decompressor, Compression};

    fn decode(hex: &str) -> std::io::Result<Vec<u8>> {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let mut out = Vec::new();
        decompressor(Compression::Xz, &bytes[..])?.read_to_end(&mut out)?;
        Ok(out)
    }
    // `printf nix-archive-1 | xz -0`, with the dictionary-size byte of the block header (offset
    // 16) set to 0x1c (64 MiB, as `xz -9`) and to 0x28 (4 GiB - 1), and the header CRC32 fixed.
    const XZ_9_DICTIONARY: &str = "fd377a585a000004e6d6b446020021011c00000010cf58cc01000c6e69782d\
        617263686976652d31000000006e51fe3d36ba1cef0001250d7119c4b61fb6f37d010000000004595a";
    const XZ_4_GIB_DICTIONARY: &str = "fd377a585a000004e6d6b4460200210128000000e6a011b301000c6e69\
        782d617263686976652d31000000006e51fe3d36ba1cef0001250d7119c4b61fb6f37d010000000004595a";
    // `printf nix-archive-1 | xz --format=lzma -0`, with the dictionary size (bytes 1 to 4) set
    // to 0xffffffff.
    const LZMA_4_GIB_DICTIONARY: &str =
        "5dffffffffffffffffffffffff00371a4b72fd70196d2e27c1b5765457fe71ffffe10b8000";

    assert_eq!(
        decode(XZ_9_DICTIONARY).expect("xz -9 dictionary"),
        b"nix-archive-1"
    );
    for (what, hex) in [
        ("an xz", XZ_4_GIB_DICTIONARY),
        ("a legacy .lzma", LZMA_4_GIB_DICTIONARY),
    ] {
        let result = decode(hex);
        assert!(
            result.is_err(),
            "{what} stream declaring a 4 GiB dictionary was decoded: {result:?}"
        );
    }
}
