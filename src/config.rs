//! The release configuration, `nixos_release.json`: which channels to release from which Hydra
//! jobs, where the binary cache is, and how much to keep.
//!
//! The format is the one of the 2017 release scripts, accepted as is, with one new optional field:
//!
//! ```json
//! {
//!     "hydra": "https://hydra.nixos.org",
//!     "cache": "https://cache.nixos.org",
//!     "target_cache": "https://cache.example.org",
//!     "repo": "https://github.com/NixOS/nixpkgs.git",
//!     "max_threads": 7,
//!     "max_ipfs_threads": 4,
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
//! | `repo` | optional nixpkgs git URL, used by source tarball mirroring |
//! | `max_threads` | concurrent downloads, 1 to [`MAX_THREADS`]; default [`DEFAULT_MAX_THREADS`] |
//! | `max_ipfs_threads` | optional, concurrent IPFS requests, 1 to [`MAX_THREADS`] |
//! | `trusted_public_keys` | **new**, optional: `name:base64` Ed25519 keys, at least one, that narinfos must be signed by; absent means "not configured" (the caller picks its default) |
//! | `releases` | at least one release |
//! | `releases[].channel` | channel name, a plain file name of `[A-Za-z0-9._+-]`, not starting with `.`; unique |
//! | `releases[].project`, `.jobset` | the Hydra project and jobset |
//! | `releases[].job` | the Hydra job whose latest successful build is released; default [`DEFAULT_JOB`] (the 2017 schema did not require it) |
//! | `releases[].keep` | optional, >= 1: how many releases of the channel garbage collection keeps; absent: all of them (as in 2017) |
//! | `releases[].mirror` | optional, default `false`: whether the release's source tarballs are mirrored |
//!
//! [`load`] checks everything before returning: malformed JSON is reported with its line and
//! column, every other problem with the file name and the field path, e.g.
//! `nixos_release.json: releases[1].keep: must be an integer >= 1, found 0`. Unknown fields and
//! duplicate keys are errors, so that a typo in a cron job's config does not pass silently.
//! `null` counts as absent for the optional fields.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::fsutil::check_file_name;
use crate::hydra;
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

/// Config files larger than this (1 MiB) are refused unread.
const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// The fields of the top level, in the order the documentation gives them.
const TOP_FIELDS: &[&str] = &[
    "hydra",
    "cache",
    "target_cache",
    "repo",
    "max_threads",
    "max_ipfs_threads",
    "trusted_public_keys",
    "releases",
];

/// The fields of a release.
const RELEASE_FIELDS: &[&str] = &["channel", "project", "jobset", "job", "keep", "mirror"];

/// A validated release configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Hydra base URL (http or https), without a trailing `/`.
    pub hydra: String,
    /// Upstream binary cache URL (http or https), without a trailing `/`.
    pub cache: String,
    /// What releases record as their `binary-cache-url` instead of `cache`, if set.
    pub target_cache: Option<String>,
    /// The nixpkgs git repository, for source tarball mirroring.
    pub repo: Option<String>,
    /// Concurrent downloads (1 to [`MAX_THREADS`]).
    pub max_threads: usize,
    /// Concurrent IPFS requests (1 to [`MAX_THREADS`]), if set.
    pub max_ipfs_threads: Option<usize>,
    /// Keys that narinfos must be signed by; empty when the config does not set them.
    pub trusted_public_keys: Vec<PublicKey>,
    /// The releases, at least one, with distinct channel names, in the config's order.
    pub releases: Vec<Release>,
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
    let root = match serde_json::from_str::<StrictValue>(text) {
        Ok(StrictValue(v)) => v,
        Err(e) => {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            return Err(ConfigError::Syntax {
                origin: origin.to_string(),
                line: e.line(),
                column: e.column(),
                message,
            });
        }
    };
    Checker { origin }.config(&root)
}

/// Validation of the parsed JSON, producing errors that name the file and the field.
struct Checker<'a> {
    origin: &'a str,
}

impl Checker<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn config(&self, root: &Value) -> Result<Config, ConfigError> {
        let Value::Object(top) = root else {
            return Err(self.err(
                "top level",
                format!("must be a JSON object, found {}", describe(root)),
            ));
        };
        self.known_fields("", top, TOP_FIELDS, "the top level")?;

        let hydra = match self.opt_string(top, "", "hydra")? {
            Some(url) => self.http_url("hydra", url)?,
            None => DEFAULT_HYDRA.to_string(),
        };
        let cache = match self.opt_string(top, "", "cache")? {
            Some(url) => self.http_url("cache", url)?,
            None => DEFAULT_CACHE.to_string(),
        };
        let target_cache = self
            .opt_string(top, "", "target_cache")?
            .map(|s| self.one_word("target_cache", s))
            .transpose()?;
        let repo = self
            .opt_string(top, "", "repo")?
            .map(|s| self.one_word("repo", s))
            .transpose()?;
        let max_threads = self
            .opt_int(top, "", "max_threads", MAX_THREADS as u64)?
            .map_or(DEFAULT_MAX_THREADS, |n| n as usize);
        let max_ipfs_threads = self
            .opt_int(top, "", "max_ipfs_threads", MAX_THREADS as u64)?
            .map(|n| n as usize);
        let trusted_public_keys = self.public_keys(top)?;

        let releases = match top.get("releases") {
            None | Some(Value::Null) => {
                return Err(self.err("releases", "is missing: list at least one release"))
            }
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(self.err("releases", "must list at least one release, found []"))
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(self.err(
                    "releases",
                    format!("must be an array of releases, found {}", describe(other)),
                ))
            }
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::with_capacity(releases.len());
        for (i, item) in releases.iter().enumerate() {
            let release = self.release(i, item)?;
            if let Some(first) = seen.get(release.channel.as_str()) {
                return Err(self.err(
                    &format!("releases[{i}].channel"),
                    format!(
                        "{:?} is already the channel of releases[{first}]; channel names must be \
                         unique",
                        release.channel
                    ),
                ));
            }
            seen.insert(release.channel.clone(), i);
            out.push(release);
        }

        Ok(Config {
            hydra,
            cache,
            target_cache,
            repo,
            max_threads,
            max_ipfs_threads,
            trusted_public_keys,
            releases: out,
        })
    }

    fn release(&self, i: usize, item: &Value) -> Result<Release, ConfigError> {
        let prefix = format!("releases[{i}]");
        let Value::Object(obj) = item else {
            return Err(self.err(
                &prefix,
                format!("must be an object, found {}", describe(item)),
            ));
        };
        self.known_fields(&prefix, obj, RELEASE_FIELDS, "a release")?;

        let channel = self.req_string(obj, &prefix, "channel")?;
        let channel_ok = check_file_name(channel).is_ok()
            && !channel.starts_with('.')
            && channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if !channel_ok {
            return Err(self.err(
                &format!("{prefix}.channel"),
                format!(
                    "must be a plain file name of the characters A-Z a-z 0-9 . _ + - that does \
                     not start with `.`, found {channel:?}"
                ),
            ));
        }
        let project = self.hydra_name(obj, &prefix, "project")?;
        let jobset = self.hydra_name(obj, &prefix, "jobset")?;
        let job = match self.opt_string(obj, &prefix, "job")? {
            Some(_) => self.hydra_name(obj, &prefix, "job")?,
            None => DEFAULT_JOB.to_string(),
        };
        let keep = self
            .opt_int(obj, &prefix, "keep", u32::MAX as u64)?
            .map(|n| n as u32);
        let mirror = match obj.get("mirror") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(self.err(
                    &format!("{prefix}.mirror"),
                    format!("must be true or false, found {}", describe(other)),
                ))
            }
        };
        Ok(Release {
            channel: channel.to_string(),
            project,
            jobset,
            job,
            keep,
            mirror,
        })
    }

    fn public_keys(&self, top: &Map<String, Value>) -> Result<Vec<PublicKey>, ConfigError> {
        const FIELD: &str = "trusted_public_keys";
        let items =
            match top.get(FIELD) {
                None | Some(Value::Null) => return Ok(Vec::new()),
                Some(Value::Array(items)) if items.is_empty() => return Err(self.err(
                    FIELD,
                    "must list at least one key (`name:base64`); leave the field out to use the \
                     default",
                )),
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(self.err(
                        FIELD,
                        format!(
                            "must be an array of `name:base64` keys, found {}",
                            describe(other)
                        ),
                    ))
                }
            };
        let mut keys: Vec<PublicKey> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            let Value::String(text) = item else {
                return Err(self.err(
                    &field,
                    format!("must be a `name:base64` key, found {}", describe(item)),
                ));
            };
            let key = PublicKey::parse(text).map_err(|e| self.err(&field, e.to_string()))?;
            if let Some(j) = keys.iter().position(|k| k.name() == key.name()) {
                return Err(self.err(
                    &field,
                    format!(
                        "the key name {:?} is already used by {FIELD}[{j}]",
                        key.name()
                    ),
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// Refuses fields not in `known`, suggesting the closest known name.
    fn known_fields(
        &self,
        prefix: &str,
        obj: &Map<String, Value>,
        known: &[&str],
        what: &str,
    ) -> Result<(), ConfigError> {
        for key in obj.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let hint = known
                .iter()
                .map(|k| (edit_distance(k, key), *k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            return Err(self.err(
                &join(prefix, key),
                format!(
                    "unknown field; {hint}the fields of {what} are {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn opt_string<'v>(
        &self,
        obj: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Result<Option<&'v str>, ConfigError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                &join(prefix, key),
                format!("must be a string, found {}", describe(other)),
            )),
        }
    }

    fn req_string<'v>(
        &self,
        obj: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Result<&'v str, ConfigError> {
        self.opt_string(obj, prefix, key)?
            .ok_or_else(|| self.err(&join(prefix, key), "is missing"))
    }

    fn hydra_name(
        &self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Result<String, ConfigError> {
        let name = self.req_string(obj, prefix, key)?;
        hydra::check_name(name).map_err(|reason| {
            self.err(
                &join(prefix, key),
                format!("is not a usable Hydra {key} name ({reason}), found {name:?}"),
            )
        })?;
        Ok(name.to_string())
    }

    /// An integer from 1 to `max`, if present.
    fn opt_int(
        &self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let v = match obj.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => {
                let range = if max >= u32::MAX as u64 {
                    "an integer >= 1".to_string()
                } else {
                    format!("an integer from 1 to {max}")
                };
                Err(self.err(
                    &join(prefix, key),
                    format!("must be {range}, found {}", describe(v)),
                ))
            }
        }
    }

    /// An http(s) URL with a host and no query or fragment, returned without trailing `/`.
    fn http_url(&self, field: &str, text: &str) -> Result<String, ConfigError> {
        let problem = match url::Url::parse(text) {
            Err(e) => Some(format!("is not a URL ({e})")),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Some("must be an http:// or https:// URL".to_string())
            }
            Ok(u) if !matches!(u.host_str(), Some(h) if !h.is_empty()) => {
                Some("has no host".to_string())
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                Some("must not have a query (`?`) or fragment (`#`)".to_string())
            }
            Ok(_) if text.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Some("must not contain whitespace".to_string())
            }
            Ok(_) => None,
        };
        match problem {
            Some(p) => Err(self.err(field, format!("{p}, found {text:?}"))),
            None => Ok(text.trim_end_matches('/').to_string()),
        }
    }

    /// A non-empty string without whitespace or control characters (it ends up in one-line
    /// files and command lines).
    fn one_word(&self, field: &str, text: &str) -> Result<String, ConfigError> {
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                field,
                format!("must be a non-empty string without whitespace, found {text:?}"),
            ));
        }
        Ok(text.to_string())
    }
}

/// `prefix.key`, or `key` at the top level.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A JSON value as it appears in the file, shortened for messages.
fn describe(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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
        Ok(StrictValue(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_none<E>(self) -> Result<StrictValue, E> {
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
                return Err(serde::de::Error::custom(format!(
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

        let c = parse(
            ORIGIN,
            r#"{"hydra": "http://127.0.0.1:3000/", "cache": "https://mirror.example/nix/",
                "target_cache": null, "repo": "git@github.com:NixOS/nixpkgs.git",
                "max_ipfs_threads": 3, "trusted_public_keys": null,
                "releases": [{"channel": "c+1_x", "project": "p", "jobset": "j",
                              "job": null, "keep": 4294967295, "mirror": true}]}"#,
        )
        .unwrap();
        assert_eq!(c.hydra, "http://127.0.0.1:3000");
        assert_eq!(c.cache, "https://mirror.example/nix");
        assert_eq!(c.target_cache, None);
        assert_eq!(c.repo.as_deref(), Some("git@github.com:NixOS/nixpkgs.git"));
        assert_eq!(c.max_ipfs_threads, Some(3));
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
                 are channel, project, jobset, job, keep, mirror",
            ),
            (
                with_release(&format!(r#"{r}, "description": "x""#)),
                "releases[0].description: unknown field; the fields of a release are channel, \
                 project, jobset, job, keep, mirror",
            ),
            (
                r#"{"max_thread": 3, "releases": []}"#.into(),
                "max_thread: unknown field; did you mean `max_threads`? the fields of the top level \
                 are hydra, cache, target_cache, repo, max_threads, max_ipfs_threads, \
                 trusted_public_keys, releases",
            ),
            (
                with_release(r#""project": "nixos", "jobset": "trunk""#),
                "releases[0].channel: is missing",
            ),
            (
                with_release(r#""channel": "x", "jobset": "trunk""#),
                "releases[0].project: is missing",
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
    fn edit_distance_for_hints() {
        assert_eq!(edit_distance("mirror", "mirorr"), 2);
        assert_eq!(edit_distance("keep", "keep"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("max_threads", "max_thread"), 1);
    }
}
