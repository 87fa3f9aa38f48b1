//! The release configuration, `nixos_release.json`: which channels to release from which Hydra
//! jobs, where the binary cache is, and how much to keep.
//!
//! The format is the one of the 2017 release scripts, accepted as is, with two new optional
//! fields:
//!
//! ```json
//! {
//!     "hydra": "https://hydra.nixos.org",
//!     "cache": "https://cache.nixos.org",
//!     "target_cache": "https://cache.example.org",
//!     "repo": "https://github.com/NixOS/nixpkgs.git",
//!     "max_threads": 7,
//!     "max_ipfs_threads": 4,
//!     "cid_profile": "legacy-raw-v0",
//!     "trusted_public_keys": ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="],
//!     "releases": [
//!         {"channel": "nixos-24.11", "project": "nixos", "jobset": "release-24.11",
//!          "job": "tested", "keep": 7, "mirror": false}
//!     ]
//! }
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `hydra` | Hydra base URL, http(s); default [`DEFAULT_HYDRA`] |
//! | `cache` | upstream binary cache URL, http(s); default [`DEFAULT_CACHE`] |
//! | `target_cache` | optional; written into each release's `binary-cache-url` instead of `cache` |
//! | `repo` | optional nixpkgs git URL; accepted, not needed (source tarballs are listed from the release's channel tarball) |
//! | `max_threads` | concurrent downloads, 1 to [`MAX_THREADS`]; default [`DEFAULT_MAX_THREADS`] |
//! | `max_ipfs_threads` | optional, threads hashing files for IPFS, 1 to [`MAX_THREADS`]; default 4 |
//! | `cid_profile` | **new**, optional: the import profile the mirror is published with (`unixfs-v1-2025`, `unixfs-v0-2015`, `legacy-raw-v0`); `--cid-profile` overrides it |
//! | `trusted_public_keys` | **new**, optional: `name:base64` Ed25519 keys, at least one, that narinfos must be signed by; absent means "not configured" (the caller picks its default) |
//! | `target` | **new**, optional: where `release-nixos` mirrors to when neither `--dir` nor `--target` is given: a directory or `s3://BUCKET/PREFIX` |
//! | `s3_endpoint`, `s3_region` | **new**, optional: the S3 API endpoint (http(s) URL) and region of an `s3://` target; `--s3-endpoint` and `--s3-region` override them |
//! | `releases` | at least one release |
//! | `releases[].channel` | channel name, a plain file name of `[A-Za-z0-9._+-]`, not starting with `.`; unique |
//! | `releases[].project`, `.jobset` | the Hydra project and jobset |
//! | `releases[].job` | the Hydra job whose latest successful build is released; default [`DEFAULT_JOB`] (the 2017 schema did not require it) |
//! | `releases[].keep` | optional, >= 1: how many releases of the channel garbage collection keeps; absent: all of them (as in 2017) |
//! | `releases[].mirror` | optional, default `false`: whether the release's source tarballs are mirrored |
//! | `releases[].source` | **new**, optional: a channel URL that redirects to a published release (`https://channels.nixos.org/nixos-24.11`); the release is copied as published instead of made from Hydra, so `project`, `jobset` and `job` must be left out |
//! | `releases[].programs` | **new**, optional: `true` adds `programs.sqlite` to the `nixexprs.tar.xz` of a release made from Hydra (needs `nix-env`); not set: `true`; `false` leaves it out with a warning; not with `source` (published releases have theirs) |
//! | `releases[].systems` | **new**, optional: the systems `programs.sqlite` covers; default [`DEFAULT_PROGRAMS_SYSTEMS`] |
//!
//! [`load`] checks everything before returning: malformed JSON is reported with its line and
//! column, every other problem with the file name and the field path, e.g.
//! `nixos_release.json: releases[1].keep: must be an integer >= 1, found 0`. Unknown fields and
//! duplicate keys are errors, so that a typo in a cron job's config does not pass silently.
//! `null` counts as absent for the optional fields.
//!
//! The file is read in three steps: the JSON text, with duplicate keys refused, into a
//! [`serde_json::Value`]; that value into private structs that mirror the format
//! (`deny_unknown_fields`), each field through a function that checks it, with
//! `serde_path_to_error` naming the field of a failure; then the rules that span fields:
//! required fields present, lists not empty, channel and key names unique.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use anyhow::Context as _;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;
use thiserror::Error;

use crate::fsutil::check_file_name;
use crate::hydra;
use crate::ipfs::profile::Profile;
use crate::signature::PublicKey;

/// The Hydra used when the config names none.
pub const DEFAULT_HYDRA: &str = "https://hydra.nixos.org";

/// The binary cache used when the config names none.
pub const DEFAULT_CACHE: &str = "https://cache.nixos.org";

/// `max_threads` when the config gives none.
pub const DEFAULT_MAX_THREADS: usize = 7;

/// The largest `max_threads` and `max_ipfs_threads` accepted.
pub const MAX_THREADS: usize = 1024;

/// The job of a release that names none: the aggregate job of NixOS release jobsets.
pub const DEFAULT_JOB: &str = "tested";

/// The systems `programs.sqlite` covers when the config names none.
pub const DEFAULT_PROGRAMS_SYSTEMS: &[&str] = &["x86_64-linux", "aarch64-linux"];

/// Config files larger than this (1 MiB) are refused unread.
const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// A validated release configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Hydra base URL (http or https), without a trailing `/`.
    pub hydra: String,
    /// Upstream binary cache URL (http or https), without a trailing `/`.
    pub cache: String,
    /// What releases record as their `binary-cache-url` instead of `cache`, if set.
    pub target_cache: Option<String>,
    /// The nixpkgs git repository (accepted; source tarballs are listed from the channel tarball).
    pub repo: Option<String>,
    /// Concurrent downloads (1 to [`MAX_THREADS`]).
    pub max_threads: usize,
    /// Concurrent IPFS requests (1 to [`MAX_THREADS`]), if set.
    pub max_ipfs_threads: Option<usize>,
    /// Keys that narinfos must be signed by; empty when the config does not set them.
    pub trusted_public_keys: Vec<PublicKey>,
    /// The import profile to publish with, if set.
    pub cid_profile: Option<Profile>,
    /// The releases, at least one, with distinct channel names, in the config's order.
    pub releases: Vec<Release>,
    /// Where `release-nixos` mirrors to when the command line does not say: a directory or
    /// `s3://BUCKET/PREFIX`.
    pub target: Option<String>,
    /// The S3 API endpoint of an `s3://` target.
    pub s3_endpoint: Option<String>,
    /// The region of an `s3://` target.
    pub s3_region: Option<String>,
}

/// One channel to release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The channel name, a plain file name (e.g. `nixos-24.11`).
    pub channel: String,
    /// The Hydra project (e.g. `nixos`).
    pub project: String,
    /// The Hydra jobset (e.g. `release-24.11`).
    pub jobset: String,
    /// The Hydra job whose latest successful build is the release (e.g. `tested`).
    pub job: String,
    /// How many releases of this channel garbage collection keeps; `None`: all.
    pub keep: Option<u32>,
    /// Whether the source tarballs of the release are mirrored.
    pub mirror: bool,
    /// The channel URL of a published release to copy; `None`: the release is made from the
    /// Hydra job (`project`, `jobset`, `job`, which are empty when this is set).
    pub source: Option<String>,
    /// Whether `programs.sqlite` is added to a release made from Hydra (default: yes; `false`
    /// is warned about). Always false for a release with `source`, which has its own.
    pub programs: bool,
    /// The systems `programs.sqlite` covers.
    pub systems: Vec<String>,
}

impl Config {
    /// What a release records as its `binary-cache-url`: `target_cache` if set, else `cache`.
    pub fn binary_cache_url(&self) -> &str {
        self.target_cache.as_deref().unwrap_or(&self.cache)
    }

    /// The release of `channel`, if the config has one.
    pub fn release(&self, channel: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.channel == channel)
    }
}

/// What is wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid JSON (or has a duplicate key).
    #[error("{origin}: line {line}, column {column}: {message}")]
    Syntax {
        /// The file name.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser found.
        message: String,
    },
    /// A field is missing, unknown or has an unacceptable value.
    #[error("{origin}: {field}: {problem}")]
    Invalid {
        /// The file name.
        origin: String,
        /// The field path, e.g. `releases[1].keep`, or `top level`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?
        .len();
    if size > MAX_CONFIG_SIZE {
        anyhow::bail!(
            "{}: the config file is {size} bytes long; more than {MAX_CONFIG_SIZE} bytes is not a \
             release config",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    Ok(parse(&path.display().to_string(), &text)?)
}

/// Validates the config `text`; `origin` (the file name) starts every error message.
pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
    let StrictValue(root) = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        ConfigError::Syntax {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_string(),
        }
    })?;
    let Object(raw) =
        serde_path_to_error::deserialize::<_, Object<RawConfig>>(&root).map_err(|e| {
            let field = match e.path().iter().len() {
                0 => "top level".to_string(),
                _ => e.path().to_string(),
            };
            invalid(origin, field, explain(&root, e))
        })?;
    raw.finish(origin)
}

fn invalid(origin: &str, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        field: field.into(),
        problem: problem.into(),
    }
}

/// The top level as the file has it, each field checked on its own.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    #[serde(deserialize_with = "http_url")]
    hydra: Option<String>,
    #[serde(deserialize_with = "http_url")]
    cache: Option<String>,
    #[serde(deserialize_with = "word")]
    target_cache: Option<String>,
    #[serde(deserialize_with = "word")]
    repo: Option<String>,
    #[serde(deserialize_with = "threads")]
    max_threads: Option<usize>,
    #[serde(deserialize_with = "threads")]
    max_ipfs_threads: Option<usize>,
    #[serde(deserialize_with = "profile")]
    cid_profile: Option<Profile>,
    trusted_public_keys: Option<Vec<Key>>,
    releases: Option<Vec<Object<RawRelease>>>,
    #[serde(deserialize_with = "target")]
    target: Option<String>,
    #[serde(deserialize_with = "http_url")]
    s3_endpoint: Option<String>,
    #[serde(deserialize_with = "word")]
    s3_region: Option<String>,
}

/// A release as the file has it.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRelease {
    #[serde(deserialize_with = "channel")]
    channel: Option<String>,
    #[serde(deserialize_with = "project")]
    project: Option<String>,
    #[serde(deserialize_with = "jobset")]
    jobset: Option<String>,
    #[serde(deserialize_with = "job")]
    job: Option<String>,
    #[serde(deserialize_with = "keep")]
    keep: Option<u32>,
    #[serde(deserialize_with = "flag")]
    mirror: Option<bool>,
    #[serde(deserialize_with = "http_url")]
    source: Option<String>,
    #[serde(deserialize_with = "flag")]
    programs: Option<bool>,
    #[serde(deserialize_with = "systems")]
    systems: Option<Vec<String>>,
}

/// The fields of [`RawConfig`], in the order the documentation gives them, for the message on
/// an unknown key.
const TOP_FIELDS: Fields = Fields {
    of: "the top level",
    names: &[
        "hydra",
        "cache",
        "target_cache",
        "repo",
        "max_threads",
        "max_ipfs_threads",
        "cid_profile",
        "trusted_public_keys",
        "releases",
        "target",
        "s3_endpoint",
        "s3_region",
    ],
};

/// The fields of [`RawRelease`].
const RELEASE_FIELDS: Fields = Fields {
    of: "a release",
    names: &[
        "channel", "project", "jobset", "job", "keep", "mirror", "source", "programs", "systems",
    ],
};

impl RawConfig {
    /// The config, once the rules that span fields hold: the lists are not empty, the required
    /// fields are there, and key names and channel names are unique.
    fn finish(self, origin: &str) -> Result<Config, ConfigError> {
        let keys: Vec<PublicKey> = match self.trusted_public_keys {
            Some(keys) if keys.is_empty() => {
                let problem = "must list at least one key (`name:base64`); leave the field out \
                               to use the default";
                return Err(invalid(origin, "trusted_public_keys", problem));
            }
            keys => keys.into_iter().flatten().map(|Key(k)| k).collect(),
        };
        if let Some((i, first)) = duplicate(keys.iter().map(|k| k.name())) {
            let problem = format!(
                "the key name {:?} is already used by trusted_public_keys[{first}]",
                keys[i].name()
            );
            return Err(invalid(
                origin,
                format!("trusted_public_keys[{i}]"),
                problem,
            ));
        }
        let Some(raw_releases) = self.releases else {
            return Err(invalid(
                origin,
                "releases",
                "is missing: list at least one release",
            ));
        };
        if raw_releases.is_empty() {
            let problem = "must list at least one release, found []";
            return Err(invalid(origin, "releases", problem));
        }
        let mut releases = Vec::with_capacity(raw_releases.len());
        for (i, Object(r)) in raw_releases.into_iter().enumerate() {
            let missing = |field| {
                let problem = "is missing (or give `source`, the channel URL of a published \
                               release)";
                invalid(origin, format!("releases[{i}].{field}"), problem)
            };
            let channel = r
                .channel
                .ok_or_else(|| invalid(origin, format!("releases[{i}].channel"), "is missing"))?;
            if r.source.is_some() {
                let hydra_field = [
                    ("project", r.project.is_some()),
                    ("jobset", r.jobset.is_some()),
                    ("job", r.job.is_some()),
                    ("programs", r.programs.is_some()),
                    ("systems", r.systems.is_some()),
                ]
                .into_iter()
                .find(|(_, given)| *given);
                if let Some((field, _)) = hydra_field {
                    let problem = "cannot be given with `source`: a release with `source` is \
                                   copied as published, not made from a Hydra job; leave one \
                                   of them out";
                    return Err(invalid(origin, format!("releases[{i}].{field}"), problem));
                }
            }
            let (project, jobset, job) = match &r.source {
                Some(_) => (String::new(), String::new(), String::new()),
                None => (
                    r.project.ok_or_else(|| missing("project"))?,
                    r.jobset.ok_or_else(|| missing("jobset"))?,
                    r.job.unwrap_or_else(|| DEFAULT_JOB.to_string()),
                ),
            };
            releases.push(Release {
                channel,
                project,
                jobset,
                job,
                keep: r.keep,
                mirror: r.mirror.unwrap_or(false),
                programs: r.programs.unwrap_or(r.source.is_none()),
                source: r.source,
                systems: r.systems.unwrap_or_else(|| {
                    DEFAULT_PROGRAMS_SYSTEMS
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
            });
        }
        if let Some((i, first)) = duplicate(releases.iter().map(|r| r.channel.as_str())) {
            let problem = format!(
                "{:?} is already the channel of releases[{first}]; channel names must be unique",
                releases[i].channel
            );
            return Err(invalid(origin, format!("releases[{i}].channel"), problem));
        }
        Ok(Config {
            hydra: self.hydra.unwrap_or_else(|| DEFAULT_HYDRA.to_string()),
            cache: self.cache.unwrap_or_else(|| DEFAULT_CACHE.to_string()),
            target_cache: self.target_cache,
            repo: self.repo,
            max_threads: self.max_threads.unwrap_or(DEFAULT_MAX_THREADS),
            max_ipfs_threads: self.max_ipfs_threads,
            cid_profile: self.cid_profile,
            trusted_public_keys: keys,
            releases,
            target: self.target,
            s3_endpoint: self.s3_endpoint,
            s3_region: self.s3_region,
        })
    }
}

/// The first name that an earlier one repeats: its index and the earlier one's.
fn duplicate<'a>(names: impl Iterator<Item = &'a str>) -> Option<(usize, usize)> {
    let mut seen = HashMap::new();
    names
        .enumerate()
        .find_map(|(i, name)| seen.insert(name, i).map(|first| (i, first)))
}

// The fields' readers. Each reads the field's JSON value and checks it; `null` counts as absent.

/// Reads a JSON value and checks it with `check`; `null` is `None`.
fn leaf<'de, D, T>(
    d: D,
    check: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => check(&v).map(Some).map_err(de::Error::custom),
    }
}

/// `must be {what}, found {value}`.
fn must_be(what: &str, found: &Value) -> String {
    format!("must be {what}, found {}", describe(found))
}

/// A JSON value as it appears in the file, shortened for messages.
fn describe(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| must_be("a string", v))
}

/// An integer from 1 to `max`.
fn count(v: &Value, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ if max >= u64::from(u32::MAX) => Err(must_be("an integer >= 1", v)),
        _ => Err(must_be(&format!("an integer from 1 to {max}"), v)),
    }
}

/// An http(s) URL with a host and no query or fragment, returned without trailing `/`.
fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    leaf(d, |v| {
        let text = string(v)?;
        let problem = match url::Url::parse(text) {
            Err(e) => format!("is not a URL ({e})"),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                "must be an http:// or https:// URL".to_string()
            }
            Ok(u) if !matches!(u.host_str(), Some(h) if !h.is_empty()) => "has no host".to_string(),
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                "must not have a query (`?`) or fragment (`#`)".to_string()
            }
            Ok(_) if text.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                "must not contain whitespace".to_string()
            }
            Ok(_) => return Ok(text.trim_end_matches('/').to_string()),
        };
        Err(format!("{problem}, found {text:?}"))
    })
}

/// A non-empty string without whitespace or control characters (it ends up in one-line files
/// and command lines).
fn word<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    leaf(d, |v| {
        let text = string(v)?;
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "must be a non-empty string without whitespace, found {text:?}"
            ));
        }
        Ok(text.to_string())
    })
}

/// A mirror directory, or `s3://BUCKET/PREFIX` with a bucket name.
fn target<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    leaf(d, |v| {
        let text = string(v)?;
        if text.is_empty() || text.chars().any(|c| c.is_control()) {
            return Err(format!(
                "must be a directory or s3://BUCKET/PREFIX, found {text:?}"
            ));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or("").is_empty() {
                return Err(format!(
                    "the bucket name is missing (expected s3://BUCKET/PREFIX), found {text:?}"
                ));
            }
        } else if text.contains("://") {
            return Err(format!(
                "must be a directory or s3://BUCKET/PREFIX, found {text:?}"
            ));
        }
        Ok(text.to_string())
    })
}

fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    leaf(d, |v| count(v, MAX_THREADS as u64).map(|n| n as usize))
}

fn profile<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Profile>, D::Error> {
    leaf(d, |v| {
        string(v)?.parse::<Profile>().map_err(|e| e.to_string())
    })
}

fn keep<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    leaf(d, |v| count(v, u32::MAX.into()).map(|n| n as u32))
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    leaf(d, |v| {
        v.as_bool().ok_or_else(|| must_be("true or false", v))
    })
}

/// A non-empty list of Nix system names (`x86_64-linux`), without repeats.
fn systems<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    leaf(d, |v| {
        let list = v
            .as_array()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| must_be("a non-empty array of systems such as \"x86_64-linux\"", v))?;
        let mut out: Vec<String> = Vec::new();
        for item in list {
            let name = item
                .as_str()
                .filter(|s| {
                    s.contains('-')
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                })
                .ok_or_else(|| must_be("a system such as \"x86_64-linux\"", item))?;
            if out.iter().any(|o| o == name) {
                return Err(format!("lists {name:?} twice"));
            }
            out.push(name.to_string());
        }
        Ok(out)
    })
}

/// A channel name: a plain file name of `[A-Za-z0-9._+-]` that does not start with `.`.
fn channel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    leaf(d, |v| {
        let name = string(v)?;
        let plain = check_file_name(name).is_ok()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if !plain {
            return Err(format!(
                "must be a plain file name of the characters A-Z a-z 0-9 . _ + - that does not \
                 start with `.`, found {name:?}"
            ));
        }
        Ok(name.to_string())
    })
}

/// A name that can stand in a Hydra URL path; `kind` (project, jobset, job) is for the message.
fn hydra_name<'de, D: Deserializer<'de>>(d: D, kind: &str) -> Result<Option<String>, D::Error> {
    leaf(d, |v| {
        let name = string(v)?;
        hydra::check_name(name).map_err(|reason| {
            format!("is not a usable Hydra {kind} name ({reason}), found {name:?}")
        })?;
        Ok(name.to_string())
    })
}

fn project<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    hydra_name(d, "project")
}

fn jobset<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    hydra_name(d, "jobset")
}

fn job<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    hydra_name(d, "job")
}

/// A trusted public key, `name:base64`.
struct Key(PublicKey);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let text = v
            .as_str()
            .ok_or_else(|| de::Error::custom(must_be("a `name:base64` key", &v)))?;
        PublicKey::parse(text).map(Key).map_err(de::Error::custom)
    }
}

/// A derived struct, read from a JSON object only: serde would also read it from an array of
/// its fields in order, which the format does not allow.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// What is wrong, in this format's words. The field readers word their own problems; what serde
/// finds itself, an unknown key or a value of the wrong JSON type where an object or array must
/// be, is worded here from the value at the path of the failure.
fn explain(root: &Value, e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path: Vec<&Segment> = e.path().iter().collect();
    if let Some((Segment::Map { key }, parent)) = path.split_last() {
        if let Some(Container::Object(_, fields)) = container(parent) {
            if !fields.names.contains(&key.as_str()) {
                return fields.unknown(key);
            }
        }
    }
    let found = path.iter().try_fold(root, |v, segment| match segment {
        Segment::Map { key } => v.get(key),
        Segment::Seq { index } => v.get(index),
        _ => None,
    });
    match (container(&path), found) {
        (Some(Container::Object(what, _)), Some(v)) if !v.is_object() => must_be(what, v),
        (Some(Container::Array(what)), Some(v)) if !v.is_array() => must_be(what, v),
        _ => e.into_inner().to_string(),
    }
}

/// An object or array of the format.
enum Container {
    Object(&'static str, Fields),
    Array(&'static str),
}

/// The object or array of the format at `path`, if it is one.
fn container(path: &[&Segment]) -> Option<Container> {
    use Segment::{Map, Seq};
    Some(match path {
        [] => Container::Object("a JSON object", TOP_FIELDS),
        [Map { key }] if key == "releases" => Container::Array("an array of releases"),
        [Map { key }] if key == "trusted_public_keys" => {
            Container::Array("an array of `name:base64` keys")
        }
        [Map { key }, Seq { .. }] if key == "releases" => {
            Container::Object("an object", RELEASE_FIELDS)
        }
        _ => return None,
    })
}

/// The field names of an object, for the message on an unknown key.
#[derive(Clone, Copy)]
struct Fields {
    /// What the object is, e.g. `a release`.
    of: &'static str,
    names: &'static [&'static str],
}

impl Fields {
    fn unknown(self, key: &str) -> String {
        let hint = self
            .closest(key)
            .map(|name| format!("did you mean `{name}`? "))
            .unwrap_or_default();
        format!(
            "unknown field; {hint}the fields of {} are {}",
            self.of,
            self.names.join(", ")
        )
    }

    /// The name closest to `key`, if `key` is likely a typo of it.
    fn closest(self, key: &str) -> Option<&'static str> {
        self.names
            .iter()
            .map(|name| (strsim::levenshtein(name, key), *name))
            .filter(|(distance, _)| *distance <= 2)
            .min()
            .map(|(_, name)| name)
    }
}

/// A JSON value read with duplicate object keys refused (serde_json keeps the last silently).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in the same object"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(StrictValue(Value::Object(obj)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::CACHE_NIXOS_ORG_KEY;

    const ORIGIN: &str = "nixos_release.json";

    /// The config of the 2017 release scripts' repository, as it was.
    const SEED_SAMPLE: &str = r#"{
    "cache": "https://cache.nixos.org",
    "hydra": "https://hydra.nixos.org",
    "max_threads": 69,
    "releases": [
        {
            "channel": "nixos-17.03-small",
            "job": "tested",
            "jobset": "release-17.03-small",
            "keep": 7,
            "project": "nixos"
        },
        {
            "channel": "nixos-unstable",
            "job": "tested",
            "jobset": "trunk-combined",
            "keep": 7,
            "project": "nixos"
        },
        {
            "channel": "nixpkgs-unstable",
            "job": "unstable",
            "jobset": "trunk",
            "keep": 7,
            "project": "nixpkgs"
        }
    ],
    "target_cache": "https://cache.rrza.de"
}
"#;

    fn repo_file(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    fn err(text: &str) -> String {
        parse(ORIGIN, text).unwrap_err().to_string()
    }

    /// A config whose only release is `release` (a JSON object body).
    fn with_release(release: &str) -> String {
        format!(r#"{{"releases": [{{{release}}}]}}"#)
    }

    const OK_RELEASE: &str =
        r#""channel": "nixos-24.11", "project": "nixos", "jobset": "release-24.11""#;

    #[test]
    fn the_sample_config_loads() {
        let c = load(&repo_file("nixos_release.json")).unwrap();
        assert_eq!(c.hydra, "https://hydra.nixos.org");
        assert_eq!(c.cache, "https://cache.nixos.org");
        assert_eq!(c.binary_cache_url(), "https://cache.nixos.org");
        assert_eq!(c.max_threads, 16);
        assert_eq!(
            c.trusted_public_keys,
            [PublicKey::parse(CACHE_NIXOS_ORG_KEY).unwrap()]
        );
        let names: Vec<(&str, &str, &str, &str)> = c
            .releases
            .iter()
            .map(|r| {
                (
                    r.channel.as_str(),
                    r.project.as_str(),
                    r.jobset.as_str(),
                    r.job.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("nixos-24.11", "nixos", "release-24.11", "tested"),
                (
                    "nixos-24.11-small",
                    "nixos",
                    "release-24.11-small",
                    "tested"
                ),
                ("nixos-unstable", "nixos", "trunk-combined", "tested"),
                ("nixos-unstable-small", "nixos", "unstable-small", "tested"),
                ("nixpkgs-unstable", "nixpkgs", "trunk", "unstable"),
            ]
        );
        assert!(c.releases.iter().all(|r| r.keep == Some(7) && !r.mirror));
        assert_eq!(c.release("nixpkgs-unstable").unwrap().job, "unstable");
        assert!(c.release("nixos-17.09").is_none());
    }

    #[test]
    fn the_local_example_config_loads() {
        let c = load(&repo_file("examples/nixos_release.local.json")).unwrap();
        assert_eq!(c.hydra, "http://127.0.0.1:8081");
        assert_eq!(c.cache, "http://127.0.0.1:8082");
        assert_eq!(c.trusted_public_keys[0].name(), "nixipfs-fixture-1");
        let fixture_key =
            std::fs::read_to_string(repo_file("src/testdata/keys/fixture-signing-key.pub"))
                .unwrap();
        assert_eq!(
            c.trusted_public_keys[0],
            PublicKey::parse(&fixture_key).unwrap()
        );
        assert_eq!(c.releases[0].channel, "nixos-17.09");
        assert_eq!(c.releases[0].keep, Some(2));
    }

    #[test]
    fn the_seed_config_is_accepted_as_is() {
        let c = parse(ORIGIN, SEED_SAMPLE).unwrap();
        assert_eq!(c.max_threads, 69);
        assert_eq!(c.max_ipfs_threads, None);
        assert_eq!(c.target_cache.as_deref(), Some("https://cache.rrza.de"));
        assert_eq!(c.binary_cache_url(), "https://cache.rrza.de");
        assert!(c.trusted_public_keys.is_empty());
        assert_eq!(c.repo, None);
        assert_eq!(c.releases.len(), 3);
        assert_eq!(
            c.releases[0],
            Release {
                channel: "nixos-17.03-small".into(),
                project: "nixos".into(),
                jobset: "release-17.03-small".into(),
                job: "tested".into(),
                keep: Some(7),
                mirror: false,
                source: None,
                programs: true,
                systems: vec!["x86_64-linux".into(), "aarch64-linux".into()],
            }
        );
    }

    #[test]
    fn defaults_and_optional_fields() {
        let c = parse(ORIGIN, &with_release(OK_RELEASE)).unwrap();
        assert_eq!(c.hydra, DEFAULT_HYDRA);
        assert_eq!(c.cache, DEFAULT_CACHE);
        assert_eq!(c.max_threads, DEFAULT_MAX_THREADS);
        assert_eq!(c.target_cache, None);
        assert_eq!(c.releases[0].job, DEFAULT_JOB);
        assert_eq!(c.releases[0].keep, None);
        assert!(!c.releases[0].mirror);
        assert_eq!(c.cid_profile, None);

        let c = parse(
            ORIGIN,
            r#"{"hydra": "http://127.0.0.1:3000/", "cache": "https://mirror.example/nix/",
                "target_cache": null, "repo": "git@github.com:NixOS/nixpkgs.git",
                "max_ipfs_threads": 3, "trusted_public_keys": null,
                "cid_profile": "unixfs-v1-2025",
                "releases": [{"channel": "c+1_x", "project": "p", "jobset": "j",
                              "job": null, "keep": 4294967295, "mirror": true}]}"#,
        )
        .unwrap();
        assert_eq!(c.hydra, "http://127.0.0.1:3000");
        assert_eq!(c.cache, "https://mirror.example/nix");
        assert_eq!(c.target_cache, None);
        assert_eq!(c.repo.as_deref(), Some("git@github.com:NixOS/nixpkgs.git"));
        assert_eq!(c.max_ipfs_threads, Some(3));
        assert_eq!(c.cid_profile, Some(Profile::UnixfsV1_2025));
        assert_eq!(c.releases[0].job, "tested");
        assert_eq!(c.releases[0].keep, Some(u32::MAX));
        assert!(c.releases[0].mirror);
    }

    #[test]
    fn malformed_json_gives_line_and_column() {
        assert_eq!(
            err("{\n  \"releases\": [\n    {,\n  ]\n}"),
            "nixos_release.json: line 3, column 6: key must be a string"
        );
        assert_eq!(
            err(r#"{"releases": []"#),
            "nixos_release.json: line 1, column 15: EOF while parsing an object"
        );
        assert_eq!(
            err(""),
            "nixos_release.json: line 1, column 0: EOF while parsing a value"
        );
        assert_eq!(
            err("{\"max_threads\": 1,\n \"max_threads\": 2}"),
            "nixos_release.json: line 2, column 14: the key \"max_threads\" appears twice in the \
             same object"
        );
        assert!(matches!(
            parse(ORIGIN, "[1,"),
            Err(ConfigError::Syntax {
                line: 1,
                column: 3,
                ..
            })
        ));
    }

    #[test]
    fn a_target_and_its_endpoint_are_read() {
        let c = parse(
            "c.json",
            r#"{"target": "s3://b/mirror", "s3_endpoint": "http://127.0.0.1:3900/",
                "s3_region": "garage", "releases": [{"channel": "c", "project": "p",
                "jobset": "j"}]}"#,
        )
        .unwrap();
        assert_eq!(c.target.as_deref(), Some("s3://b/mirror"));
        assert_eq!(c.s3_endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(c.s3_region.as_deref(), Some("garage"));
        let c = parse(
            "c.json",
            r#"{"releases": [{"channel": "c", "project": "p", "jobset": "j"}]}"#,
        )
        .unwrap();
        assert_eq!((c.target, c.s3_endpoint, c.s3_region), (None, None, None));
    }

    #[test]
    fn each_field_error_names_the_field() {
        let r = OK_RELEASE;
        let cases: Vec<(String, &str)> = vec![
            ("[]".into(), "top level: must be a JSON object, found []"),
            ("{}".into(), "releases: is missing: list at least one release"),
            (r#"{"releases": []}"#.into(), "releases: must list at least one release, found []"),
            (r#"{"releases": {}}"#.into(), "releases: must be an array of releases, found {}"),
            (r#"{"releases": ["nixos"]}"#.into(), "releases[0]: must be an object, found \"nixos\""),
            (
                format!(r#"{{"releases": [{{{r}}}, {{{r}, "keep": 0}}]}}"#),
                "releases[1].keep: must be an integer >= 1, found 0",
            ),
            (with_release(&format!(r#"{r}, "keep": "7""#)), "releases[0].keep: must be an integer >= 1, found \"7\""),
            (with_release(&format!(r#"{r}, "keep": 1.5"#)), "releases[0].keep: must be an integer >= 1, found 1.5"),
            (with_release(&format!(r#"{r}, "keep": -1"#)), "releases[0].keep: must be an integer >= 1, found -1"),
            (
                with_release(&format!(r#"{r}, "keep": 4294967296"#)),
                "releases[0].keep: must be an integer >= 1, found 4294967296",
            ),
            (with_release(&format!(r#"{r}, "mirror": "yes""#)), "releases[0].mirror: must be true or false, found \"yes\""),
            (with_release(&format!(r#"{r}, "mirror": 1"#)), "releases[0].mirror: must be true or false, found 1"),
            (
                with_release(&format!(r#"{r}, "mirorr": true"#)),
                "releases[0].mirorr: unknown field; did you mean `mirror`? the fields of a release \
                 are channel, project, jobset, job, keep, mirror, source, programs, systems",
            ),
            (
                with_release(&format!(r#"{r}, "description": "x""#)),
                "releases[0].description: unknown field; the fields of a release are channel, \
                 project, jobset, job, keep, mirror, source, programs, systems",
            ),
            (
                r#"{"max_thread": 3, "releases": []}"#.into(),
                "max_thread: unknown field; did you mean `max_threads`? the fields of the top level \
                 are hydra, cache, target_cache, repo, max_threads, max_ipfs_threads, \
                 cid_profile, trusted_public_keys, releases, target, s3_endpoint, s3_region",
            ),
            (
                with_release(r#""project": "nixos", "jobset": "trunk""#),
                "releases[0].channel: is missing",
            ),
            (
                with_release(r#""channel": "x", "jobset": "trunk""#),
                "releases[0].project: is missing (or give `source`, the channel URL of a published \
                 release)",
            ),
            (
                with_release(r#""channel": 5, "project": "nixos", "jobset": "trunk""#),
                "releases[0].channel: must be a string, found 5",
            ),
            (
                format!(r#"{{"releases": [{{{r}}}, {{{r}, "job": "small"}}]}}"#),
                "releases[1].channel: \"nixos-24.11\" is already the channel of releases[0]; \
                 channel names must be unique",
            ),
            (
                with_release(r#""channel": "c", "project": "nixos", "jobset": "release/24.11""#),
                "releases[0].jobset: is not a usable Hydra jobset name (it contains `/`), found \
                 \"release/24.11\"",
            ),
            (
                with_release(r#""channel": "c", "project": "", "jobset": "j""#),
                "releases[0].project: is not a usable Hydra project name (it is empty), found \"\"",
            ),
            (
                with_release(r#""channel": "c", "project": "p", "jobset": "j", "job": "..""#),
                "releases[0].job: is not a usable Hydra job name (`.` and `..` are not names), \
                 found \"..\"",
            ),
            (
                format!(r#"{{"max_threads": 0, "releases": [{{{r}}}]}}"#),
                "max_threads: must be an integer from 1 to 1024, found 0",
            ),
            (
                format!(r#"{{"max_threads": 5000, "releases": [{{{r}}}]}}"#),
                "max_threads: must be an integer from 1 to 1024, found 5000",
            ),
            (
                format!(r#"{{"target": "s3:///x", "releases": [{{{r}}}]}}"#),
                "target: the bucket name is missing (expected s3://BUCKET/PREFIX), found \
                 \"s3:///x\"",
            ),
            (
                format!(r#"{{"target": "ftp://h/x", "releases": [{{{r}}}]}}"#),
                "target: must be a directory or s3://BUCKET/PREFIX, found \"ftp://h/x\"",
            ),
            (
                format!(r#"{{"s3_endpoint": "127.0.0.1:3900", "releases": [{{{r}}}]}}"#),
                "s3_endpoint: is not a URL (relative URL without a base), found \"127.0.0.1:3900\"",
            ),
            (
                format!(r#"{{"cid_profile": "unixfs-v2", "releases": [{{{r}}}]}}"#),
                "cid_profile: unknown profile \"unixfs-v2\" (expected unixfs-v1-2025, \
                 unixfs-v0-2015 or legacy-raw-v0)",
            ),
            (
                format!(r#"{{"max_ipfs_threads": "4", "releases": [{{{r}}}]}}"#),
                "max_ipfs_threads: must be an integer from 1 to 1024, found \"4\"",
            ),
            (
                format!(r#"{{"hydra": "ftp://hydra.nixos.org", "releases": [{{{r}}}]}}"#),
                "hydra: must be an http:// or https:// URL, found \"ftp://hydra.nixos.org\"",
            ),
            (
                format!(r#"{{"hydra": "hydra.nixos.org", "releases": [{{{r}}}]}}"#),
                "hydra: is not a URL (relative URL without a base), found \"hydra.nixos.org\"",
            ),
            (
                format!(r#"{{"cache": "https://cache.nixos.org/?x=1", "releases": [{{{r}}}]}}"#),
                "cache: must not have a query (`?`) or fragment (`#`), found \
                 \"https://cache.nixos.org/?x=1\"",
            ),
            (
                format!(r#"{{"cache": "file:///srv/cache", "releases": [{{{r}}}]}}"#),
                "cache: must be an http:// or https:// URL, found \"file:///srv/cache\"",
            ),
            (
                format!(r#"{{"cache": ["https://cache.nixos.org"], "releases": [{{{r}}}]}}"#),
                "cache: must be a string, found [\"https://cache.nixos.org\"]",
            ),
            (
                format!(r#"{{"target_cache": "", "releases": [{{{r}}}]}}"#),
                "target_cache: must be a non-empty string without whitespace, found \"\"",
            ),
            (
                format!(r#"{{"repo": "https://x/y z", "releases": [{{{r}}}]}}"#),
                "repo: must be a non-empty string without whitespace, found \"https://x/y z\"",
            ),
            (
                format!(r#"{{"trusted_public_keys": [], "releases": [{{{r}}}]}}"#),
                "trusted_public_keys: must list at least one key (`name:base64`); leave the field \
                 out to use the default",
            ),
            (
                format!(r#"{{"trusted_public_keys": "{CACHE_NIXOS_ORG_KEY}", "releases": [{{{r}}}]}}"#),
                "trusted_public_keys: must be an array of `name:base64` keys, found \
                 \"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"",
            ),
            (
                format!(r#"{{"trusted_public_keys": [5], "releases": [{{{r}}}]}}"#),
                "trusted_public_keys[0]: must be a `name:base64` key, found 5",
            ),
            (
                format!(
                    r#"{{"trusted_public_keys": ["{CACHE_NIXOS_ORG_KEY}", "{CACHE_NIXOS_ORG_KEY}"], "releases": [{{{r}}}]}}"#
                ),
                "trusted_public_keys[1]: the key name \"cache.nixos.org-1\" is already used by \
                 trusted_public_keys[0]",
            ),
        ];
        for (text, expected) in &cases {
            assert_eq!(err(text), format!("{ORIGIN}: {expected}"), "{text}");
        }
    }

    #[test]
    fn objects_are_not_read_from_arrays() {
        assert_eq!(
            err(r#"[null, null, null, null, null, null, null, [{"channel": "c"}]]"#),
            "nixos_release.json: top level: must be a JSON object, found \
             [null,null,null,null,null,null,null,[{\"channel\":\"c\"}]]"
        );
        assert_eq!(
            err(r#"{"releases": [["nixos-24.11", "nixos", "release-24.11"]]}"#),
            "nixos_release.json: releases[0]: must be an object, found \
             [\"nixos-24.11\",\"nixos\",\"release-24.11\"]"
        );
    }

    #[test]
    fn every_listed_field_is_read() {
        let nulls = |names: &[&str], skip: &[&str]| -> String {
            let fields = names.iter().filter(|n| !skip.contains(n));
            fields.map(|n| format!(r#", "{n}": null"#)).collect()
        };
        let release = format!(
            "{{{OK_RELEASE}{}}}",
            nulls(RELEASE_FIELDS.names, &["channel", "project", "jobset"])
        );
        let text = format!(
            r#"{{"releases": [{release}]{}}}"#,
            nulls(TOP_FIELDS.names, &["releases"])
        );
        let c = parse(ORIGIN, &text).unwrap();
        assert_eq!(c.releases[0].job, DEFAULT_JOB);
    }

    #[test]
    fn a_release_from_a_published_channel_names_no_hydra_job() {
        let c = parse(
            ORIGIN,
            &with_release(
                r#""channel": "nixos-24.11", "source": "https://channels.nixos.org/nixos-24.11/""#,
            ),
        )
        .unwrap();
        let r = &c.releases[0];
        assert_eq!(
            r.source.as_deref(),
            Some("https://channels.nixos.org/nixos-24.11")
        );
        assert_eq!((r.project.as_str(), r.jobset.as_str()), ("", ""));
        for (field, value) in [
            ("project", r#""nixos""#),
            ("jobset", r#""release-24.11""#),
            ("job", r#""tested""#),
            ("programs", "false"),
            ("systems", r#"["x86_64-linux"]"#),
        ] {
            let e = err(&with_release(&format!(
                r#""channel": "c", "source": "https://channels.nixos.org/c", "{field}": {value}"#
            )));
            assert!(
                e.contains(&format!(
                    "releases[0].{field}: cannot be given with `source`"
                )),
                "{e}"
            );
        }
        let e = err(&with_release(r#""channel": "c", "jobset": "j""#));
        assert!(
            e.contains("releases[0].project: is missing (or give `source`"),
            "{e}"
        );
        let e = err(&with_release(r#""channel": "c", "source": "ftp://x/c""#));
        assert!(e.contains("releases[0].source: must be an http"), "{e}");
    }

    #[test]
    fn programs_and_systems_of_a_hydra_release() {
        let c = parse(ORIGIN, &with_release(OK_RELEASE)).unwrap();
        assert!(c.releases[0].programs);
        assert_eq!(c.releases[0].systems, DEFAULT_PROGRAMS_SYSTEMS);
        let c = parse(
            ORIGIN,
            &with_release(&format!(
                r#"{OK_RELEASE}, "programs": false, "systems": ["x86_64-darwin"]"#
            )),
        )
        .unwrap();
        assert!(!c.releases[0].programs);
        assert_eq!(c.releases[0].systems, ["x86_64-darwin"]);
        for bad in [
            "[]",
            r#"["x86_64-linux", "x86_64-linux"]"#,
            r#"["linux"]"#,
            "\"x86_64-linux\"",
        ] {
            let e = err(&with_release(&format!(r#"{OK_RELEASE}, "systems": {bad}"#)));
            assert!(e.contains("releases[0].systems:"), "{e}");
        }
        let e = err(&with_release(&format!(r#"{OK_RELEASE}, "program": false"#)));
        assert!(e.contains("did you mean `programs`?"), "{e}");
    }

    #[test]
    fn bad_public_keys_say_why() {
        let e = err(&format!(
            r#"{{"trusted_public_keys": ["{CACHE_NIXOS_ORG_KEY}", "cache.nixos.org-1"], "releases": [{{{OK_RELEASE}}}]}}"#
        ));
        assert_eq!(
            e,
            "nixos_release.json: trusted_public_keys[1]: public key \"cache.nixos.org-1\" has no \
             ':' between the key name and the base64 data"
        );
        let e = err(&format!(
            r#"{{"trusted_public_keys": ["k:AAAA"], "releases": [{{{OK_RELEASE}}}]}}"#
        ));
        assert!(
            e.starts_with("nixos_release.json: trusted_public_keys[0]: public key for key \"k\""),
            "{e}"
        );
    }

    #[test]
    fn channel_names_are_plain_file_names() {
        for bad in [
            "",
            ".",
            "..",
            "../nixos",
            "a/b",
            ".hidden",
            "nixos 24.11",
            "nixos\u{0}",
            "é",
        ] {
            let text = with_release(&format!(
                r#""channel": {}, "project": "p", "jobset": "j""#,
                Value::String(bad.to_string())
            ));
            let e = err(&text);
            assert!(
                e.starts_with("nixos_release.json: releases[0].channel: must be a plain file name"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.json");
        let e = format!("{:#}", load(&missing).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "cannot read the config file {}",
                missing.display()
            )),
            "{e}"
        );

        let path = dir.path().join("bad.json");
        std::fs::write(&path, with_release(&format!("{OK_RELEASE}, \"keep\": 0"))).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}: releases[0].keep: must be an integer >= 1, found 0",
                path.display()
            )
        );

        std::fs::write(&path, vec![b' '; MAX_CONFIG_SIZE as usize + 1]).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(
            e.contains("more than 1048576 bytes is not a release config"),
            "{e}"
        );

        std::fs::write(&path, b"{\"releases\": \"\xff\"}").unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("valid UTF-8"), "{e}");
    }

    #[test]
    fn hints_name_a_field_at_most_two_edits_away() {
        assert_eq!(RELEASE_FIELDS.closest("mirorr"), Some("mirror"));
        assert_eq!(RELEASE_FIELDS.closest("keep"), Some("keep"));
        assert_eq!(RELEASE_FIELDS.closest("kep"), Some("keep"));
        assert_eq!(RELEASE_FIELDS.closest("description"), None);
        assert_eq!(TOP_FIELDS.closest("max_thread"), Some("max_threads"));
        let abc = Fields {
            of: "a test object",
            names: &["abc"],
        };
        assert_eq!(abc.closest(""), None);
        assert_eq!(abc.closest("a"), Some("abc"));
    }
}
