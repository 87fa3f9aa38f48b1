//! Source tarball mirroring (`mirror: true`): `release-nixos` taking 2,000 sources from the
//! binary cache (fixed-output store paths: narinfo with `CA: fixed:sha256:...`, the NAR
//! checked, the file inside hashed in every form and linked), against curl fetching the same
//! 2,000 files from plain URLs; and a no-change rerun.
//!
//! The release is made by hand with its `tarballs-manifest` in place, so that no evaluation
//! runs: the cases measure fetching, checking and storing, not `nix-instantiate`.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nixipfs::compression::{compressor, Compression};
use nixipfs::hash::{sha256, HashingWriter};
use nixipfs::nar::write_single_file_nar;
use nixipfs::narinfo::NarInfo;
use nixipfs::signature::SecretKey;
use nixipfs::tarballs::source::{fixed_output_path, HashAlgo, SourceHash};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::{inv, measure, nixipfs_args, s, Bench, RELEASE_NAME};

/// The generated sources: a binary cache of their fixed-output paths (`cache/`) and the
/// plain files (`files/`), both served by nginx under `/sources`.
pub struct Sources {
    /// The dataset directory (symlinked into the web root as `sources`).
    pub dir: PathBuf,
    /// How many sources.
    pub count: usize,
    /// Their bytes in all.
    pub bytes: u64,
    /// `name:base64` of the cache's key.
    pub public_key: String,
    /// `(name, sha256 hex)` of each source.
    entries: Vec<(String, String)>,
}

impl Sources {
    /// The line describing the data in the report.
    pub fn describe(&self) -> String {
        format!(
            "- `sources` data: {} source files of {} KiB of random bytes ({:.1} MiB), each in the \
             cache as a fixed-output store path (narinfo signed, `CA: fixed:sha256:...`, NAR xz -6)",
            self.count,
            self.bytes / self.count.max(1) as u64 / 1024,
            self.bytes as f64 / 1048576.0
        )
    }
}

/// Makes (or reuses) `count` sources of `kib` KiB under `data`.
pub fn dataset(data: &Path, seed: u64, count: usize, kib: usize) -> Result<Sources> {
    let dir = data.join(format!("sources-s{seed}-n{count}-k{kib}"));
    let done = dir.join("done");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7461_7262_616c_6c73);
    let mut key_bytes = [0u8; 32];
    rng.fill_bytes(&mut key_bytes);
    let key = SecretKey::generate("nixipfs-bench-sources-1", key_bytes)?;
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    let fresh = !done.is_file();
    if fresh {
        measure::remove(&dir)?;
        fs::create_dir_all(dir.join("cache/nar"))?;
        fs::create_dir_all(dir.join("files"))?;
        fs::write(
            dir.join("cache/nix-cache-info"),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
        )?;
        eprintln!("generating {count} sources of {kib} KiB");
    }
    for i in 0..count {
        let name = format!("src-{i:05}.tar.gz");
        let mut body = vec![0u8; kib * 1024];
        rng.fill_bytes(&mut body);
        let hash = sha256(&body);
        entries.push((name.clone(), hash.to_hex()));
        bytes += body.len() as u64;
        if !fresh {
            continue;
        }
        fs::write(dir.join("files").join(&name), &body)?;
        let source = SourceHash {
            algo: HashAlgo::Sha256,
            digest: hash.0.to_vec(),
        };
        let path = fixed_output_path(&source, &name).map_err(anyhow::Error::msg)?;
        let mut nar = Vec::new();
        write_single_file_nar(&body[..], body.len() as u64, false, &mut nar)?;
        let nar_hash = sha256(&nar);
        let mut xz = compressor(Compression::Xz, HashingWriter::new(Vec::new()), Some(6))?;
        xz.write_all(&nar)?;
        let (file, file_hash, file_size) = xz.finish()?.finish();
        let url = format!("nar/{}.nar.xz", file_hash.to_nix32());
        fs::write(dir.join("cache").join(&url), &file)?;
        let mut info = NarInfo::new(path.clone(), &url, "xz", nar_hash, nar.len() as u64);
        info.file_hash = Some(file_hash);
        info.file_size = Some(file_size);
        info.ca = Some(format!("fixed:sha256:{}", hash.to_nix32()));
        info.sign(&key);
        fs::write(
            dir.join("cache")
                .join(format!("{}.narinfo", path.hash_part())),
            info.to_canonical_string(),
        )?;
    }
    if fresh {
        fs::write(&done, "")?;
    }
    Ok(Sources {
        dir,
        count,
        bytes,
        public_key: key.to_public().to_string(),
        entries,
    })
}

/// A mirror directory with one complete release whose `tarballs-manifest` names every source
/// (URLs at `base/files/`), a one-file fake Hydra under the web root `www` (served at `http1`),
/// and the config; returns the config file.
fn prepare_mirror(
    www: &Path,
    http1: &str,
    ds: &Sources,
    dir: &Path,
    base: &str,
) -> Result<PathBuf> {
    let release = dir.join("releases/bench").join(RELEASE_NAME);
    fs::create_dir_all(&release)?;
    fs::write(release.join("store-paths"), "")?;
    let hydra = format!("{http1}/hydra-sources");
    let info = serde_json::json!({
        "hydra": hydra, "project": "bench", "jobset": "trunk", "job": "tested",
        "build_id": 1, "eval_id": 1, "build_time": 1_700_000_000,
        "nixname": RELEASE_NAME, "git_revision": "0123456789abcdef0123456789abcdef01234567",
    });
    fs::write(
        release.join("build-info.json"),
        serde_json::to_string_pretty(&info)?,
    )?;
    let mut manifest = String::new();
    for (name, hex) in &ds.entries {
        let _ = writeln!(manifest, "sha256:{hex} {name} {base}/files/{name}");
    }
    fs::write(release.join("tarballs-manifest"), manifest)?;
    fs::write(
        release.join("git-revision"),
        "0123456789abcdef0123456789abcdef01234567",
    )?;
    super::write_latest_finished(&www.join("hydra-sources"))?;
    let config = dir.join("nixos_release.json");
    let cfg = serde_json::json!({
        "hydra": hydra, "cache": format!("{base}/cache"),
        "trusted_public_keys": [ds.public_key],
        "releases": [{ "channel": "bench", "project": "bench", "jobset": "trunk",
                       "job": "tested", "mirror": true }],
    });
    fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
    Ok(config)
}

/// The cases: `tarballs-curl` (the floor), `tarballs-mirror`, `tarballs-rerun`.
pub fn cases(b: &mut Bench, ds: &Sources) -> Result<()> {
    if !["tarballs-curl", "tarballs-mirror", "tarballs-rerun"]
        .iter()
        .any(|c| b.wanted(c))
    {
        return Ok(());
    }
    let base = format!("{}/sources", b.nginx.http1);
    let runs_dir = b.out.join("sources");
    fs::create_dir_all(&runs_dir)?;
    let trash = b.work.join("trash");
    let remove_now = b.remove_now;
    let discard = move |p: &Path| -> Result<()> {
        if remove_now {
            measure::remove(p)
        } else {
            measure::discard(p, &trash)
        }
    };
    let nixipfs = b.nixipfs.clone();
    let bytes = Some(ds.bytes);

    // The floor: curl fetching the same files from plain URLs.
    let out = runs_dir.join("curl");
    let cfg = runs_dir.join("curl.cfg");
    let mut list = String::new();
    for (name, _) in &ds.entries {
        let _ = writeln!(
            list,
            "url = \"{base}/files/{name}\"\noutput = \"{}\"",
            out.join(name).display()
        );
    }
    fs::write(&cfg, list)?;
    b.case(
        "tarballs-curl",
        "sources",
        "curl --parallel --parallel-max 64, the same source files (floor)",
        b.args.runs,
        bytes,
        &mut |_| {
            discard(&out)?;
            fs::create_dir_all(&out)?;
            Ok(inv(
                "/usr/bin/curl",
                vec![
                    "-sS".into(),
                    "--fail".into(),
                    "--parallel".into(),
                    "--parallel-max".into(),
                    "64".into(),
                    "-K".into(),
                    s(&cfg),
                ],
            ))
        },
        &mut || format!("{} files", measure::count_files(&out, ".tar.gz")),
    )?;
    discard(&out)?;

    let mirror = runs_dir.join("mirror");
    let args = |dir: &Path, config: &Path| {
        nixipfs_args(
            b,
            "release-nixos",
            vec![
                "--dir".into(),
                s(dir),
                "--tmpdir".into(),
                s(dir.join("tmp")),
                "--config".into(),
                s(config),
                "--no-ipfs".into(),
            ],
        )
    };
    let mirror_args = args(&mirror, &mirror.join("nixos_release.json"));
    let count_tree = |dir: &Path| {
        format!(
            "{} files in tarballs/sha512, {} links",
            fs::read_dir(dir.join("tarballs/sha512"))
                .map(|d| d
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .count())
                .unwrap_or(0),
            ["md5", "sha1", "sha256", "sha512"]
                .iter()
                .map(|a| {
                    fs::read_dir(dir.join("tarballs").join(a))
                        .map(|d| {
                            d.filter_map(|e| e.ok())
                                .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
                                .count()
                        })
                        .unwrap_or(0)
                })
                .sum::<usize>()
        )
    };
    // Each run starts from a mirror that has the release but no source.
    let www = b.nginx.root.clone();
    let http1 = b.nginx.http1.clone();
    b.case(
        "tarballs-mirror",
        "sources",
        "nixipfs release-nixos, mirror: true: every source from the binary cache",
        b.args.runs,
        bytes,
        &mut |_| {
            discard(&mirror)?;
            prepare_mirror(&www, &http1, ds, &mirror, &base)?;
            Ok(inv(&nixipfs, mirror_args.clone()))
        },
        &mut || count_tree(&mirror),
    )?;
    b.case(
        "tarballs-rerun",
        "sources",
        "nixipfs release-nixos --no-ipfs, mirror: true, no-change rerun",
        b.args.runs,
        None,
        &mut |_| Ok(inv(&nixipfs, mirror_args.clone())),
        &mut || count_tree(&mirror),
    )?;
    discard(&mirror)?;
    Ok(())
}
