//! `nixipfs status` and the front page, on a mirror that `release-nixos` made from the fixture
//! Hydra and binary cache: what they report is counted again here from the files on disk, and
//! the page is opened in headless Chromium to read what a visitor sees.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::hydra::names::*;
use common::mirror::FixtureMirror;
use common::process::run_command;
use common::{assert_success, output_text, run_nixipfs, TestDir};
use serde_json::Value;

/// The fixture mirror, and when the run that made it started and finished.
struct Mirror {
    inner: FixtureMirror,
    key: String,
    started: u64,
    finished: u64,
}

impl Mirror {
    fn made(label: &str) -> Mirror {
        let started = now();
        let inner = FixtureMirror::made(label);
        Mirror {
            key: inner.key.clone(),
            inner,
            started,
            finished: now(),
        }
    }

    fn d(&self) -> PathBuf {
        self.inner.d()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Files under `dir` whose path relative to it matches `keep`, not following links.
fn count_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> u64 {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && keep(e.path().strip_prefix(dir).unwrap()))
        .count() as u64
}

/// Symlinks under `dir` whose path relative to it matches `keep`.
fn count_links(dir: &Path, keep: impl Fn(&Path) -> bool) -> u64 {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.path_is_symlink() && keep(e.path().strip_prefix(dir).unwrap()))
        .count() as u64
}

#[test]
fn status_reports_each_channel_as_the_files_on_disk_say() {
    let m = Mirror::made("status-json");
    let out = run_nixipfs(["status", "--dir", m.d().to_str().unwrap(), "--json"]);
    assert_success(&out);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(status["schema"], 1);
    let last_sync = status["last_sync"].as_u64().expect("last_sync");
    assert!(
        (m.started..=m.finished).contains(&last_sync),
        "{last_sync} not in {}..={}",
        m.started,
        m.finished
    );
    let nar_dir = m.d().join("binary_cache/nar");
    assert_eq!(status["cache"]["nars"], count_files(&nar_dir, |_| true));
    assert_eq!(
        status["cache"]["narinfos"],
        count_files(&m.d().join("binary_cache"), |p| {
            p.extension().is_some_and(|e| e == "narinfo")
        })
    );
    assert!(status["disk_bytes"].as_u64().unwrap() > 0);

    let channels = status["channels"].as_array().expect("channels");
    let names: Vec<&str> = channels
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, [NIXOS_CHANNEL, NIXPKGS_CHANNEL]);
    for c in channels {
        let name = c["channel"].as_str().unwrap();
        let release = fs::canonicalize(m.d().join("channels").join(name)).unwrap();
        assert_eq!(
            c["release"],
            release.file_name().unwrap().to_str().unwrap(),
            "{name}"
        );
        assert_eq!(c["complete"], true, "{name}");
        let success = c["last_success"].as_u64().expect("last_success");
        assert!(
            (m.started..=m.finished).contains(&success),
            "{name}: last_success {success} not in {}..={}",
            m.started,
            m.finished
        );
        let revision = fs::read_to_string(release.join("git-revision")).unwrap();
        assert_eq!(c["git_revision"], revision.trim(), "{name}");
        let roots = fs::read_to_string(release.join("store-paths"))
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(c["roots"], roots, "{name}");
        let view = release.join("binary_cache");
        let closure = count_links(&view, |p| p.extension().is_some_and(|e| e == "narinfo"));
        assert!(closure >= roots, "{name}: {closure} < {roots}");
        assert_eq!(c["closure_paths"], closure, "{name}");
        let mut bytes = 0;
        for e in walkdir::WalkDir::new(view.join("nar")).min_depth(1) {
            let e = e.unwrap();
            if e.path_is_symlink() {
                bytes += fs::metadata(e.path()).unwrap().len();
            }
        }
        assert_eq!(c["closure_bytes"], bytes, "{name}");
        let files: Vec<&str> = c["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert!(files.contains(&"nixexprs.tar.xz"), "{name}: {files:?}");
        assert!(files.contains(&"git-revision"), "{name}: {files:?}");
    }

    // The same, for a person.
    let out = run_nixipfs(["status", "--dir", m.d().to_str().unwrap()]);
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    for c in channels {
        let line = format!(
            "channel {}: {}",
            c["channel"].as_str().unwrap(),
            c["release"].as_str().unwrap()
        );
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
}

#[test]
fn status_and_verify_refuse_a_directory_that_is_not_a_mirror() {
    let dir = TestDir::new("status-not-a-mirror");
    dir.write("README.md", "not a mirror");
    for command in ["status", "verify"] {
        let out = run_nixipfs([command, "--dir", dir.path().to_str().unwrap()]);
        assert!(!out.status.success(), "{command} succeeded");
        let text = output_text(&out);
        assert!(text.contains("is not a mirror"), "{command}: {text}");
        assert!(
            text.contains(dir.path().to_str().unwrap()),
            "{command}: {text}"
        );
    }
}

/// The text and links a visitor of `page` sees, as Chromium renders it.
fn rendered(page: &Path) -> String {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "headless Chromium is needed to read the front page: \
             apt-get install chromium (.ci/run installs it)",
        );
    let profile = TestDir::new("chromium-profile");
    let out = run_command(
        Command::new(chromium).args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ]),
        Duration::from_secs(60),
    );
    assert_success(&out);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_front_page_shows_the_channels_their_files_and_how_to_use_the_mirror() {
    let m = Mirror::made("front-page");
    let page = m.d().join("index.html");
    assert!(page.is_file(), "release-nixos wrote no {}", page.display());
    let dom = rendered(&page);
    for channel in [NIXOS_CHANNEL, NIXPKGS_CHANNEL] {
        let release = fs::canonicalize(m.d().join("channels").join(channel)).unwrap();
        let nixname = release.file_name().unwrap().to_str().unwrap();
        assert!(dom.contains(channel), "{channel} not on the page");
        assert!(dom.contains(nixname), "{nixname} not on the page");
    }
    assert!(dom.contains("substituters = MIRROR/binary_cache"), "{dom}");
    assert!(dom.contains(&m.key), "the trusted key is not on the page");
    assert!(dom.contains("nix-channel --add MIRROR/channels/"), "{dom}");
    // Every link of the page leads to a file or directory of the mirror.
    let mut links = 0;
    for part in dom.split("href=\"").skip(1) {
        let href = &part[..part.find('"').unwrap()];
        assert!(
            !href.contains("://") && !href.starts_with('/'),
            "link {href} leaves the mirror"
        );
        assert!(
            m.d().join(href).exists(),
            "link {href} leads nowhere in {}",
            m.d().display()
        );
        links += 1;
    }
    assert!(links >= 4, "only {links} links on the page");
}
