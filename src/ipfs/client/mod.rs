//! A client of an IPFS node's RPC API (`POST /api/v0/...`), for kubo and for js-ipfs.
//!
//! Only the calls that publishing needs: `version`, `id`, `dag/import` (a CAR streamed while
//! it is being produced), `add` and `block/put` (the fallback for nodes without `dag/import`),
//! `files/cp`, `files/stat`, `files/rm`, `pin/add`, `pin/ls`, `pin/rm`, `repo/gc`,
//! `name/publish`, `refs/local` and `cat`.
//!
//! Every call has a deadline, because a node asked for a block it does not have may never
//! answer (js-ipfs waits forever, even offline). Calls that may touch blocks also pass the
//! deadline to the node (`timeout=`), so that the node gives up its own work too. Ordinary
//! calls get [`Timeouts::call`]; `pin/add`, `name/publish` and the wait for a `dag/import`
//! answer get [`Timeouts::long`]. A `dag/import` body that the node stops reading for
//! [`Timeouts::call`] fails the import.
//!
//! What differs between kubo and js-ipfs, and is handled here: every multipart part carries a
//! `Content-Type` (js-ipfs refuses parts without); `add` answers `Size` as a string (kubo) or a
//! number (js-ipfs); CIDs come back in base32 or base58btc and are compared as decoded values
//! ([`Cid`]); a query parameter is never repeated except `arg`.
//!
//! Multipart bodies are written here (one part, `name="file"`), which lets a body stream
//! without a length.
//!
//! Every method goes through one typed call (the `call` submodule): the command, its arguments
//! and its deadline, then the answer read as JSON, JSON lines, bytes or nothing. The streamed
//! `dag/import` ([`DagImport`]) is in the `dag_import` submodule. Each call's time is logged
//! at debug level under the target [`CALL_TIMES_TARGET`].

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use super::api_addr::ApiAddr;
use super::cid::{Cid, CidSet, DAG_PB, RAW};
use super::unixfs::AddOptions;

mod call;
mod dag_import;

pub use call::CALL_TIMES_TARGET;
pub use dag_import::DagImport;

use call::{api_error, bad_answer, Call};

/// Deadlines of the calls (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection.
    pub connect: Duration,
    /// An ordinary call; also how long an import body may wait for the node to read.
    pub call: Duration,
    /// `pin/add` (which walks the whole DAG), `name/publish`, and the answer to `dag/import`.
    pub long: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 120 s per call, 30 min for the long calls.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            call: Duration::from_secs(120),
            long: Duration::from_secs(30 * 60),
        }
    }
}

/// Why a call to the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpfsError {
    /// No connection could be made.
    #[error("cannot reach the IPFS node at {addr} ({command}): {source}")]
    Unreachable {
        /// The API address.
        addr: String,
        /// The call tried.
        command: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The call did not finish in time.
    #[error("IPFS call {command} to {addr} did not finish within {after:?}")]
    Timeout {
        /// The API address.
        addr: String,
        /// The call.
        command: String,
        /// The deadline.
        after: Duration,
    },
    /// The node answered with an error.
    #[error("IPFS call {command} failed (HTTP {status}): {message}")]
    Api {
        /// The call.
        command: String,
        /// HTTP status.
        status: u16,
        /// What the error means, where a caller acts on it.
        kind: ApiErrorKind,
        /// The node's message.
        message: String,
    },
    /// The node does not know this command (HTTP 404).
    #[error("the IPFS node at {addr} does not support {command}")]
    Unsupported {
        /// The API address.
        addr: String,
        /// The call.
        command: String,
    },
    /// The HTTP exchange broke off.
    #[error("IPFS call {command} to {addr}: {source}")]
    Http {
        /// The API address.
        addr: String,
        /// The call.
        command: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what the API documents.
    #[error("IPFS call {command}: unexpected answer: {detail}")]
    BadAnswer {
        /// The call.
        command: String,
        /// What is wrong.
        detail: String,
    },
    /// Reading a local file to send failed.
    #[error("reading {path} to send it to the IPFS node: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What an error answer of the node means, for the callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// The path does not exist (`files/stat`, `files/rm`, `cat` of a missing path).
    NotFound,
    /// The CID is not pinned (`pin/ls`, `pin/rm`).
    NotPinned,
    /// Any other error.
    Other,
}

impl ApiErrorKind {
    /// The kind of the error the node described with `message`. kubo and js-ipfs both answer
    /// these errors with HTTP 500 and say what they are in words only: this is the one place
    /// where those words are read.
    fn of(message: &str) -> ApiErrorKind {
        if message.contains("not pinned") {
            ApiErrorKind::NotPinned
        } else if message.contains("not exist") {
            ApiErrorKind::NotFound
        } else {
            ApiErrorKind::Other
        }
    }
}

/// The node's `version` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// e.g. `0.22.0` (kubo) or `0.18.1` (js-ipfs core).
    pub version: String,
    /// The agent, `js-ipfs` when the answer names `ipfs-core`, else `kubo`.
    pub agent: String,
}

/// What `add` answered for one file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AddAnswer {
    /// The name sent.
    #[serde(rename = "Name")]
    pub name: String,
    /// The root CID the node computed.
    #[serde(rename = "Hash")]
    pub cid: Cid,
    /// The `Size` field (cumulative size of the DAG).
    #[serde(rename = "Size", default, deserialize_with = "number")]
    pub size: u64,
}

/// What `files/stat` answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FilesStat {
    /// CID of the entry.
    #[serde(rename = "Hash")]
    pub cid: Cid,
    /// `file` or `directory`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// File size (0 for directories).
    #[serde(rename = "Size", default, deserialize_with = "number")]
    pub size: u64,
    /// Cumulative size of the DAG as the node counts it.
    #[serde(rename = "CumulativeSize", default, deserialize_with = "number")]
    pub cumulative_size: u64,
}

/// What `name/publish` answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The IPNS name (a peer ID or key ID, in the node's text form).
    #[serde(rename = "Name")]
    pub name: String,
    /// The path it now points at, e.g. `/ipfs/<CID>`.
    #[serde(rename = "Value")]
    pub value: String,
}

/// What `repo/gc` answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcAnswer {
    /// Blocks removed.
    pub removed: u64,
    /// Blocks the node could not remove.
    pub errors: u64,
    /// The node's message for the first of them.
    pub first_error: Option<String>,
}

/// What one `dag/import` request answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportAnswer {
    /// Blocks in the CAR as the node counted them (kubo with `stats=true`; js-ipfs says nothing).
    pub node_block_count: Option<u64>,
    /// Sections written into the request's CAR.
    pub blocks_sent: u64,
    /// Bytes of the request's CAR, header included.
    pub car_bytes: u64,
}

/// A client of one node.
#[derive(Debug, Clone)]
pub struct IpfsClient {
    addr: ApiAddr,
    http: reqwest::Client,
    timeouts: Timeouts,
}

/// A number that kubo writes as a string and js-ipfs as a number; 0 when it is null or not a
/// number.
fn number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Text(String),
    }
    Ok(match Option::<Number>::deserialize(deserializer)? {
        Some(Number::Int(n)) => n,
        Some(Number::Text(text)) => text.parse().unwrap_or(0),
        None => 0,
    })
}

/// A duration as the node's `timeout=` parameter (Go and js-ipfs both read `1500ms`).
fn duration_param(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Parses a duration in Go's syntax as kubo takes it for `--lifetime` and `--timeout`: a
/// sequence of numbers with units `ns`, `us`, `ms`, `s`, `m`, `h` (e.g. `2h`, `1h30m`,
/// `90s`, `1.5h`). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. 2h, 90m, 1h30m, 45s)");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration in Go's syntax, whole seconds (e.g. `7200s`), which kubo and js-ipfs both read.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The CID under which a node's blockstore knows a block: the multihash, as a raw CIDv1.
/// Blockstores are keyed by multihash, so the same block under a CIDv0 and a CIDv1 is one.
pub fn block_key(cid: &Cid) -> Cid {
    Cid::new(1, RAW, cid.hash_code(), cid.digest()).unwrap_or(*cid)
}

/// Whether `text` (a CID, or `/ipfs/` and a CID, as the node answers) names the block of `cid`.
fn names_block(text: &str, cid: &Cid) -> bool {
    Cid::parse(text.trim_start_matches("/ipfs/")).is_ok_and(|c| block_key(&c) == block_key(cid))
}

impl IpfsClient {
    /// A client of the node at `addr`. No connection is made yet.
    pub fn new(addr: ApiAddr, timeouts: Timeouts) -> Result<IpfsClient, IpfsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .no_proxy()
            .http1_only()
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("nixipfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| IpfsError::Http {
                addr: addr.to_string(),
                command: "client setup".to_string(),
                source,
            })?;
        Ok(IpfsClient {
            addr,
            http,
            timeouts,
        })
    }

    /// The node's address.
    pub fn addr(&self) -> &ApiAddr {
        &self.addr
    }

    /// The deadlines in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// `version`: also the check that the node is there.
    pub async fn version(&self) -> Result<NodeVersion, IpfsError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Version")]
            version: String,
            #[serde(rename = "ipfs-core")]
            ipfs_core: Option<String>,
        }
        let answer: Answer = self.call("version").json().await?;
        Ok(NodeVersion {
            agent: if answer.ipfs_core.is_some() {
                "js-ipfs".to_string()
            } else {
                "kubo".to_string()
            },
            version: answer.version,
        })
    }

    /// `id`: the node's peer ID.
    pub async fn id(&self) -> Result<String, IpfsError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "ID")]
            id: String,
        }
        let answer: Answer = self.call("id").json().await?;
        if answer.id.is_empty() {
            return Err(bad_answer("id", "empty ID"));
        }
        Ok(answer.id)
    }

    /// Whether the node has a command: a call without arguments fails with a usage error when
    /// it does and with 404 when it does not.
    pub async fn has_command(&self, command: &str) -> Result<bool, IpfsError> {
        match self.call(command).unit().await {
            Ok(()) | Err(IpfsError::Api { .. }) => Ok(true),
            Err(IpfsError::Unsupported { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// An unpinned `add` call with `options` and chunks of `chunk` bytes, its one file sent by
    /// `body`.
    async fn add(
        &self,
        options: AddOptions,
        chunk: usize,
        body: Call<'_>,
    ) -> Result<AddAnswer, IpfsError> {
        // The last JSON line names the root (progress lines come before it).
        body.arg("pin", false)
            .arg("raw-leaves", options.raw_leaves)
            .arg("cid-version", options.cid_version)
            .arg("chunker", format!("size-{chunk}"))
            .arg("progress", false)
            .long()
            .json()
            .await
    }

    /// `add` of one file's bytes, unpinned, with `options` (256 KiB chunks).
    pub async fn add_bytes(
        &self,
        name: &str,
        data: Vec<u8>,
        options: AddOptions,
    ) -> Result<AddAnswer, IpfsError> {
        self.add_bytes_chunked(name, data, options, super::unixfs::CHUNK_SIZE)
            .await
    }

    /// `add` of one file's bytes, unpinned, with `options` and chunks of `chunk` bytes.
    pub async fn add_bytes_chunked(
        &self,
        name: &str,
        data: Vec<u8>,
        options: AddOptions,
        chunk: usize,
    ) -> Result<AddAnswer, IpfsError> {
        self.add(options, chunk, self.call("add").file(name, &data))
            .await
    }

    /// `add` of a file read from disk as it is sent, unpinned, with `options` and chunks of
    /// `chunk` bytes.
    pub async fn add_file_chunked(
        &self,
        path: &Path,
        options: AddOptions,
        chunk: usize,
    ) -> Result<AddAnswer, IpfsError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| IpfsError::Read {
                path: path.display().to_string(),
                source,
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_string());
        let chunks = futures::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<Bytes, io::Error>(Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let call = self.call("add").file_stream(&name, chunks.boxed());
        self.add(options, chunk, call).await
    }

    /// `block/put` of one block, with the codec and CID version of `cid`; checks that the
    /// node stored it under the same multihash.
    pub async fn block_put(&self, cid: &Cid, block: Vec<u8>) -> Result<(), IpfsError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Key")]
            key: Cid,
        }
        let codec = match cid.codec() {
            RAW => "raw",
            DAG_PB => "dag-pb",
            other => {
                return Err(bad_answer(
                    "block/put",
                    format!("codec 0x{other:x} cannot be sent"),
                ))
            }
        };
        let answer: Answer = self
            .call("block/put")
            .arg("cid-codec", codec)
            .arg("mhtype", "sha2-256")
            .arg("pin", false)
            .file("block", &block)
            .json()
            .await?;
        if block_key(&answer.key) != block_key(cid) {
            return Err(bad_answer(
                "block/put",
                format!(
                    "the node stored the block as {}, expected {cid}",
                    answer.key
                ),
            ));
        }
        Ok(())
    }

    /// `files/cp FROM TO` (FROM is an MFS path or `/ipfs/<CID>`).
    pub async fn files_cp(&self, from: &str, to: &str, parents: bool) -> Result<(), IpfsError> {
        self.call("files/cp")
            .arg("arg", from)
            .arg("arg", to)
            .arg("parents", parents)
            .node_timeout()
            .unit()
            .await
    }

    /// `files/stat PATH`; `Ok(None)` when the path does not exist.
    pub async fn files_stat(&self, path: &str) -> Result<Option<FilesStat>, IpfsError> {
        let call = self.call("files/stat").arg("arg", path).node_timeout();
        match call.json().await {
            Ok(stat) => Ok(Some(stat)),
            Err(IpfsError::Api {
                kind: ApiErrorKind::NotFound,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `files/rm PATH` (recursively).
    pub async fn files_rm(&self, path: &str) -> Result<(), IpfsError> {
        self.call("files/rm")
            .arg("arg", path)
            .arg("recursive", true)
            .unit()
            .await
    }

    /// `pin/add CID` (recursive). The node walks the whole DAG, so this is also the proof that
    /// it holds every block: a missing block makes it fail or time out.
    pub async fn pin_add(&self, cid: &Cid) -> Result<(), IpfsError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Pins")]
            pins: Option<Vec<String>>,
        }
        let answer: Answer = self
            .call("pin/add")
            .arg("arg", format!("/ipfs/{cid}"))
            .arg("recursive", true)
            .arg("progress", false)
            .long()
            .node_timeout()
            .json()
            .await?;
        let pins = answer.pins.unwrap_or_default();
        let pinned = pins.iter().any(|p| names_block(p, cid));
        if !pinned {
            return Err(bad_answer(
                "pin/add",
                format!("{cid} is not among the pins answered: {pins:?}"),
            ));
        }
        Ok(())
    }

    /// `pin/rm CID` (recursive).
    pub async fn pin_rm(&self, cid: &Cid) -> Result<(), IpfsError> {
        self.call("pin/rm")
            .arg("arg", format!("/ipfs/{cid}"))
            .arg("recursive", true)
            .unit()
            .await
    }

    /// `repo/gc`: removes every block that is neither pinned nor in MFS. The answer has a
    /// line per block removed, as long as the garbage: it is read line by line and counted.
    /// With `stream-errors`, a block the node could not remove is a line of its own (js-ipfs
    /// leaves such blocks out of its answer otherwise); they are counted, not fatal.
    pub async fn repo_gc(&self) -> Result<GcAnswer, IpfsError> {
        #[derive(Deserialize)]
        struct Line {
            #[serde(rename = "Key")]
            key: Option<serde_json::Value>,
            #[serde(rename = "Error")]
            error: Option<String>,
        }
        let mut answer = GcAnswer::default();
        self.call("repo/gc")
            .arg("stream-errors", true)
            .long()
            .for_each_line(|text| {
                let line: Line = serde_json::from_slice(text).map_err(|e| {
                    bad_answer(
                        "repo/gc",
                        format!(
                            "{e}: {}",
                            String::from_utf8_lossy(&text[..text.len().min(300)])
                        ),
                    )
                })?;
                match line.error.filter(|e| !e.is_empty()) {
                    Some(error) => {
                        answer.errors += 1;
                        answer.first_error.get_or_insert(error);
                    }
                    None if line.key.is_some() => answer.removed += 1,
                    None => {}
                }
                Ok(())
            })
            .await?;
        Ok(answer)
    }

    /// Whether `cid` is pinned recursively (`pin/ls CID type=recursive`: the node looks at
    /// its recursive pins only; without a type it walks every pinned DAG for an indirect pin,
    /// which js-ipfs takes minutes to do once a few mirror roots are pinned).
    pub async fn pinned_recursively(&self, cid: &Cid) -> Result<bool, IpfsError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Keys")]
            keys: std::collections::HashMap<String, serde::de::IgnoredAny>,
        }
        let answer: Answer = match self
            .call("pin/ls")
            .arg("arg", cid)
            .arg("type", "recursive")
            .node_timeout()
            .json()
            .await
        {
            Ok(answer) => answer,
            Err(IpfsError::Api {
                kind: ApiErrorKind::NotPinned,
                ..
            }) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(!answer.keys.is_empty())
    }

    /// `pin/ls CID`: the pin type (`recursive`, `direct`, `indirect`) or `None`.
    pub async fn pin_ls(&self, cid: &Cid) -> Result<Option<String>, IpfsError> {
        #[derive(Deserialize)]
        struct Pin {
            #[serde(rename = "Type")]
            kind: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Keys")]
            keys: std::collections::HashMap<String, Pin>,
        }
        let answer: Answer = match self
            .call("pin/ls")
            .arg("arg", cid)
            .node_timeout()
            .json()
            .await
        {
            Ok(answer) => answer,
            Err(IpfsError::Api {
                kind: ApiErrorKind::NotPinned,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(answer
            .keys
            .into_iter()
            .find_map(|(key, pin)| names_block(&key, cid).then_some(pin.kind)))
    }

    /// `name/publish /ipfs/CID` with a record `lifetime`, under `key` (default: the node's own).
    pub async fn name_publish(
        &self,
        cid: &Cid,
        lifetime: Duration,
        key: Option<&str>,
    ) -> Result<Published, IpfsError> {
        let mut call = self
            .call("name/publish")
            .arg("arg", format!("/ipfs/{cid}"))
            .arg("lifetime", format_duration(lifetime))
            .arg("resolve", false)
            .arg("allow-offline", true)
            .long();
        if let Some(key) = key {
            call = call.arg("key", key);
        }
        let published: Published = call.json().await?;
        if published.name.is_empty() {
            return Err(bad_answer("name/publish", "empty name"));
        }
        Ok(published)
    }

    /// `name/resolve NAME`: the path an IPNS name points at.
    pub async fn name_resolve(&self, name: &str) -> Result<String, IpfsError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "Path")]
            path: String,
        }
        let answer: Answer = self
            .call("name/resolve")
            .arg("arg", format!("/ipns/{name}"))
            .arg("recursive", true)
            .node_timeout()
            .json()
            .await?;
        Ok(answer.path)
    }

    /// `refs/local`: every block the node has, as [`block_key`]s.
    pub async fn refs_local(&self) -> Result<CidSet, IpfsError> {
        #[derive(Deserialize)]
        struct Line {
            #[serde(rename = "Ref")]
            reference: String,
            #[serde(rename = "Err")]
            err: Option<String>,
        }
        // As long as the node's content: read line by line, never held whole.
        let mut keys = CidSet::new();
        self.call("refs/local")
            .long()
            .for_each_line(|text| {
                let line: Line = serde_json::from_slice(text).map_err(|e| {
                    bad_answer(
                        "refs/local",
                        format!(
                            "{e}: {}",
                            String::from_utf8_lossy(&text[..text.len().min(300)])
                        ),
                    )
                })?;
                if let Some(err) = line.err.filter(|e| !e.is_empty()) {
                    return Err(api_error("refs/local", 200, err));
                }
                let cid = Cid::parse(&line.reference).map_err(|e| {
                    bad_answer("refs/local", format!("CID {:?}: {e}", line.reference))
                })?;
                keys.insert(block_key(&cid));
                Ok(())
            })
            .await?;
        Ok(keys)
    }

    /// `cat PATH`: the bytes of a file (an `/ipfs/…` or MFS-independent path).
    pub async fn cat(&self, path: &str) -> Result<Vec<u8>, IpfsError> {
        let body = self.call("cat").arg("arg", path).node_timeout().bytes();
        Ok(body.await?.to_vec())
    }

    /// `files/read PATH` of an MFS file.
    pub async fn files_read(&self, path: &str) -> Result<Vec<u8>, IpfsError> {
        let body = self
            .call("files/read")
            .arg("arg", path)
            .node_timeout()
            .bytes();
        Ok(body.await?.to_vec())
    }

    /// `dag/import` of a complete CAR held in memory (with `pin-roots`).
    pub async fn dag_import_bytes(&self, car: Vec<u8>, pin_roots: bool) -> Result<(), IpfsError> {
        self.call("dag/import")
            .arg("pin-roots", pin_roots)
            .file("import.car", &car)
            .long()
            .unit()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (text, secs) in [
            ("2h", 7200.0),
            ("90m", 5400.0),
            ("1h30m", 5400.0),
            ("45s", 45.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("1h0m0s", 3600.0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs_f64(secs),
                "{text}"
            );
        }
        for bad in ["", "2", "h", "2x", "-1h", "1h-", "1..5h", "2 h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(7200)), "7200s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_param(Duration::from_secs(2)), "2000ms");
    }

    #[test]
    fn error_answers_are_classified_once() {
        for (message, kind) in [
            ("file does not exist", ApiErrorKind::NotFound),
            ("/nixfs_1 does not exist", ApiErrorKind::NotFound),
            ("path 'bafy…' is not pinned", ApiErrorKind::NotPinned),
            ("argument \"key\" is required", ApiErrorKind::Other),
        ] {
            assert_eq!(ApiErrorKind::of(message), kind, "{message}");
        }
    }

    #[test]
    fn block_keys_ignore_version_and_codec() {
        let v0 = Cid::parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn").unwrap();
        let raw =
            Cid::parse("bafkreiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354").unwrap();
        assert_eq!(block_key(&v0), raw);
        assert_eq!(block_key(&v0.to_v1()), raw);
    }
}
