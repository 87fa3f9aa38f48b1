//! A real IPFS node for tests: js-ipfs 0.66.1 as pinned in `tests/ipfs-node/`, on 127.0.0.1,
//! offline, with a fresh repository on a free port.
//!
//! [`IpfsNode::start`] initialises a repository (API on the chosen port, no gateway, no
//! swarm, no bootstrap, no discovery), starts `jsipfs daemon --offline` and waits until
//! `POST /api/v0/version` answers. The daemon runs under a small shell that kills it when the
//! test process goes away (its standard input, a pipe from the test, closes), so a node
//! shared through [`IpfsNode::shared`] (a static, never dropped) does not outlive the test
//! binary; a node owned by a test is killed when dropped.
//!
//! Without `tests/ipfs-node/node_modules` the start panics with the command that installs
//! it: these tests never skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::dirs::TestDir;
use super::process::{run_with_timeout, without_proxies};

/// The command that installs the node.
pub const INSTALL_COMMAND: &str = "cd tests/ipfs-node && npm ci";

/// How long the node may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running js-ipfs daemon (see the module documentation).
pub struct IpfsNode {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    gateway_port: Option<u16>,
    log: PathBuf,
    repo: TestDir,
}

/// The directory with the pinned js-ipfs.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ipfs-node")
}

/// The `jsipfs` command; panics with the install command when it is missing.
pub fn jsipfs() -> PathBuf {
    let bin = node_dir().join("node_modules/.bin/jsipfs");
    if !bin.exists() {
        panic!(
            "the js-ipfs test node is not installed ({} is missing): run `{INSTALL_COMMAND}` \
             in the repository root",
            bin.display()
        );
    }
    bin
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// POSTs to `/api/v0/<command>` on `port` and returns the status code and body, or `None`
/// when nothing answers.
pub fn post(port: u16, command: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "POST /api/v0/{command} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Some((status, body.to_string()))
}

impl IpfsNode {
    /// Starts a node with a fresh repository on a free port.
    pub fn start() -> IpfsNode {
        IpfsNode::start_serving(false)
    }

    /// Starts a node that also serves its read-only HTTP gateway on a free port
    /// ([`IpfsNode::gateway_url`]).
    pub fn start_with_gateway() -> IpfsNode {
        IpfsNode::start_serving(true)
    }

    fn start_serving(gateway: bool) -> IpfsNode {
        let jsipfs = jsipfs();
        let repo = TestDir::new("ipfs-node");
        let port = free_port();
        let gateway_port = gateway.then(free_port);
        let gateway_addr = gateway_port
            .map(|p| format!("/ip4/127.0.0.1/tcp/{p}"))
            .unwrap_or_default();
        let repo_path = repo.join("repo");
        let init = repo.write(
            "init.json",
            format!(
                r#"{{"Addresses":{{"API":"/ip4/127.0.0.1/tcp/{port}","Gateway":"{gateway_addr}","RPC":"","Swarm":[]}},
"Bootstrap":[],"Discovery":{{"MDNS":{{"Enabled":false}},"webRTCStar":{{"Enabled":false}}}}}}"#
            ),
        );
        let mut init_cmd = Command::new(&jsipfs);
        init_cmd
            .args(["init", "--profile", "test", "--emptyRepo"])
            .arg(&init)
            .env("IPFS_PATH", &repo_path)
            .env("NO_UPDATE_NOTIFIER", "1")
            .stdin(Stdio::null());
        without_proxies(&mut init_cmd);
        let out = run_with_timeout(&mut init_cmd, START_TIMEOUT)
            .unwrap_or_else(|e| panic!("initialising the js-ipfs repository: {e}"));
        assert!(
            out.status.success(),
            "jsipfs init failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let log = repo.join("daemon.log");
        // The shell starts the daemon, then waits for its own stdin to close (the test process
        // ended or dropped the node) and kills it.
        let script = r#""$JSIPFS" daemon --offline </dev/null >"$LOG" 2>&1 &
daemon=$!
read _ignored
kill "$daemon" 2>/dev/null
sleep 1
kill -9 "$daemon" 2>/dev/null
wait "$daemon" 2>/dev/null
exit 0"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .env("JSIPFS", &jsipfs)
            .env("LOG", &log)
            .env("IPFS_PATH", &repo_path)
            .env("NO_UPDATE_NOTIFIER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        without_proxies(&mut cmd);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("starting the js-ipfs daemon");
        let stdin = child.stdin.take();
        let mut node = IpfsNode {
            child,
            stdin,
            port,
            gateway_port,
            log,
            repo,
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((200, body)) = post(self.port, "version") {
                if body.contains("Version") {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the js-ipfs daemon exited ({status}) before it was ready:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the js-ipfs daemon did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One node for the whole test binary, started on first use.
    pub fn shared() -> &'static IpfsNode {
        static NODE: OnceLock<IpfsNode> = OnceLock::new();
        NODE.get_or_init(IpfsNode::start)
    }

    /// The API port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The API as `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The gateway as `http://127.0.0.1:PORT` (a node started with
    /// [`IpfsNode::start_with_gateway`]).
    pub fn gateway_url(&self) -> String {
        let port = self
            .gateway_port
            .expect("the node was started without a gateway");
        format!("http://127.0.0.1:{port}")
    }

    /// The API as a multiaddr.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The repository directory.
    pub fn repo(&self) -> PathBuf {
        self.repo.join("repo")
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        // Closing stdin makes the shell kill the daemon.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
