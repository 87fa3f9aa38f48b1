//! Listing a release's sources: its channel tarball is unpacked to a temporary directory and
//! evaluated with the real `nix-instantiate --eval --json --strict`: the channel's own
//! `maintainers/scripts/find-tarballs.nix` when it has one (as nixpkgs' `copy-tarballs.pl`
//! does), else the expression shipped with nixipfs ([`FALLBACK_EXPRESSION`]). Evaluation is
//! read-only (`--readonly-mode --store dummy://`): nothing is built or written to a store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::source::{parse_listed, Listed};
use crate::compression::{self, Compression};
use crate::fsutil;
use crate::text::shorten;

/// The expression used for channels without `maintainers/scripts/find-tarballs.nix`.
pub const FALLBACK_EXPRESSION: &str = include_str!("find-tarballs.nix");

/// The program evaluating the expressions; `NIXIPFS_NIX_INSTANTIATE` names another.
const NIX_INSTANTIATE: &str = "nix-instantiate";

/// How long one evaluation may take (nixpkgs' release set takes minutes).
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Lists the sources of the channel tarball `nixexprs` (a `.tar.xz`), unpacking it under
/// `tmpdir`.
pub async fn list_sources(nixexprs: &Path, tmpdir: &Path) -> Result<Listed> {
    let work = tempfile::Builder::new()
        .prefix(fsutil::TEMP_PREFIX)
        .tempdir_in(tmpdir)
        .with_context(|| format!("cannot create a directory in {}", tmpdir.display()))?;
    let tarball = nixexprs.to_path_buf();
    let unpack_to = work.path().join("nixexprs");
    let root = tokio::task::spawn_blocking(move || unpack(&tarball, &unpack_to))
        .await
        .context("the unpacking task failed")??;

    let own = root.join("maintainers/scripts/find-tarballs.nix");
    let script = if own.is_file() {
        tracing::info!("listing sources with {}", rel(&root, &own));
        own
    } else {
        let f = work.path().join("find-tarballs.nix");
        std::fs::write(&f, FALLBACK_EXPRESSION)
            .with_context(|| format!("cannot write {}", f.display()))?;
        tracing::info!(
            "{} has no maintainers/scripts/find-tarballs.nix; listing sources with nixipfs' own \
             expression",
            nixexprs.display()
        );
        f
    };
    let expr = entry_expression(&root);
    let json = evaluate(
        &root,
        &[
            script.as_os_str().to_string_lossy().as_ref(),
            "--arg",
            "expr",
            &expr,
        ],
    )
    .await
    .with_context(|| format!("cannot list the sources of {}", nixexprs.display()))?;

    let mirrors_file = root.join("pkgs/build-support/fetchurl/mirrors.nix");
    let mirrors = if mirrors_file.is_file() {
        let e = format!(
            "builtins.mapAttrs (n: v: if builtins.isList v then builtins.filter builtins.isString v \
             else [ ]) (import {})",
            nix_path_literal(&mirrors_file)
        );
        let v = evaluate(&root, &["-E", &e])
            .await
            .with_context(|| format!("cannot read the mirror list {}", mirrors_file.display()))?;
        serde_json::from_value::<BTreeMap<String, Vec<String>>>(v)
            .with_context(|| format!("{} is not a set of URL lists", mirrors_file.display()))?
    } else {
        BTreeMap::new()
    };
    let listed =
        parse_listed(&json, &mirrors).map_err(|e| anyhow::anyhow!("{}: {e}", script.display()))?;
    Ok(listed)
}

/// What `expr` is given: nixpkgs' `all-tarballs.nix`, else its release set, else the
/// channel's `default.nix` called with no arguments.
fn entry_expression(root: &Path) -> String {
    let all = root.join("maintainers/scripts/all-tarballs.nix");
    let release = root.join("pkgs/top-level/release.nix");
    if all.is_file() {
        format!("import {}", nix_path_literal(&all))
    } else if release.is_file() {
        format!("import {} {{ }}", nix_path_literal(&release))
    } else {
        format!("import {} {{ }}", nix_path_literal(root))
    }
}

/// A path as a Nix literal (quoted string coerced to a path through `/. +`).
fn nix_path_literal(p: &Path) -> String {
    let s = p
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("(/. + \"{s}\")")
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Runs `nix-instantiate --eval --json --strict` read-only with `args`, `<nixpkgs>` being
/// `root`; returns the JSON it prints.
async fn evaluate(root: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let program =
        std::env::var("NIXIPFS_NIX_INSTANTIATE").unwrap_or_else(|_| NIX_INSTANTIATE.to_string());
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args([
        "--eval",
        "--json",
        "--strict",
        "--readonly-mode",
        "--store",
        "dummy://",
    ])
    .args(["--option", "restrict-eval", "false"])
    .args(args)
    .env("NIX_PATH", format!("nixpkgs={}", root.display()))
    .current_dir(root)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mirroring source tarballs needs {program} (Nix), which was not found: install Nix \
             (e.g. `apt-get install nix-bin`), or set `mirror: false` for the channel"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run {program}")),
    };
    let out = match tokio::time::timeout(EVAL_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.with_context(|| format!("cannot run {program}"))?,
        Err(_) => bail!(
            "{program} did not finish within {} s",
            EVAL_TIMEOUT.as_secs()
        ),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{program} {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            shorten(&tail.join("\n"), 4000)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{program} {} did not print JSON", args.join(" ")))
}

/// Unpacks the `.tar.xz` at `tarball` into `dest` (created); returns the expressions' root: the
/// single top-level directory, or `dest` when there are several entries.
fn unpack(tarball: &Path, dest: &Path) -> Result<PathBuf> {
    let file = std::fs::File::open(tarball)
        .with_context(|| format!("cannot open {}", tarball.display()))?;
    let xz = compression::decompressor(Compression::Xz, std::io::BufReader::new(file))
        .with_context(|| format!("cannot read {}", tarball.display()))?;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut archive = tar::Archive::new(xz);
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(false);
    archive.set_overwrite(false);
    archive.unpack(dest).with_context(|| {
        format!(
            "cannot unpack {} (a .tar.xz channel tarball)",
            tarball.display()
        )
    })?;
    let entries = fsutil::read_dir_sorted(dest)?;
    match entries.as_slice() {
        [one] if one.is_dir() => Ok(one.clone()),
        _ => Ok(dest.to_path_buf()),
    }
}
