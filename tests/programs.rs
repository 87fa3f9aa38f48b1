//! `programs.sqlite` made for a channel whose packages real Nix built: the channel's
//! expressions are evaluated by `nix-env`, the `bin/` listings are read from the NARs that
//! `nix copy` put into the mirror's binary cache, and the database is queried as
//! command-not-found queries it.

mod common;

use std::fs;
use std::process::Command;

use common::{NixEnv, TestDir};
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
            &[&expr, "--argstr", "system", system, "-A", "hello", "-A", "tool", "--no-out-link"],
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
    let report =
        nixipfs::programs::add_to_release(&release, &systems, &cache, &tmp).unwrap();
    // hello, hi (hello); tool (tool). aarch64-linux outputs are not in the mirror.
    assert_eq!(report.rows, 3);
    assert_eq!(report.not_mirrored, 2);

    let listing = tar_listing(&tarball);
    let names: Vec<&str> = listing.iter().map(|(n, ..)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are not sorted");
    assert!(names.contains(&"nixos-24.11.1.abc/programs.sqlite"), "{names:?}");
    assert!(names.contains(&"nixos-24.11.1.abc/default.nix"), "{names:?}");
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
        .args(["-xJf", &tarball.display().to_string(), "-C", &unpacked.display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let db = rusqlite::Connection::open(unpacked.join("nixos-24.11.1.abc/programs.sqlite")).unwrap();
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
    assert_eq!(fs::read(&tarball).unwrap(), first, "repacking is not deterministic");
}
