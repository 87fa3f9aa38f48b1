//! `programs.sqlite` made for a channel whose packages real Nix built: the channel's
//! expressions are evaluated by `nix-env`, the `bin/` listings are read from the NARs that
//! `nix copy` put into the mirror's binary cache, and the database is queried as
//! command-not-found queries it.

mod common;

use std::fs;
use std::process::Command;

use common::{NixEnv, TestDir, TestServer};
use nixipfs::binary_cache::LocalCache;

/// The channel's `default.nix`: `hello` has an executable, a symlink, a dot-file, a
/// non-executable file and a directory under `bin/`; `aLongerName` is the same package under a
/// longer name that nix-env lists first; `tool` has one program.
const CHANNEL_EXPR: &str = r#"
{ system ? builtins.currentSystem, ... }:
let
  mk = name: script: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  # Two calls give two values of one derivation: nix-env lists both attribute paths.
  mkHello = _: mk "progtest-hello-1.0" ''
    mkdir -p $out/bin/subdir
    printf '#!/bin/sh\necho hello\n' > $out/bin/hello
    chmod 0755 $out/bin/hello
    ln -s hello $out/bin/hi
    cp $out/bin/hello $out/bin/.hidden
    printf 'not a program\n' > $out/bin/readme
    cp $out/bin/hello $out/bin/subdir/nested
  '';
in rec {
  hello = mkHello 1;
  aLongerName = mkHello 2;
  tool = mk "progtest-tool-2.0" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\necho tool\n' > $out/bin/tool
    chmod 0755 $out/bin/tool
  '';
}
"#;

fn query(db: &rusqlite::Connection, system: &str, name: &str) -> Vec<String> {
    let mut stmt = db
        .prepare("select package from Programs where system = ? and name = ? order by package")
        .unwrap();
    stmt.query_map([system, name], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn tar_listing(tarball: &std::path::Path) -> Vec<(String, u64, u64, u64)> {
    let file = fs::File::open(tarball).unwrap();
    let mut archive = tar::Archive::new(xz2::read::XzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
            )
        })
        .collect()
}

#[test]
fn programs_sqlite_lists_the_programs_of_the_built_packages() {
    let dir = TestDir::new("programs");
    let env = NixEnv::new(&dir.join("nix"));
    let channel = dir.join("src/nixos-24.11.1.abc");
    fs::create_dir_all(&channel).unwrap();
    fs::write(channel.join("default.nix"), CHANNEL_EXPR).unwrap();
    fs::write(channel.join(".version-suffix"), ".1.abc").unwrap();
    let system = "x86_64-linux";
    let expr = channel.join("default.nix").display().to_string();
    let built = env
        .run_lines(
            "nix-build",
            &[
                &expr,
                "--argstr",
                "system",
                system,
                "-A",
                "hello",
                "-A",
                "tool",
                "--no-out-link",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(built.len(), 2);

    // The mirror's binary cache holds the built packages.
    let mirror = dir.join("mirror");
    let cache_dir = mirror.join("binary_cache");
    let to = format!("file://{}?compression=xz", cache_dir.display());
    env.run(env.command("nix").args(["copy", "--to", &to]).args(&built))
        .unwrap_or_else(|e| panic!("{e}"));
    let cache = LocalCache::open(&cache_dir).unwrap();

    // The release holds the channel tarball, as Hydra built it.
    let release = mirror.join("releases/nixos-24.11/nixos-24.11.1.abc");
    fs::create_dir_all(&release).unwrap();
    let tarball = release.join("nixexprs.tar.xz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - nixos-24.11.1.abc | xz > {}",
            dir.join("src").display(),
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());

    let systems = vec![system.to_string(), "aarch64-linux".to_string()];
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let report = nixipfs::programs::add_to_release(&release, &systems, &cache, &tmp).unwrap();
    // hello, hi (hello); tool (tool). aarch64-linux outputs are not in the mirror.
    assert_eq!(report.rows, 3);
    assert_eq!(report.not_mirrored, 2);

    let listing = tar_listing(&tarball);
    let names: Vec<&str> = listing.iter().map(|(n, ..)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are not sorted");
    assert!(
        names.contains(&"nixos-24.11.1.abc/programs.sqlite"),
        "{names:?}"
    );
    assert!(
        names.contains(&"nixos-24.11.1.abc/default.nix"),
        "{names:?}"
    );
    assert!(listing.iter().all(|(_, u, g, m)| (*u, *g, *m) == (0, 0, 1)));
    let sha_line = fs::read_to_string(release.join("nixexprs.tar.xz.sha256")).unwrap();
    assert_eq!(
        sha_line,
        format!(
            "{}  nixexprs.tar.xz\n",
            common::hydra::sha256_hex(&fs::read(&tarball).unwrap())
        )
    );

    let unpacked = dir.join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar")
        .args([
            "-xJf",
            &tarball.display().to_string(),
            "-C",
            &unpacked.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let db =
        rusqlite::Connection::open(unpacked.join("nixos-24.11.1.abc/programs.sqlite")).unwrap();
    assert_eq!(query(&db, system, "hello"), ["hello"]);
    assert_eq!(query(&db, system, "hi"), ["hello"]);
    assert_eq!(query(&db, system, "tool"), ["tool"]);
    for absent in [".hidden", "readme", "subdir", "nested"] {
        assert!(query(&db, system, absent).is_empty(), "{absent}");
    }
    assert!(query(&db, "aarch64-linux", "hello").is_empty());
    // The sqlite3 program reads it too, with command-not-found's query.
    let out = Command::new("sqlite3")
        .arg(unpacked.join("nixos-24.11.1.abc/programs.sqlite"))
        .arg("select package from Programs where system = 'x86_64-linux' and name = 'tool'")
        .output()
        .expect("sqlite3 is required by this test: apt-get install -y sqlite3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tool");

    // Repacking again gives the same bytes.
    let first = fs::read(&tarball).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - nixos-24.11.1.abc | xz > {}",
            dir.join("src").display(),
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    nixipfs::programs::add_to_release(&release, &systems, &cache, &tmp).unwrap();
    assert_eq!(
        fs::read(&tarball).unwrap(),
        first,
        "repacking is not deterministic"
    );
}

/// The release of a nixpkgs channel from a fake Hydra whose channel tarball and packages real
/// Nix built: `release-nixos` with `"programs": true`.
struct HydraChannel {
    dir: TestDir,
    server: TestServer,
    public_key: String,
    tarball: Vec<u8>,
    nixname: String,
}

const RELEASE_NIX: &str = r#"
let
  pkgs = import ./channel.nix { system = "x86_64-linux"; };
  mk = name: script: derivation {
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  tarball = mk "progtest-channel" ''
    mkdir -p src/nixpkgs-24.11pre1.abcdef $out/tarballs
    cp ${./channel.nix} src/nixpkgs-24.11pre1.abcdef/default.nix
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -C src -cf - \
      nixpkgs-24.11pre1.abcdef | xz -c > $out/tarballs/nixpkgs-24.11pre1.abcdef.tar.xz
  '';
in { inherit tarball; inherit (pkgs) hello tool; }
"#;

impl HydraChannel {
    fn new(label: &str) -> HydraChannel {
        use common::hydra::{FakeHydra, HydraBuild, HydraEval, HydraProduct, ProductFile};
        let dir = TestDir::new(label);
        let env = NixEnv::new(&dir.join("nix"));
        fs::write(dir.join("channel.nix"), CHANNEL_EXPR).unwrap();
        let release_nix = dir.write("release.nix", RELEASE_NIX).display().to_string();
        let built = env
            .run_lines(
                "nix-build",
                &[
                    &release_nix,
                    "-A",
                    "tarball",
                    "-A",
                    "hello",
                    "-A",
                    "tool",
                    "--no-out-link",
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(built.len(), 3);
        let secret = env
            .run_lines(
                "nix",
                &["key", "generate-secret", "--key-name", "progtest-1"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let secret_file = dir.write("secret.key", secret.concat());
        let mut convert = env.command("nix");
        convert
            .args(["key", "convert-secret-to-public"])
            .stdin(fs::File::open(&secret_file).unwrap());
        let public_key = String::from_utf8_lossy(&env.run(&mut convert).unwrap().stdout)
            .trim()
            .to_string();
        let to = format!(
            "file://{}?compression=xz&secret-key={}",
            dir.join("www").display(),
            secret_file.display()
        );
        env.run(env.command("nix").args(["copy", "--to", &to]).args(&built))
            .unwrap_or_else(|e| panic!("{e}"));

        let nixname = "nixpkgs-24.11pre1.abcdef".to_string();
        let inner = format!("/tarballs/{nixname}.tar.xz");
        let file =
            std::path::PathBuf::from(format!("{}{inner}", env.real_path(&built[0]).display()));
        let tarball = fs::read(&file).unwrap();
        let product = ProductFile {
            store_path: built[0].clone(),
            inner,
            sha256: common::hydra::sha256_hex(&tarball),
            size: tarball.len() as u64,
            copy: file,
        };
        let mut hydra = FakeHydra::new();
        hydra.add_build(HydraBuild {
            id: 5001,
            project: "nixpkgs".into(),
            jobset: "trunk".into(),
            job: "tarball".into(),
            nixname: nixname.clone(),
            eval: 201,
            stoptime: 1_700_000_000,
            buildstatus: 0,
            products: vec![HydraProduct::of("source-dist", &product)],
        });
        hydra.add_eval(HydraEval {
            id: 201,
            revision: "a".repeat(40),
            store_paths: built.clone(),
            jobs: [("tarball".to_string(), 5001)].into_iter().collect(),
            absent_jobs: vec![],
            timestamp: 1_700_000_000,
        });
        hydra.set_latest("nixpkgs", "trunk", "tarball", 5001);
        let server = hydra
            .routes(TestServer::builder().static_dir(dir.join("www")))
            .start();
        HydraChannel {
            dir,
            server,
            public_key,
            tarball,
            nixname,
        }
    }

    fn mirror(&self) -> std::path::PathBuf {
        self.dir.join("mirror")
    }

    fn release_dir(&self) -> std::path::PathBuf {
        self.mirror()
            .join("releases/nixpkgs-unstable")
            .join(&self.nixname)
    }

    fn command(&self, programs: &str) -> Command {
        let config = self.dir.write(
            "config.json",
            format!(
                r#"{{"hydra": "{url}", "cache": "{url}", "trusted_public_keys": ["{key}"],
                    "releases": [{{"channel": "nixpkgs-unstable", "project": "nixpkgs",
                    "jobset": "trunk", "job": "tarball"{programs}}}]}}"#,
                url = self.server.url(),
                key = self.public_key,
            ),
        );
        common::process::nixipfs_command([
            "release-nixos".to_string(),
            "--dir".into(),
            self.mirror().display().to_string(),
            "--tmpdir".into(),
            self.dir.join("tmp").display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--no-ipfs".into(),
            "--retries".into(),
            "0".into(),
        ])
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    common::process::run_command(cmd, std::time::Duration::from_secs(300))
}

#[test]
fn release_nixos_adds_programs_sqlite_to_a_release_from_hydra() {
    let ch = HydraChannel::new("programs-release");
    let programs = r#", "programs": true, "systems": ["x86_64-linux", "aarch64-linux"]"#;

    // Without nix-env on the PATH: a clear error, and the release is not complete.
    let empty = ch.dir.join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let out = run(ch.command(programs).env("PATH", &empty));
    let text = common::output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("nix-env") && text.contains("apt-get install nix-bin"),
        "{text}"
    );
    assert!(text.contains(r#""programs": false"#), "{text}");
    assert!(!ch.release_dir().join("git-revision").exists());
    assert!(fs::read_link(ch.mirror().join("channels/nixpkgs-unstable")).is_err());

    // With nix: the release completes with programs.sqlite in its tarball.
    let out = run(&mut ch.command(programs));
    assert!(out.status.success(), "{}", common::output_text(&out));
    let rel = ch.release_dir();
    assert!(rel.join("git-revision").is_file());
    let tarball = rel.join("nixexprs.tar.xz");
    assert_ne!(fs::read(&tarball).unwrap(), ch.tarball);
    let names: Vec<String> = tar_listing(&tarball).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "nixpkgs-24.11pre1.abcdef",
            "nixpkgs-24.11pre1.abcdef/default.nix",
            "nixpkgs-24.11pre1.abcdef/programs.sqlite",
        ]
    );
    let unpacked = ch.dir.join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar")
        .args([
            "-xJf",
            &tarball.display().to_string(),
            "-C",
            &unpacked.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let db_file = unpacked.join("nixpkgs-24.11pre1.abcdef/programs.sqlite");
    let db = rusqlite::Connection::open(&db_file).unwrap();
    assert_eq!(query(&db, "x86_64-linux", "hello"), ["hello"]);
    assert_eq!(query(&db, "x86_64-linux", "hi"), ["hello"]);
    assert_eq!(query(&db, "x86_64-linux", "tool"), ["tool"]);
    assert!(query(&db, "x86_64-linux", ".hidden").is_empty());
    assert!(query(&db, "x86_64-linux", "readme").is_empty());
    let verified = common::run_nixipfs([
        "verify".to_string(),
        "--dir".into(),
        ch.mirror().display().to_string(),
    ]);
    assert!(
        verified.status.success(),
        "{}",
        common::output_text(&verified)
    );
    assert_eq!(
        fs::read_link(ch.mirror().join("channels/nixpkgs-unstable"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        ch.nixname
    );
    common::assert_no_temp_files(&ch.mirror());

    // A run that stopped after the repack, before git-revision: the rerun fetches Hydra's
    // tarball again (checked against Hydra's sha256), repacks it to the same bytes and
    // completes the release.
    let repacked = fs::read(&tarball).unwrap();
    fs::remove_file(rel.join("git-revision")).unwrap();
    let out = run(&mut ch.command(programs));
    assert!(out.status.success(), "{}", common::output_text(&out));
    assert!(rel.join("git-revision").is_file());
    assert_eq!(fs::read(&tarball).unwrap(), repacked);
    let verified = common::run_nixipfs([
        "verify".to_string(),
        "--dir".into(),
        ch.mirror().display().to_string(),
    ]);
    assert!(
        verified.status.success(),
        "{}",
        common::output_text(&verified)
    );
}

#[test]
fn programs_false_leaves_the_tarball_as_hydra_built_it_with_one_warning() {
    let ch = HydraChannel::new("programs-off");
    let out = run(&mut ch.command(r#", "programs": false"#));
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("`programs: false`").count(), 1, "{text}");
    assert_eq!(
        fs::read(ch.release_dir().join("nixexprs.tar.xz")).unwrap(),
        ch.tarball
    );
}
