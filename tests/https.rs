//! Mirroring from a cache served over HTTPS by a certificate authority of its own
//! (`openssl s_server -WWW`, a real TLS server): refused at once without `--ca-cert`, and
//! mirrored completely with it.

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::nixcache::store_path_hash;
use common::{assert_no_temp_files, nix_cache, output_text, run_nixipfs, Compression, TestDir};

/// `openssl s_server -WWW` serving the files of `root` over HTTPS; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(root: &Path, certs: &Path) -> TlsServer {
        let port = common::ipfs_node::free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certs.join("server.pem"))
            .arg("-key")
            .arg(certs.join("server.key"))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting openssl s_server (apt-get install -y openssl)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_cache_behind_a_private_ca_is_mirrored_with_ca_cert_and_refused_without() {
    let cache = nix_cache(Compression::Xz);
    let dir = TestDir::new("https");
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).unwrap();
    common::certs::make_certificates(&certs).unwrap_or_else(|e| panic!("{e}"));
    let srv = TlsServer::start(&cache.dir, &certs);
    let release = dir.join("out/releases/chan/rel");
    fs::create_dir_all(&release).unwrap();
    fs::write(release.join("store-paths"), cache.store_paths_text()).unwrap();
    let outdir = dir.join("out");
    let url = srv.url();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
            "--cache",
            &url,
            "--trusted-public-key",
            &cache.public_key,
            "--progress",
            "none",
            "--retry-delay",
            "5",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };

    // Without the CA: refused at once (no retries: the certificate will not change).
    let started = Instant::now();
    let out = run_nixipfs(args(&[]));
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("TLS certificate is not trusted") && text.contains("--ca-cert"),
        "{text}"
    );
    assert!(text.contains(&url), "the message names the URL: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an untrusted certificate was retried: {text}"
    );
    assert!(!outdir.join("binary_cache/nar").exists());

    // A CA file that is not one.
    let bogus = dir.write("bogus.pem", "not a certificate\n");
    let out = run_nixipfs(args(&["--ca-cert", bogus.to_str().unwrap()]));
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "cannot use {} as a CA certificate file",
            bogus.display()
        )),
        "{text}"
    );

    // With it: the whole closure, byte for byte.
    let ca = certs.join("ca.pem");
    let out = run_nixipfs(args(&["--ca-cert", ca.to_str().unwrap()]));
    assert!(out.status.success(), "{}", output_text(&out));
    for path in &cache.closure {
        let name = format!("{}.narinfo", store_path_hash(path));
        assert_eq!(
            fs::read(outdir.join("binary_cache").join(&name)).unwrap(),
            fs::read(cache.dir.join(&name)).unwrap(),
            "{name}"
        );
        let nar = cache.nar_url_path(path);
        let nar = nar.trim_start_matches('/');
        assert_eq!(
            fs::read(outdir.join("binary_cache").join(nar)).unwrap(),
            fs::read(cache.dir.join(nar)).unwrap(),
            "{nar}"
        );
        assert!(release.join("binary_cache").join(&name).exists());
    }
    assert_no_temp_files(&outdir);
}
