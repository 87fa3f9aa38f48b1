//! `nixipfs create-channel-release` against a fake Hydra and a binary cache made by real Nix
//! (see `tests/common/hydra.rs`): the files of a release, the path printed last, the early
//! return of a complete release, `--target-cache`, the choice of images, and refusal of
//! hostile names, files that fail verification and unsigned narinfos, with nothing kept.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::hydra::names::*;
use common::hydra::{
    assert_release, release_data, ExpectedRelease, FakeHydra, ReleaseData, IMAGE_JOBS,
};
use common::*;

/// A fake Hydra and the release cache, each on its own server, and a test directory.
struct Setup {
    data: &'static ReleaseData,
    hydra: FakeHydra,
    hydra_srv: TestServer,
    cache_srv: TestServer,
    dir: TestDir,
}

impl Setup {
    fn new(label: &str, hydra: FakeHydra) -> Setup {
        let data = release_data();
        Setup {
            data,
            hydra_srv: hydra.start(),
            hydra,
            cache_srv: TestServer::builder().static_dir(&data.cache).start(),
            dir: TestDir::new(label),
        }
    }

    fn standard(label: &str) -> Setup {
        Setup::new(label, FakeHydra::standard(release_data()))
    }

    fn outdir(&self) -> PathBuf {
        self.dir.join("out")
    }

    fn tmpdir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// `create-channel-release` of `channel` from `project:jobset:job`, with the servers, the
    /// release cache's key and quick retries; `extra` is appended.
    fn run(&self, channel: &str, pjj: (&str, &str, &str), extra: &[&str]) -> Output {
        self.run_into(&self.outdir(), channel, pjj, extra)
    }

    /// Like [`Setup::run`], with the release written under `outdir`.
    fn run_into(
        &self,
        outdir: &Path,
        channel: &str,
        pjj: (&str, &str, &str),
        extra: &[&str],
    ) -> Output {
        let (project, jobset, job) = pjj;
        let tmpdir = self.tmpdir();
        let mut args: Vec<String> = [
            "create-channel-release",
            "--channel",
            channel,
            "--project",
            project,
            "--jobset",
            jobset,
            "--job",
            job,
            "--outdir",
            outdir.to_str().expect("UTF-8 path"),
            "--hydra",
            &self.hydra_srv.url(),
            "--cache",
            &self.cache_srv.url(),
            "--tmpdir",
            tmpdir.to_str().expect("UTF-8 path"),
            "--trusted-public-key",
            &self.data.public_key,
            "--retries",
            "2",
            "--retry-delay",
            "0.05",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        run_nixipfs(&args)
    }

    fn run_nixos(&self, extra: &[&str]) -> Output {
        self.run(
            NIXOS_CHANNEL,
            (NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB),
            extra,
        )
    }

    fn release_dir(&self, channel: &str, build: u64) -> PathBuf {
        self.outdir()
            .join(channel)
            .join(&self.hydra.builds[&build].nixname)
    }

    /// The release of `tested` (the build of the channel's job) as it must be.
    fn expected<'a>(
        &'a self,
        tested: u64,
        binary_cache_url: &'a str,
        hydra_url: &'a str,
    ) -> ExpectedRelease<'a> {
        let build = &self.hydra.builds[&tested];
        let eval = &self.hydra.evals[&build.eval];
        let (tarball, images) = match build.eval {
            101 => (&self.data.tarball1, vec![&self.data.iso1]),
            102 | 103 => (
                &self.data.tarball2,
                vec![&self.data.iso2, &self.data.graphical2, &self.data.ova2],
            ),
            _ => (&self.data.tarball_np, vec![]),
        };
        ExpectedRelease {
            hydra_url,
            binary_cache_url,
            eval,
            build,
            tarball,
            images,
            programs: false,
        }
    }

    /// The Hydra request paths since the log was last cleared.
    fn hydra_paths(&self) -> Vec<String> {
        self.hydra_srv
            .requests()
            .into_iter()
            .map(|r| r.path)
            .collect()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` (recursively), relative, sorted; empty when `dir` does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.expect("walking"))
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .expect("under dir")
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn nixos_release_has_every_file_and_its_path_is_the_last_line() {
    let s = Setup::standard("ccr-nixos");
    let out = s.run_nixos(&[]);
    assert_success(&out);
    let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let last = stdout(&out).lines().last().unwrap_or_default().to_string();
    assert_eq!(
        Path::new(&last),
        dir,
        "last stdout line\n{}",
        output_text(&out)
    );
    let cache_url = s.cache_srv.url();
    let hydra_url = s.hydra_srv.url();
    assert_release(&dir, &s.expected(NIXOS_TESTED[0], &cache_url, &hydra_url));
    // The image jobs the evaluation lacks are skipped with a warning naming them.
    for job in &IMAGE_JOBS[1..] {
        assert!(
            stderr(&out).contains(job),
            "no warning about the missing job {job}\n{}",
            output_text(&out)
        );
    }
    assert_no_temp_files(s.dir.path());
    assert_eq!(
        files_under(&s.tmpdir()),
        Vec::<String>::new(),
        "the temp dir is left empty"
    );
    // Every Hydra request asked for JSON (Hydra answers HTML otherwise).
    let requests = s.hydra_srv.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r.accepts_json(),
            "{} without Accept: application/json",
            r.target
        );
    }
}

#[test]
fn a_complete_release_is_returned_at_once() {
    let s = Setup::standard("ccr-again");
    assert_success(&s.run_nixos(&[]));
    let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let before = fs::metadata(dir.join("nixexprs.tar.xz"))
        .and_then(|m| m.modified())
        .expect("mtime");
    s.hydra_srv.clear_requests();
    s.cache_srv.clear_requests();

    let out = s.run_nixos(&[]);
    assert_success(&out);
    assert_eq!(
        stdout(&out).lines().last().map(PathBuf::from),
        Some(dir.clone())
    );
    let latest = FakeHydra::latest_finished_path(NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB);
    assert_eq!(
        s.hydra_paths(),
        vec![latest, format!("/build/{}", NIXOS_TESTED[0])],
        "only latest-finished (and its redirect) is asked for"
    );
    assert!(
        s.cache_srv.requests().is_empty(),
        "the cache was asked:\n{}",
        s.cache_srv.log_summary()
    );
    let after = fs::metadata(dir.join("nixexprs.tar.xz"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after, "the tarball was not rewritten");
}

#[test]
fn target_cache_sets_binary_cache_url_with_the_underscore_forms() {
    let s = Setup::standard("ccr-target");
    let outdir = s.outdir();
    let out = run_nixipfs([
        "create_channel_release",
        "--channel",
        NIXPKGS_CHANNEL,
        "--project",
        NIXPKGS_PROJECT,
        "--jobset",
        NIXPKGS_JOBSET,
        "--job",
        NIXPKGS_JOB,
        "--outdir",
        outdir.to_str().expect("UTF-8"),
        "--hydra",
        &s.hydra_srv.url(),
        "--cache",
        &s.cache_srv.url(),
        "--target_cache",
        "https://mirror.example.org/cache",
        "--trusted_public_key",
        &s.data.public_key,
    ]);
    assert_success(&out);
    let dir = s.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    assert_eq!(
        stdout(&out).lines().last().map(PathBuf::from),
        Some(dir.clone())
    );
    let hydra_url = s.hydra_srv.url();
    // The nixpkgs channel: the `tarball` job's source-dist, no images.
    assert_release(
        &dir,
        &s.expected(
            NIXPKGS_TARBALL,
            "https://mirror.example.org/cache",
            &hydra_url,
        ),
    );
    let asked = s.hydra_paths();
    assert!(
        asked.iter().all(|p| !p.contains("nixos.")),
        "a nixpkgs channel asks for no nixos jobs: {asked:?}"
    );
    assert!(asked.contains(&format!("/eval/{NIXPKGS_EVAL}/job/{NIXPKGS_JOB}")));
    // Without --tmpdir the NAR was read inside the release directory and removed.
    assert_no_temp_files(s.dir.path());
}

#[test]
fn non_small_channels_take_every_image_the_evaluation_has_small_ones_only_the_minimal_iso() {
    let mut hydra = FakeHydra::standard(release_data());
    hydra.set_latest(NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB, NIXOS_TESTED[1]);
    let s = Setup::new("ccr-images", hydra);
    let cache_url = s.cache_srv.url();
    let hydra_url = s.hydra_srv.url();

    assert_success(&s.run_nixos(&[]));
    assert_release(
        &s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[1]),
        &s.expected(NIXOS_TESTED[1], &cache_url, &hydra_url),
    );

    s.hydra_srv.clear_requests();
    let small = format!("{NIXOS_CHANNEL}-small");
    let out = s.run(&small, (NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB), &[]);
    assert_success(&out);
    let mut want = s.expected(NIXOS_TESTED[1], &cache_url, &hydra_url);
    want.images = vec![&s.data.iso2];
    assert_release(&s.release_dir(&small, NIXOS_TESTED[1]), &want);
    let asked = s.hydra_paths();
    for job in &IMAGE_JOBS[1..] {
        assert!(
            !asked.iter().any(|p| p.ends_with(job)),
            "a -small channel asked for {job}: {asked:?}"
        );
    }
}

#[test]
fn hostile_release_names_are_refused_with_nothing_written() {
    for (i, name) in ["../x", "a/b", "..", "x\0y", ".hidden"]
        .into_iter()
        .enumerate()
    {
        let mut hydra = FakeHydra::standard(release_data());
        hydra.build_mut(NIXOS_TESTED[0]).nixname = name.to_string();
        let s = Setup::new(&format!("ccr-hostile-{i}"), hydra);
        let out = s.run_nixos(&[]);
        assert!(
            !out.status.success(),
            "{name:?} accepted\n{}",
            output_text(&out)
        );
        assert!(
            stderr(&out).contains("nixname"),
            "the error names the field\n{}",
            output_text(&out)
        );
        assert_eq!(files_under(s.dir.path()), Vec::<String>::new(), "{name:?}");
        assert!(
            !s.dir.join("x").exists() && !s.outdir().exists(),
            "{name:?}: a directory was created"
        );
        assert!(
            s.cache_srv.requests().is_empty(),
            "{name:?}: the cache was asked"
        );
    }
}

#[test]
fn a_channel_name_that_is_not_a_plain_file_name_is_refused_with_nothing_written() {
    let s = Setup::standard("ccr-hostile-channel");
    for channel in ["../evil", "a/b", "..", "."] {
        let out = s.run(channel, (NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB), &[]);
        assert!(
            !out.status.success(),
            "{channel:?} accepted\n{}",
            output_text(&out)
        );
        assert_eq!(
            files_under(s.dir.path()),
            Vec::<String>::new(),
            "{channel:?}"
        );
        assert!(!s.dir.join("evil").exists());
    }
    assert!(s.cache_srv.requests().is_empty());
    assert!(
        s.hydra_srv.requests().is_empty(),
        "Hydra was asked before the channel name was checked"
    );
}

#[test]
fn hostile_product_paths_are_refused_with_nothing_kept() {
    let cases = [
        ("tarball", "/../../../etc/passwd"),
        ("tarball", "/tarballs/../../x.tar.xz"),
        ("iso", "/iso/.."),
        ("iso", "/iso/a\0b.iso"),
    ];
    for (i, (which, inner)) in cases.into_iter().enumerate() {
        let data = release_data();
        let mut hydra = FakeHydra::standard(data);
        let (build, store_path) = if which == "tarball" {
            (NIXOS_TESTED[0] + 1, &data.paths.channel1)
        } else {
            (NIXOS_TESTED[0] + 2, &data.paths.iso1)
        };
        hydra.build_mut(build).products[0].path = format!("{store_path}{inner}");
        let s = Setup::new(&format!("ccr-product-{i}"), hydra);
        let out = s.run_nixos(&[]);
        assert!(
            !out.status.success(),
            "{inner:?} accepted\n{}",
            output_text(&out)
        );
        let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
        assert!(!dir.join("git-revision").exists(), "{inner:?}");
        let kept: Vec<String> = files_under(s.dir.path())
            .into_iter()
            .filter(|f| !f.ends_with("nixexprs.tar.xz") && !f.ends_with("nixexprs.tar.xz.sha256"))
            // The lock the run held while it wrote.
            .filter(|f| f != "out/.lock")
            .collect();
        assert_eq!(kept, Vec::<String>::new(), "{inner:?}: files were written");
        assert_no_temp_files(s.dir.path());
    }
}

#[test]
fn a_tarball_whose_sha256_is_not_hydras_is_not_kept() {
    let mut hydra = FakeHydra::standard(release_data());
    let product = &mut hydra.build_mut(NIXOS_TESTED[0] + 1).products[0];
    product.sha256hash = common::hydra::sha256_hex(b"something else");
    let s = Setup::new("ccr-tarball-sha", hydra);
    let out = s.run_nixos(&[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("sha256"),
        "the error says what did not match\n{}",
        output_text(&out)
    );
    let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    assert!(!dir.join("git-revision").exists());
    assert!(!dir.join("nixexprs.tar.xz").exists());
    assert!(
        !stdout(&out).contains(&dir.display().to_string()),
        "a failed release is not printed"
    );
    assert_no_temp_files(s.dir.path());
    assert_eq!(files_under(&s.tmpdir()), Vec::<String>::new());
}

#[test]
fn an_iso_whose_size_or_sha256_is_not_hydras_fails_the_release() {
    for (i, bad_size) in [false, true].into_iter().enumerate() {
        let mut hydra = FakeHydra::standard(release_data());
        let product = &mut hydra.build_mut(NIXOS_TESTED[0] + 2).products[0];
        if bad_size {
            product.filesize += 1;
        } else {
            product.sha256hash = common::hydra::sha256_hex(b"not the iso");
        }
        let s = Setup::new(&format!("ccr-iso-{i}"), hydra);
        let out = s.run_nixos(&[]);
        assert!(!out.status.success(), "{}", output_text(&out));
        let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
        assert!(!dir.join("git-revision").exists());
        assert!(!dir.join(s.data.iso1.file_name()).exists());
        assert_no_temp_files(s.dir.path());
    }
}

#[test]
fn a_nar_that_stays_corrupt_fails_after_the_retries_and_a_rerun_finishes() {
    let s = Setup::standard("ccr-corrupt-nar");
    let nar = s.data.nar_url_path(&s.data.paths.channel1);
    s.cache_srv.set_fault_always(&nar, Some(Fault::FlipByte));
    let out = s.run_nixos(&[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert_eq!(s.cache_srv.count(&nar), 3, "one try and two retries");
    let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    assert!(!dir.join("git-revision").exists());
    assert!(!dir.join("nixexprs.tar.xz").exists());
    assert_no_temp_files(s.dir.path());

    s.cache_srv.set_fault_always(&nar, None);
    let out = s.run_nixos(&[]);
    assert_success(&out);
    let cache_url = s.cache_srv.url();
    let hydra_url = s.hydra_srv.url();
    assert_release(&dir, &s.expected(NIXOS_TESTED[0], &cache_url, &hydra_url));
    assert_no_temp_files(s.dir.path());
}

#[test]
fn a_rerun_after_a_failed_image_keeps_the_verified_tarball() {
    let s = Setup::standard("ccr-resume");
    let iso_nar = s.data.nar_url_path(&s.data.paths.iso1);
    let tarball_nar = s.data.nar_url_path(&s.data.paths.channel1);
    s.cache_srv
        .set_fault_always(&iso_nar, Some(Fault::Status(503)));
    let out = s.run_nixos(&[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    assert!(!dir.join("git-revision").exists());
    assert!(dir.join("nixexprs.tar.xz").is_file());
    assert_eq!(s.cache_srv.count(&tarball_nar), 1);

    s.cache_srv.set_fault_always(&iso_nar, None);
    assert_success(&s.run_nixos(&[]));
    assert_eq!(
        s.cache_srv.count(&tarball_nar),
        1,
        "the verified tarball was fetched again"
    );
    let cache_url = s.cache_srv.url();
    let hydra_url = s.hydra_srv.url();
    assert_release(&dir, &s.expected(NIXOS_TESTED[0], &cache_url, &hydra_url));

    // A tarball changed on disk is not trusted: it is fetched again.
    fs::write(dir.join("nixexprs.tar.xz"), b"tampered").expect("tampering");
    fs::remove_file(dir.join("git-revision")).expect("removing the marker");
    assert_success(&s.run_nixos(&[]));
    assert_eq!(s.cache_srv.count(&tarball_nar), 2);
    assert_release(&dir, &s.expected(NIXOS_TESTED[0], &cache_url, &hydra_url));
}

#[test]
fn the_tarball_job_is_required_and_a_failed_build_is_not_released() {
    // An evaluation without the channel job.
    let mut hydra = FakeHydra::standard(release_data());
    hydra.eval_mut(NIXOS_EVALS[0]).jobs.remove("nixos.channel");
    hydra
        .eval_mut(NIXOS_EVALS[0])
        .absent_jobs
        .push("nixos.channel".to_string());
    let s = Setup::new("ccr-no-tarball", hydra);
    let out = s.run_nixos(&[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("nixos.channel"),
        "the error names the job\n{}",
        output_text(&out)
    );
    assert!(!s
        .release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0])
        .join("git-revision")
        .exists());

    // A build that failed.
    let mut hydra = FakeHydra::standard(release_data());
    hydra.build_mut(NIXOS_TESTED[0]).buildstatus = 1;
    let s = Setup::new("ccr-failed-build", hydra);
    let out = s.run_nixos(&[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert_eq!(files_under(s.dir.path()), Vec::<String>::new());
}

#[test]
fn narinfos_not_signed_by_a_trusted_key_are_refused() {
    let s = Setup::standard("ccr-untrusted");
    let other_key = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let outdir = s.outdir();
    let out = run_nixipfs([
        "create-channel-release",
        "--channel",
        NIXPKGS_CHANNEL,
        "--project",
        NIXPKGS_PROJECT,
        "--jobset",
        NIXPKGS_JOBSET,
        "--job",
        NIXPKGS_JOB,
        "--outdir",
        outdir.to_str().expect("UTF-8"),
        "--hydra",
        &s.hydra_srv.url(),
        "--cache",
        &s.cache_srv.url(),
        "--trusted-public-key",
        other_key,
    ]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("not signed by a trusted key"),
        "{}",
        output_text(&out)
    );
    let dir = s.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    assert!(!dir.join("git-revision").exists());
    assert!(!dir.join("nixexprs.tar.xz").exists());
    assert!(
        s.cache_srv
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/nar/")),
        "a NAR was downloaded for an untrusted narinfo"
    );
}

#[test]
fn the_lock_of_what_it_writes_into_is_held_while_it_writes() {
    let s = Setup::standard("ccr-lock");
    let mirror = s.dir.join("mirror");
    fs::create_dir_all(mirror.join("binary_cache")).unwrap();
    let standalone = s.outdir();
    let pjj = (NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB);
    // A release written into a mirror's `releases` is guarded by the mirror's lock, one in a
    // standalone directory by that directory's own.
    for (outdir, locked) in [
        (mirror.join("releases"), mirror.clone()),
        (standalone.clone(), standalone.clone()),
    ] {
        let held = nixipfs::fsutil::DirLock::acquire(&locked, false).unwrap();
        let out = s.run_into(&outdir, NIXOS_CHANNEL, pjj, &[]);
        assert!(!out.status.success(), "{}", output_text(&out));
        let text = output_text(&out);
        assert!(
            text.contains("holds the lock"),
            "{}: {text}",
            outdir.display()
        );
        assert!(
            text.contains(&held.path().display().to_string()),
            "{}: {text}",
            outdir.display()
        );
        assert!(!outdir.join(NIXOS_CHANNEL).exists(), "{}", outdir.display());
        drop(held);
        let out = s.run_into(&outdir, NIXOS_CHANNEL, pjj, &[]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    assert!(
        !s.dir.join(".lock").exists(),
        "no lock file outside the output"
    );
    assert!(!mirror.join("releases/.lock").exists());
}

#[test]
fn a_product_named_like_a_release_file_is_refused() {
    for (i, name) in [
        "git-revision",
        "store-paths",
        "build-info.json",
        "nixexprs.tar.xz",
    ]
    .into_iter()
    .enumerate()
    {
        let data = release_data();
        let mut hydra = FakeHydra::standard(data);
        hydra.build_mut(NIXOS_TESTED[0] + 2).products[0].path =
            format!("{}/iso/{name}", data.paths.iso1);
        let s = Setup::new(&format!("ccr-reserved-{i}"), hydra);
        let out = s.run_nixos(&[]);
        assert!(
            !out.status.success(),
            "{name} accepted\n{}",
            output_text(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{name:?}")) && err.contains("refusing it"),
            "{name}: {err}"
        );
        let dir = s.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
        assert!(!dir.join("git-revision").exists(), "{name}");
        if name != "nixexprs.tar.xz" {
            assert!(!dir.join(name).exists(), "{name} was written");
        }
    }
}
