//! Synthetic but valid binary caches, deterministic from a seed.
//!
//! A *closure* dataset is a DAG of store paths: `narinfos` narinfos in all, of which `closure`
//! are reachable from the `roots` (the release's `store-paths`) and the rest are not. Every path
//! has a real NAR (a small directory tree made with [`write_nar`]), xz-compressed, with real
//! `NarHash`, `FileHash` and sizes, and a narinfo signed with a generated key. `big` of the
//! closure's paths carry a large NAR instead (half random bytes, half text).
//!
//! A *bandwidth* dataset is a few large single-file NARs of random bytes, stored with
//! `Compression: none` (xz gains nothing on random data and would only make generation slow).
//!
//! A dataset is written once under its own directory, named after its parameters, and reused by
//! later runs; `dataset.json` is written last and marks it complete.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nixipfs::compression::{compressor, Compression};
use nixipfs::hash::{sha256, HashingWriter, Sha256Hash};
use nixipfs::nar::{write_nar, write_single_file_nar, NarNode};
use nixipfs::narinfo::NarInfo;
use nixipfs::signature::SecretKey;
use nixipfs::store_path::StorePath;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The name of the signing key of every dataset.
pub const KEY_NAME: &str = "nixipfs-bench-1";

/// The xz preset of the compressed NARs (Nix's own default for `nix copy --to file://`).
pub const XZ_PRESET: u32 = 6;

/// Parameters of a closure dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosureParams {
    pub seed: u64,
    pub narinfos: usize,
    pub roots: usize,
    pub closure: usize,
    pub big: usize,
    pub big_mib: usize,
    pub small_min: usize,
    pub small_max: usize,
}

/// Parameters of a bandwidth dataset: `count` single-file NARs of `mib` MiB each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthParams {
    pub seed: u64,
    pub count: usize,
    pub mib: usize,
}

/// What a generated dataset holds; saved as `dataset.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The parameters, as JSON, to tell whether a saved dataset can be reused.
    pub params: serde_json::Value,
    /// `name:base64` of the signing key.
    pub public_key: String,
    /// Narinfos in the cache.
    pub narinfos: usize,
    /// Paths in the closure of the roots.
    pub closure_paths: usize,
    /// Bytes of the closure's NAR files (as stored, compressed).
    pub closure_file_bytes: u64,
    /// Bytes of the closure's narinfos.
    pub closure_narinfo_bytes: u64,
    /// Longest chain of references from a root, in paths (levels of a level-by-level walk).
    pub depth: usize,
    /// Seconds the generation took.
    pub generated_in: f64,
}

/// A dataset on disk.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `DIR`: `cache/` (the binary cache), `store-paths`, `closure.txt`, `dataset.json`.
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Dataset {
    /// The binary cache root.
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    /// The roots, one absolute store path per line (a release's `store-paths`).
    pub fn store_paths_file(&self) -> PathBuf {
        self.dir.join("store-paths")
    }
    /// `HASH.narinfo` and `nar/FILE` of every closure path, one cache-relative path per line.
    pub fn closure_files(&self) -> PathBuf {
        self.dir.join("closure.txt")
    }
    /// The roots as absolute paths.
    pub fn roots(&self) -> Result<Vec<String>> {
        let text = fs::read_to_string(self.store_paths_file())?;
        Ok(text.lines().map(str::to_string).collect())
    }
    /// Total bytes a full mirror of the closure downloads.
    pub fn closure_bytes(&self) -> u64 {
        self.manifest.closure_file_bytes + self.manifest.closure_narinfo_bytes
    }
}

fn dir_name(kind: &str, params: &impl Serialize) -> Result<String> {
    let json = serde_json::to_vec(params)?;
    let h = sha256(&json).to_nix32();
    Ok(format!("{kind}-{}", &h[..12]))
}

/// Loads the dataset saved under `root` for these parameters, if complete.
fn load(dir: &Path, params: &serde_json::Value) -> Option<Dataset> {
    let text = fs::read_to_string(dir.join("dataset.json")).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    (manifest.params == *params).then(|| Dataset {
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// A dataset directory being generated: emptied, with `cache/nar/` and `nix-cache-info`.
struct Fresh {
    dir: PathBuf,
    params: serde_json::Value,
    start: std::time::Instant,
}

impl Fresh {
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Writes `dataset.json`, which marks the dataset complete, and returns it.
    fn save(self, manifest: Manifest) -> Result<Dataset> {
        fs::write(
            self.dir.join("dataset.json"),
            serde_json::to_string_pretty(&manifest)?,
        )?;
        Ok(Dataset {
            dir: self.dir,
            manifest,
        })
    }
}

/// The complete dataset of this kind and these parameters under `root`, or a fresh directory
/// to generate it in.
fn load_or_start(root: &Path, kind: &str, p: &impl Serialize) -> Result<Result<Dataset, Fresh>> {
    let params = serde_json::to_value(p)?;
    let dir = root.join(dir_name(kind, p)?);
    if let Some(d) = load(&dir, &params) {
        return Ok(Ok(d));
    }
    let start = std::time::Instant::now();
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let cache = dir.join("cache");
    fs::create_dir_all(cache.join("nar"))?;
    fs::write(
        cache.join("nix-cache-info"),
        nixipfs::binary_cache::NIX_CACHE_INFO,
    )?;
    Ok(Err(Fresh { dir, params, start }))
}

fn key_for(seed: u64) -> Result<SecretKey> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b65_795f_6b65_795f);
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    Ok(SecretKey::generate(KEY_NAME, bytes)?)
}

fn rng_for(seed: u64, stream: u64, i: usize) -> StdRng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&stream.to_le_bytes());
    s[16..24].copy_from_slice(&(i as u64).to_le_bytes());
    StdRng::from_seed(s)
}

const WORDS: &[&str] = &[
    "acl",
    "attr",
    "bash",
    "binutils",
    "bzip2",
    "coreutils",
    "curl",
    "db",
    "diffutils",
    "expat",
    "findutils",
    "gawk",
    "gcc",
    "gdbm",
    "gettext",
    "glib",
    "glibc",
    "gmp",
    "gnugrep",
    "gnused",
    "gnutar",
    "gzip",
    "icu",
    "keyutils",
    "krb5",
    "libcap",
    "libffi",
    "libidn2",
    "libkrb5",
    "libssh2",
    "libunistring",
    "libxml2",
    "linux-headers",
    "mpfr",
    "ncurses",
    "nghttp2",
    "openssl",
    "pcre",
    "perl",
    "python3",
    "readline",
    "sqlite",
    "systemd",
    "tzdata",
    "util-linux",
    "xz",
    "zlib",
    "zstd",
    "nss",
    "dbus",
    "pam",
    "shadow",
    "mailcap",
    "iana-etc",
    "kmod",
    "lvm2",
];

const TEXT: &[&str] = &[
    "the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "for", "file", "with",
    "option", "this", "program", "be", "on", "not", "are", "as", "by", "or", "can", "if", "from",
    "value", "library", "function", "return", "set", "used", "default", "when", "which", "path",
    "store", "build", "output", "input", "version", "license", "see", "also", "error", "each",
];

fn text(rng: &mut StdRng, bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 16);
    let mut col = 0;
    while out.len() < bytes {
        let w = TEXT[rng.gen_range(0..TEXT.len())];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 70 {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(bytes);
    out
}

fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

struct Node {
    path: StorePath,
    word: &'static str,
    refs: Vec<usize>,
    big: bool,
}

/// Builds the DAG: nodes `0..closure` are reachable from the roots `0..roots` (each later
/// closure node is referenced by an earlier one within a window, which gives the walk depth),
/// nodes `closure..narinfos` only reference closure nodes or later outside nodes.
fn build_dag(p: &ClosureParams) -> Result<Vec<Node>> {
    let mut rng = rng_for(p.seed, 1, 0);
    let mut nodes = Vec::with_capacity(p.narinfos);
    for i in 0..p.narinfos {
        let mut digest = [0u8; 20];
        rng.fill_bytes(&mut digest);
        let word = WORDS[rng.gen_range(0..WORDS.len())];
        let suffix = ["", "", "", "-lib", "-dev", "-man", "-bin"][rng.gen_range(0..7)];
        let name = format!(
            "{word}-{}.{}.{}{suffix}",
            rng.gen_range(0..20),
            rng.gen_range(0..40),
            i % 97
        );
        nodes.push(Node {
            path: StorePath::new(digest, &name)?,
            word,
            refs: Vec::new(),
            big: false,
        });
    }
    let window = ((p.closure - p.roots) / 20).max(4);
    for j in p.roots..p.closure {
        let parent = rng.gen_range(j.saturating_sub(window)..j);
        nodes[parent].refs.push(j);
    }
    let hot_start = p.closure - (p.closure / 20).max(1);
    for (i, node) in nodes.iter_mut().enumerate() {
        let in_closure = i < p.closure;
        let extra = rng.gen_range(0..=5);
        for _ in 0..extra {
            let r = if in_closure {
                if i + 1 >= p.closure {
                    continue;
                }
                if rng.gen_bool(0.5) && hot_start > i {
                    rng.gen_range(hot_start.max(i + 1)..p.closure)
                } else {
                    rng.gen_range(i + 1..p.closure)
                }
            } else if rng.gen_bool(0.7) || i + 1 >= p.narinfos {
                rng.gen_range(0..p.closure)
            } else {
                rng.gen_range(i + 1..p.narinfos)
            };
            node.refs.push(r);
        }
        if rng.gen_bool(0.3) {
            node.refs.push(i);
        }
        node.refs.sort_unstable();
        node.refs.dedup();
    }
    // Big NARs: spread over the non-root part of the closure.
    let mut placed = 0;
    while placed < p.big.min(p.closure - p.roots) {
        let i = rng.gen_range(p.roots..p.closure);
        if !nodes[i].big {
            nodes[i].big = true;
            placed += 1;
        }
    }
    Ok(nodes)
}

/// The NAR tree of a small path: a script, a pseudo-library, a symlink, docs and the list of
/// references (as real packages carry them).
fn small_tree(rng: &mut StdRng, node: &Node, nodes: &[Node], target: usize) -> NarNode {
    let refs: Vec<String> = node
        .refs
        .iter()
        .map(|&r| nodes[r].path.to_absolute_path())
        .collect();
    let mut propagated = refs.join(" ").into_bytes();
    propagated.push(b'\n');
    let budget = target.saturating_sub(propagated.len() + 600).max(64);
    let bin_len = budget / 3;
    let lib_len = budget / 4;
    let doc_len = budget - bin_len - lib_len;
    let interp = refs
        .first()
        .map_or_else(|| "/bin/sh".to_string(), |r| format!("{r}/bin/sh"));
    let mut script = format!("#!{interp}\n").into_bytes();
    script.extend(text(rng, bin_len));
    let mut lib = b"\x7fELF\x02\x01\x01\0".to_vec();
    lib.extend(random_bytes(rng, lib_len / 2));
    lib.extend(text(rng, lib_len - lib_len / 2));
    let so = format!("lib{}.so", node.word.replace('-', "_"));
    NarNode::directory([
        (
            "bin",
            NarNode::directory([(node.word, NarNode::executable(script))]),
        ),
        (
            "lib",
            NarNode::directory([
                (format!("{so}.1"), NarNode::file(lib)),
                (so.clone(), NarNode::symlink(format!("{so}.1"))),
            ]),
        ),
        (
            "nix-support",
            NarNode::directory([("propagated-build-inputs", NarNode::file(propagated))]),
        ),
        (
            "share",
            NarNode::directory([(
                "doc",
                NarNode::directory([(node.word, NarNode::file(text(rng, doc_len)))]),
            )]),
        ),
    ])
}

fn big_tree(rng: &mut StdRng, node: &Node, bytes: usize) -> NarNode {
    let mut data = random_bytes(rng, bytes / 2);
    data.extend(text(rng, bytes - bytes / 2));
    NarNode::directory([(
        "share",
        NarNode::directory([(node.word, NarNode::file(data))]),
    )])
}

/// Writes `bytes` atomically (temp file and rename).
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-gen");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// One node's NAR, compressed and written, and its signed narinfo written. Returns the
/// cache-relative NAR path and the sizes of the NAR file and the narinfo.
fn make_node(
    p: &ClosureParams,
    nodes: &[Node],
    i: usize,
    key: &SecretKey,
    cache: &Path,
) -> Result<(String, u64, u64)> {
    let node = &nodes[i];
    let mut rng = rng_for(p.seed, 2, i);
    let tree = if node.big {
        big_tree(&mut rng, node, p.big_mib << 20)
    } else {
        let target = rng.gen_range(p.small_min..=p.small_max);
        small_tree(&mut rng, node, nodes, target)
    };
    let mut nar = Vec::new();
    write_nar(&tree, &mut nar)?;
    let nar_hash = sha256(&nar);
    let mut enc = compressor(Compression::Xz, Vec::new(), Some(XZ_PRESET))?;
    enc.write_all(&nar)?;
    let file = enc.finish()?;
    let file_hash = sha256(&file);
    let url = format!("nar/{}.nar.xz", file_hash.to_nix32());
    let mut info = NarInfo::new(node.path.clone(), &url, "xz", nar_hash, nar.len() as u64);
    info.file_hash = Some(file_hash);
    info.file_size = Some(file.len() as u64);
    info.references = node.refs.iter().map(|&r| nodes[r].path.clone()).collect();
    info.deriver = Some(format!(
        "{}-{}.drv",
        node.path.hash_part(),
        node.path.name()
    ));
    info.sign(key);
    write_file(&cache.join(&url), &file)?;
    let text = info.to_canonical_string();
    write_file(
        &cache.join(format!("{}.narinfo", node.path.hash_part())),
        text.as_bytes(),
    )?;
    Ok((url, file.len() as u64, text.len() as u64))
}

/// One generated path: index, NAR URL, NAR file size, narinfo size.
type Made = (usize, String, u64, u64);

/// Generates (or loads) a closure dataset under `root`.
pub fn closure_dataset(root: &Path, p: &ClosureParams) -> Result<Dataset> {
    if p.roots == 0 || p.roots > p.closure || p.closure > p.narinfos {
        bail!("need 0 < roots <= closure <= narinfos (got {p:?})");
    }
    if p.small_min < 64 || p.small_min > p.small_max {
        bail!("bad small NAR size range {}..{}", p.small_min, p.small_max);
    }
    let fresh = match load_or_start(root, "closure", p)? {
        Ok(loaded) => return Ok(loaded),
        Err(fresh) => fresh,
    };
    let (dir, cache) = (fresh.dir.clone(), fresh.cache());
    let key = key_for(p.seed)?;
    let nodes = build_dag(p)?;
    eprintln!(
        "generating {} narinfos and NARs in {} ...",
        p.narinfos,
        dir.display()
    );
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results: Vec<Result<Vec<Made>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (nodes, key, cache) = (&nodes, &key, &cache);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in (w..p.narinfos).step_by(workers) {
                        let (url, fsize, isize) = make_node(p, nodes, i, key, cache)?;
                        out.push((i, url, fsize, isize));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a generator thread panicked"))
            })
            .collect()
    });
    let mut made: BTreeMap<usize, (String, u64, u64)> = BTreeMap::new();
    for r in results {
        for (i, url, f, n) in r? {
            made.insert(i, (url, f, n));
        }
    }
    // The closure, by walking the references (it is 0..closure by construction).
    let mut depth = vec![0usize; p.narinfos];
    let mut seen = vec![false; p.narinfos];
    let mut queue: std::collections::VecDeque<usize> = (0..p.roots).collect();
    for i in 0..p.roots {
        seen[i] = true;
        depth[i] = 1;
    }
    while let Some(i) = queue.pop_front() {
        for &r in &nodes[i].refs {
            if !seen[r] {
                seen[r] = true;
                depth[r] = depth[i] + 1;
                queue.push_back(r);
            }
        }
    }
    let closure: Vec<usize> = (0..p.narinfos).filter(|&i| seen[i]).collect();
    let mut list = String::new();
    let (mut fbytes, mut nbytes) = (0u64, 0u64);
    for &i in &closure {
        let (url, f, n) = &made[&i];
        list.push_str(&format!("{}.narinfo\n{url}\n", nodes[i].path.hash_part()));
        fbytes += f;
        nbytes += n;
    }
    fs::write(dir.join("closure.txt"), list)?;
    let mut roots: Vec<String> = (0..p.roots)
        .map(|i| nodes[i].path.to_absolute_path())
        .collect();
    roots.sort();
    fs::write(dir.join("store-paths"), roots.join("\n") + "\n")?;
    let manifest = Manifest {
        params: fresh.params.clone(),
        public_key: key.to_public().to_string(),
        narinfos: p.narinfos,
        closure_paths: closure.len(),
        closure_file_bytes: fbytes,
        closure_narinfo_bytes: nbytes,
        depth: depth.iter().copied().max().unwrap_or(0),
        generated_in: fresh.start.elapsed().as_secs_f64(),
    };
    fresh.save(manifest)
}

/// Random bytes as a reader.
struct RandomReader(StdRng);

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.fill_bytes(buf);
        Ok(buf.len())
    }
}

/// Generates (or loads) a bandwidth dataset under `root`: `count` roots without references,
/// each one regular file of `mib` MiB of random bytes, `Compression: none`.
pub fn bandwidth_dataset(root: &Path, kind: &str, p: &BandwidthParams) -> Result<Dataset> {
    let fresh = match load_or_start(root, kind, p)? {
        Ok(loaded) => return Ok(loaded),
        Err(fresh) => fresh,
    };
    let (dir, cache) = (fresh.dir.clone(), fresh.cache());
    eprintln!(
        "generating {} NARs of {} MiB in {} ...",
        p.count,
        p.mib,
        dir.display()
    );
    let key = key_for(p.seed)?;
    let mut rng = rng_for(p.seed, 3, 0);
    let mut roots = Vec::new();
    let mut list = String::new();
    let (mut fbytes, mut nbytes) = (0u64, 0u64);
    for i in 0..p.count {
        let mut digest = [0u8; 20];
        rng.fill_bytes(&mut digest);
        let path = StorePath::new(digest, &format!("{kind}-blob-{i}"))?;
        let tmp = cache.join(format!("nar/.gen-{i}"));
        let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?));
        let size = (p.mib as u64) << 20;
        let mut out = out;
        write_single_file_nar(RandomReader(rng_for(p.seed, 4, i)), size, false, &mut out)?;
        let (mut w, hash, len): (BufWriter<fs::File>, Sha256Hash, u64) = out.finish();
        w.flush()?;
        drop(w);
        let url = format!("nar/{}.nar", hash.to_nix32());
        fs::rename(&tmp, cache.join(&url))?;
        let mut info = NarInfo::new(path.clone(), &url, "none", hash, len);
        info.file_hash = Some(hash);
        info.file_size = Some(len);
        info.sign(&key);
        let text = info.to_canonical_string();
        write_file(
            &cache.join(format!("{}.narinfo", path.hash_part())),
            text.as_bytes(),
        )?;
        list.push_str(&format!("{}.narinfo\n{url}\n", path.hash_part()));
        fbytes += len;
        nbytes += text.len() as u64;
        roots.push(path.to_absolute_path());
    }
    roots.sort();
    fs::write(dir.join("closure.txt"), list)?;
    fs::write(dir.join("store-paths"), roots.join("\n") + "\n")?;
    let manifest = Manifest {
        params: fresh.params.clone(),
        public_key: key.to_public().to_string(),
        narinfos: p.count,
        closure_paths: p.count,
        closure_file_bytes: fbytes,
        closure_narinfo_bytes: nbytes,
        depth: 1,
        generated_in: fresh.start.elapsed().as_secs_f64(),
    };
    fresh.save(manifest)
}
