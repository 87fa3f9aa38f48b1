//! An S3-compatible bucket, through the `object_store` crate: streamed uploads (multipart
//! above [`SINGLE_PUT_MAX`]), one paginated listing, small objects read and written whole, and
//! the mirror's lock.
//!
//! Every key is under the location's prefix; callers name objects relative to it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    PutMultipartOptions, PutOptions, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::fetch::FetchConfig;

/// Files up to this size are uploaded with one PUT; larger ones in parts of this size.
pub const SINGLE_PUT_MAX: usize = 8 << 20;

/// Uploads at once per bucket: with a part in flight and one filling, memory stays under
/// `2 * SINGLE_PUT_MAX * UPLOADS`.
const UPLOADS: usize = 3;

/// Where in which bucket, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The S3 API endpoint (e.g. `http://127.0.0.1:3900`); `None`: AWS.
    pub endpoint: Option<String>,
    /// The region (`garage` for Garage); `None`: `AWS_REGION` or `us-east-1`.
    pub region: Option<String>,
}

impl S3Location {
    /// Parses `s3://BUCKET/PREFIX`.
    pub fn parse(target: &str) -> Result<S3Location> {
        let Some(rest) = target.strip_prefix("s3://") else {
            bail!("{target}: not an s3:// URL (expected s3://BUCKET/PREFIX)");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{target}: the bucket name is missing (expected s3://BUCKET/PREFIX)");
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|p| p == "." || p == ".." || (p.is_empty() && !prefix.is_empty()))
        {
            bail!("{target}: the prefix may not have empty, `.` or `..` parts");
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
        })
    }

    /// `s3://BUCKET/PREFIX`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A bucket under a prefix.
#[derive(Clone, Debug)]
pub struct S3Store {
    store: Arc<AmazonS3>,
    location: S3Location,
    /// The region requests are signed for.
    region: String,
    /// The S3 API endpoint, without a trailing `/`.
    endpoint: String,
    /// For the requests `object_store` cannot make (a PUT with a website redirect).
    http: reqwest::Client,
    retries: u32,
    /// Relative to the bucket: the location's prefix, and `sub` below it.
    base: String,
    uploads: Arc<Semaphore>,
}

impl S3Store {
    /// Connects to the bucket at `location` (nothing is sent yet). Credentials come from
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or else from the
    /// profile `AWS_PROFILE` (default `default`) of `~/.aws/credentials`.
    /// Requests are retried as `fetch` says (`--retries`, `--retry-delay`), and connections
    /// given its connect timeout.
    pub fn connect(location: &S3Location, fetch: &FetchConfig) -> Result<S3Store> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: fetch.backoff_base,
                max_backoff: fetch.backoff_max,
                base: 2.0,
            },
            max_retries: fetch.retries as usize,
            retry_timeout: Duration::from_secs(180),
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(ClientOptions::new().with_connect_timeout(fetch.connect_timeout));
        if let Some(endpoint) = &location.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let region = location
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        builder = builder.with_region(&region);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            if let Some((id, secret)) = profile_credentials()? {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            }
        }
        let store = builder
            .build()
            .with_context(|| format!("cannot use the bucket {}", location.url()))?;
        let endpoint = location
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"))
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(fetch.connect_timeout)
            .timeout(Duration::from_secs(180))
            .build()
            .context("cannot make an HTTP client")?;
        Ok(S3Store {
            store: Arc::new(store),
            region,
            endpoint,
            http,
            retries: fetch.retries,
            location: location.clone(),
            base: location.prefix.clone(),
            uploads: Arc::new(Semaphore::new(UPLOADS)),
        })
    }

    /// The same bucket under `PREFIX/sub`.
    pub fn sub(&self, sub: &str) -> S3Store {
        let mut s = self.clone();
        s.base = join(&self.base, sub);
        s
    }

    /// `s3://BUCKET/PREFIX/SUB/rel`, for messages.
    pub fn url_of(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.location.bucket, join(&self.base, rel))
    }

    fn key(&self, rel: &str) -> Result<Key> {
        Key::parse(join(&self.base, rel)).with_context(|| format!("invalid object key {rel:?}"))
    }

    /// Every object under the prefix (one paginated listing): key relative to the prefix →
    /// size.
    pub async fn list(&self) -> Result<HashMap<String, u64>> {
        Ok(self
            .list_tagged()
            .await?
            .into_iter()
            .map(|(k, (size, _))| (k, size))
            .collect())
    }

    /// [`S3Store::list`] with each object's ETag (quotes removed), when the store gives one.
    pub async fn list_tagged(&self) -> Result<HashMap<String, (u64, Option<String>)>> {
        let prefix = if self.base.is_empty() {
            None
        } else {
            Some(Key::parse(&self.base)?)
        };
        let strip = if self.base.is_empty() {
            String::new()
        } else {
            format!("{}/", self.base)
        };
        let mut listing = self.store.list(prefix.as_ref());
        let mut out = HashMap::new();
        while let Some(meta) = listing
            .try_next()
            .await
            .with_context(|| format!("cannot list {}", self.url_of("")))?
        {
            let key = meta.location.as_ref();
            if let Some(rel) = key.strip_prefix(&strip) {
                out.insert(
                    rel.to_string(),
                    (meta.size, meta.e_tag.as_deref().map(unquote)),
                );
            }
        }
        Ok(out)
    }

    /// The object `rel`, whole; `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let key = self.key(rel)?;
        match self.store.get(&key).await {
            Ok(r) => {
                Ok(Some(r.bytes().await.with_context(|| {
                    format!("cannot read {}", self.url_of(rel))
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.url_of(rel))),
        }
    }

    /// Writes the object `rel` (replacing it).
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let key = self.key(rel)?;
        self.store
            .put(&key, bytes.into())
            .await
            .with_context(|| format!("cannot write {}", self.url_of(rel)))?;
        Ok(())
    }

    /// The size and user metadata (`x-amz-meta-*`, names without the prefix) of the object
    /// `rel`; `None` when there is none.
    pub async fn head(&self, rel: &str) -> Result<Option<ObjectHead>> {
        let key = self.key(rel)?;
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&key, opts).await {
            Ok(r) => {
                let meta = r
                    .attributes
                    .iter()
                    .filter_map(|(k, v)| match k {
                        Attribute::Metadata(name) => Some((name.to_string(), v.to_string())),
                        _ => None,
                    })
                    .collect();
                Ok(Some(ObjectHead {
                    size: r.meta.size,
                    meta,
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.url_of(rel))),
        }
    }

    /// Writes the object `rel` (replacing it) with the user metadata `meta`.
    pub async fn put_with(&self, rel: &str, bytes: Bytes, meta: &[(&str, String)]) -> Result<()> {
        let key = self.key(rel)?;
        let opts = PutOptions {
            attributes: attributes(meta),
            ..Default::default()
        };
        self.store
            .put_opts(&key, bytes.into(), opts)
            .await
            .with_context(|| format!("cannot write {}", self.url_of(rel)))?;
        Ok(())
    }

    /// The path of the object `rel` on the bucket's website endpoint, `/PREFIX/SUB/rel` (the
    /// website serves the bucket's keys from its root).
    pub fn web_path_of(&self, rel: &str) -> String {
        format!("/{}", join(&self.base, rel))
    }

    /// Writes the object `rel` carrying `x-amz-website-redirect-location: location` (the website
    /// endpoint answers it with a redirect there), with `body`. `object_store` cannot send that
    /// header, so this PUT is made here, signed by `object_store`'s SigV4 signer
    /// ([`AwsAuthorizer`]) with the store's own credentials; retried as `--retries` says.
    pub async fn put_redirect(&self, rel: &str, location: &str, body: Bytes) -> Result<()> {
        let full = join(&self.base, rel);
        self.key(rel)?;
        let url = format!(
            "{}/{}/{}",
            self.endpoint,
            uri_encode(&self.location.bucket, false),
            uri_encode(&full, true)
        );
        let what = || format!("cannot write {}", self.url_of(rel));
        let uri: http::Uri = url.parse().with_context(what)?;
        let redirect = http::HeaderValue::from_str(location)
            .with_context(|| format!("{location:?} cannot be sent as a redirect location"))?;
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .with_context(what)?;
        let mut attempt = 0;
        loop {
            let mut request = HttpRequest::new(HttpRequestBody::from(body.clone()));
            *request.method_mut() = http::Method::PUT;
            *request.uri_mut() = uri.clone();
            let headers = request.headers_mut();
            headers.insert("x-amz-website-redirect-location", redirect.clone());
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
            let mut put = self.http.put(&url).body(body.clone());
            for (name, value) in request.headers() {
                put = put.header(name, value);
            }
            let problem = match put.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let problem = format!("{status}: {}", text.trim());
                    if !status.is_server_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                    {
                        return Err(anyhow::anyhow!(problem)).with_context(what);
                    }
                    problem
                }
                Err(e) => e.to_string(),
            };
            if attempt >= self.retries {
                return Err(anyhow::anyhow!(problem)).with_context(what);
            }
            attempt += 1;
            tracing::debug!("{}: {problem}; retrying", self.url_of(rel));
            tokio::time::sleep(Duration::from_millis(500 << attempt.min(6))).await;
        }
    }

    /// Removes the object `rel` (no error when there is none).
    pub async fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.url_of(rel))),
        }
    }

    /// Uploads the file at `file` as `rel`, streamed: one PUT up to [`SINGLE_PUT_MAX`], a
    /// multipart upload with at most one part in flight above. The object exists only once
    /// the upload is complete.
    pub async fn upload_file(&self, file: &Path, rel: &str) -> Result<u64> {
        Ok(self.upload_file_with(file, rel, &[]).await?.0)
    }

    /// [`S3Store::upload_file`], the object carrying the user metadata `meta`; returns its size
    /// and the ETag the store gave it (quotes removed), if any.
    pub async fn upload_file_with(
        &self,
        file: &Path,
        rel: &str,
        meta: &[(&str, String)],
    ) -> Result<(u64, Option<String>)> {
        let _permit = self.uploads.acquire().await?;
        let key = self.key(rel)?;
        let url = self.url_of(rel);
        let mut f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let size = f
            .metadata()
            .await
            .with_context(|| format!("cannot read {}", file.display()))?
            .len();
        let part = part_size();
        if size <= part as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            let opts = PutOptions {
                attributes: attributes(meta),
                ..Default::default()
            };
            let put = self
                .store
                .put_opts(&key, Bytes::from(buf).into(), opts)
                .await
                .with_context(|| format!("cannot upload {} to {url}", file.display()))?;
            return Ok((size, put.e_tag.as_deref().map(unquote)));
        }
        let upload = self
            .store
            .put_multipart_opts(
                &key,
                PutMultipartOptions {
                    attributes: attributes(meta),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("cannot start the upload of {url}"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let mut buf = vec![0u8; 1 << 20];
        let result: Result<()> = async {
            loop {
                let n = f
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("cannot read {}", file.display()))?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(1)
                    .await
                    .with_context(|| format!("cannot upload {} to {url}", file.display()))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => {
                let put = writer
                    .finish()
                    .await
                    .with_context(|| format!("cannot upload {} to {url}", file.display()))?;
                Ok((size, put.e_tag.as_deref().map(unquote)))
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Downloads the object `rel` into `file` (streamed).
    pub async fn download_file(&self, rel: &str, file: &Path) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let key = self.key(rel)?;
        let url = self.url_of(rel);
        let got = self
            .store
            .get(&key)
            .await
            .with_context(|| format!("cannot read {url}"))?;
        let mut stream = got.into_stream();
        let mut out = tokio::fs::File::create(file)
            .await
            .with_context(|| format!("cannot create {}", file.display()))?;
        while let Some(chunk) = stream
            .try_next()
            .await
            .with_context(|| format!("cannot read {url}"))?
        {
            out.write_all(&chunk)
                .await
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        out.flush()
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(())
    }
}

/// The size of one PUT and of a part: [`SINGLE_PUT_MAX`]. In debug builds
/// `NIXIPFS_TEST_S3_PART_SIZE` (bytes) sets it, so that the tests upload small NARs in parts.
fn part_size() -> usize {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("NIXIPFS_TEST_S3_PART_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    SINGLE_PUT_MAX
}

/// An ETag without the quotes S3 puts around it.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// What [`S3Store::head`] tells of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    /// Its size in bytes.
    pub size: u64,
    /// Its user metadata, by name (lower case, without `x-amz-meta-`).
    pub meta: HashMap<String, String>,
}

fn attributes(meta: &[(&str, String)]) -> Attributes {
    let mut out = Attributes::new();
    for (name, value) in meta {
        out.insert(
            Attribute::Metadata(name.to_string().into()),
            value.clone().into(),
        );
    }
    out
}

/// `text` percent-encoded as SigV4's canonical URI wants it: every byte but the unreserved
/// ones (and `/` when `keep_slash`) as `%XX`.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `a/b`, with either side possibly empty.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// The access key of the profile `AWS_PROFILE` (or `default`) in the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/credentials`), if there is one.
fn profile_credentials() -> Result<Option<(String, String)>> {
    let file = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(f) => std::path::PathBuf::from(f),
        None => match std::env::var_os("HOME") {
            Some(h) => Path::new(&h).join(".aws/credentials"),
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    Ok(parse_credentials(&text, &profile))
}

/// The `aws_access_key_id` and `aws_secret_access_key` of `[profile]` in a credentials file.
fn parse_credentials(text: &str, profile: &str) -> Option<(String, String)> {
    let (mut section, mut id, mut secret) = (String::new(), None, None);
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if section == profile {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "aws_access_key_id" => id = Some(v.trim().to_string()),
                    "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
    }
    id.zip(secret)
}

/// The lock of a mirror in a bucket: the object `PREFIX/.lock`, naming its holder.
///
/// S3 servers differ in conditional writes (Garage 2.5 ignores `If-None-Match` on PUT), so the
/// lock is taken by writing a token and reading it back after [`S3Lock::SETTLE`]: of two hosts
/// that both found no lock, the one whose write came last reads its own token and goes on, the
/// other reads the other's and stops. The holder rewrites the object every
/// [`S3Lock::REFRESH`]; a lock not rewritten for [`S3Lock::STALE`] was left by a run that died
/// and is taken over.
pub struct S3Lock {
    store: S3Store,
    token: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl S3Lock {
    /// How long a written token is left to settle before it is read back.
    pub const SETTLE: Duration = Duration::from_secs(2);
    /// How often the holder rewrites the lock.
    pub const REFRESH: Duration = Duration::from_secs(60);
    /// Age after which a lock counts as left behind.
    pub const STALE: Duration = Duration::from_secs(600);
    const KEY: &'static str = ".lock";

    /// Takes the lock of `store`'s prefix. With `wait`, waits for the holder to finish;
    /// otherwise fails at once when another run holds it.
    pub async fn acquire(store: &S3Store, wait: bool) -> Result<S3Lock> {
        let token = format!(
            "{}-{}-{:016x}",
            hostname(),
            std::process::id(),
            rand::random::<u64>()
        );
        loop {
            if let Some(holder) = Self::holder(store).await? {
                if wait {
                    tokio::time::sleep(Self::SETTLE).await;
                    continue;
                }
                bail!(
                    "another nixipfs run ({holder}) holds the lock {}; it exits when that run \
                     is done (pass --wait-lock to wait for it instead)",
                    store.url_of(Self::KEY)
                );
            }
            store.put(Self::KEY, lock_body(&token)).await?;
            tokio::time::sleep(Self::SETTLE).await;
            let now = store.get(Self::KEY).await?;
            if now.as_deref().and_then(parse_lock).map(|(t, _)| t) == Some(token.clone()) {
                break;
            }
            if !wait {
                bail!(
                    "another nixipfs run took the lock {} at the same time; it exits when that \
                     run is done (pass --wait-lock to wait for it instead)",
                    store.url_of(Self::KEY)
                );
            }
        }
        let (s, t) = (store.clone(), token.clone());
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Self::REFRESH).await;
                if let Err(e) = s.put(Self::KEY, lock_body(&t)).await {
                    tracing::warn!("cannot refresh the lock: {e:#}");
                }
            }
        });
        Ok(S3Lock {
            store: store.clone(),
            token,
            refresher,
        })
    }

    /// Who holds a live lock, if anyone.
    async fn holder(store: &S3Store) -> Result<Option<String>> {
        let Some(body) = store.get(Self::KEY).await? else {
            return Ok(None);
        };
        match parse_lock(&body) {
            Some((token, _)) if holder_is_gone(&token) => {
                tracing::warn!(
                    "{}: the lock of {token} was left by a process of this host that is gone; \
                     taking it over",
                    store.url_of(Self::KEY)
                );
                Ok(None)
            }
            Some((token, at)) if now_secs().saturating_sub(at) < Self::STALE.as_secs() => {
                Ok(Some(token))
            }
            Some((token, _)) => {
                tracing::warn!(
                    "{}: the lock of {token} was not refreshed for {} s; taking it over",
                    store.url_of(Self::KEY),
                    Self::STALE.as_secs()
                );
                Ok(None)
            }
            None => {
                tracing::warn!(
                    "{}: not a lock nixipfs wrote; replacing it",
                    store.url_of(Self::KEY)
                );
                Ok(None)
            }
        }
    }

    /// Gives the lock up (when it is still ours).
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        let body = self.store.get(Self::KEY).await?;
        if body.as_deref().and_then(parse_lock).map(|(t, _)| t) == Some(self.token.clone()) {
            self.store.delete(Self::KEY).await?;
        }
        Ok(())
    }
}

/// Whether the lock token `HOST-PID-RANDOM` names a process of this host that no longer runs.
fn holder_is_gone(token: &str) -> bool {
    let mut parts = token.rsplitn(3, '-');
    let (_, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(host), Some(pid)) => {
            host == hostname() && !Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

fn lock_body(token: &str) -> Bytes {
    Bytes::from(format!("{token} {}\n", now_secs()))
}

/// The token and time of a lock object.
fn parse_lock(body: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let (token, at) = text.trim().split_once(' ')?;
    Some((token.to_string(), at.parse().ok()?))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let l = S3Location::parse("s3://b/some/prefix/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "some/prefix"));
        let l = S3Location::parse("s3://b").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", ""));
        for bad in ["s3:///x", "http://b/x", "s3://b/a/../x", "s3://b/a//x"] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_encoded_as_sigv4_wants() {
        assert_eq!(uri_encode("a/b c+d~e", true), "a/b%20c%2Bd~e");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn reads_a_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[other]\n\
                    aws_access_key_id=C\naws_secret_access_key=D\n";
        assert_eq!(
            parse_credentials(text, "other"),
            Some(("C".into(), "D".into()))
        );
        assert_eq!(
            parse_credentials(text, "default"),
            Some(("A".into(), "B".into()))
        );
        assert_eq!(parse_credentials(text, "none"), None);
    }

    #[test]
    fn lock_bodies_round_trip() {
        let body = lock_body("h-1-ab");
        let (t, at) = parse_lock(&body).unwrap();
        assert_eq!(t, "h-1-ab");
        assert!(at > 0);
        assert_eq!(parse_lock(b"garbage"), None);
    }

    #[test]
    fn a_lock_of_a_gone_process_of_this_host_is_stale() {
        let me = format!("{}-{}-ab", hostname(), std::process::id());
        assert!(!holder_is_gone(&me));
        assert!(holder_is_gone(&format!("{}-4194304999-ab", hostname())));
        assert!(!holder_is_gone("some-other-host-1-ab"));
    }
}
