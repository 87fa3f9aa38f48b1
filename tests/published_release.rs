//! Whole-command tests of `release-nixos` with releases copied from a published channel
//! (`"source": "http://.../nixos-24.11"`), against a local server that answers like
//! channels.nixos.org (a 302 to the release) and releases.nixos.org (the release's index page
//! with sizes and sha256 hashes, in the format of the real page in
//! `tests/fixtures/channel-release/`, and its files), over a binary cache made by real Nix.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{
    assert_no_temp_files, nix_cache, nix_install_from, output_text, run_nixipfs, Compression,
    NixCache, Response, TestDir, TestServer,
};

const CHANNEL: &str = "nixos-24.11";

/// A published release: its name, its files, and the evaluation its `src-url` names.
struct Published {
    nixname: String,
    files: Vec<(String, Vec<u8>)>,
}

impl Published {
    fn new(cache: &NixCache, nixname: &str, eval: u64) -> Published {
        let store_paths = cache.store_paths_text();
        let mut xz = Vec::new();
        {
            let mut enc = xz2::write::XzEncoder::new(&mut xz, 6);
            std::io::Write::write_all(&mut enc, store_paths.as_bytes()).unwrap();
            enc.finish().unwrap();
        }
        let iso_name = format!("nixos-minimal-{}-x86_64-linux.iso", &nixname[6..]);
        let iso: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let iso_sha = format!("{}  {iso_name}", common::hydra::sha256_hex(&iso));
        let rev = format!("{:0>40}", eval);
        let files = vec![
            (
                "binary-cache-url".to_string(),
                b"https://cache.nixos.org".to_vec(),
            ),
            ("git-revision".into(), rev.into_bytes()),
            (
                "nixexprs.tar.xz".into(),
                format!("tarball of {nixname}").into_bytes(),
            ),
            (iso_name.clone(), iso),
            (format!("{iso_name}.sha256"), iso_sha.into_bytes()),
            (
                "options.json.br".into(),
                format!("options of {nixname}").into_bytes(),
            ),
            (
                "packages.json.br".into(),
                format!("packages of {nixname}").into_bytes(),
            ),
            (
                "src-url".into(),
                format!("https://hydra.nixos.org/eval/{eval}").into_bytes(),
            ),
            ("store-paths.xz".into(), xz),
        ];
        Published {
            nixname: nixname.to_string(),
            files,
        }
    }

    /// Replaces the bytes of one file.
    fn set(&mut self, name: &str, bytes: Vec<u8>) {
        self.files.iter_mut().find(|(n, _)| n == name).unwrap().1 = bytes;
    }

    fn url_path(&self) -> String {
        format!("/releases/nixos/24.11/{}", self.nixname)
    }

    fn file(&self, name: &str) -> &[u8] {
        &self.files.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// The index page, as mirror-nixos-branch.pl writes it (see the fixture).
    fn index_page(&self) -> String {
        let mut rows = String::new();
        for (name, bytes) in &self.files {
            rows.push_str(&format!(
                "<tr><td><a href='{}/{name}'>{name}</a></td><td align='right'>{}</td><td><tt>{}</tt></td></tr>",
                self.url_path(),
                bytes.len(),
                common::hydra::sha256_hex(bytes)
            ));
        }
        format!(
            "<html><head><title>{CHANNEL} release {n}</title></head><body><h1>{CHANNEL} release \
             {n}</h1><table><thead><tr><th>File name</th><th>Size</th><th>SHA-256 hash</th></tr>\
             </thead><tbody>{rows}</tbody></table></body></html>",
            n = self.nixname
        )
    }

    /// Writes the files under `www` where the server serves them.
    fn write(&self, www: &Path) {
        let dir = www.join(self.url_path().trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &self.files {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// The channel server, the release server and the binary cache on one local server; the
/// channel redirects to whatever `target` holds.
struct Site {
    dir: TestDir,
    cache: &'static NixCache,
    server: TestServer,
    target: Arc<Mutex<String>>,
}

impl Site {
    fn new(label: &str, releases: &[&Published]) -> Site {
        Site::with_hydra(label, releases, None, None)
    }

    /// A site on `port` (or any) that also answers like `hydra`.
    fn with_hydra(
        label: &str,
        releases: &[&Published],
        port: Option<u16>,
        hydra: Option<&common::hydra::FakeHydra>,
    ) -> Site {
        let cache = nix_cache(Compression::Xz);
        let dir = TestDir::new(label);
        let www = dir.join("www");
        cache.copy_to(&www.join("cache"));
        let target = Arc::new(Mutex::new(String::new()));
        let t = target.clone();
        let mut builder = TestServer::builder()
            .static_dir(&www)
            .handler(&format!("/{CHANNEL}"), move |_| {
                Response::redirect(302, &t.lock().unwrap())
            });
        if let Some(p) = port {
            builder = builder.port(p);
        }
        if let Some(h) = hydra {
            builder = h.routes(builder);
        }
        for r in releases {
            r.write(&www);
            builder = builder.route(
                &r.url_path(),
                Response::ok(r.index_page()).content_type("text/html"),
            );
        }
        Site {
            dir,
            cache,
            server: builder.start(),
            target,
        }
    }

    fn point_at(&self, r: &Published) {
        *self.target.lock().unwrap() = self.server.url_for(&r.url_path());
    }

    fn mirror(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    fn release_dir(&self, r: &Published) -> PathBuf {
        self.mirror()
            .join("releases")
            .join(CHANNEL)
            .join(&r.nixname)
    }

    fn channel_target(&self) -> Option<String> {
        fs::read_link(self.mirror().join("channels").join(CHANNEL))
            .ok()
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
    }

    fn run(&self, extra: &[&str], keep: Option<u32>) -> std::process::Output {
        let mut args = vec!["--no-ipfs"];
        args.extend(extra);
        self.run_ipfs(&args, keep)
    }

    /// Like [`Site::run`], with the IPFS options left to `extra`.
    fn run_ipfs(&self, extra: &[&str], keep: Option<u32>) -> std::process::Output {
        let keep = keep
            .map(|k| format!(r#", "keep": {k}"#))
            .unwrap_or_default();
        let config = self.dir.write(
            "config.json",
            format!(
                r#"{{"hydra": "{hydra}", "cache": "{cache}", "trusted_public_keys": ["{key}"],
                    "releases": [{{"channel": "{CHANNEL}", "source": "{source}"{keep}}}]}}"#,
                hydra = self.server.url(),
                cache = self.server.url_for("/cache"),
                key = self.cache.public_key,
                source = self.server.url_for(&format!("/{CHANNEL}")),
            ),
        );
        let mut args = vec![
            "release-nixos".to_string(),
            "--dir".into(),
            self.mirror().display().to_string(),
            "--tmpdir".into(),
            self.dir.join("tmp").display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--retries".into(),
            "0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_nixipfs(&args)
    }

    fn verify(&self) -> std::process::Output {
        run_nixipfs([
            "verify".to_string(),
            "--dir".into(),
            self.mirror().display().to_string(),
        ])
    }
}

#[test]
fn a_published_release_is_copied_byte_for_byte_and_its_closure_mirrored() {
    let cache = nix_cache(Compression::Xz);
    let v1 = Published::new(cache, "nixos-24.11.100.aaaaaaaaaaaa", 100);
    let v2 = Published::new(cache, "nixos-24.11.200.bbbbbbbbbbbb", 200);
    let older = Published::new(cache, "nixos-24.11.50.cccccccccccc", 50);
    let site = Site::new("published", &[&v1, &v2, &older]);

    site.point_at(&v1);
    let out = site.run(&[], Some(1));
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(site.channel_target().as_deref(), Some(v1.nixname.as_str()));
    let rel = site.release_dir(&v1);
    for (name, bytes) in &v1.files {
        assert_eq!(&fs::read(rel.join(name)).unwrap(), bytes, "{name}");
    }
    assert_eq!(
        fs::read_to_string(rel.join("store-paths")).unwrap(),
        cache.store_paths_text()
    );
    for p in &cache.closure {
        let hash = common::nixcache::store_path_hash(p);
        assert!(
            rel.join("binary_cache")
                .join(format!("{hash}.narinfo"))
                .is_file(),
            "{p} is not linked"
        );
    }
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(rel.join("build-info.json")).unwrap()).unwrap();
    assert_eq!(info["eval_id"], 100);
    assert_eq!(info["source"], site.server.url_for(&format!("/{CHANNEL}")));
    for d in ["", "channels", "releases", "binary_cache"] {
        assert!(
            site.mirror().join(d).join("lastsync").is_file(),
            "lastsync in {d:?}"
        );
    }
    let verified = site.verify();
    assert!(verified.status.success(), "{}", output_text(&verified));
    // A real Nix client installs the closure from the mirror.
    let mirror_cache = format!("file://{}", site.mirror().join("binary_cache").display());
    nix_install_from(&mirror_cache, &cache.public_key, &cache.top_level)
        .unwrap_or_else(|e| panic!("nix copy from the mirror: {e}"));

    // A file of the release that the mirror changed without its build-info knowing is found.
    let packages = rel.join("packages.json.br");
    fs::write(&packages, b"tampered").unwrap();
    let verified = site.verify();
    assert!(
        !verified.status.success(),
        "verify missed a changed packages.json.br"
    );
    assert!(output_text(&verified).contains("packages.json.br"));
    fs::write(&packages, v1.file("packages.json.br")).unwrap();

    // An older published release is not copied; the channel stays.
    site.point_at(&older);
    let out = site.run(&[], Some(1));
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("older than the current"),
        "{}",
        output_text(&out)
    );
    assert!(!site.release_dir(&older).exists());
    assert_eq!(site.channel_target().as_deref(), Some(v1.nixname.as_str()));

    // A newer one with --skip-images and --gc: the images stay out, the old release goes.
    site.point_at(&v2);
    let out = site.run(&["--skip-images", "--gc"], Some(1));
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(site.channel_target().as_deref(), Some(v2.nixname.as_str()));
    let rel2 = site.release_dir(&v2);
    for (name, bytes) in &v2.files {
        if name.contains(".iso") {
            assert!(
                !rel2.join(name).exists(),
                "{name} copied with --skip-images"
            );
        } else {
            assert_eq!(&fs::read(rel2.join(name)).unwrap(), bytes, "{name}");
        }
    }
    assert!(!rel.exists(), "the older release was kept with keep 1");
    let verified = site.verify();
    assert!(verified.status.success(), "{}", output_text(&verified));
    assert_no_temp_files(&site.mirror());
}

#[test]
fn a_file_that_does_not_match_its_published_sha256_is_not_kept() {
    let cache = nix_cache(Compression::Xz);
    let v1 = Published::new(cache, "nixos-24.11.100.aaaaaaaaaaaa", 100);
    let v2 = Published::new(cache, "nixos-24.11.200.bbbbbbbbbbbb", 200);
    let site = Site::new("published-bad", &[&v1, &v2]);
    site.point_at(&v1);
    let out = site.run(&[], None);
    assert!(out.status.success(), "{}", output_text(&out));

    for name in [
        "store-paths.xz",
        "nixexprs.tar.xz",
        "packages.json.br",
        "git-revision",
    ] {
        // The server sends other bytes than the index promises.
        let served = site
            .dir
            .join("www")
            .join(v2.url_path().trim_start_matches('/'))
            .join(name);
        let mut bytes = v2.file(name).to_vec();
        bytes[0] ^= 1;
        fs::write(&served, &bytes).unwrap();
        site.point_at(&v2);
        let out = site.run(&[], None);
        let text = output_text(&out);
        assert!(!out.status.success(), "{name}: {text}");
        assert!(
            text.contains(name) && text.contains("sha256"),
            "{name}: {text}"
        );
        let rel2 = site.release_dir(&v2);
        assert!(!rel2.join("git-revision").exists(), "{name}");
        assert!(
            !rel2.join(name).exists() || fs::read(rel2.join(name)).unwrap() == v2.file(name),
            "{name}: a file that failed its check is at its final path"
        );
        assert_eq!(
            site.channel_target().as_deref(),
            Some(v1.nixname.as_str()),
            "{name}"
        );
        assert_no_temp_files(&rel2);
        fs::write(&served, v2.file(name)).unwrap();
        // The next file is checked on a fresh copy: a file in place and right is not fetched.
        if rel2.exists() {
            fs::remove_dir_all(&rel2).unwrap();
        }
    }
    // Once the server sends the right bytes, the release completes.
    let out = site.run(&[], None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(site.channel_target().as_deref(), Some(v2.nixname.as_str()));
}

#[test]
fn a_redirect_to_another_channel_is_refused_naming_both() {
    let cache = nix_cache(Compression::Xz);
    let other = Published::new(cache, "nixos-24.05.300.dddddddddddd", 300);
    let site = Site::new("published-wrong", &[&other]);
    site.point_at(&other);
    let out = site.run(&[], None);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("nixos-24.11 redirects to the release nixos-24.05.300.dddddddddddd"),
        "{text}"
    );
    assert!(!site
        .mirror()
        .join("releases")
        .join(CHANNEL)
        .join(&other.nixname)
        .exists());
    assert!(site.channel_target().is_none());
}

#[test]
fn a_published_release_is_published_to_a_real_ipfs_node() {
    let node = common::ipfs_node::IpfsNode::start();
    let cache = nix_cache(Compression::Xz);
    let v1 = Published::new(cache, "nixos-24.11.100.aaaaaaaaaaaa", 100);
    let site = Site::new("published-ipfs", &[&v1]);
    site.point_at(&v1);
    let port = node.port().to_string();
    let out = site.run_ipfs(&["--ipfsapi", "127.0.0.1", &port], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let root = fs::read_to_string(site.mirror().join("ipfs_root")).unwrap();
    // The release's files, copied from the channel, resolve through the root with their size.
    for name in ["packages.json.br", "nixexprs.tar.xz", "git-revision"] {
        let (status, body) = common::ipfs_node::post(
            node.port(),
            &format!(
                "files/stat?arg=/ipfs/{}/releases/{CHANNEL}/{}/{name}",
                root.trim(),
                v1.nixname
            ),
        )
        .expect("the node answers");
        assert_eq!(status, 200, "{name}: {body}");
        let stat: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(stat["Size"], v1.file(name).len(), "{name}: {body}");
    }
}

#[test]
fn nixexprs_is_checked_against_the_hydra_evaluation_its_src_url_names() {
    use common::hydra::{FakeHydra, HydraBuild, HydraEval, HydraProduct};
    let port = common::ipfs_node::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cache = nix_cache(Compression::Xz);
    let mut good = Published::new(cache, "nixos-24.11.300.eeeeeeeeeeee", 300);
    good.set("src-url", format!("{base}/eval/300").into_bytes());
    let mut bad = Published::new(cache, "nixos-24.11.400.ffffffffffff", 400);
    bad.set("src-url", format!("{base}/eval/400").into_bytes());
    let mut hydra = FakeHydra::new();
    for (eval, rel, tarball) in [
        (300, &good, good.file("nixexprs.tar.xz").to_vec()),
        (400, &bad, b"the tarball Hydra built".to_vec()),
    ] {
        let build = eval * 10 + 1;
        hydra.add_build(HydraBuild {
            id: build,
            project: "nixos".into(),
            jobset: "release-24.11".into(),
            job: "nixos.channel".into(),
            nixname: rel.nixname.clone(),
            eval,
            stoptime: 1_700_000_000,
            buildstatus: 0,
            products: vec![HydraProduct {
                subtype: "source-dist".into(),
                name: "nixexprs.tar.xz".into(),
                path: format!(
                    "/nix/store/{}-nixos-channel/tarballs/{}.tar.xz",
                    "1".repeat(32),
                    rel.nixname
                ),
                sha256hash: common::hydra::sha256_hex(&tarball),
                filesize: tarball.len() as u64,
            }],
        });
        hydra.add_eval(HydraEval {
            id: eval,
            revision: "b".repeat(40),
            store_paths: vec![],
            jobs: [("nixos.channel".to_string(), build)].into_iter().collect(),
            absent_jobs: vec![],
            timestamp: 1_700_000_000,
        });
    }
    let site = Site::with_hydra("published-hydra", &[&good, &bad], Some(port), Some(&hydra));

    site.point_at(&bad);
    let out = site.run(&[], None);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("Hydra evaluation 400 built one with sha256"),
        "{text}"
    );
    assert!(!site.release_dir(&bad).join("git-revision").exists());
    assert!(site.channel_target().is_none());

    site.point_at(&good);
    let out = site.run(&[], None);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("nixexprs.tar.xz matches Hydra evaluation 300"),
        "{text}"
    );
    assert_eq!(
        site.channel_target().as_deref(),
        Some(good.nixname.as_str())
    );
}

/// `--print-only` with a published release downloads no file of it but what the closure needs
/// (`store-paths.xz` and the small files), lists the others for another downloader (into the
/// staging area), and leaves the release incomplete; once real aria2c has fetched the list, the
/// next run takes every file from the staging area, checked, and completes the release.
#[test]
fn print_only_lists_the_release_files_and_the_next_run_takes_them_from_the_staging_area() {
    let cache = nix_cache(Compression::Xz);
    let v1 = Published::new(cache, "nixos-24.11.100.aaaaaaaaaaaa", 100);
    let site = Site::new("published-print", &[&v1]);
    site.point_at(&v1);
    let listed = site.run(&["--print-only", "--print-format", "aria2c"], None);
    assert!(listed.status.success(), "{}", output_text(&listed));
    let large = [
        "nixexprs.tar.xz".to_string(),
        "options.json.br".into(),
        "packages.json.br".into(),
        format!("nixos-minimal-{}-x86_64-linux.iso", &v1.nixname[6..]),
    ];
    let requested = |name: &str| {
        site.server
            .requests()
            .iter()
            .filter(|r| r.path == format!("{}/{name}", v1.url_path()))
            .count()
    };
    let list = String::from_utf8(listed.stdout.clone()).unwrap();
    for name in &large {
        assert_eq!(requested(name), 0, "--print-only downloaded {name}");
        assert!(
            list.contains(&format!(
                "  out=.staging/releases/{CHANNEL}/{}/{name}\n",
                v1.nixname
            )),
            "{name} is not listed:\n{list}"
        );
    }
    let rel = site.release_dir(&v1);
    assert!(
        !rel.join("git-revision").exists(),
        "the release is complete"
    );
    assert_eq!(site.channel_target(), None);
    let nar_requests = || {
        site.server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/cache/nar/"))
            .count()
    };
    assert_eq!(nar_requests(), 0, "--print-only downloaded NARs");

    let list_file = site.dir.write("list.aria2", &list);
    let fetched = common::process::run_command(
        std::process::Command::new("aria2c").args([
            "--input-file",
            list_file.to_str().unwrap(),
            "--dir",
            site.mirror().to_str().unwrap(),
            "--auto-file-renaming=false",
            "--check-integrity=true",
            "--console-log-level=warn",
            "--summary-interval=0",
        ]),
        std::time::Duration::from_secs(120),
    );
    assert!(
        fetched.status.success(),
        "aria2c (apt-get install aria2; .ci/run installs it): {}",
        output_text(&fetched)
    );
    let fetched_nars = nar_requests();
    assert!(fetched_nars > 0);

    let out = site.run(&[], None);
    assert!(out.status.success(), "{}", output_text(&out));
    for name in &large {
        assert_eq!(requested(name), 1, "{name} was downloaded again");
    }
    assert_eq!(nar_requests(), fetched_nars, "NARs were downloaded again");
    for (name, bytes) in &v1.files {
        assert_eq!(&fs::read(rel.join(name)).unwrap(), bytes, "{name}");
    }
    assert_eq!(site.channel_target().as_deref(), Some(v1.nixname.as_str()));
    assert!(!site.mirror().join(".staging").exists());
    let verify = site.verify();
    assert!(verify.status.success(), "{}", output_text(&verify));
}
