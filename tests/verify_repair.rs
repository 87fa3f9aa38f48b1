//! `verify --repair` on a mirror that `release-nixos` made from the fixture Hydra and binary
//! cache: what is broken is removed (a narinfo before its NAR), a release a channel points at is
//! left alone, the next run restores everything, and the repair waits for no other run's lock.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::hydra::names::*;
use common::hydra::release_data;
use common::mirror::FixtureMirror;
use common::{assert_success, output_text, run_nixipfs};

/// The fixture mirror, with the calls these tests make on it.
struct Mirror(FixtureMirror);

impl Mirror {
    fn made(label: &str) -> Mirror {
        Mirror(FixtureMirror::made(label))
    }

    fn d(&self) -> PathBuf {
        self.0.d()
    }

    fn release(&self) -> std::process::Output {
        self.0.release()
    }

    /// `verify --full` finds no problem.
    #[track_caller]
    fn assert_verifies_clean(&self) {
        let after = self.verify(&["--full"]);
        assert_success(&after);
        assert_eq!(
            String::from_utf8_lossy(&after.stdout),
            "",
            "{}",
            output_text(&after)
        );
    }

    fn verify(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "verify".to_string(),
            "--dir".to_string(),
            self.d().to_str().unwrap().to_string(),
            "--trusted-public-key".to_string(),
            release_data().public_key.clone(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        run_nixipfs(args)
    }

    /// The release directory the channel's link points at.
    fn channel_release(&self, channel: &str) -> PathBuf {
        let link = self.d().join("channels").join(channel);
        let target = fs::read_link(&link).unwrap();
        let release = link.parent().unwrap().join(target);
        let name = release.file_name().unwrap().to_owned();
        self.d().join("releases").join(channel).join(name)
    }
}

/// The `URL:` field of a narinfo.
fn narinfo_url(narinfo: &Path) -> String {
    fs::read_to_string(narinfo)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .trim()
        .to_string()
}

/// The symbolic links under `dir` whose target is named `name`.
fn links_to<'a>(dir: &Path, name: &'a std::ffi::OsStr) -> impl Iterator<Item = PathBuf> + 'a {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.path_is_symlink())
        .map(|e| e.into_path())
        .filter(move |l| fs::read_link(l).unwrap().file_name() == Some(name))
}

/// The paths of the `removed PATH: REASON` lines of `stdout`, relative to `dir`, in order.
fn removed(stdout: &str, dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("removed {}/", dir.display());
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| PathBuf::from(rest.split(": ").next().unwrap()))
        .collect()
}

#[test]
fn repair_removes_what_is_broken_and_the_next_run_restores_it() {
    let m = Mirror::made("verify-repair");
    let dir = m.d();
    let out = m.verify(&["--full"]);
    assert_success(&out);

    // A NAR with a flipped byte (same size, so only its hash tells).
    let cache = dir.join("binary_cache");
    let narinfos: Vec<PathBuf> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .collect();
    let nar_url = narinfo_url(&narinfos[0]);
    let naming: Vec<PathBuf> = narinfos
        .iter()
        .filter(|n| narinfo_url(n) == nar_url)
        .map(|n| n.strip_prefix(&dir).unwrap().to_path_buf())
        .collect();
    let nar = cache.join(&nar_url);
    let good_nar = fs::read(&nar).unwrap();
    let mut bad = good_nar.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    fs::write(&nar, &bad).unwrap();

    // A release that lost a file after it was completed, which no channel points at (as if
    // the run stopped before moving the channel).
    let incomplete = m.channel_release(NIXPKGS_CHANNEL);
    fs::remove_file(dir.join("channels").join(NIXPKGS_CHANNEL)).unwrap();
    fs::remove_file(incomplete.join("nixexprs.tar.xz")).unwrap();

    // A release a channel points at that lost a file: left alone.
    let pointed_at = m.channel_release(NIXOS_CHANNEL);
    let src_url = fs::read(pointed_at.join("src-url")).unwrap();
    fs::remove_file(pointed_at.join("src-url")).unwrap();

    // A temporary file and a dangling link in a release's view.
    let temp = cache.join(".nixipfs-tmp-left-behind");
    fs::write(&temp, b"partial").unwrap();
    let dangling = pointed_at.join("binary_cache/nar/gone.nar.xz");
    std::os::unix::fs::symlink("../../../../../binary_cache/nar/gone.nar.xz", &dangling).unwrap();

    let before = m.verify(&["--full"]);
    assert!(!before.status.success(), "{}", output_text(&before));
    let repaired = m.verify(&["--full", "--repair"]);
    let text = output_text(&repaired);
    assert!(!repaired.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&repaired.stdout).to_string();

    // Exactly these are removed: every narinfo naming the NAR, before the NAR, the completion
    // marker of the release no channel points at, the temporary file and the dangling link.
    let got = removed(&stdout, &dir);
    let rel = |p: &Path| p.strip_prefix(&dir).unwrap().to_path_buf();
    let mut want: Vec<PathBuf> = naming.clone();
    want.extend([
        rel(&nar),
        rel(&incomplete.join("git-revision")),
        rel(&temp),
        rel(&dangling),
    ]);
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want, "{text}");
    let nar_at = got.iter().position(|p| *p == rel(&nar)).unwrap();
    for n in &naming {
        let at = got.iter().position(|p| p == n).unwrap();
        assert!(at < nar_at, "{n:?} removed after its NAR: {text}");
    }
    for p in &want {
        assert!(
            fs::symlink_metadata(dir.join(p)).is_err(),
            "{p:?} is still there"
        );
    }

    // The release the channel points at keeps its completion marker; the line says why.
    assert!(pointed_at.join("git-revision").is_file(), "{text}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("left alone: ") && l.contains("lacks src-url")),
        "{text}"
    );
    // What the repair left for the next run is reported as remaining.
    assert!(stdout.lines().any(|l| l.starts_with("remains: ")), "{text}");

    // The next run fetches and links everything again.
    fs::write(pointed_at.join("src-url"), &src_url).unwrap();
    let rerun = m.release();
    assert_success(&rerun);
    assert_eq!(fs::read(&nar).unwrap(), good_nar);
    assert!(incomplete.join("nixexprs.tar.xz").is_file());
    assert!(incomplete.join("git-revision").is_file());
    assert_eq!(m.channel_release(NIXPKGS_CHANNEL), incomplete);
    m.assert_verifies_clean();
}

#[test]
fn repair_while_another_run_holds_the_lock_exits_at_once() {
    let m = Mirror::made("verify-repair-lock");
    let dir = m.d();
    let temp = dir.join("binary_cache/.nixipfs-tmp-left-behind");
    fs::write(&temp, b"partial").unwrap();
    let lock = nixipfs::fsutil::DirLock::acquire(&dir, false).unwrap();
    let started = Instant::now();
    let out = m.verify(&["--repair"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("holds the lock"),
        "{}",
        output_text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(temp.is_file(), "removed while another run held the lock");
    // Checking alone takes no lock.
    let check = m.verify(&[]);
    assert!(!check.status.success());
    assert!(output_text(&check).contains("temporary file left behind"));
    drop(lock);
    let out = m.verify(&["--repair"]);
    assert_success(&out);
    assert!(!temp.exists());
}

#[test]
fn a_narinfo_without_its_nar_or_a_signature_is_removed_and_fetched_again() {
    let m = Mirror::made("verify-repair-narinfos");
    let dir = m.d();
    let cache = dir.join("binary_cache");
    let mut narinfos: Vec<PathBuf> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .collect();
    narinfos.sort();
    let (lacking, unsigned) = narinfos
        .iter()
        .map(|n| (n.clone(), narinfo_url(n)))
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0].1 != w[1].1)
        .map(|w| (w[0].0.clone(), w[1].0.clone()))
        .unwrap();
    let nar = cache.join(narinfo_url(&lacking));
    fs::remove_file(&nar).unwrap();
    let view_links: Vec<PathBuf> =
        links_to(&dir.join("releases"), nar.file_name().unwrap()).collect();
    assert!(!view_links.is_empty());
    let text = fs::read_to_string(&unsigned).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("Sig: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(stripped, text);
    fs::write(&unsigned, stripped).unwrap();

    let repaired = m.verify(&["--repair"]);
    let out = output_text(&repaired);
    assert!(!repaired.status.success(), "{out}");
    let stdout = String::from_utf8_lossy(&repaired.stdout).to_string();
    let mut got = removed(&stdout, &dir);
    got.sort();
    let rel = |p: &Path| p.strip_prefix(&dir).unwrap().to_path_buf();
    // The narinfos, and the links of the releases' views to the NAR that is gone (dangling).
    let mut want = vec![rel(&lacking), rel(&unsigned)];
    want.extend(view_links.iter().map(|l| rel(l)));
    want.sort();
    assert_eq!(got, want, "{out}");

    assert_success(&m.release());
    assert!(nar.is_file());
    assert_eq!(fs::read_to_string(&unsigned).unwrap(), text);
    m.assert_verifies_clean();
}
