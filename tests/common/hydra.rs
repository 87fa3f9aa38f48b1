//! A fake Hydra over a binary cache made by real Nix, for whole-command tests of
//! `create-channel-release` and `release-nixos`.
//!
//! [`release_data`] builds (once per process, and across runs under
//! `CARGO_TARGET_TMPDIR/release-data/<key>`) the store paths of a few channel releases with Nix
//! 2.8: channel tarballs (`tarballs/<name>-<version>.tar.xz`, real xz tar files made in the
//! builder), ISO-like image files (`iso/<name>.iso`), an OVA-like file, and packages with
//! references (two package
//! versions share one library), and copies them with `nix copy` into one signed, xz-compressed
//! `file://` binary cache. The product files are hashed (sha256, size) for the Hydra JSON and a
//! copy of each is kept for byte comparisons.
//!
//! [`FakeHydra`] describes builds and evaluations and turns them into routes of a
//! [`TestServer`]: `/job/P/J/JOB/latest-finished` (302 to `/build/ID`), `/build/ID`, `/eval/N`,
//! `/eval/N/store-paths` and `/eval/N/job/NAME` (302 to the build, or a JSON 404 for the image
//! jobs an evaluation lacks). JSON routes answer HTML unless the request accepts JSON, as Hydra
//! does. [`FakeHydra::standard`] is the scenario most tests start from: three evaluations of a
//! `nixos` channel (each newer; the second with a changed closure and more images, the third a
//! new release name over the second's closure) and one evaluation of a `nixpkgs` channel (job
//! `tarball`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::dirs::remove_tree;
use super::nixcache::{require_nix, NixEnv, NixError};
use super::server::{Response, TestServer, TestServerBuilder};

/// Bump when the layout of the built data changes.
pub const DATA_VERSION: &str = "r1";

/// The signing key name of the release cache.
pub const RELEASE_KEY_NAME: &str = "release-test-cache-1";

/// The version strings of the releases (the evaluations' release names end in them).
pub const NIXOS_V1: &str = "20.09.100.aaaaaaa";
/// Second nixos evaluation.
pub const NIXOS_V2: &str = "20.09.200.bbbbbbb";
/// The nixpkgs evaluation.
pub const NIXPKGS_V: &str = "21.03pre300.ccccccc";

/// The Nix expression of the release data; see the module documentation.
pub const RELEASE_EXPRESSION: &str = r#"
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  common = mk "reltest-common" ''
    mkdir -p $out/lib
    i=0
    while [ $i -lt 1500 ]; do
      printf 'common library line %05d\n' $i
      i=$((i + 1))
    done > $out/lib/common.txt
  '';
  pkg = v: mk "reltest-pkg-${v}" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\ncat %s/lib/common.txt\necho package version ${v}\n' ${common} > $out/bin/pkg
    chmod 0755 $out/bin/pkg
  '';
  tarball = prefix: v: mk "${prefix}-channel-${v}" ''
    mkdir -p src/${prefix}-${v}/pkgs $out/tarballs
    printf '{ ... }: { version = "${v}"; }\n' > src/${prefix}-${v}/default.nix
    printf '${v}' > src/${prefix}-${v}/.version
    i=0
    while [ $i -lt 400 ]; do
      printf 'package %d of ${prefix} ${v}\n' $i
      i=$((i + 1))
    done > src/${prefix}-${v}/pkgs/list
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -C src -cf - ${prefix}-${v} \
      | xz -c > $out/tarballs/${prefix}-${v}.tar.xz
  '';
  iso = kind: v: mk "nixos-${kind}-${v}-x86_64-linux.iso" ''
    mkdir -p $out/iso
    i=0
    while [ $i -lt 3000 ]; do
      printf 'ISO9660 ${kind} ${v} sector %06d\n' $i
      i=$((i + 1))
    done > $out/iso/nixos-${kind}-${v}-x86_64-linux.iso
  '';
in {
  inherit common;
  pkg1 = pkg "1";
  pkg2 = pkg "2";
  pkgnp = pkg "np";
  channel1 = tarball "nixos" "20.09.100.aaaaaaa";
  channel2 = tarball "nixos" "20.09.200.bbbbbbb";
  channelnp = tarball "nixpkgs" "21.03pre300.ccccccc";
  iso1 = iso "minimal" "20.09.100.aaaaaaa";
  iso2 = iso "minimal" "20.09.200.bbbbbbb";
  graphical2 = iso "graphical" "20.09.200.bbbbbbb";
  ova2 = mk "nixos-20.09.200.bbbbbbb-x86_64-linux.ova" ''
    mkdir -p $out
    i=0
    while [ $i -lt 2000 ]; do
      printf 'OVA appliance 20.09.200.bbbbbbb block %06d\n' $i
      i=$((i + 1))
    done > $out/nixos-20.09.200.bbbbbbb-x86_64-linux.ova
  '';
}
"#;

/// The attributes built, in the order of [`BuiltPaths`]' fields.
const ATTRS: [&str; 11] = [
    "common",
    "pkg1",
    "pkg2",
    "pkgnp",
    "channel1",
    "channel2",
    "channelnp",
    "iso1",
    "iso2",
    "graphical2",
    "ova2",
];

/// One file inside a store path, as a Hydra build product describes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProductFile {
    /// The store path holding the file.
    pub store_path: String,
    /// The path inside it, starting with `/`.
    pub inner: String,
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// A copy of the file's bytes, outside any store.
    pub copy: PathBuf,
}

impl ProductFile {
    /// The product's `path` as Hydra gives it: store path plus inner path.
    pub fn hydra_path(&self) -> String {
        format!("{}{}", self.store_path, self.inner)
    }

    /// The last component of the inner path.
    pub fn file_name(&self) -> &str {
        self.inner.rsplit('/').next().unwrap_or(&self.inner)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        fs::read(&self.copy).unwrap_or_else(|e| panic!("reading {}: {e}", self.copy.display()))
    }
}

/// The store paths of the data, by attribute.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuiltPaths {
    /// A library both nixos package versions and the nixpkgs package reference.
    pub common: String,
    /// The package of the first nixos evaluation.
    pub pkg1: String,
    /// The package of the second nixos evaluation.
    pub pkg2: String,
    /// The package of the nixpkgs evaluation.
    pub pkgnp: String,
    /// Channel tarball store paths.
    pub channel1: String,
    /// Second nixos channel tarball.
    pub channel2: String,
    /// nixpkgs channel tarball.
    pub channelnp: String,
    /// Minimal ISO store paths.
    pub iso1: String,
    /// Second minimal ISO.
    pub iso2: String,
    /// Graphical ISO of the second evaluation.
    pub graphical2: String,
    /// OVA image of the second evaluation.
    pub ova2: String,
}

/// Everything [`release_data`] built.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseData {
    /// The binary cache directory (`nix-cache-info`, narinfos, `nar/`). Shared and read-only.
    pub cache: PathBuf,
    /// `release-test-cache-1:<base64>`.
    pub public_key: String,
    /// The store paths.
    pub paths: BuiltPaths,
    /// `tarballs/nixos-<NIXOS_V1>.tar.xz` in `channel1`.
    pub tarball1: ProductFile,
    /// `tarballs/nixos-<NIXOS_V2>.tar.xz` in `channel2`.
    pub tarball2: ProductFile,
    /// `tarballs/nixpkgs-<NIXPKGS_V>.tar.xz` in `channelnp`.
    pub tarball_np: ProductFile,
    /// The minimal ISO of the first evaluation.
    pub iso1: ProductFile,
    /// The minimal ISO of the second evaluation.
    pub iso2: ProductFile,
    /// The graphical ISO of the second evaluation.
    pub graphical2: ProductFile,
    /// The OVA image of the second evaluation.
    pub ova2: ProductFile,
    /// Store path -> its closure (sorted), for every built path.
    pub closures: BTreeMap<String, Vec<String>>,
}

impl ReleaseData {
    /// The closure of `roots`, sorted and de-duplicated.
    pub fn closure_of(&self, roots: &[String]) -> Vec<String> {
        let mut out: Vec<String> = roots
            .iter()
            .flat_map(|r| {
                self.closures
                    .get(r)
                    .unwrap_or_else(|| panic!("no closure recorded for {r}"))
                    .iter()
                    .cloned()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The narinfo file of `store_path` in the cache.
    pub fn narinfo_file(&self, store_path: &str) -> PathBuf {
        self.cache
            .join(format!("{}.narinfo", hash_part(store_path)))
    }

    /// The value of `field` in the narinfo of `store_path`.
    pub fn narinfo_field(&self, store_path: &str, field: &str) -> String {
        let file = self.narinfo_file(store_path);
        let text =
            fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let prefix = format!("{field}: ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{} has no {field}", file.display()))
    }

    /// The NAR's `URL` (`nar/....nar.xz`) of `store_path`.
    pub fn nar_url(&self, store_path: &str) -> String {
        self.narinfo_field(store_path, "URL")
    }

    /// The URL path of the narinfo of `store_path` on a server of the cache.
    pub fn narinfo_url_path(&self, store_path: &str) -> String {
        format!("/{}.narinfo", hash_part(store_path))
    }

    /// The URL path of the NAR of `store_path` on a server of the cache.
    pub fn nar_url_path(&self, store_path: &str) -> String {
        format!("/{}", self.nar_url(store_path))
    }
}

/// The hash part of `/nix/store/<hash>-<name>`.
pub fn hash_part(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    base.split_once('-').map_or(base, |(h, _)| h)
}

/// The sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The data, built on first use (see the module documentation). Panics if building fails.
pub fn release_data() -> &'static ReleaseData {
    static DATA: OnceLock<Result<ReleaseData, String>> = OnceLock::new();
    match DATA.get_or_init(|| load_or_build().map_err(|e| e.to_string())) {
        Ok(d) => d,
        Err(e) => panic!("building the release test data with Nix failed: {e}"),
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const MANIFEST: &str = "release-data.json";

fn load_or_build() -> Result<ReleaseData, NixError> {
    require_nix();
    let key = format!(
        "{DATA_VERSION}-{:016x}",
        fnv1a(format!("{DATA_VERSION}{RELEASE_EXPRESSION}").as_bytes())
    );
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release-data");
    let final_dir = base.join(&key);
    if let Some(data) = load(&final_dir) {
        return Ok(data);
    }
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let work = base.join(format!(".build-{}-{nanos:08x}", std::process::id()));
    if let Err(e) = build(&work) {
        remove_tree(&work);
        return Err(e);
    }
    // Another test process may have finished the same build first: then its result is used.
    if fs::rename(&work, &final_dir).is_err() {
        remove_tree(&work);
    }
    Ok(load(&final_dir)
        .unwrap_or_else(|| panic!("no usable release data in {}", final_dir.display())))
}

/// Reads the manifest, with the paths in it made to point into `dir` (the data was built in a
/// work directory and renamed).
fn load(dir: &Path) -> Option<ReleaseData> {
    let text = fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let mut data: ReleaseData = serde_json::from_str(&text).ok()?;
    data.cache = dir.join("cache");
    for p in [
        &mut data.tarball1,
        &mut data.tarball2,
        &mut data.tarball_np,
        &mut data.iso1,
        &mut data.iso2,
        &mut data.graphical2,
        &mut data.ova2,
    ] {
        let name = p.copy.file_name()?.to_owned();
        p.copy = dir.join("products").join(name);
    }
    Some(data)
}

fn build(work: &Path) -> Result<(), NixError> {
    fs::create_dir_all(work.join("products"))
        .unwrap_or_else(|e| panic!("creating {}: {e}", work.display()));
    let env = NixEnv::new(&work.join("env"));
    let expr_file = work.join("release.nix");
    fs::write(&expr_file, RELEASE_EXPRESSION).expect("writing the release expression");
    let expr = expr_file.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec![&expr];
    for a in ATTRS {
        args.extend(["-A", a]);
    }
    args.push("--no-out-link");
    let built = env.run_lines("nix-build", &args)?;
    assert_eq!(
        built.len(),
        ATTRS.len(),
        "nix-build printed {built:?}, expected {} store paths",
        ATTRS.len()
    );
    let p = |i: usize| built[i].clone();
    let paths = BuiltPaths {
        common: p(0),
        pkg1: p(1),
        pkg2: p(2),
        pkgnp: p(3),
        channel1: p(4),
        channel2: p(5),
        channelnp: p(6),
        iso1: p(7),
        iso2: p(8),
        graphical2: p(9),
        ova2: p(10),
    };

    let secret = env.run_lines(
        "nix",
        &["key", "generate-secret", "--key-name", RELEASE_KEY_NAME],
    )?;
    let secret_file = work.join("secret.key");
    fs::write(&secret_file, secret.concat()).expect("writing the secret key");
    let mut convert = env.command("nix");
    convert
        .args(["key", "convert-secret-to-public"])
        .stdin(fs::File::open(&secret_file).expect("opening the secret key"));
    let public_key = String::from_utf8_lossy(&env.run(&mut convert)?.stdout)
        .trim()
        .to_string();

    let cache = work.join("cache");
    let to = format!(
        "file://{}?compression=xz&secret-key={}",
        cache.display(),
        secret_file.display()
    );
    let mut copy = env.command("nix");
    copy.args(["copy", "--to", &to]).args(&built);
    env.run(&mut copy)?;

    let product = |store_path: &str, inner: String| -> ProductFile {
        let file = PathBuf::from(format!("{}{inner}", env.real_path(store_path).display()));
        let bytes = fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let name = inner.rsplit('/').next().unwrap_or("product").to_string();
        let copy = work.join("products").join(&name);
        fs::write(&copy, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));
        ProductFile {
            store_path: store_path.to_string(),
            inner,
            sha256: sha256_hex(&bytes),
            size: bytes.len() as u64,
            copy,
        }
    };
    let tarball1 = product(
        &paths.channel1,
        format!("/tarballs/nixos-{NIXOS_V1}.tar.xz"),
    );
    let tarball2 = product(
        &paths.channel2,
        format!("/tarballs/nixos-{NIXOS_V2}.tar.xz"),
    );
    let tarball_np = product(
        &paths.channelnp,
        format!("/tarballs/nixpkgs-{NIXPKGS_V}.tar.xz"),
    );
    let iso1 = product(
        &paths.iso1,
        format!("/iso/nixos-minimal-{NIXOS_V1}-x86_64-linux.iso"),
    );
    let iso2 = product(
        &paths.iso2,
        format!("/iso/nixos-minimal-{NIXOS_V2}-x86_64-linux.iso"),
    );
    let graphical2 = product(
        &paths.graphical2,
        format!("/iso/nixos-graphical-{NIXOS_V2}-x86_64-linux.iso"),
    );

    let ova2 = product(&paths.ova2, format!("/nixos-{NIXOS_V2}-x86_64-linux.ova"));

    let mut closures = BTreeMap::new();
    for path in &built {
        closures.insert(path.clone(), env.closure(std::slice::from_ref(path))?);
    }
    let data = ReleaseData {
        cache,
        public_key,
        paths,
        tarball1,
        tarball2,
        tarball_np,
        iso1,
        iso2,
        graphical2,
        ova2,
        closures,
    };
    remove_tree(&work.join("env"));
    fs::write(
        work.join(MANIFEST),
        serde_json::to_string_pretty(&data).expect("serializing the release data"),
    )
    .expect("writing the release data manifest");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The fake Hydra.

/// A build product of a [`HydraBuild`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydraProduct {
    /// `source-dist`, `iso`, `ova`, ...
    pub subtype: String,
    /// The display name.
    pub name: String,
    /// The file's path: store path plus inner path.
    pub path: String,
    /// sha256, hex.
    pub sha256hash: String,
    /// Size in bytes.
    pub filesize: u64,
}

impl HydraProduct {
    /// A `file` product of `subtype` describing `file` exactly.
    pub fn of(subtype: &str, file: &ProductFile) -> HydraProduct {
        HydraProduct {
            subtype: subtype.to_string(),
            name: file.file_name().to_string(),
            path: file.hydra_path(),
            sha256hash: file.sha256.clone(),
            filesize: file.size,
        }
    }
}

/// A build, as `/build/ID` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydraBuild {
    /// The build id.
    pub id: u64,
    /// Project.
    pub project: String,
    /// Jobset.
    pub jobset: String,
    /// Job.
    pub job: String,
    /// `nixname`: for the job of a channel, the release name.
    pub nixname: String,
    /// The evaluation (first of `jobsetevals`).
    pub eval: u64,
    /// `stoptime` (and, minus 600 s, `timestamp`).
    pub stoptime: i64,
    /// `buildstatus` (0: success).
    pub buildstatus: i64,
    /// The products, numbered from 1 in this order.
    pub products: Vec<HydraProduct>,
}

impl HydraBuild {
    /// The JSON of `/build/ID`, shaped like Hydra's `Builds::as_json`.
    pub fn to_json(&self) -> Value {
        let products: serde_json::Map<String, Value> = self
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    (i + 1).to_string(),
                    json!({
                        "type": "file",
                        "subtype": p.subtype,
                        "name": p.name,
                        "path": p.path,
                        "sha256hash": p.sha256hash,
                        "filesize": p.filesize,
                        "defaultpath": "",
                    }),
                )
            })
            .collect();
        let outputs: serde_json::Map<String, Value> = self
            .products
            .first()
            .map(|p| {
                let out: String = p.path.split('/').take(4).collect::<Vec<_>>().join("/");
                ("out".to_string(), json!({ "path": out }))
            })
            .into_iter()
            .collect();
        json!({
            "id": self.id,
            "finished": 1,
            "timestamp": self.stoptime - 600,
            "starttime": self.stoptime - 300,
            "stoptime": self.stoptime,
            "project": self.project,
            "jobset": self.jobset,
            "job": self.job,
            "nixname": self.nixname,
            "system": "x86_64-linux",
            "priority": 100,
            "buildstatus": self.buildstatus,
            "releasename": null,
            "jobsetevals": [self.eval],
            "buildoutputs": outputs,
            "buildproducts": products,
            "buildmetrics": {},
        })
    }
}

/// An evaluation, as `/eval/N` and `/eval/N/store-paths` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydraEval {
    /// The evaluation id.
    pub id: u64,
    /// `jobsetevalinputs.nixpkgs.revision`.
    pub revision: String,
    /// `/eval/N/store-paths`, served in this order (duplicates included).
    pub store_paths: Vec<String>,
    /// Job name -> build id (`/eval/N/job/NAME`).
    pub jobs: BTreeMap<String, u64>,
    /// Jobs that answer with Hydra's JSON 404 ("no job with the specified name").
    pub absent_jobs: Vec<String>,
    /// When it ran.
    pub timestamp: i64,
}

/// The image jobs of a nixos release jobset that `create-channel-release` asks for.
pub const IMAGE_JOBS: [&str; 4] = [
    "nixos.iso_minimal.x86_64-linux",
    "nixos.iso_minimal.i686-linux",
    "nixos.iso_graphical.x86_64-linux",
    "nixos.ova.x86_64-linux",
];

/// Builds and evaluations, and which build each job's `latest-finished` is.
#[derive(Clone, Debug, Default)]
pub struct FakeHydra {
    /// Builds by id.
    pub builds: BTreeMap<u64, HydraBuild>,
    /// Evaluations by id.
    pub evals: BTreeMap<u64, HydraEval>,
    /// `(project, jobset, job)` -> the build `latest-finished` redirects to.
    pub latest: BTreeMap<(String, String, String), u64>,
}

/// The names of the standard scenario.
pub mod names {
    /// The nixos channel.
    pub const NIXOS_CHANNEL: &str = "nixos-20.09";
    /// Its project, jobset and job.
    pub const NIXOS_PROJECT: &str = "nixos";
    /// Jobset of the nixos channel.
    pub const NIXOS_JOBSET: &str = "release-20.09";
    /// Job of the nixos channel.
    pub const NIXOS_JOB: &str = "tested";
    /// The nixpkgs channel.
    pub const NIXPKGS_CHANNEL: &str = "nixpkgs-unstable";
    /// Project of the nixpkgs channel.
    pub const NIXPKGS_PROJECT: &str = "nixpkgs";
    /// Jobset of the nixpkgs channel.
    pub const NIXPKGS_JOBSET: &str = "trunk";
    /// Job of the nixpkgs channel.
    pub const NIXPKGS_JOB: &str = "tarball";
    /// Evaluation ids of the nixos channel (oldest first).
    pub const NIXOS_EVALS: [u64; 3] = [101, 102, 103];
    /// The `tested` build of each nixos evaluation.
    pub const NIXOS_TESTED: [u64; 3] = [1001, 2001, 3001];
    /// The nixpkgs evaluation.
    pub const NIXPKGS_EVAL: u64 = 201;
    /// The nixpkgs `tarball` build.
    pub const NIXPKGS_TARBALL: u64 = 5001;
}

/// A 40-character revision made of one repeated hex digit.
pub fn revision(digit: char) -> String {
    digit.to_string().repeat(40)
}

impl FakeHydra {
    /// An empty Hydra.
    pub fn new() -> FakeHydra {
        FakeHydra::default()
    }

    /// The standard scenario over [`release_data`] (see [`names`]):
    /// - nixos evaluation 101 (`nixos-20.09.100.aaaaaaa`): `pkg1`, `channel1`, minimal `iso1`;
    ///   no graphical ISO, i686 ISO or OVA (JSON 404s). `store-paths` is served unsorted and
    ///   with a duplicate.
    /// - nixos evaluation 102 (`nixos-20.09.200.bbbbbbb`, newer): `pkg2`, `channel2`, `iso2`,
    ///   the graphical ISO `graphical2` and the OVA `ova2`; no i686 ISO.
    /// - nixos evaluation 103 (`nixos-20.09.300.ccccccc`, newest): the products of 102 under
    ///   a new release name.
    /// - nixpkgs evaluation 201 (`nixpkgs-21.03pre300.ccccccc`): `pkgnp` and `channelnp`; the
    ///   `tarball` job is both the released job and the tarball product.
    ///
    /// `latest-finished` of the nixos job is evaluation 101's build, and of nixpkgs its build.
    pub fn standard(data: &ReleaseData) -> FakeHydra {
        use names::*;
        let mut h = FakeHydra::new();
        let p = &data.paths;
        let nixos_evals = [
            (
                NIXOS_V1,
                1_600_000_000,
                'a',
                vec![
                    p.channel1.clone(),
                    p.pkg1.clone(),
                    p.iso1.clone(),
                    p.pkg1.clone(),
                ],
                &data.tarball1,
                &data.iso1,
                None,
            ),
            (
                NIXOS_V2,
                1_600_100_000,
                'b',
                vec![
                    p.pkg2.clone(),
                    p.channel2.clone(),
                    p.iso2.clone(),
                    p.graphical2.clone(),
                    p.ova2.clone(),
                ],
                &data.tarball2,
                &data.iso2,
                Some((&data.graphical2, &data.ova2)),
            ),
            (
                "20.09.300.ccccccc",
                1_600_200_000,
                'c',
                vec![
                    p.pkg2.clone(),
                    p.channel2.clone(),
                    p.iso2.clone(),
                    p.graphical2.clone(),
                    p.ova2.clone(),
                ],
                &data.tarball2,
                &data.iso2,
                Some((&data.graphical2, &data.ova2)),
            ),
        ];
        for (i, (version, stoptime, rev, store_paths, tarball, iso, extra_images)) in
            nixos_evals.into_iter().enumerate()
        {
            let eval = NIXOS_EVALS[i];
            let tested = NIXOS_TESTED[i];
            let build =
                |id: u64, job: &str, nixname: String, products: Vec<HydraProduct>| HydraBuild {
                    id,
                    project: NIXOS_PROJECT.into(),
                    jobset: NIXOS_JOBSET.into(),
                    job: job.into(),
                    nixname,
                    eval,
                    stoptime,
                    buildstatus: 0,
                    products,
                };
            h.add_build(build(tested, NIXOS_JOB, format!("nixos-{version}"), vec![]));
            h.add_build(build(
                tested + 1,
                "nixos.channel",
                format!("nixos-channel-{version}"),
                vec![HydraProduct::of("source-dist", tarball)],
            ));
            h.add_build(build(
                tested + 2,
                "nixos.iso_minimal.x86_64-linux",
                iso.file_name().to_string(),
                vec![HydraProduct::of("iso", iso)],
            ));
            let mut jobs = BTreeMap::from([
                (NIXOS_JOB.to_string(), tested),
                ("nixos.channel".to_string(), tested + 1),
                ("nixos.iso_minimal.x86_64-linux".to_string(), tested + 2),
            ]);
            if let Some((graphical, ova)) = extra_images {
                h.add_build(build(
                    tested + 3,
                    "nixos.iso_graphical.x86_64-linux",
                    graphical.file_name().to_string(),
                    vec![HydraProduct::of("iso", graphical)],
                ));
                jobs.insert("nixos.iso_graphical.x86_64-linux".to_string(), tested + 3);
                h.add_build(build(
                    tested + 4,
                    "nixos.ova.x86_64-linux",
                    ova.file_name().to_string(),
                    vec![HydraProduct::of("ova", ova)],
                ));
                jobs.insert("nixos.ova.x86_64-linux".to_string(), tested + 4);
            }
            let absent_jobs = IMAGE_JOBS
                .iter()
                .filter(|j| !jobs.contains_key(**j))
                .map(|j| j.to_string())
                .collect();
            h.add_eval(HydraEval {
                id: eval,
                revision: revision(rev),
                store_paths,
                jobs,
                absent_jobs,
                timestamp: stoptime - 3600,
            });
        }
        h.set_latest(NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB, NIXOS_TESTED[0]);

        h.add_build(HydraBuild {
            id: NIXPKGS_TARBALL,
            project: NIXPKGS_PROJECT.into(),
            jobset: NIXPKGS_JOBSET.into(),
            job: NIXPKGS_JOB.into(),
            nixname: format!("nixpkgs-{NIXPKGS_V}"),
            eval: NIXPKGS_EVAL,
            stoptime: 1_600_050_000,
            buildstatus: 0,
            products: vec![HydraProduct::of("source-dist", &data.tarball_np)],
        });
        h.add_eval(HydraEval {
            id: NIXPKGS_EVAL,
            revision: revision('d'),
            store_paths: vec![p.pkgnp.clone(), p.channelnp.clone()],
            jobs: BTreeMap::from([(NIXPKGS_JOB.to_string(), NIXPKGS_TARBALL)]),
            absent_jobs: vec![],
            timestamp: 1_600_040_000,
        });
        h.set_latest(
            NIXPKGS_PROJECT,
            NIXPKGS_JOBSET,
            NIXPKGS_JOB,
            NIXPKGS_TARBALL,
        );
        h
    }

    /// Adds (or replaces) a build.
    pub fn add_build(&mut self, build: HydraBuild) {
        self.builds.insert(build.id, build);
    }

    /// Adds (or replaces) an evaluation.
    pub fn add_eval(&mut self, eval: HydraEval) {
        self.evals.insert(eval.id, eval);
    }

    /// A build, for changes before the server starts.
    pub fn build_mut(&mut self, id: u64) -> &mut HydraBuild {
        self.builds
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no build {id}"))
    }

    /// An evaluation, for changes before the server starts.
    pub fn eval_mut(&mut self, id: u64) -> &mut HydraEval {
        self.evals
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no evaluation {id}"))
    }

    /// Makes `latest-finished` of the job redirect to `build_id`.
    pub fn set_latest(&mut self, project: &str, jobset: &str, job: &str, build_id: u64) {
        self.latest
            .insert((project.into(), jobset.into(), job.into()), build_id);
    }

    /// The request path of a job's `latest-finished`.
    pub fn latest_finished_path(project: &str, jobset: &str, job: &str) -> String {
        format!("/job/{project}/{jobset}/{job}/latest-finished")
    }

    /// Points `latest-finished` of the job at `build_id` on a running server.
    pub fn point_latest(server: &TestServer, project: &str, jobset: &str, job: &str, id: u64) {
        server.set_route(
            &FakeHydra::latest_finished_path(project, jobset, job),
            Response::redirect(302, &format!("{{base}}/build/{id}")),
        );
    }

    /// Adds the routes of this Hydra to `builder`.
    pub fn routes(&self, mut builder: TestServerBuilder) -> TestServerBuilder {
        let json_body = |v: &Value| Response::json(serde_json::to_vec_pretty(v).expect("JSON"));
        for ((project, jobset, job), id) in &self.latest {
            builder = builder.route(
                &FakeHydra::latest_finished_path(project, jobset, job),
                Response::redirect(302, &format!("{{base}}/build/{id}")).header("Vary", "Accept"),
            );
        }
        for build in self.builds.values() {
            builder =
                builder.json_route(&format!("/build/{}", build.id), json_body(&build.to_json()));
        }
        for eval in self.evals.values() {
            let mut builds: Vec<u64> = eval.jobs.values().copied().collect();
            builds.sort_unstable();
            let body = json!({
                "id": eval.id,
                "timestamp": eval.timestamp,
                "checkouttime": 3,
                "evaltime": 42,
                "hasnewbuilds": 1,
                "flake": null,
                "builds": builds,
                "jobsetevalinputs": {
                    "nixpkgs": {
                        "type": "git",
                        "uri": "https://github.com/NixOS/nixpkgs.git",
                        "revision": eval.revision,
                        "value": null,
                        "dependency": null,
                    },
                },
            });
            builder = builder.json_route(&format!("/eval/{}", eval.id), json_body(&body));
            builder = builder.json_route(
                &format!("/eval/{}/store-paths", eval.id),
                json_body(&json!(eval.store_paths)),
            );
            for (job, id) in &eval.jobs {
                builder = builder.route(
                    &format!("/eval/{}/job/{job}", eval.id),
                    Response::redirect(302, &format!("{{base}}/build/{id}")),
                );
            }
            for job in &eval.absent_jobs {
                builder = builder.route(
                    &format!("/eval/{}/job/{job}", eval.id),
                    Response::new(404)
                        .content_type("application/json; charset=utf-8")
                        .body(r#"{"error":"This evaluation has no job with the specified name."}"#),
                );
            }
        }
        builder
    }

    /// Starts a server answering like this Hydra.
    pub fn start(&self) -> TestServer {
        self.routes(TestServer::builder()).start()
    }
}

// ---------------------------------------------------------------------------------------------
// Checks of a release directory.

/// What a complete release directory must hold.
pub struct ExpectedRelease<'a> {
    /// The Hydra base URL the release came from.
    pub hydra_url: &'a str,
    /// What `binary-cache-url` must say.
    pub binary_cache_url: &'a str,
    /// The evaluation.
    pub eval: &'a HydraEval,
    /// The build of the channel's job.
    pub build: &'a HydraBuild,
    /// The channel tarball.
    pub tarball: &'a ProductFile,
    /// The image files, exactly.
    pub images: Vec<&'a ProductFile>,
    /// Whether the tarball must have `programs.sqlite` added (release-nixos adds it by
    /// default; create-channel-release leaves Hydra's tarball as it is).
    pub programs: bool,
}

/// Fails the test unless `dir` is the complete release `want` describes: `src-url`,
/// `binary-cache-url`, sorted and de-duplicated `store-paths` and its `.xz`, `git-revision`,
/// `build-info.json`, the tarball as `nixexprs.tar.xz` and exactly the expected images, each
/// with its `.sha256`, all byte for byte.
#[track_caller]
pub fn assert_release(dir: &Path, want: &ExpectedRelease<'_>) {
    let read = |name: &str| {
        fs::read(dir.join(name)).unwrap_or_else(|e| panic!("reading {}/{name}: {e}", dir.display()))
    };
    let text = |name: &str| String::from_utf8(read(name)).expect("UTF-8 text");
    assert_eq!(
        text("git-revision").trim(),
        want.eval.revision,
        "git-revision of {}",
        dir.display()
    );
    assert_eq!(
        text("src-url").trim(),
        format!("{}/eval/{}", want.hydra_url, want.eval.id),
        "src-url"
    );
    assert_eq!(text("binary-cache-url").trim(), want.binary_cache_url);
    let mut paths = want.eval.store_paths.clone();
    paths.sort();
    paths.dedup();
    let expected_paths: String = paths.iter().map(|p| format!("{p}\n")).collect();
    assert_eq!(text("store-paths"), expected_paths, "store-paths");
    let mut unxz = String::new();
    std::io::Read::read_to_string(
        &mut xz2::read::XzDecoder::new(&read("store-paths.xz")[..]),
        &mut unxz,
    )
    .expect("store-paths.xz is xz");
    assert_eq!(unxz, expected_paths, "store-paths.xz");
    // The product's tarball, with `programs.sqlite` added at the top of its channel directory
    // (release-nixos adds it by default), and the checksum file of what is there.
    let got = tarball_entries(&read("nixexprs.tar.xz"));
    let mut product = tarball_entries(&want.tarball.bytes());
    let programs: Vec<&String> = got
        .keys()
        .filter(|k| k.matches('/').count() == 1 && k.ends_with("/programs.sqlite"))
        .collect();
    assert_eq!(
        programs.len(),
        usize::from(want.programs),
        "nixexprs.tar.xz: the programs.sqlite files at the top of its channel directory"
    );
    if let Some(p) = programs.first() {
        product.insert((*p).clone(), got[*p].clone());
    } else {
        assert!(
            read("nixexprs.tar.xz") == want.tarball.bytes(),
            "nixexprs.tar.xz differs from the product file"
        );
    }
    assert!(
        got == product,
        "nixexprs.tar.xz holds other files than the product's (programs.sqlite aside)"
    );
    assert_eq!(
        text("nixexprs.tar.xz.sha256"),
        format!(
            "{}  nixexprs.tar.xz\n",
            sha256_hex(&read("nixexprs.tar.xz"))
        ),
        "nixexprs.tar.xz.sha256"
    );
    let info: Value = serde_json::from_slice(&read("build-info.json")).expect("build-info.json");
    assert_eq!(info["eval_id"], want.eval.id);
    assert_eq!(info["build_id"], want.build.id);
    assert_eq!(info["nixname"], want.build.nixname.as_str());
    assert_eq!(info["build_time"], want.build.stoptime);

    let mut images_found: Vec<String> = fs::read_dir(dir)
        .expect("listing the release")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".iso") || n.ends_with(".ova"))
        .collect();
    images_found.sort();
    let mut images_wanted: Vec<String> = want
        .images
        .iter()
        .map(|p| p.file_name().to_string())
        .collect();
    images_wanted.sort();
    assert_eq!(images_found, images_wanted, "images in {}", dir.display());
    for image in &want.images {
        let name = image.file_name();
        assert!(
            read(name) == image.bytes(),
            "{name} differs from the product"
        );
        assert_eq!(
            text(&format!("{name}.sha256")),
            format!("{}  {name}\n", image.sha256),
            "{name}.sha256"
        );
    }
}

/// The regular files of an xz-compressed tar archive, by path.
pub fn tarball_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(xz2::read::XzDecoder::new(bytes));
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().expect("a path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("reading a tar entry");
            out.insert(path, data);
        }
    }
    out
}
