//! Source tarball mirroring (`mirror: true`) with `release-nixos`: real Nix evaluates a small
//! channel tarball whose derivations are `fetchurl`-like fixed-output derivations against a
//! local server; some sources are also in the binary cache as fixed-output store paths (added
//! with `nix-store --add-fixed` and copied with `nix copy`), one source's URLs are all dead and
//! one serves the wrong bytes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde_json::json;
use sha2::Digest;

use common::hydra::{
    revision, sha256_hex, FakeHydra, HydraBuild, HydraEval, HydraProduct, ProductFile,
};
use common::*;

const CHANNEL: &str = "nixpkgs-unstable";
const PROJECT: &str = "nixpkgs";
const JOBSET: &str = "trunk";
const JOB: &str = "tarball";

/// How a source is declared, where it is, and what its URL does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Url {
    /// Serves the right bytes.
    Good,
    /// 404.
    Dead,
    /// Serves other bytes.
    Wrong,
}

#[derive(Clone, Debug)]
struct Src {
    name: &'static str,
    /// `sha256` (nix32), `sha256hex`, `sri`, `sha1`, `md5`.
    declared: &'static str,
    in_cache: bool,
    url: Url,
}

/// The sources of the test channel.
fn sources() -> Vec<Src> {
    vec![
        // From the cache; its URL is dead: only the cache can give it.
        Src {
            name: "alpha-1.0.tar.gz",
            declared: "sha256",
            in_cache: true,
            url: Url::Dead,
        },
        // Not in the cache: from its URL.
        Src {
            name: "beta-2.1.tar.xz",
            declared: "sha256hex",
            in_cache: false,
            url: Url::Good,
        },
        Src {
            name: "gamma-0.3.tar.bz2",
            declared: "sha1",
            in_cache: false,
            url: Url::Good,
        },
        // In the cache under an md5 fixed-output path.
        Src {
            name: "delta-4.tar.gz",
            declared: "md5",
            in_cache: true,
            url: Url::Dead,
        },
        // Every URL dead (a 404 and a refused connection), not in the cache.
        Src {
            name: "epsilon-5.zip",
            declared: "sri",
            in_cache: false,
            url: Url::Dead,
        },
        // The URL serves other bytes.
        Src {
            name: "zeta-6.tar.gz",
            declared: "sha256",
            in_cache: false,
            url: Url::Wrong,
        },
        // The same for a hash the download itself does not check.
        Src {
            name: "eta-7.tar.gz",
            declared: "sha1",
            in_cache: false,
            url: Url::Wrong,
        },
    ]
}

fn bytes_of(name: &str) -> Vec<u8> {
    (0..300)
        .map(|i| format!("{name}: source line {i:04}\n"))
        .collect::<String>()
        .into_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn nix32(b: &[u8]) -> String {
    nixipfs::nixbase32::encode(b)
}

fn declared_attr(s: &Src) -> String {
    let b = bytes_of(s.name);
    match s.declared {
        "sha256" => format!("sha256 = \"{}\";", nix32(&sha2::Sha256::digest(&b))),
        "sha256hex" => format!("sha256 = \"{}\";", sha256_hex(&b)),
        "sri" => format!(
            "hash = \"sha256-{}\";",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&b))
        ),
        "sha1" => format!("sha1 = \"{}\";", hex(&sha1::Sha1::digest(&b))),
        "md5" => format!("md5 = \"{}\";", hex(&md5::Md5::digest(&b))),
        other => panic!("unknown declaration {other}"),
    }
}

const FETCHURL_NIX: &str = r#"
{ url ? null, urls ? [ url ], name ? baseNameOf (builtins.head urls)
, sha256 ? "", sha1 ? "", md5 ? "", hash ? "" }:
derivation ({
  inherit name urls;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "exit 1" ];
  outputHashMode = "flat";
} // (if hash != "" then { outputHash = hash; }
      else if sha256 != "" then { outputHashAlgo = "sha256"; outputHash = sha256; }
      else if sha1 != "" then { outputHashAlgo = "sha1"; outputHash = sha1; }
      else { outputHashAlgo = "md5"; outputHash = md5; }))
"#;

/// A `find-tarballs.nix` of the channel's own, in the 2017 shape (`url`, `hash`, `type`,
/// `name`), looking at the top-level packages' `srcs`.
const OWN_FIND_TARBALLS: &str = r#"
{ expr }:
let
  drvs = builtins.filter (v: builtins.isAttrs v && (v.type or "") == "derivation")
    (map (n: expr.${n}) (builtins.attrNames expr));
  srcs = builtins.concatLists (map (d: d.srcs) drvs);
  fixed = builtins.filter (s: (s.outputHash or "") != "") srcs;
in map (s: { url = builtins.head s.urls; hash = s.outputHash; type = s.outputHashAlgo or ""; name = s.name; }) fixed
"#;

/// The channel's `default.nix`: one package per source in `srcs` (a package with two sources,
/// one shared with another package), and a nested set.
fn default_nix(srcs: &[Src], server: &str) -> String {
    let mut fetches = Vec::new();
    for s in srcs {
        let mut urls = vec![format!("\"{server}/src/{}\"", s.name)];
        if s.name.starts_with("epsilon") {
            urls.push(format!("\"http://127.0.0.1:1/{}\"", s.name));
        }
        fetches.push(format!(
            "(fetchurl {{ urls = [ {} ]; {} }})",
            urls.join(" "),
            declared_attr(s)
        ));
    }
    let mut pkgs = String::new();
    for (i, f) in fetches.iter().enumerate() {
        let also = if i == 1 {
            fetches[0].clone()
        } else {
            String::new()
        };
        pkgs.push_str(&format!("  pkg{i} = mkPkg \"pkg{i}\" [ {f} {also} ];\n"));
    }
    format!(
        "{{ ... }}:\nlet\n  fetchurl = import ./fetchurl.nix;\n  mkPkg = name: srcs: derivation {{ \
         inherit name srcs; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \
         \"exit 1\" ]; }};\nin {{\n{pkgs}  meta = {{ description = \"a test channel\"; }};\n}}\n"
    )
}

/// A channel release: its tarball in a store path, and the sources it declares.
struct Channel {
    store_path: String,
    product: ProductFile,
}

/// Everything a test runs against.
struct World {
    dir: TestDir,
    sources_srv: TestServer,
    cache_srv: TestServer,
    hydra_srv: TestServer,
    public_key: String,
}

/// Makes the channel tarballs (`variants[i]` = the sources of evaluation i+1, whether the
/// channel has its own find-tarballs.nix), the cache and the servers.
fn world(label: &str, variants: &[(Vec<Src>, bool)]) -> World {
    let dir = TestDir::new(label);
    let env = NixEnv::new(&dir.join("nix"));
    // The source server: every source that has a good or wrong URL.
    let mut builder = TestServer::builder();
    for s in sources() {
        let path = format!("/src/{}", s.name);
        builder = match s.url {
            Url::Good => builder.route(&path, Response::ok(bytes_of(s.name))),
            Url::Wrong => builder.route(&path, Response::ok(b"not the declared bytes\n".to_vec())),
            Url::Dead => builder,
        };
    }
    let sources_srv = builder.start();

    let files = dir.join("files");
    fs::create_dir_all(&files).unwrap();
    let mut to_copy = Vec::new();
    for s in sources().into_iter().filter(|s| s.in_cache) {
        let f = files.join(s.name);
        fs::write(&f, bytes_of(s.name)).unwrap();
        let algo = if s.declared == "md5" { "md5" } else { "sha256" };
        let added = env
            .run_lines(
                "nix-store",
                &["--add-fixed", algo, &f.display().to_string()],
            )
            .expect("nix-store --add-fixed");
        to_copy.push(added[0].clone());
    }

    let mut channels = Vec::new();
    for (i, (srcs, own_script)) in variants.iter().enumerate() {
        let root = dir.join(format!("channel{i}"));
        let top = root.join("nixpkgs-src");
        fs::create_dir_all(top.join("maintainers/scripts")).unwrap();
        fs::write(
            top.join("default.nix"),
            default_nix(srcs, &sources_srv.url()),
        )
        .unwrap();
        fs::write(top.join("fetchurl.nix"), FETCHURL_NIX).unwrap();
        if *own_script {
            fs::write(
                top.join("maintainers/scripts/find-tarballs.nix"),
                OWN_FIND_TARBALLS,
            )
            .unwrap();
            fs::write(
                top.join("maintainers/scripts/all-tarballs.nix"),
                "import ../../default.nix { }\n",
            )
            .unwrap();
        }
        let out = dir.join(format!("channel{i}-out"));
        fs::create_dir_all(out.join("tarballs")).unwrap();
        let tarball = out.join("tarballs/nixexprs.tar.xz");
        let status = Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@1",
            ])
            .arg("-C")
            .arg(&root)
            .arg("-cJf")
            .arg(&tarball)
            .arg("nixpkgs-src")
            .status()
            .expect("tar (install it with `apt-get install -y tar xz-utils`)");
        assert!(status.success(), "tar failed");
        let added = env
            .run_lines("nix-store", &["--add", &out.display().to_string()])
            .expect("nix-store --add");
        let store_path = added[0].clone();
        let bytes = fs::read(&tarball).unwrap();
        to_copy.push(store_path.clone());
        channels.push(Channel {
            product: ProductFile {
                store_path: store_path.clone(),
                inner: "/tarballs/nixexprs.tar.xz".into(),
                sha256: sha256_hex(&bytes),
                size: bytes.len() as u64,
                copy: tarball,
            },
            store_path,
        });
    }

    let secret = env
        .run_lines(
            "nix",
            &["key", "generate-secret", "--key-name", "tarball-test-1"],
        )
        .expect("nix key generate-secret");
    let secret_file = dir.join("secret.key");
    fs::write(&secret_file, secret.concat()).unwrap();
    let mut convert = env.command("nix");
    convert
        .args(["key", "convert-secret-to-public"])
        .stdin(fs::File::open(&secret_file).unwrap());
    let public_key = String::from_utf8_lossy(&env.run(&mut convert).expect("public key").stdout)
        .trim()
        .to_string();
    let cache = dir.join("cache");
    let to = format!(
        "file://{}?compression=xz&secret-key={}",
        cache.display(),
        secret_file.display()
    );
    let mut copy = env.command("nix");
    copy.args(["copy", "--to", &to]).args(&to_copy);
    env.run(&mut copy).expect("nix copy");
    let cache_srv = TestServer::builder().static_dir(&cache).start();

    let mut hydra = FakeHydra::new();
    for (i, ch) in channels.iter().enumerate() {
        let id = i as u64 + 1;
        hydra.add_build(HydraBuild {
            id: 5000 + id,
            project: PROJECT.into(),
            jobset: JOBSET.into(),
            job: JOB.into(),
            nixname: format!("nixpkgs-21.03pre{id}00.abcdef{id}"),
            eval: 200 + id,
            stoptime: 1_600_000_000 + id as i64 * 1000,
            buildstatus: 0,
            products: vec![HydraProduct::of("source-dist", &ch.product)],
        });
        hydra.add_eval(HydraEval {
            id: 200 + id,
            revision: revision(char::from(b'0' + id as u8)),
            store_paths: vec![ch.store_path.clone()],
            jobs: BTreeMap::from([(JOB.to_string(), 5000 + id)]),
            absent_jobs: vec![],
            timestamp: 1_600_000_000 + id as i64 * 1000 - 100,
        });
    }
    hydra.set_latest(PROJECT, JOBSET, JOB, 5001);
    let hydra_srv = hydra.start();
    World {
        dir,
        sources_srv,
        cache_srv,
        hydra_srv,
        public_key,
    }
}

impl World {
    fn d(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    fn tarballs(&self) -> PathBuf {
        self.d().join("tarballs")
    }

    fn config(&self, releases: serde_json::Value) -> PathBuf {
        let file = self.dir.join("nixos_release.json");
        let config = json!({
            "hydra": self.hydra_srv.url(),
            "cache": self.cache_srv.url(),
            "max_threads": 4,
            "trusted_public_keys": [self.public_key],
            "releases": releases,
        });
        fs::write(&file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        file
    }

    fn mirrored(&self, keep: Option<u32>) -> PathBuf {
        let mut r = json!({"channel": CHANNEL, "project": PROJECT, "jobset": JOBSET, "job": JOB,
                           "mirror": true});
        if let Some(k) = keep {
            r["keep"] = json!(k);
        }
        self.config(json!([r]))
    }

    fn run(&self, config: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<String> = [
            "release-nixos",
            "--dir",
            &self.d().display().to_string(),
            "--tmpdir",
            &self.dir.join("tmp").display().to_string(),
            "--config",
            &config.display().to_string(),
            "--retries",
            "1",
            "--retry-delay",
            "0.05",
            "--no-ipfs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        run_nixipfs(args)
    }

    /// The release directory the channel points at.
    fn current_release(&self) -> PathBuf {
        let link = self.d().join("channels").join(CHANNEL);
        let target = fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        self.d().join("channels").join(target)
    }

    /// The file of `name`'s bytes in the tree.
    fn file_of(&self, name: &str) -> PathBuf {
        self.tarballs()
            .join("sha512")
            .join(hex(&sha2::Sha512::digest(bytes_of(name))))
    }

    /// Every path a client may ask for the source `name` by.
    fn paths_of(&self, name: &str) -> Vec<PathBuf> {
        let b = bytes_of(name);
        let t = self.tarballs();
        vec![
            t.join("md5").join(hex(&md5::Md5::digest(&b))),
            t.join("sha1").join(hex(&sha1::Sha1::digest(&b))),
            t.join("sha256").join(hex(&sha2::Sha256::digest(&b))),
            t.join("sha256").join(nix32(&sha2::Sha256::digest(&b))),
            t.join("sha512").join(nix32(&sha2::Sha512::digest(&b))),
            self.file_of(name),
        ]
    }

    #[track_caller]
    fn assert_mirrored(&self, name: &str) {
        let file = self.file_of(name);
        assert!(
            fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()),
            "{} is not a regular file",
            file.display()
        );
        for p in self.paths_of(name) {
            assert_eq!(
                fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
                bytes_of(name),
                "{}",
                p.display()
            );
            if p != file {
                let target = fs::read_link(&p).unwrap();
                assert!(
                    target.is_relative(),
                    "{} -> {}",
                    p.display(),
                    target.display()
                );
            }
        }
    }

    #[track_caller]
    fn assert_absent(&self, name: &str) {
        for p in self.paths_of(name) {
            assert!(fs::symlink_metadata(&p).is_err(), "{} exists", p.display());
        }
    }
}

fn list_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sources_come_from_the_cache_first_then_their_urls_and_the_unfetchable_are_listed() {
    let w = world("tarballs-first", &[(sources(), true)]);
    let config = w.mirrored(None);
    let metrics = w.dir.join("metrics.prom");
    let out = w.run(&config, &["--metrics-file", metrics.to_str().unwrap()]);
    assert_success(&out);
    let prom = fs::read_to_string(&metrics).unwrap();
    let gauge = |name: &str| {
        prom.lines()
            .find(|l| l.starts_with(&format!("{name}{{channel=\"{CHANNEL}\"}} ")))
            .unwrap_or_else(|| panic!("{name} not in\n{prom}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(gauge("nixipfs_channel_tarballs_missing"), 3.0, "{prom}");
    assert_eq!(gauge("nixipfs_channel_tarballs"), 7.0, "{prom}");
    let log = stderr(&out);
    assert!(
        log.contains("listing sources with maintainers/scripts/find-tarballs.nix"),
        "{log}"
    );

    for name in [
        "alpha-1.0.tar.gz",
        "beta-2.1.tar.xz",
        "gamma-0.3.tar.bz2",
        "delta-4.tar.gz",
    ] {
        w.assert_mirrored(name);
    }
    w.assert_absent("epsilon-5.zip");
    w.assert_absent("zeta-6.tar.gz");
    w.assert_absent("eta-7.tar.gz");
    // The cache first: the sources it has were not asked of their sites.
    assert_eq!(w.sources_srv.count("/src/alpha-1.0.tar.gz"), 0);
    assert_eq!(w.sources_srv.count("/src/delta-4.tar.gz"), 0);
    assert!(w.sources_srv.count("/src/beta-2.1.tar.xz") >= 1);

    // The channel moved although two sources cannot be had; they are listed with why.
    let release = w.current_release();
    assert!(release.join("git-revision").is_file());
    let missing = fs::read_to_string(release.join("missing-tarballs")).unwrap();
    assert_eq!(missing.lines().count(), 3, "{missing}");
    let line = |n: &str| {
        missing
            .lines()
            .find(|l| l.contains(n))
            .unwrap_or_else(|| panic!("{n} not in {missing}"))
            .to_string()
    };
    assert!(
        line("epsilon-5.zip").contains("does not exist"),
        "{missing}"
    );
    // The channel's own script (2017 shape) gives one URL a source.
    assert!(!line("epsilon-5.zip").contains("127.0.0.1:1"), "{missing}");
    assert!(line("zeta-6.tar.gz").contains("sha256"), "{missing}");
    assert!(line("eta-7.tar.gz").contains("is not sha1:"), "{missing}");
    assert!(log.contains("3 missing"), "{log}");
    let manifest = fs::read_to_string(release.join("tarballs-manifest")).unwrap();
    assert_eq!(manifest.lines().count(), 7, "{manifest}");
    assert!(w.tarballs().join("lastsync").is_file());
    assert_no_temp_files(&w.d());

    // verify checks the tree.
    let v = run_nixipfs(["verify", "--dir", &w.d().display().to_string()]);
    assert_success(&v);

    // A rerun fetches nothing that is there and evaluates nothing again.
    w.sources_srv.clear_requests();
    w.cache_srv.clear_requests();
    let again = w.run(&config, &[]);
    assert_success(&again);
    assert!(
        !stderr(&again).contains("listing sources with"),
        "{}",
        stderr(&again)
    );
    assert_eq!(w.sources_srv.count("/src/beta-2.1.tar.xz"), 0);
    assert_eq!(w.sources_srv.count("/src/gamma-0.3.tar.bz2"), 0);
    let nar_requests = w
        .cache_srv
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/nar/"))
        .count();
    assert_eq!(nar_requests, 0, "{}", w.cache_srv.log_summary());

    // A file changed on disk is found by verify.
    let beta = w.file_of("beta-2.1.tar.xz");
    fs::set_permissions(&beta, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&beta, b"tampered").unwrap();
    let v = run_nixipfs(["verify", "--dir", &w.d().display().to_string()]);
    assert!(!v.status.success(), "{}", output_text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(&beta.display().to_string()),
        "{}",
        output_text(&v)
    );
}

#[test]
fn print_only_lists_the_missing_sources_and_writes_nothing() {
    let w = world("tarballs-print", &[(sources(), false)]);
    // The release is mirrored without its sources first, so that its channel tarball is here.
    let plain = w.config(
        json!([{"channel": CHANNEL, "project": PROJECT, "jobset": JOBSET,
                                  "job": JOB, "mirror": false}]),
    );
    assert_success(&w.run(&plain, &[]));
    let config = w.mirrored(None);
    let out = w.run(&config, &["--print-only"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for s in sources() {
        let b = bytes_of(s.name);
        let hash = match s.declared {
            "sha1" => format!("sha1:{}", nix32(&sha1::Sha1::digest(&b))),
            "md5" => format!("md5:{}", nix32(&md5::Md5::digest(&b))),
            _ => format!("sha256:{}", nix32(&sha2::Sha256::digest(&b))),
        };
        let want = format!("{}/src/{},{hash}", w.sources_srv.url(), s.name);
        assert!(stdout.lines().any(|l| l == want), "{want} not in\n{stdout}");
    }
    assert!(!w.tarballs().exists(), "--print-only wrote the tree");
    assert_eq!(w.sources_srv.requests().len(), 0);
}

#[test]
fn a_channel_without_find_tarballs_is_listed_by_nixipfs_own_expression_and_gc_keeps_what_remains() {
    // Evaluation 2 drops gamma.
    let second: Vec<Src> = sources()
        .into_iter()
        .filter(|s| !s.name.starts_with("gamma"))
        .collect();
    let w = world("tarballs-gc", &[(sources(), false), (second, false)]);
    let config = w.mirrored(Some(1));
    let out = w.run(&config, &["--gc"]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("no maintainers/scripts/find-tarballs.nix"),
        "{}",
        stderr(&out)
    );
    w.assert_mirrored("gamma-0.3.tar.bz2");
    w.assert_mirrored("beta-2.1.tar.xz");

    // An orphan and a half-visible world: the GC refuses and deletes nothing.
    let orphan = w.tarballs().join("sha512").join("ab".repeat(64));
    fs::write(&orphan, b"no release needs this").unwrap();
    let alpha = w.file_of("alpha-1.0.tar.gz");
    let alpha_bytes = fs::read(&alpha).unwrap();
    // The old release is kept with keep 2 while the channel moves to evaluation 2.
    let config2 = w.mirrored(Some(2));
    FakeHydra::point_latest(&w.hydra_srv, PROJECT, JOBSET, JOB, 5002);
    let first_release = w.current_release();
    // nixipfs' own expression gives every URL of a source.
    let missing = fs::read_to_string(first_release.join("missing-tarballs")).unwrap();
    assert!(
        missing
            .lines()
            .any(|l| l.contains("epsilon-5.zip") && l.contains("127.0.0.1:1")),
        "{missing}"
    );
    // The first release names a source that is neither here nor listed as missing.
    let mut m = fs::read_to_string(first_release.join("tarballs-manifest")).unwrap();
    m.push_str(&format!(
        "sha256:{} ghost-1.0.tar.gz http://127.0.0.1:1/ghost\n",
        "cd".repeat(32)
    ));
    fs::write(first_release.join("tarballs-manifest"), m).unwrap();
    let refused = w.run(&config2, &["--gc"]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    assert!(
        stderr(&refused).contains("ghost-1.0.tar.gz"),
        "{}",
        stderr(&refused)
    );
    assert!(
        orphan.is_file(),
        "the GC deleted a file although it refused"
    );
    assert_eq!(fs::read(&alpha).unwrap(), alpha_bytes);

    // With the view whole again and keep 1, the first release goes, and with it what only it
    // needed: gamma and the orphan; what the second release needs stays.
    let m: String = fs::read_to_string(first_release.join("tarballs-manifest"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("ghost"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(first_release.join("tarballs-manifest"), m).unwrap();
    let config = w.mirrored(Some(1));
    let out = w.run(&config, &["--gc"]);
    assert_success(&out);
    assert!(!first_release.exists());
    assert!(!orphan.exists());
    w.assert_absent("gamma-0.3.tar.bz2");
    for name in ["alpha-1.0.tar.gz", "beta-2.1.tar.xz", "delta-4.tar.gz"] {
        w.assert_mirrored(name);
    }
    let v = run_nixipfs(["verify", "--dir", &w.d().display().to_string()]);
    assert_success(&v);

    // The standalone garbage-collect collects the tarball tree too.
    let orphan = w.tarballs().join("sha512").join("ef".repeat(64));
    fs::write(&orphan, b"no release needs this either").unwrap();
    let gc = run_nixipfs([
        "garbage-collect".to_string(),
        "--cache".into(),
        w.d().join("binary_cache").display().to_string(),
        "--releases".into(),
        w.current_release().display().to_string(),
    ]);
    assert_success(&gc);
    assert!(!orphan.exists(), "garbage-collect kept an orphan source");
    for name in ["alpha-1.0.tar.gz", "beta-2.1.tar.xz", "delta-4.tar.gz"] {
        w.assert_mirrored(name);
    }
}

#[test]
fn aria2c_fetches_the_listed_sources_and_the_next_run_checks_and_links_them() {
    let w = world("tarballs-aria2c", &[(sources(), false)]);
    let plain = w.config(
        json!([{"channel": CHANNEL, "project": PROJECT, "jobset": JOBSET,
                                  "job": JOB, "mirror": false}]),
    );
    assert_success(&w.run(&plain, &[]));
    let config = w.mirrored(None);
    let out = w.run(&config, &["--print-only", "--print-format", "aria2c"]);
    assert_success(&out);
    let list = w.dir.join("sources.aria2");
    fs::write(&list, &out.stdout).unwrap();
    let aria2c = Command::new("aria2c").arg("--version").output();
    assert!(
        aria2c.is_ok_and(|o| o.status.success()),
        "aria2c is needed: apt-get install aria2 (.ci/run installs it)"
    );
    // Some entries fail (dead and wrong URLs); aria2c's exit code says so.
    let _ = Command::new("aria2c")
        .arg("--input-file")
        .arg(&list)
        .arg("--dir")
        .arg(w.d())
        .args([
            "--auto-file-renaming=false",
            "--allow-overwrite=false",
            "--check-integrity=true",
            "--console-log-level=error",
            "--summary-interval=0",
        ])
        .output()
        .expect("running aria2c");
    // A file placed by hand with the wrong bytes is not taken.
    let eta_path = w
        .d()
        .join(".staging/tarballs/sha1")
        .join(hex(&sha1::Sha1::digest(bytes_of("eta-7.tar.gz"))));
    assert!(
        list_text(&out).contains("out=.staging/tarballs/sha256/"),
        "{}",
        list_text(&out)
    );
    fs::create_dir_all(eta_path.parent().unwrap()).unwrap();
    fs::write(&eta_path, b"wrong bytes placed by hand").unwrap();
    // What aria2c put in place is checked, moved under its sha512 and linked; nothing is
    // downloaded again.
    w.sources_srv.clear_requests();
    let run = w.run(&config, &[]);
    assert_success(&run);
    assert!(
        stderr(&run).contains("2 placed by hand"),
        "{}",
        stderr(&run)
    );
    assert_eq!(w.sources_srv.count("/src/beta-2.1.tar.xz"), 0);
    assert_eq!(w.sources_srv.count("/src/gamma-0.3.tar.bz2"), 0);
    for name in [
        "alpha-1.0.tar.gz",
        "beta-2.1.tar.xz",
        "gamma-0.3.tar.bz2",
        "delta-4.tar.gz",
    ] {
        w.assert_mirrored(name);
    }
    w.assert_absent("zeta-6.tar.gz");
    w.assert_absent("eta-7.tar.gz");
    assert_success(&run_nixipfs([
        "verify",
        "--dir",
        &w.d().display().to_string(),
    ]));
}
