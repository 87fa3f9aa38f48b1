//! HTTP fetching with bounded concurrency, timeouts, retries and verified atomic downloads.
//!
//! One [`Fetcher`] holds one `reqwest` client (rustls, connection reuse, HTTP/2 where the server
//! offers it) and one semaphore that bounds the requests in flight. Transient failures (connection
//! errors, stalls, 408, 429, 5xx, bodies cut short) are retried with exponential backoff and jitter,
//! honouring `Retry-After`; a 404 is reported at once as [`FetchError::NotFound`] so callers can
//! branch on it. Downloads stream into a temp file in the destination directory while hashing,
//! are checked against the expected size and sha256, and only then renamed into place; a mismatch
//! deletes the temp file and counts as a failed attempt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::fsutil;
use crate::hash::Sha256Hash;

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
}

impl FetchError {
    /// Whether this is a 404/410 from the server.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }
}

/// One attempt's failure, before the retry decision.
enum AttemptError {
    /// Worth another try; `wait` is the server's Retry-After, if any.
    Transient {
        reason: String,
        wait: Option<Duration>,
    },
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
        })
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
        let got = Downloaded {
            size: body.len() as u64,
            sha256: crate::hash::sha256(&body),
        };
        expected.check(got).map_err(AttemptError::Mismatch)?;
        let dest_owned = dest.to_path_buf();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut tmp = fsutil::temp_file_in(&dir)?;
            tmp.write_all(&body)?;
            fsutil::persist(tmp, &dest_owned, fsync)
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(got),
            Ok(Err(source)) => Err(AttemptError::Fatal(FetchError::Io {
                path: dest.to_path_buf(),
                source,
            })),
            Err(join) => Err(AttemptError::Fatal(FetchError::Io {
                path: dest.to_path_buf(),
                source: std::io::Error::other(format!("writer task failed: {join}")),
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
            } else if reason.contains("invalid peer certificate") {
                // Asking again gets the same certificate.
                AttemptError::Fatal(FetchError::Request {
                    url: url.to_string(),
                    reason: format!(
                        "the server's TLS certificate is not trusted ({reason}); a private \
                         certificate authority can be trusted with --ca-cert FILE"
                    ),
                })
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
        let mut n = 0;
        loop {
            n += 1;
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
            let (reason, wait, mismatch) = match result {
                Ok(v) => return Ok(v),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Transient { reason, wait }) => (reason, wait, false),
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
            tracing::warn!(
                "{url}: {reason}; retrying in {:.1} s (attempt {}/{max_attempts})",
                pause.as_secs_f64(),
                n + 1
            );
            tokio::time::sleep(pause).await;
        }
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

/// The blocking half of a download: writes and hashes the chunks into a temp file next to `dest`,
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
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut complete = false;
    {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                WriterMsg::Chunk(chunk, _held) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    out.write_all(&chunk).map_err(io_err)?;
                }
                WriterMsg::End => {
                    complete = true;
                    break;
                }
            }
        }
        out.flush().map_err(io_err)?;
    }
    if !complete {
        return Ok(WriterOutcome::Discarded);
    }
    let got = Downloaded {
        size,
        sha256: Sha256Hash(hasher.finalize().into()),
    };
    if let Err(mismatch) = expected.check(got) {
        return Ok(WriterOutcome::Mismatch(mismatch));
    }
    fsutil::persist(tmp, dest, fsync).map_err(io_err)?;
    Ok(WriterOutcome::Stored(got))
}

fn transient(e: &reqwest::Error) -> AttemptError {
    AttemptError::Transient {
        reason: error_chain(e),
        wait: None,
    }
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

/// A short excerpt of an error body, e.g. Hydra's `{"error": "..."}` message.
async fn body_detail(resp: reqwest::Response) -> Option<String> {
    let bytes = resp.bytes().await.ok()?;
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

/// Checks a file on disk against `expected` by reading it through (blocking).
pub fn verify_file(path: &Path, expected: Expected) -> std::io::Result<Result<(), String>> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    let got = Downloaded {
        size,
        sha256: Sha256Hash(hasher.finalize().into()),
    };
    Ok(expected.check(got))
}
