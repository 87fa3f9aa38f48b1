//! HTTP fetching with bounded concurrency, timeouts, retries and verified atomic downloads.
//!
//! One [`Fetcher`] holds one `reqwest` client (rustls, connection reuse, HTTP/2 where the server
//! offers it) and one semaphore that bounds the requests in flight. Transient failures (connection
//! errors, stalls, 408, 429, 5xx, bodies cut short) are retried with exponential backoff and jitter,
//! honouring `Retry-After`; a 404 is reported at once as [`FetchError::NotFound`] so callers can
//! branch on it. Downloads stream into a temp file in the destination directory while hashing,
//! are checked against the expected size and sha256, and only then renamed into place; a mismatch
//! deletes the temp file and counts as a failed attempt.
//!
//! A NAR file can also be checked all the way down ([`Expected::nar`]): while it streams to disk
//! it is decompressed and the NAR inside is hashed, so that a file whose `FileHash` was rewritten
//! together with its bytes is still caught by the signed `NarHash` and `NarSize`. A file that
//! passed that check carries a marker ([`mark_nar_checked`], [`nar_checked`]) so that it need not
//! be decompressed again on every run.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::StatusCode;
use thiserror::Error;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::compression::{Compression, Decompressor};
use crate::fsutil;
use crate::hash::{Sha256Hash, Sha256Hasher};

/// Settings for a [`Fetcher`].
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Retries after the first attempt of a request that failed transiently.
    pub retries: u32,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time a response may go without sending a byte before it is abandoned.
    pub stall_timeout: Duration,
    /// Pause before the first retry; doubled for each further retry.
    pub backoff_base: Duration,
    /// Longest pause between two attempts (also caps `Retry-After`).
    pub backoff_max: Duration,
    /// Whether downloaded files are fsynced before they are renamed into place.
    pub fsync: bool,
    /// PEM files of certificate authorities to trust for HTTPS besides the built-in ones
    /// (for a cache or Hydra behind a private CA).
    pub ca_certs: Vec<PathBuf>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            concurrency: 32,
            retries: 4,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            fsync: true,
            ca_certs: Vec::new(),
        }
    }
}

/// What a downloaded file must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: Option<u64>,
    /// sha256 of the bytes.
    pub sha256: Option<Sha256Hash>,
    /// The NAR the file holds, checked by decompressing it as it streams.
    pub nar: Option<ExpectedNar>,
}

/// The NAR inside a NAR file, as its narinfo's signed fields give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedNar {
    /// How the file is compressed.
    pub compression: Compression,
    /// `NarHash`: the sha256 of the decompressed NAR.
    pub hash: Sha256Hash,
    /// `NarSize`: the size of the decompressed NAR.
    pub size: u64,
}

impl ExpectedNar {
    /// About the memory its decoder touches: the window of its compression (for xz and zstd
    /// the default presets' 8 MiB, for bzip2 its 900 kB blocks' working set), never more than
    /// the NAR's own size.
    pub fn decoder_memory(&self) -> usize {
        let window: u64 = match self.compression {
            Compression::None => 0,
            Compression::Xz | Compression::Zstd => DECODER_WINDOW as u64,
            Compression::Bzip2 => 4 << 20,
        };
        window.min(self.size) as usize
    }
}

impl Expected {
    /// Checks `got` against what is expected: `Err` describes the first difference (size
    /// first, then hash).
    pub fn check(&self, got: Downloaded) -> Result<(), String> {
        if let Some(size) = self.size.filter(|&s| s != got.size) {
            return Err(format!("got {} bytes, expected {size}", got.size));
        }
        match self.sha256 {
            Some(h) if h != got.sha256 => Err(format!("got sha256 {}, expected {h}", got.sha256)),
            _ => Ok(()),
        }
    }
}

/// A verified download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// Their sha256.
    pub sha256: Sha256Hash,
}

/// Why a fetch failed, after any retries.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The server answered 404 (or 410): the object does not exist there.
    #[error("{url} does not exist on the server (HTTP {status}{})", colon(detail))]
    NotFound {
        url: String,
        status: u16,
        /// The server's own message (e.g. Hydra's `{"error": ...}`), if it gave one.
        detail: Option<String>,
    },
    /// A status that retrying cannot fix.
    #[error("{url} answered HTTP {status}{}", colon(detail))]
    Status {
        url: String,
        status: u16,
        detail: Option<String>,
    },
    /// Transient failures outlasted the retries.
    #[error("{url} failed after {attempts} attempts: {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        last: String,
    },
    /// The body was larger than allowed.
    #[error("{url} sent more than {limit} bytes, the most allowed for this kind of file")]
    TooLarge { url: String, limit: u64 },
    /// The downloaded bytes never matched what was expected.
    #[error("{url} failed verification after {attempts} attempts: {mismatch}")]
    Verification {
        url: String,
        attempts: u32,
        mismatch: String,
    },
    /// A local file-system error.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The request could not be made at all (bad URL, client set-up).
    #[error("cannot request {url}: {reason}")]
    Request { url: String, reason: String },
    /// A certificate file given to trust could not be read or holds no PEM certificate.
    #[error("cannot use {} as a CA certificate file: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    /// The host could not be connected to (refused, unknown name, TLS handshake failed) for
    /// [`HOST_DOWN_AFTER`] attempts in a row, a retry among them, with no answer in between:
    /// every further request to it fails at once, so that a run stops instead of spending its
    /// retries on every URL.
    #[error(
        "cannot connect to {host}: {failures} attempts in a row failed ({last}); check that the \
         URL names the right host and port and that the server is up and reachable from here"
    )]
    HostDown {
        host: String,
        failures: u32,
        last: String,
    },
}

impl FetchError {
    /// Whether this is a 404/410 from the server.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }

    /// Whether the host of the URL is down (see [`FetchError::HostDown`]).
    pub fn is_host_down(&self) -> bool {
        matches!(self, FetchError::HostDown { .. })
    }
}

/// Connection failures in a row to one host after which it counts as down.
pub const HOST_DOWN_AFTER: u32 = 3;

/// The connection failures in a row of each host (`host:port`), shared by a fetcher's clones;
/// reset by any answer from it.
#[derive(Default)]
struct HostHealth {
    /// Failures in a row.
    failures: HashMap<String, u32>,
    /// Hosts that count as down, with the last failure.
    down: HashMap<String, (u32, String)>,
}

/// One attempt's failure, before the retry decision.
enum AttemptError {
    /// Worth another try; `wait` is the server's Retry-After, if any.
    Transient {
        reason: String,
        wait: Option<Duration>,
    },
    /// The host could not be connected to (refused, unknown name, TLS handshake); retried like
    /// a transient failure, and counted towards [`FetchError::HostDown`].
    Unreachable(String),
    /// Verification failed; retried like a transient failure but reported as such.
    Mismatch(String),
    /// Final.
    Fatal(FetchError),
}

/// The HTTP client of nixipfs: shared by every request of a run.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: Arc<FetchConfig>,
    permits: Arc<Semaphore>,
    /// Bytes of response bodies held in memory by all downloads together, at most
    /// [`BUFFER_BUDGET`]: a disk slower than the network then slows the downloads instead
    /// of filling memory.
    buffered: Arc<Semaphore>,
    /// Memory of the NAR decoders of all downloads and checks together, in KiB, at most
    /// [`decode_budget`] (see [`ExpectedNar::decoder_memory`]): however many downloads run at
    /// once, only so many large NARs are decompressed at a time.
    decoding: Arc<Semaphore>,
    /// The size of `decoding`, in KiB.
    decode_kib: usize,
    hosts: Arc<Mutex<HostHealth>>,
}

impl Fetcher {
    /// Builds the client.
    pub fn new(config: FetchConfig) -> Result<Fetcher, FetchError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("nixipfs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.stall_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::limited(10));
        for path in &config.ca_certs {
            for cert in read_ca_certs(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| FetchError::Request {
            url: String::new(),
            reason: format!("cannot set up the HTTP client: {e}"),
        })?;
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Ok(Fetcher {
            client,
            config: Arc::new(config),
            permits,
            buffered: Arc::new(Semaphore::new(BUFFER_BUDGET)),
            decoding: Arc::new(Semaphore::new(decode_budget() >> 10)),
            decode_kib: decode_budget() >> 10,
            hosts: Arc::default(),
        })
    }

    /// Waits for the share of the decoders' memory budget that checking `nar` takes (nothing
    /// when no NAR is checked); the share is given back when the permit is dropped. Callers
    /// that decompress a NAR outside a download (a check of a file on disk) take one too.
    pub async fn decode_permit(&self, nar: Option<ExpectedNar>) -> Option<OwnedSemaphorePermit> {
        let kib = (nar?.decoder_memory() >> 10).clamp(1, self.decode_kib) as u32;
        self.decoding.clone().acquire_many_owned(kib).await.ok()
    }

    /// The settings in force.
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Fetches a small body (narinfo, JSON) into memory, refusing more than `limit` bytes.
    pub async fn get_bytes(
        &self,
        url: &str,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<Bytes, FetchError> {
        self.with_retries(url, || self.get_bytes_once(url, accept, limit))
            .await
    }

    async fn get_bytes_once(
        &self,
        url: &str,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<Bytes, AttemptError> {
        let mut req = self.client.get(url);
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        let mut resp = self.send(url, req).await?;
        if let Some(len) = resp.content_length() {
            if len > limit {
                return Err(AttemptError::Fatal(FetchError::TooLarge {
                    url: url.to_string(),
                    limit,
                }));
            }
        }
        let mut buf = BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() as u64 + chunk.len() as u64 > limit {
                        return Err(AttemptError::Fatal(FetchError::TooLarge {
                            url: url.to_string(),
                            limit,
                        }));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf.freeze()),
                Err(e) => return Err(transient(&e)),
            }
        }
    }

    /// Downloads `url` to `dest`, verified against `expected`. The temp file lives in the
    /// directory of `dest` (which must exist); `dest` only ever holds a complete, verified file.
    pub async fn download(
        &self,
        url: &str,
        dest: &Path,
        expected: Expected,
    ) -> Result<Downloaded, FetchError> {
        let fsync = self.config.fsync;
        self.with_retries(url, || self.download_once(url, dest, expected, fsync))
            .await
    }

    /// Like [`Fetcher::download`], but without the fsync before the rename: for callers that
    /// make a whole batch durable at once ([`crate::fsutil::sync_filesystem`]) before they
    /// record the files anywhere.
    pub async fn download_unsynced(
        &self,
        url: &str,
        dest: &Path,
        expected: Expected,
    ) -> Result<Downloaded, FetchError> {
        self.with_retries(url, || self.download_once(url, dest, expected, false))
            .await
    }

    async fn download_once(
        &self,
        url: &str,
        dest: &Path,
        expected: Expected,
        fsync: bool,
    ) -> Result<Downloaded, AttemptError> {
        // Before the request (and before any share of the buffer budget, as every download
        // takes them in this order): the decoder's memory.
        let _decoding = self.decode_permit(expected.nar).await;
        let mut resp = self.send(url, self.client.get(url)).await?;
        if let (Some(len), Some(want)) = (resp.content_length(), expected.size) {
            if len != want {
                return Err(AttemptError::Mismatch(format!(
                    "the server announced {len} bytes, the narinfo says {want}"
                )));
            }
        }
        let dir = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
        if let Some(size) = expected.size.filter(|&s| s <= IN_MEMORY_MAX) {
            return self
                .download_small(resp, dir, dest, expected, size, fsync)
                .await;
        }
        // Hashing and writing happen on a blocking thread, fed through a bounded channel, so the
        // async threads only move bytes off the network. The writer keeps the file only when told
        // that the body ended normally; a closed channel means "discard".
        let (tx, rx) = mpsc::channel::<WriterMsg>(4);
        let dest_owned = dest.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            write_verified(rx, &dir, &dest_owned, expected, fsync)
        });
        let mut received = 0u64;
        let streamed: Result<(), AttemptError> = async {
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        received += chunk.len() as u64;
                        if let Some(size) = expected.size.filter(|&s| received > s) {
                            return Err(AttemptError::Mismatch(format!(
                                "the server sent more than the {size} bytes expected"
                            )));
                        }
                        let held = self.hold(chunk.len()).await;
                        if tx.send(WriterMsg::Chunk(chunk, held)).await.is_err() {
                            // The writer failed; its error is reported below.
                            return Ok(());
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(WriterMsg::End).await;
                        return Ok(());
                    }
                    Err(e) => return Err(transient(&e)),
                }
            }
        }
        .await;
        drop(tx);
        let written = writer.await;
        streamed?;
        match written {
            Ok(Ok(WriterOutcome::Stored(d))) => Ok(d),
            Ok(Ok(WriterOutcome::Mismatch(m))) => Err(AttemptError::Mismatch(m)),
            Ok(Ok(WriterOutcome::Discarded)) => Err(AttemptError::Transient {
                reason: "the download was interrupted".into(),
                wait: None,
            }),
            Ok(Err(e)) => Err(AttemptError::Fatal(e)),
            Err(join) => Err(AttemptError::Fatal(FetchError::Io {
                path: dest.to_path_buf(),
                source: std::io::Error::other(format!("writer task failed: {join}")),
            })),
        }
    }

    /// A body of at most [`IN_MEMORY_MAX`] bytes: received and hashed here, then written in
    /// one blocking call. Small NARs are the common case (most of a closure), and this costs one
    /// hand-over to a blocking thread per file instead of one per chunk.
    async fn download_small(
        &self,
        mut resp: reqwest::Response,
        dir: PathBuf,
        dest: &Path,
        expected: Expected,
        size: u64,
        fsync: bool,
    ) -> Result<Downloaded, AttemptError> {
        let _held = self.hold(size as usize).await;
        let mut body = BytesMut::with_capacity(size as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > size {
                        return Err(AttemptError::Mismatch(format!(
                            "the server sent more than the {size} bytes expected"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(transient(&e)),
            }
        }
        let dest_owned = dest.to_path_buf();
        let body = body.freeze();
        let written =
            tokio::task::spawn_blocking(move || -> io::Result<Result<Downloaded, String>> {
                let mut tap = Tap::new(&body[..]);
                let nar = read_through(&mut tap, expected.nar)?;
                let (sha256, size) = tap.hasher.finish();
                let got = Downloaded { size, sha256 };
                if let Err(mismatch) = expected.check(got).and(nar) {
                    return Ok(Err(mismatch));
                }
                let mut tmp = fsutil::temp_file_in(&dir)?;
                tmp.write_all(&body)?;
                mark_nar_checked(tmp.as_file(), &expected);
                fsutil::persist(tmp, &dest_owned, fsync)?;
                Ok(Ok(got))
            })
            .await;
        match written {
            Ok(Ok(Ok(got))) => Ok(got),
            Ok(Ok(Err(mismatch))) => Err(AttemptError::Mismatch(mismatch)),
            Ok(Err(source)) => Err(AttemptError::Fatal(FetchError::Io {
                path: dest.to_path_buf(),
                source,
            })),
            Err(join) => Err(AttemptError::Fatal(FetchError::Io {
                path: dest.to_path_buf(),
                source: io::Error::other(format!("writer task failed: {join}")),
            })),
        }
    }

    /// Takes `bytes` of the buffer budget (all of it at most), waiting until it is free. `None`
    /// only if the budget was closed, which does not happen.
    async fn hold(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = bytes.clamp(1, BUFFER_BUDGET) as u32;
        self.buffered.clone().acquire_many_owned(n).await.ok()
    }

    async fn send(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AttemptError> {
        let resp = req.send().await.map_err(|e| {
            let reason = error_chain(&e);
            if e.is_builder() || e.is_redirect() {
                AttemptError::Fatal(FetchError::Request {
                    url: url.to_string(),
                    reason,
                })
            } else if is_untrusted_certificate(&e) {
                // Asking again gets the same certificate.
                AttemptError::Fatal(FetchError::Request {
                    url: url.to_string(),
                    reason: format!(
                        "the server's TLS certificate is not trusted ({reason}); a private \
                         certificate authority can be trusted with --ca-cert FILE"
                    ),
                })
            } else if e.is_connect() && !e.is_timeout() {
                // Nothing listens, the name does not resolve, or the TLS handshake failed; a
                // slow server (a timeout) is not counted.
                AttemptError::Unreachable(reason)
            } else {
                transient(&e)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            let detail = body_detail(resp).await;
            return Err(AttemptError::Fatal(FetchError::NotFound {
                url: url.to_string(),
                status: status.as_u16(),
                detail,
            }));
        }
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Err(AttemptError::Transient {
                reason: format!("HTTP {status}"),
                wait: retry_after(resp.headers()),
            });
        }
        let detail = body_detail(resp).await;
        Err(AttemptError::Fatal(FetchError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            detail,
        }))
    }

    async fn with_retries<T, F, Fut>(&self, url: &str, mut attempt: F) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        let max_attempts = self.config.retries + 1;
        let host = host_key(url);
        let mut n = 0;
        loop {
            n += 1;
            if let Some(down) = self.host_down(&host) {
                return Err(down);
            }
            let result = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| FetchError::Request {
                        url: url.to_string(),
                        reason: "the fetcher was shut down".into(),
                    })?;
                attempt().await
            };
            if !matches!(result, Err(AttemptError::Unreachable(_))) {
                self.host_answered(&host);
            }
            let unreachable = matches!(result, Err(AttemptError::Unreachable(_)));
            let (reason, wait, mismatch) = match result {
                Ok(v) => return Ok(v),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Transient { reason, wait }) => (reason, wait, false),
                Err(AttemptError::Unreachable(reason)) => {
                    if let Some(down) = self.host_unreachable(&host, n, &reason) {
                        return Err(down);
                    }
                    (reason, None, false)
                }
                Err(AttemptError::Mismatch(m)) => (m, None, true),
            };
            if n >= max_attempts {
                return Err(if mismatch {
                    FetchError::Verification {
                        url: url.to_string(),
                        attempts: n,
                        mismatch: reason,
                    }
                } else {
                    FetchError::Exhausted {
                        url: url.to_string(),
                        attempts: n,
                        last: reason,
                    }
                });
            }
            let pause = self.backoff(n, wait);
            if unreachable {
                // Said once, for the host, should it stay unreachable.
                tracing::debug!(
                    "{url}: {reason}; retrying in {:.1} s (attempt {}/{max_attempts})",
                    pause.as_secs_f64(),
                    n + 1
                );
            } else {
                tracing::warn!(
                    "{url}: {reason}; retrying in {:.1} s (attempt {}/{max_attempts})",
                    pause.as_secs_f64(),
                    n + 1
                );
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// [`FetchError::HostDown`] if the host of `url` counts as down: requests to it fail at
    /// once, and a pipeline stops on it rather than failing every remaining item.
    pub fn host_down_for(&self, url: &str) -> Option<FetchError> {
        self.host_down(&host_key(url))
    }

    /// [`FetchError::HostDown`] if `host` counts as down.
    fn host_down(&self, host: &str) -> Option<FetchError> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .down
            .get(host)
            .map(|(failures, last)| FetchError::HostDown {
                host: host.to_string(),
                failures: *failures,
                last: last.clone(),
            })
    }

    /// Records an answer from `host`: its failures in a row start again from zero.
    fn host_answered(&self, host: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.failures.remove(host);
    }

    /// Records a connection failure of attempt `n` to `host`; returns
    /// [`FetchError::HostDown`] when it makes the host count as down: [`HOST_DOWN_AFTER`]
    /// failures in a row, the last on a retry (so that one burst of parallel requests failing
    /// together during a moment's outage is not enough).
    fn host_unreachable(&self, host: &str, n: u32, reason: &str) -> Option<FetchError> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((failures, last)) = hosts.down.get(host) {
            return Some(FetchError::HostDown {
                host: host.to_string(),
                failures: *failures,
                last: last.clone(),
            });
        }
        let count = hosts.failures.entry(host.to_string()).or_insert(0);
        *count += 1;
        let failures = *count;
        if failures < HOST_DOWN_AFTER || n < 2 {
            return None;
        }
        hosts
            .down
            .insert(host.to_string(), (failures, reason.to_string()));
        Some(FetchError::HostDown {
            host: host.to_string(),
            failures,
            last: reason.to_string(),
        })
    }

    /// The pause after failed attempt `n` (1-based).
    fn backoff(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let max = self.config.backoff_max;
        if let Some(wait) = retry_after {
            return wait.min(max);
        }
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << (n - 1).min(20));
        let jitter = 0.5 + rand::random::<f64>();
        exp.mul_f64(jitter).min(max)
    }
}

/// The certificates of a PEM file (one or more `BEGIN CERTIFICATE` blocks).
fn read_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let err = |reason: String| FetchError::CaCert {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(err("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Bytes of response bodies all downloads together may hold in memory (see [`Fetcher`]).
pub const BUFFER_BUDGET: usize = 8 << 20;

/// Bytes the NAR decoders of all downloads and checks together may use (see [`Fetcher`]): one
/// window of the default xz preset (8 MiB) per core, for 2 to 8 cores. Decoding is CPU-bound,
/// so more large NARs decoded at once than there are cores would only hold more memory.
pub fn decode_budget() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    DECODER_WINDOW * cores.clamp(2, 8)
}

/// The memory an xz or zstd decoder of a large NAR takes: the default presets' window.
const DECODER_WINDOW: usize = 8 << 20;

/// Downloads of at most this many bytes (by the size expected) are received in memory and
/// written at once; larger ones stream through a blocking writer.
pub const IN_MEMORY_MAX: u64 = 256 * 1024;

enum WriterMsg {
    /// Bytes to write, with their share of the buffer budget (given back once written).
    Chunk(Bytes, Option<OwnedSemaphorePermit>),
    End,
}

enum WriterOutcome {
    Stored(Downloaded),
    Mismatch(String),
    Discarded,
}

/// The blocking half of a download: writes and hashes the chunks into a temp file next to `dest`
/// (decompressing them on the way and hashing the NAR inside when `expected.nar` asks for it),
/// and renames it into place only when the body ended normally and matches `expected`.
fn write_verified(
    mut rx: mpsc::Receiver<WriterMsg>,
    dir: &Path,
    dest: &Path,
    expected: Expected,
    fsync: bool,
) -> Result<WriterOutcome, FetchError> {
    let io_err = |source| FetchError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let mut tmp = fsutil::temp_file_in(dir).map_err(io_err)?;
    let (nar, got, complete) = {
        let incoming = Incoming {
            rx: &mut rx,
            out: io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut()),
            chunk: Bytes::new(),
            ended: false,
        };
        let mut tap = Tap::new(incoming);
        let nar = read_through(&mut tap, expected.nar);
        let Tap {
            inner: mut incoming,
            hasher,
            failed,
        } = tap;
        if let Some(e) = failed {
            if e.kind() == io::ErrorKind::UnexpectedEof && !incoming.ended {
                return Ok(WriterOutcome::Discarded);
            }
            return Err(io_err(e));
        }
        let nar = nar.map_err(io_err)?;
        incoming.out.flush().map_err(io_err)?;
        let (sha256, size) = hasher.finish();
        (nar, Downloaded { size, sha256 }, incoming.ended)
    };
    if !complete {
        return Ok(WriterOutcome::Discarded);
    }
    if let Err(mismatch) = expected.check(got).and(nar) {
        return Ok(WriterOutcome::Mismatch(mismatch));
    }
    mark_nar_checked(tmp.as_file(), &expected);
    fsutil::persist(tmp, dest, fsync).map_err(io_err)?;
    Ok(WriterOutcome::Stored(got))
}

/// The body of a download as a reader, on the writer's thread: each chunk is written to `out`
/// as it is taken. The end of the body reads as the end of the file; a channel closed before
/// it (the download was abandoned) as [`io::ErrorKind::UnexpectedEof`].
struct Incoming<'a, W: Write> {
    rx: &'a mut mpsc::Receiver<WriterMsg>,
    out: W,
    chunk: Bytes,
    ended: bool,
}

impl<W: Write> Read for Incoming<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&self.chunk.split_to(n));
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(WriterMsg::Chunk(chunk, _held)) => {
                    self.out.write_all(&chunk)?;
                    self.chunk = chunk;
                }
                Some(WriterMsg::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download was interrupted",
                    ))
                }
            }
        }
    }
}

/// The `host:port` of `url` (the URL itself if it does not parse): what
/// [`FetchError::HostDown`] is counted for.
fn host_key(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

fn transient(e: &reqwest::Error) -> AttemptError {
    AttemptError::Transient {
        reason: error_chain(e),
        wait: None,
    }
}

/// Whether the TLS handshake failed because the server's certificate is not trusted (asking
/// again would get the same certificate).
fn is_untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        // An I/O error's `source` skips its payload (it is the payload's source): go into
        // the payload itself.
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(payload) => Some(payload as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// The error with its sources, e.g. "error sending request: connection reset by peer".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The most of an error body read for its message: a server cannot make an error cost more.
const ERROR_BODY_MAX: usize = 64 * 1024;

/// A short excerpt of an error body, e.g. Hydra's `{"error": "..."}` message. At most
/// [`ERROR_BODY_MAX`] bytes of the body are read.
async fn body_detail(mut resp: reqwest::Response) -> Option<String> {
    let mut bytes = BytesMut::new();
    while bytes.len() < ERROR_BODY_MAX {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_MAX - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(_) if bytes.is_empty() => return None,
            Err(_) => break,
        }
    }
    let head = &bytes[..bytes.len().min(4096)];
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(head) {
        if let Some(msg) = v.get("error").and_then(|m| m.as_str()) {
            return Some(msg.trim().to_string());
        }
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(200)]);
    let text = text.trim();
    (!text.is_empty() && !text.starts_with('<')).then(|| text.to_string())
}

/// A server's message for an error's text: `": message"`, or nothing.
fn colon(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map_or_else(String::new, |d| format!(": {d}"))
}

/// Checks a file on disk against `expected` by reading it through (blocking), the NAR inside
/// included when `expected.nar` asks for it.
pub fn verify_file(path: &Path, expected: Expected) -> io::Result<Result<(), String>> {
    verify_reader(std::fs::File::open(path)?, expected)
}

/// Checks the bytes of `reader` against `expected` (blocking).
fn verify_reader(reader: impl Read, expected: Expected) -> io::Result<Result<(), String>> {
    let mut tap = Tap::new(reader);
    let nar = read_through(&mut tap, expected.nar);
    if let Some(e) = tap.failed.take() {
        return Err(e);
    }
    let nar = nar?;
    let (sha256, size) = tap.hasher.finish();
    Ok(expected.check(Downloaded { size, sha256 }).and(nar))
}

/// The bytes of a file as they are read, hashed and counted, with the first error of the reader
/// beneath kept aside: a decoder's complaint about the bytes is then told apart from a failure
/// to read them.
struct Tap<R> {
    inner: R,
    hasher: Sha256Hasher,
    failed: Option<io::Error>,
}

impl<R: Read> Tap<R> {
    fn new(inner: R) -> Tap<R> {
        Tap {
            inner,
            hasher: Sha256Hasher::new(),
            failed: None,
        }
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let message = e.to_string();
                self.failed.get_or_insert(e);
                Err(io::Error::other(message))
            }
        }
    }
}

/// Reads `tap` to its end. With `nar`, the bytes are decompressed on the way and the NAR inside
/// is checked against it: `Ok(Err(..))` says how it differs. An error reading `tap` is left in
/// `tap.failed` for the caller (the result is then meaningless).
fn read_through<R: Read>(
    tap: &mut Tap<R>,
    nar: Option<ExpectedNar>,
) -> io::Result<Result<(), String>> {
    let mut src = io::BufReader::with_capacity(64 * 1024, tap);
    let Some(nar) = nar else {
        io::copy(&mut src, &mut io::sink())?;
        return Ok(Ok(()));
    };
    let mut hasher = Sha256Hasher::new();
    let decoded = {
        let mut decoder = Decompressor::new(nar.compression, &mut src)?;
        // One byte more than NarSize is enough to know the NAR is too long.
        copy_into_hasher(
            &mut (&mut decoder).take(nar.size.saturating_add(1)),
            &mut hasher,
        )
    };
    // Whatever the decoder left unread is still part of the file.
    let drained = io::copy(&mut src, &mut io::sink());
    if let Err(e) = decoded {
        drained?;
        return Ok(Err(format!(
            "the file does not decompress as {}: {e}",
            nar.compression
        )));
    }
    drained?;
    let (hash, size) = hasher.finish();
    if size != nar.size {
        return Ok(Err(if size > nar.size {
            format!(
                "the NAR inside is longer than the narinfo's NarSize {}",
                nar.size
            )
        } else {
            format!(
                "the NAR inside is {size} bytes, the narinfo's NarSize says {}",
                nar.size
            )
        }));
    }
    if hash != nar.hash {
        return Ok(Err(format!(
            "the NAR inside has NarHash {hash}, the narinfo says {}",
            nar.hash
        )));
    }
    Ok(Ok(()))
}

fn copy_into_hasher(src: &mut impl Read, hasher: &mut Sha256Hasher) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The extended attribute that marks a NAR file as checked down to its NAR.
const CHECKED_XATTR: &str = "user.nixipfs.checked";

/// The marker's value for a file checked against `expected`: every field it was checked
/// against, so that a narinfo that says anything else does not take the file on trust.
fn checked_marker(expected: &Expected) -> Option<String> {
    let nar = expected.nar?;
    Some(format!(
        "nixipfs-checked-1 {} {} {} {} {}",
        expected.sha256?, expected.size?, nar.compression, nar.hash, nar.size
    ))
}

/// Marks `file` (a NAR file that just passed a check against `expected`, NAR included) as
/// checked. The marker is an extended attribute of the file: it lives in the file's inode, so
/// it reaches the final name together with the file's bytes (it is set on the temp file before
/// the rename), follows every hard link, and goes away when the file is replaced. A file system
/// without user extended attributes gets no marker, said once: its NARs are then checked again
/// on every run.
pub fn mark_nar_checked(file: &std::fs::File, expected: &Expected) {
    let Some(value) = checked_marker(expected) else {
        return;
    };
    if let Err(e) = rustix::fs::fsetxattr(
        file,
        CHECKED_XATTR,
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    ) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cannot mark checked NAR files (extended attribute {CHECKED_XATTR}: {e}); \
                 NARs already in the cache are decompressed and checked again on every run"
            );
        }
    }
}

/// Whether the file at `path` carries the marker of a full check against `expected`
/// ([`mark_nar_checked`]).
pub fn nar_checked(path: &Path, expected: &Expected) -> bool {
    let Some(want) = checked_marker(expected) else {
        return false;
    };
    let mut buf = [0u8; 512];
    match rustix::fs::getxattr(path, CHECKED_XATTR, &mut buf[..]) {
        Ok(n) => buf[..n] == *want.as_bytes(),
        Err(_) => false,
    }
}

/// Checks the file at `path` against `expected` and, when it passes with its NAR, marks it
/// as checked (blocking).
pub fn verify_and_mark(path: &Path, expected: Expected) -> io::Result<Result<(), String>> {
    let file = std::fs::File::open(path)?;
    let result = verify_reader(&file, expected)?;
    if result.is_ok() && expected.nar.is_some() {
        mark_nar_checked(&file, &expected);
    }
    Ok(result)
}
