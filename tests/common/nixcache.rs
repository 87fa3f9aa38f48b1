//! Binary caches made by real Nix (2.8, Debian package `nix-bin`), and a real Nix client that
//! installs from a cache.
//!
//! Nix runs as root without a daemon and offline, in a [`NixEnv`]: a private store root
//! (`local?root=DIR/root`; store paths still read `/nix/store/...`), private state, log, home,
//! XDG and configuration directories, no substituters and no system `nix.conf`. Builds in such a
//! "diverted" store always run in a chroot, so the host's `/bin`, `/lib`, `/lib64` and `/usr` are
//! made visible to builders through `sandbox-paths`.
//!
//! [`nix_caches`] builds a small set of store paths once (see [`EXPRESSION`]), signs them with a
//! fresh `test-cache-1` key and copies them with `nix copy --to file://...` into one binary
//! cache per [`Compression`]. The result is kept per process and, across test runs and test
//! processes, under `CARGO_TARGET_TMPDIR/nix-caches/<key>`, where the key changes whenever the
//! expression or [`CACHE_VERSION`] does. Those directories are shared: copy a cache
//! ([`NixCache::copy_to`]) before changing it.
//!
//! [`nix_install_from`] runs `nix copy --from <cache> --to local?root=<fresh dir>` with only the
//! given key trusted and signatures required, then checks the paths there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::dirs::{remove_tree, TestDir};
use super::process::{describe, run_with_timeout, without_proxies};

/// What to do when Nix is missing.
pub const NIX_INSTALL_HINT: &str = "Nix is required by these tests and was not found: install it \
     with `apt-get install -y nix-bin` (Debian/Ubuntu, Nix 2.8; provides nix, nix-store and \
     nix-build)";

/// Bump when the layout of the cached build changes, to make every test run rebuild.
pub const CACHE_VERSION: &str = "v1";

/// The name of the signing key of the built caches.
pub const KEY_NAME: &str = "test-cache-1";

/// How long one Nix command may run.
pub const NIX_TIMEOUT: Duration = Duration::from_secs(300);

/// The Nix expression of the cached store paths. `nix-build -A app -A tool -A unrelated`:
/// - `app` (top level): a directory with `bin/app`, a symlink into `hello`, and `share/paths`
///   naming `data` and `link`;
/// - `hello`: `bin/hello` (executable script reading a file of `lib`), `bin/hi` (relative
///   symlink), `bin/hello-abs` (absolute symlink into itself: a self-reference), `lib` (symlink
///   to `lib`'s `lib` directory), `share/doc/README`;
/// - `lib`: `lib/greeting.txt` naming its own store path (self-reference), an empty directory
///   and an empty file;
/// - `data`: one regular file of about 70 KB, no references;
/// - `link`: a top-level symlink to `tool`;
/// - `tool` (top level): one executable file that names `lib`;
/// - `unrelated`: one file, copied into the caches but outside the closure of the top level.
pub const EXPRESSION: &str = r#"
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  lib = mk "nixipfs-test-lib" ''
    mkdir -p $out/lib $out/share/empty-dir
    printf 'greeting from %s\n' "$out" > $out/lib/greeting.txt
    : > $out/share/empty-file
  '';
  data = mk "nixipfs-test-data" ''
    i=0
    while [ $i -lt 2000 ]; do
      printf 'line %05d of the nixipfs test data file\n' $i
      i=$((i + 1))
    done > $out
  '';
  hello = mk "nixipfs-test-hello" ''
    mkdir -p $out/bin $out/share/doc
    printf '#!/bin/sh\ncat %s/lib/greeting.txt\n' ${lib} > $out/bin/hello
    chmod 0755 $out/bin/hello
    ln -s hello $out/bin/hi
    ln -s $out/bin/hello $out/bin/hello-abs
    ln -s ${lib}/lib $out/lib
    printf 'hello, a test package\n' > $out/share/doc/README
  '';
  tool = mk "nixipfs-test-tool" ''
    printf '#!/bin/sh\necho tool using %s\n' ${lib} > $out
    chmod 0755 $out
  '';
  link = mk "nixipfs-test-link" ''
    ln -s ${tool} $out
  '';
  app = mk "nixipfs-test-app" ''
    mkdir -p $out/bin $out/share
    ln -s ${hello}/bin/hello $out/bin/app
    printf '%s\n' ${data} ${link} > $out/share/paths
  '';
  unrelated = mk "nixipfs-test-unrelated" ''
    printf 'this path is in the cache but in no closure\n' > $out
  '';
in { inherit lib data hello tool link app unrelated; }
"#;

/// A compression that `nix copy --to file://...?compression=C` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `nar/<filehash>.nar.xz`
    Xz,
    /// `nar/<filehash>.nar.bz2`
    Bzip2,
    /// `nar/<filehash>.nar.zst`
    Zstd,
    /// `nar/<narhash>.nar`, `Compression: none`
    None,
}

impl Compression {
    /// All compressions the caches are built with.
    pub const ALL: [Compression; 4] = [
        Compression::Xz,
        Compression::Bzip2,
        Compression::Zstd,
        Compression::None,
    ];

    /// The value of `compression=` and of the narinfo's `Compression:` field.
    pub fn nix_name(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// The file name extension of the NARs (`.nar.xz`, ..., `.nar`).
    pub fn nar_extension(self) -> &'static str {
        match self {
            Compression::Xz => ".nar.xz",
            Compression::Bzip2 => ".nar.bz2",
            Compression::Zstd => ".nar.zst",
            Compression::None => ".nar",
        }
    }
}

/// A Nix command that failed or timed out.
#[derive(Debug)]
pub struct NixError {
    /// The command line.
    pub command: String,
    /// What went wrong, with the command's output.
    pub message: String,
}

impl std::fmt::Display for NixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.command, self.message)
    }
}

impl std::error::Error for NixError {}

/// Panics with [`NIX_INSTALL_HINT`] unless `nix --version` runs.
pub fn require_nix() {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        match Command::new("nix")
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            Ok(o) => Err(format!(
                "`nix --version` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!("`nix` could not be run: {e}")),
        }
    });
    if let Err(e) = result {
        panic!("{NIX_INSTALL_HINT}\n({e})");
    }
}

/// A private Nix environment in a directory: store root `DIR/root`, and state, log, home,
/// XDG, configuration and temporary directories under `DIR`.
#[derive(Clone, Debug)]
pub struct NixEnv {
    dir: PathBuf,
}

impl NixEnv {
    /// Creates the environment's directories under `dir`. Panics if Nix is missing.
    pub fn new(dir: &Path) -> NixEnv {
        require_nix();
        for sub in [
            "root", "state", "log", "home", "cache", "config", "data", "conf", "tmp",
        ] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        }
        NixEnv {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory the environment lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's root: store path `/nix/store/X` is the file `root/nix/store/X`.
    pub fn store_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `local?root=<store_root>`, for `--store`, `--to` and `--from`.
    pub fn store_uri(&self) -> String {
        format!("local?root={}", self.store_root().display())
    }

    /// Where the store path `/nix/store/X` lives on disk.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.store_root().join(store_path.trim_start_matches('/'))
    }

    /// A `Command` for `program` (`nix`, `nix-build`, ...) in this environment, stdin closed.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for var in [
            "NIX_PATH",
            "NIX_STORE_DIR",
            "NIX_STORE",
            "NIX_DAEMON_SOCKET_PATH",
            "NIX_USER_CONF_FILES",
            "NIX_BIN_DIR",
            "NIX_DATA_DIR",
        ] {
            cmd.env_remove(var);
        }
        let d = &self.dir;
        cmd.env("NIX_REMOTE", self.store_uri())
            .env("NIX_CONFIG", nix_config())
            .env("NIX_CONF_DIR", d.join("conf"))
            .env("NIX_STATE_DIR", d.join("state"))
            .env("NIX_LOG_DIR", d.join("log"))
            .env("HOME", d.join("home"))
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_STATE_HOME", d.join("state"))
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null());
        without_proxies(&mut cmd);
        cmd
    }

    /// Runs `cmd` (from [`NixEnv::command`]) and returns its output if it succeeded.
    pub fn run(&self, cmd: &mut Command) -> Result<Output, NixError> {
        let command = describe(cmd);
        match run_with_timeout(cmd, NIX_TIMEOUT) {
            Ok(out) if out.status.success() => Ok(out),
            Ok(out) => Err(NixError {
                command,
                message: format!(
                    "{}\n--- stderr ---\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            }),
            Err(e) => Err(NixError {
                command,
                message: e.to_string(),
            }),
        }
    }

    /// Runs `program args...` and returns its stdout split into non-empty lines.
    pub fn run_lines(&self, program: &str, args: &[&str]) -> Result<Vec<String>, NixError> {
        let out = self.run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The closure of `paths` in this store (`nix path-info -r`), sorted.
    pub fn closure(&self, paths: &[String]) -> Result<Vec<String>, NixError> {
        let store = self.store_uri();
        let mut args = vec!["path-info", "--store", &store, "-r"];
        args.extend(paths.iter().map(String::as_str));
        let mut closure = self.run_lines("nix", &args)?;
        closure.sort();
        closure.dedup();
        Ok(closure)
    }
}

/// The `NIX_CONFIG` every [`NixEnv`] command gets.
fn nix_config() -> String {
    let sandbox_paths: Vec<&str> = ["/bin", "/lib", "/lib64", "/usr"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    format!(
        "experimental-features = nix-command\n\
         sandbox = false\n\
         sandbox-paths = {}\n\
         build-users-group =\n\
         substituters =\n\
         require-sigs = false\n\
         narinfo-cache-negative-ttl = 0\n\
         narinfo-cache-positive-ttl = 0\n\
         fsync-metadata = false\n",
        sandbox_paths.join(" ")
    )
}

/// One binary cache made by `nix copy --to file://...`. Read-only: it is shared between tests.
#[derive(Clone, Debug)]
pub struct NixCache {
    /// The cache's root: `nix-cache-info`, `<hash>.narinfo`, `nar/...`.
    pub dir: PathBuf,
    /// The compression of its NARs.
    pub compression: Compression,
    /// `test-cache-1:<base64 public key>`, for `trusted-public-keys`.
    pub public_key: String,
    /// `test-cache-1:<base64 secret key>`, as `nix key generate-secret` prints it.
    pub secret_key: String,
    /// The top-level paths (`app` and `tool`), sorted: the content of a release's `store-paths`.
    pub top_level: Vec<String>,
    /// The closure of `top_level`, sorted (6 paths).
    pub closure: Vec<String>,
    /// Paths in the cache that are outside the closure (1 path), sorted.
    pub unrelated: Vec<String>,
}

impl NixCache {
    /// `file://<dir>`.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// The `store-paths` text of a release: the top-level paths, one per line.
    pub fn store_paths_text(&self) -> String {
        self.top_level.iter().map(|p| format!("{p}\n")).collect()
    }

    /// The store path of the package with this name (e.g. `nixipfs-test-hello`).
    pub fn path_named(&self, name: &str) -> &str {
        self.closure
            .iter()
            .chain(&self.unrelated)
            .find(|p| store_path_name(p) == name)
            .unwrap_or_else(|| panic!("no store path named {name} in the cache"))
    }

    /// The URL path of the narinfo of `store_path`: `/<hash>.narinfo`.
    pub fn narinfo_url_path(&self, store_path: &str) -> String {
        format!("/{}.narinfo", store_path_hash(store_path))
    }

    /// The narinfo file of `store_path`.
    pub fn narinfo_file(&self, store_path: &str) -> PathBuf {
        self.dir
            .join(format!("{}.narinfo", store_path_hash(store_path)))
    }

    /// The value of `field` (e.g. `"URL"`, `"References"`) in the narinfo of `store_path`.
    pub fn narinfo_field(&self, store_path: &str, field: &str) -> Option<String> {
        let file = self.narinfo_file(store_path);
        let text =
            fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let prefix = format!("{field}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
    }

    /// The URL path of the NAR of `store_path` (`/nar/...`), from its narinfo's `URL:`.
    pub fn nar_url_path(&self, store_path: &str) -> String {
        let url = self
            .narinfo_field(store_path, "URL")
            .unwrap_or_else(|| panic!("narinfo of {store_path} has no URL"));
        format!("/{url}")
    }

    /// Copies the cache to `dest` (created) so that a test can change it.
    pub fn copy_to(&self, dest: &Path) {
        copy_tree(&self.dir, dest);
    }
}

/// The caches of all compressions, from one build and one key.
#[derive(Debug)]
pub struct NixCacheSet {
    /// The directory holding the caches (`xz/`, `bzip2/`, `zstd/`, `none/`) and the keys.
    pub dir: PathBuf,
    /// One cache per compression, in the order of [`Compression::ALL`].
    pub caches: Vec<NixCache>,
    /// How long building took in this process, or `None` if an earlier run's build was reused.
    pub build_time: Option<Duration>,
}

impl NixCacheSet {
    /// The cache with this compression.
    pub fn get(&self, compression: Compression) -> &NixCache {
        self.caches
            .iter()
            .find(|c| c.compression == compression)
            .expect("a cache per compression")
    }
}

/// The name part of a store path: `/nix/store/<hash>-<name>` -> `<name>`.
pub fn store_path_name(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// The hash part of a store path: `/nix/store/<hash>-<name>` -> `<hash>`.
pub fn store_path_hash(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    base.split_once('-').map_or(base, |(hash, _)| hash)
}

/// The caches, built on first use (see the module documentation). Panics if building fails.
pub fn nix_caches() -> &'static NixCacheSet {
    static CACHES: OnceLock<Result<NixCacheSet, String>> = OnceLock::new();
    match CACHES.get_or_init(|| load_or_build().map_err(|e| e.to_string())) {
        Ok(set) => set,
        Err(e) => panic!("building the Nix test caches failed: {e}"),
    }
}

/// The cache with this compression; see [`nix_caches`].
pub fn nix_cache(compression: Compression) -> &'static NixCache {
    nix_caches().get(compression)
}

/// 64-bit FNV-1a, to key the on-disk cache by what determines its content.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn cache_key() -> String {
    let mut input = String::from(CACHE_VERSION);
    input.push_str(EXPRESSION);
    input.push_str(&nix_config());
    for c in Compression::ALL {
        input.push_str(c.nix_name());
    }
    format!("{CACHE_VERSION}-{:016x}", fnv1a(input.as_bytes()))
}

const MANIFEST: &str = "manifest.txt";

fn load_or_build() -> Result<NixCacheSet, NixError> {
    require_nix();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nix-caches");
    let final_dir = base.join(cache_key());
    if final_dir.join(MANIFEST).is_file() {
        return Ok(load(&final_dir, None));
    }
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let work = base.join(format!(".build-{}-{nanos:08x}", std::process::id()));
    let started = Instant::now();
    let built = build(&work);
    if let Err(e) = built {
        remove_tree(&work);
        return Err(e);
    }
    // Another process may have finished the same build first; then its result is used.
    if fs::rename(&work, &final_dir).is_err() {
        remove_tree(&work);
        if !final_dir.join(MANIFEST).is_file() {
            panic!("could not move the built caches to {}", final_dir.display());
        }
    }
    Ok(load(&final_dir, Some(started.elapsed())))
}

fn build(work: &Path) -> Result<(), NixError> {
    fs::create_dir_all(work).unwrap_or_else(|e| panic!("creating {}: {e}", work.display()));
    let env = NixEnv::new(&work.join("env"));
    let expr_file = work.join("caches.nix");
    fs::write(&expr_file, EXPRESSION).expect("writing the cache expression");
    let expr = expr_file.to_string_lossy().into_owned();
    let built = env.run_lines(
        "nix-build",
        &[
            &expr,
            "-A",
            "app",
            "-A",
            "tool",
            "-A",
            "unrelated",
            "--no-out-link",
        ],
    )?;
    let [app, tool, unrelated] = built.as_slice() else {
        panic!("nix-build printed {built:?}, expected three store paths");
    };
    let mut top_level = vec![app.clone(), tool.clone()];
    top_level.sort();
    let closure = env.closure(&top_level)?;
    let unrelated = vec![unrelated.clone()];

    let secret = env.run_lines("nix", &["key", "generate-secret", "--key-name", KEY_NAME])?;
    let secret_file = work.join("secret.key");
    fs::write(&secret_file, secret.concat()).expect("writing the secret key");
    let mut convert = env.command("nix");
    convert
        .args(["key", "convert-secret-to-public"])
        .stdin(fs::File::open(&secret_file).expect("opening the secret key"));
    let public = env.run(&mut convert)?;
    fs::write(
        work.join("public.key"),
        String::from_utf8_lossy(&public.stdout).trim(),
    )
    .expect("writing the public key");

    for c in Compression::ALL {
        let to = format!(
            "file://{}?compression={}&secret-key={}",
            work.join(c.nix_name()).display(),
            c.nix_name(),
            secret_file.display()
        );
        let mut cmd = env.command("nix");
        cmd.args(["copy", "--to", &to])
            .args(&closure)
            .args(&unrelated);
        env.run(&mut cmd)?;
    }

    let mut manifest = String::new();
    for (kind, paths) in [
        ("top-level", &top_level),
        ("closure", &closure),
        ("unrelated", &unrelated),
    ] {
        for p in paths {
            manifest.push_str(&format!("{kind} {p}\n"));
        }
    }
    remove_tree(&work.join("env"));
    fs::write(work.join(MANIFEST), manifest).expect("writing the manifest");
    Ok(())
}

fn load(dir: &Path, build_time: Option<Duration>) -> NixCacheSet {
    let read = |name: &str| {
        let f = dir.join(name);
        fs::read_to_string(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()))
    };
    let manifest = read(MANIFEST);
    let paths = |kind: &str| -> Vec<String> {
        let mut v: Vec<String> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let public_key = read("public.key").trim().to_string();
    let secret_key = read("secret.key").trim().to_string();
    let caches = Compression::ALL
        .into_iter()
        .map(|compression| NixCache {
            dir: dir.join(compression.nix_name()),
            compression,
            public_key: public_key.clone(),
            secret_key: secret_key.clone(),
            top_level: paths("top-level"),
            closure: paths("closure"),
            unrelated: paths("unrelated"),
        })
        .collect();
    NixCacheSet {
        dir: dir.to_path_buf(),
        caches,
        build_time,
    }
}

/// Copies a directory tree (regular files, directories and symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("listing {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", from.display()));
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        if kind.is_dir() {
            copy_tree(&src, &dst);
        } else if kind.is_symlink() {
            let target = fs::read_link(&src)
                .unwrap_or_else(|e| panic!("reading link {}: {e}", src.display()));
            std::os::unix::fs::symlink(target, &dst)
                .unwrap_or_else(|e| panic!("creating link {}: {e}", dst.display()));
        } else {
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// A fresh store that [`nix_install_from`] installed paths into.
#[derive(Debug)]
pub struct InstalledStore {
    /// The environment of the store (its directory is `dir`).
    pub env: NixEnv,
    /// The closure of the installed paths as valid in the store, sorted.
    pub closure: Vec<String>,
    /// The directory holding everything; removed on drop.
    pub dir: TestDir,
}

/// Installs `paths` and their closure from the binary cache at `cache_url` (`file://...` or
/// `http://...`) into a fresh private store, like a Nix user would: `nix copy --from` with
/// only `public_key` in `trusted-public-keys` and `require-sigs = true`. Then checks that the
/// paths are valid (`nix path-info -r`) and that their contents match their hashes
/// (`nix store verify`). An error carries Nix's message (e.g. "lacks a valid signature").
pub fn nix_install_from(
    cache_url: &str,
    public_key: &str,
    paths: &[String],
) -> Result<InstalledStore, NixError> {
    require_nix();
    let dir = TestDir::new("nix-install");
    let env = NixEnv::new(dir.path());
    let store = env.store_uri();
    let mut copy = env.command("nix");
    copy.args(["copy", "--from", cache_url, "--to", &store])
        .args(["--option", "trusted-public-keys", public_key])
        .args(["--option", "require-sigs", "true"])
        .args(paths);
    env.run(&mut copy)?;
    let closure = env.closure(paths)?;
    let mut verify = env.command("nix");
    verify
        .args(["store", "verify", "--store", &store, "-r", "--no-trust"])
        .args(paths);
    env.run(&mut verify)?;
    Ok(InstalledStore { env, closure, dir })
}
