//! nginx on 127.0.0.1 serving the datasets (and a one-file fake Hydra) from a web root of
//! symlinks: over HTTP/1.1, and over HTTPS with HTTP/2 (ALPN) using a certificate authority
//! made for the run with openssl (clients trust it with `--ca-cert` / `--cacert`).
//!
//! HTTP/2 without TLS is not offered: nixipfs's client speaks h2 only after ALPN, and curl
//! 7.88.1's h2c with prior knowledge fails on the second request of a reused connection
//! ("Error in the HTTP2 framing layer").

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[path = "../../tests/common/certs.rs"]
mod certs;

/// A running nginx; stopped on drop.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT` (HTTP/1.1).
    pub http1: String,
    /// `https://127.0.0.1:PORT` (HTTP/2 by ALPN, or HTTP/1.1), when openssl could make the
    /// certificates.
    pub https: Option<String>,
    /// The certificate authority of `https`.
    pub ca_pem: Option<PathBuf>,
    /// The web root.
    pub root: PathBuf,
    /// `nginx -v`.
    pub version: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Finds nginx, installing Debian's package when it is missing and we may.
pub fn find_nginx(install: bool) -> Result<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    if install {
        eprintln!("nginx is missing: apt-get install -y nginx-light");
        let ok = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && Path::new("/usr/sbin/nginx").exists() {
            return Ok(PathBuf::from("/usr/sbin/nginx"));
        }
    }
    bail!("nginx is not installed (apt-get install -y nginx-light)")
}

impl Nginx {
    /// Starts nginx with `workers` worker processes serving `root`.
    pub fn start(nginx: &Path, dir: &Path, root: &Path, workers: usize) -> Result<Nginx> {
        fs::create_dir_all(dir.join("tmp"))?;
        let p1 = free_port()?;
        let tls_dir = dir.join("tls");
        let tls = match certs::make_certificates(&tls_dir) {
            Ok(()) => Some(free_port()?),
            Err(e) => {
                eprintln!("no HTTPS/HTTP2 cases: {e:#}");
                None
            }
        };
        let tls_server = tls.map_or(String::new(), |p2| {
            format!(
                r#"    server {{
        listen 127.0.0.1:{p2} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        http2_max_concurrent_streams 256;
        root {root};
        location /hydra/ {{ default_type application/json; }}
        location ~ /nix-cache-info$ {{ default_type text/x-nix-cache-info; }}
    }}
"#,
                cert = tls_dir.join("server.pem").display(),
                key = tls_dir.join("server.key").display(),
                root = root.display(),
            )
        });
        let conf = format!(
            r#"daemon off;
master_process on;
user root;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    types {{
        text/x-nix-narinfo narinfo;
        application/x-nix-nar nar xz;
    }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{p1};
        root {root};
        location /hydra/ {{ default_type application/json; }}
        location ~ /nix-cache-info$ {{ default_type text/x-nix-cache-info; }}
    }}
{tls_server}}}
"#,
            dir = dir.display(),
            root = root.display(),
        );
        let conf_file = dir.join("nginx.conf");
        fs::write(&conf_file, conf)?;
        let version = Command::new(nginx)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf_file)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("starting nginx")?;
        let mut n = Nginx {
            child,
            http1: format!("http://127.0.0.1:{p1}"),
            https: tls.map(|p2| format!("https://127.0.0.1:{p2}")),
            ca_pem: tls.map(|_| tls_dir.join("ca.pem")),
            root: root.to_path_buf(),
            version: version.trim_start_matches("nginx version: ").to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(p1).chain(tls) {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = n.child.try_wait()? {
                    let log = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                    bail!("nginx exited ({status}): {log}");
                }
                if Instant::now() > deadline {
                    bail!("nginx did not listen on {port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n.root = root.to_path_buf();
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers; KILL only if it does not go.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
