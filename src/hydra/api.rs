//! The JSON answers of Hydra's API as Rust types, parsed from bytes and checked: no I/O here.
//!
//! [`Build::from_json`], [`Eval::from_json`] and [`parse_store_paths`] read the bodies of
//! `/build/ID`, `/eval/ID` and `/eval/ID/store-paths`. They tell an HTML page, broken JSON,
//! Hydra's own `{"error": "..."}` object and an answer of the wrong shape apart. Fields are read
//! leniently (see the `lenient` module); what is then used is checked strictly by the accessors,
//! whose errors name the URL the answer came from and the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::HydraError;
use super::lenient;
use crate::fsutil::check_file_name;
use crate::hash::Sha256Hash;
use crate::store_path::{parse_store_path_prefix, StorePath};
use crate::text::shorten;

/// A build, as `/build/ID` describes it (`Hydra::Schema::Result::Builds::as_json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Build {
    /// The build id.
    #[serde(deserialize_with = "lenient::value")]
    pub id: u64,
    /// The derivation name, e.g. `nixos-24.11.711815.3f0a8ac25fb6`: for a channel job, the
    /// release name. Use [`Build::release_name`] to get it checked.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub nixname: String,
    /// The job name, e.g. `tested` or `nixos.channel`.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub job: String,
    /// The project name.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub project: String,
    /// The jobset name.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub jobset: String,
    /// Whether the build has finished (successfully or not).
    #[serde(default, deserialize_with = "lenient::value")]
    pub finished: bool,
    /// 0 for success; `None` while the build is queued.
    #[serde(default, deserialize_with = "lenient::option")]
    pub buildstatus: Option<i64>,
    /// When the build was queued (Unix time).
    #[serde(default, deserialize_with = "lenient::option")]
    pub timestamp: Option<i64>,
    /// When the build started (Unix time).
    #[serde(default, deserialize_with = "lenient::option")]
    pub starttime: Option<i64>,
    /// When the build finished (Unix time).
    #[serde(default, deserialize_with = "lenient::option")]
    pub stoptime: Option<i64>,
    /// The evaluations the build belongs to, as Hydra lists them.
    #[serde(default, deserialize_with = "lenient::list")]
    pub jobsetevals: Vec<u64>,
    /// The build products, keyed by their product number ("1", "2", ...). Choose one with
    /// [`Build::product_by_subtype`]: the numbering is not stable across Hydra versions.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub buildproducts: BTreeMap<String, BuildProduct>,
    /// The outputs, keyed by output name ("out", "dev", ...).
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub buildoutputs: BTreeMap<String, BuildOutput>,
    /// The platform, e.g. `x86_64-linux`.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub system: String,
    /// The derivation's store path (absent before 2020).
    #[serde(default, deserialize_with = "lenient::option")]
    pub drvpath: Option<String>,
    /// The URL the build was read from.
    #[serde(skip)]
    url: String,
}

/// One product of a build (`BuildProducts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct BuildProduct {
    /// The product's path: a store path, or a file inside one
    /// (`/nix/store/…-nixos-channel-…/tarballs/nixos-….tar.xz`).
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub path: String,
    /// The product's display name.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub name: String,
    /// For directories: the file to link to inside `path`.
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub defaultpath: String,
    /// Size in bytes, for files.
    #[serde(default, deserialize_with = "lenient::option")]
    pub filesize: Option<u64>,
    /// sha256 of the file in hexadecimal, for files.
    #[serde(default, deserialize_with = "lenient::option")]
    pub sha256hash: Option<String>,
    /// `file`, `nix-build`, `report`, `doc`, ...
    #[serde(default, rename = "type", deserialize_with = "lenient::or_default")]
    pub r#type: String,
    /// `source-dist` (channel and nixpkgs tarballs), `iso`, `ova`, `json-br`, ...
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub subtype: String,
    /// The URL of the build this product belongs to.
    #[serde(skip)]
    url: String,
    /// This product's key in `buildproducts`.
    #[serde(skip)]
    key: String,
}

/// One output of a build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct BuildOutput {
    /// The output's store path (`None` for a content-addressed output not built yet).
    #[serde(default, deserialize_with = "lenient::option")]
    pub path: Option<String>,
}

/// An evaluation of a jobset, as `/eval/ID` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Eval {
    /// The evaluation id.
    #[serde(deserialize_with = "lenient::value")]
    pub id: u64,
    /// The inputs of a classic jobset by input name (`nixpkgs`, ...); empty for flake jobsets.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub jobsetevalinputs: BTreeMap<String, EvalInput>,
    /// The locked flake URI of a flake jobset (absent before 2021-10).
    #[serde(default, deserialize_with = "lenient::option")]
    pub flake: Option<String>,
    /// When the evaluation ran (Unix time; absent before 2021-10).
    #[serde(default, deserialize_with = "lenient::option")]
    pub timestamp: Option<i64>,
    /// The ids of the evaluation's builds.
    #[serde(default, deserialize_with = "lenient::list")]
    pub builds: Vec<u64>,
    /// The URL the evaluation was read from.
    #[serde(skip)]
    url: String,
}

/// One input of an evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct EvalInput {
    /// The revision, for version-control inputs.
    #[serde(default, deserialize_with = "lenient::option")]
    pub revision: Option<String>,
    /// The repository, for version-control inputs.
    #[serde(default, deserialize_with = "lenient::option")]
    pub uri: Option<String>,
    /// `git`, `boolean`, `string`, ...
    #[serde(default, rename = "type", deserialize_with = "lenient::or_default")]
    pub r#type: String,
}

impl Build {
    /// Parses the JSON of `/build/ID` (or of a redirect to it); `url` is where it came from and
    /// is named in later errors about its values.
    pub fn from_json(url: &str, body: &[u8]) -> Result<Build, HydraError> {
        let mut build: Build = parse_json(url, body, "build")?;
        build.url = url.to_string();
        for (key, product) in &mut build.buildproducts {
            product.url = url.to_string();
            product.key = key.clone();
        }
        Ok(build)
    }

    /// The URL this build was read from.
    pub fn source_url(&self) -> &str {
        &self.url
    }

    /// The evaluation the build came from: the first of `jobsetevals`, as the release scripts
    /// have always taken it.
    pub fn eval_id(&self) -> Result<u64, HydraError> {
        self.jobsetevals.first().copied().ok_or_else(|| {
            HydraError::invalid(
                &self.url,
                format!(
                    "field `jobsetevals` of build {} is empty: it belongs to no evaluation",
                    self.id
                ),
            )
        })
    }

    /// Whether the build finished and succeeded (`buildstatus` 0).
    pub fn is_success(&self) -> bool {
        self.finished && self.buildstatus == Some(0)
    }

    /// The first product (in product-number order) whose `subtype` is `subtype`, e.g.
    /// `source-dist` for a channel tarball, `iso` or `ova`.
    pub fn product_by_subtype(&self, subtype: &str) -> Option<&BuildProduct> {
        let mut matching: Vec<&BuildProduct> = self
            .buildproducts
            .values()
            .filter(|p| p.subtype == subtype)
            .collect();
        // Product keys are numbers; "10" must come after "2".
        matching.sort_by(|a, b| {
            let (ka, kb) = (a.key.parse::<u64>().ok(), b.key.parse::<u64>().ok());
            ka.is_none()
                .cmp(&kb.is_none())
                .then(ka.cmp(&kb))
                .then(a.key.cmp(&b.key))
        });
        matching.first().copied()
    }

    /// `nixname`, checked to be usable as a directory name: not empty, not `.` or `..`, no `/`
    /// or NUL, at most 255 bytes, and not starting with `.` (no hidden or temporary names).
    pub fn release_name(&self) -> Result<&str, HydraError> {
        let name = self.nixname.as_str();
        check_visible_file_name(name).map_err(|p| {
            HydraError::invalid(
                &self.url,
                format!(
                    "field `nixname` of build {} is not a plain file name: {p}",
                    self.id
                ),
            )
        })?;
        Ok(name)
    }
}

impl BuildProduct {
    /// The URL of the build this product was read from.
    pub fn source_url(&self) -> &str {
        &self.url
    }

    /// This product's key in the build's `buildproducts` ("1", "2", ...).
    pub fn key(&self) -> &str {
        &self.key
    }

    fn field(&self, name: &str) -> String {
        format!("buildproducts.{}.{name}", self.key)
    }

    /// Splits `path` into the store path and the path inside it, which is `""` when the product
    /// is the whole store path and otherwise starts with `/` (`/tarballs/x.tar.xz`); the inner
    /// path has no empty, `.` or `..` components.
    pub fn store_path_and_inner(&self) -> Result<(StorePath, String), HydraError> {
        let (store_path, inner) = parse_store_path_prefix(&self.path).map_err(|e| {
            HydraError::invalid(
                &self.url,
                format!("field `{}` is not a store path: {e}", self.field("path")),
            )
        })?;
        Ok((store_path, inner.to_string()))
    }

    /// The product's sha256 (`sha256hash`, hexadecimal).
    pub fn sha256(&self) -> Result<Sha256Hash, HydraError> {
        let field = self.field("sha256hash");
        let hex = self
            .sha256hash
            .as_deref()
            .ok_or_else(|| HydraError::invalid(&self.url, format!("field `{field}` is missing")))?;
        Sha256Hash::from_hex(hex).map_err(|e| {
            HydraError::invalid(
                &self.url,
                format!("field `{field}` is not a hexadecimal sha256 ({hex:?}): {e}"),
            )
        })
    }

    /// The last component of `path`, checked to be a plain file name, e.g.
    /// `nixos-24.11.711815.3f0a8ac25fb6.tar.xz`.
    pub fn file_name(&self) -> Result<&str, HydraError> {
        let name = self.path.rsplit('/').next().unwrap_or_default();
        check_visible_file_name(name).map_err(|p| {
            HydraError::invalid(
                &self.url,
                format!(
                    "field `{}` ({:?}) does not end in a plain file name: {p}",
                    self.field("path"),
                    self.path
                ),
            )
        })?;
        Ok(name)
    }
}

/// Checks that a name from Hydra can name a file or directory of the mirror: a plain file name
/// ([`check_file_name`]) that does not start with `.`, so that it is neither hidden nor taken
/// for one of the mirror's temporary files. The error says what is wrong.
fn check_visible_file_name(name: &str) -> Result<(), String> {
    check_file_name(name).map_err(|e| e.to_string())?;
    if name.starts_with('.') {
        return Err(format!("{name:?} starts with `.`"));
    }
    Ok(())
}

impl Eval {
    /// Parses the JSON of `/eval/ID`; `url` is where it came from and is named in later errors
    /// about its values.
    pub fn from_json(url: &str, body: &[u8]) -> Result<Eval, HydraError> {
        let mut eval: Eval = parse_json(url, body, "evaluation")?;
        eval.url = url.to_string();
        Ok(eval)
    }

    /// The URL this evaluation was read from.
    pub fn source_url(&self) -> &str {
        &self.url
    }

    /// The nixpkgs git revision that was evaluated, in lower case: the `nixpkgs` input's
    /// `revision`, or for a flake jobset (no `nixpkgs` input) the revision locked in `flake`
    /// (`github:NixOS/nixpkgs/<rev>`, `git+https://…?ref=…&rev=<rev>`). It must be 40
    /// hexadecimal characters.
    pub fn nixpkgs_revision(&self) -> Result<String, HydraError> {
        const FIELD: &str = "jobsetevalinputs.nixpkgs.revision";
        let (field, rev) = match (self.jobsetevalinputs.get("nixpkgs"), &self.flake) {
            (Some(input), _) => match &input.revision {
                Some(rev) => (FIELD, rev.as_str()),
                None => {
                    return Err(HydraError::invalid(
                        &self.url,
                        format!(
                            "field `{FIELD}` is missing (the `nixpkgs` input is of type {:?})",
                            input.r#type
                        ),
                    ))
                }
            },
            (None, Some(flake)) => match flake_revision(flake) {
                Some(rev) => ("flake", rev),
                None => {
                    return Err(HydraError::invalid(
                        &self.url,
                        format!(
                            "field `flake` ({flake:?}) names no revision (expected \
                             `github:OWNER/REPO/REV` or a `rev=` parameter)"
                        ),
                    ))
                }
            },
            (None, None) => {
                let inputs: Vec<&str> = self.jobsetevalinputs.keys().map(|k| k.as_str()).collect();
                let inputs = if inputs.is_empty() {
                    "none".to_string()
                } else {
                    inputs.join(", ")
                };
                return Err(HydraError::invalid(
                    &self.url,
                    format!(
                        "field `{FIELD}` is missing: the evaluation has no `nixpkgs` input \
                         (inputs: {inputs}) and no `flake`"
                    ),
                ));
            }
        };
        if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(rev.to_ascii_lowercase())
        } else {
            Err(HydraError::invalid(
                &self.url,
                format!(
                    "field `{field}` does not hold a git revision (40 hexadecimal characters): \
                     found {:?}",
                    shorten(rev, 100)
                ),
            ))
        }
    }
}

/// The revision in a locked flake URI: the `rev` query parameter, or the third path segment of
/// `github:`, `gitlab:` and `sourcehut:` URIs. Not validated.
fn flake_revision(uri: &str) -> Option<&str> {
    let uri = uri.split('#').next().unwrap_or_default();
    let (base, query) = match uri.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (uri, None),
    };
    if let Some(rev) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|param| param.strip_prefix("rev="))
    {
        return Some(rev);
    }
    let (scheme, path) = base.split_once(':')?;
    if !matches!(scheme, "github" | "gitlab" | "sourcehut") {
        return None;
    }
    path.split('/').nth(2).filter(|s| !s.is_empty())
}

/// Parses the JSON array of `/eval/ID/store-paths`: every entry must be a store path; the result
/// is sorted and free of duplicates.
pub fn parse_store_paths(url: &str, body: &[u8]) -> Result<Vec<StorePath>, HydraError> {
    let entries: Vec<String> = parse_json(url, body, "list of store paths")?;
    let mut paths = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = StorePath::from_absolute_path(entry)
            .map_err(|e| HydraError::invalid(url, format!("entry {i} is not a store path: {e}")))?;
        paths.push(path);
    }
    paths.sort_unstable();
    paths.dedup();
    Ok(paths)
}

/// Deserializes an answer, telling an HTML page, broken JSON, Hydra's `{"error": ...}` and a
/// shape mismatch apart.
fn parse_json<T: serde::de::DeserializeOwned>(
    url: &str,
    body: &[u8],
    what: &str,
) -> Result<T, HydraError> {
    let text = body
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(body);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &text[i..])
        .unwrap_or_default();
    if start.is_empty() {
        return Err(HydraError::Json {
            url: url.to_string(),
            reason: format!("the answer is empty; expected a JSON {what}"),
        });
    }
    if start[0] == b'<' {
        let title = html_title(start)
            .map(|t| format!(" ({t:?})"))
            .unwrap_or_default();
        return Err(HydraError::Html {
            url: url.to_string(),
            title,
        });
    }
    match serde_json::from_slice::<T>(text) {
        Ok(v) => Ok(v),
        Err(e) if e.is_syntax() || e.is_eof() => Err(HydraError::Json {
            url: url.to_string(),
            reason: format!(
                "the answer is not valid JSON ({e}); it starts with {:?}",
                shorten(&String::from_utf8_lossy(&start[..start.len().min(200)]), 80)
            ),
        }),
        Err(e) => {
            if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(text) {
                if let Some(serde_json::Value::String(message)) = obj.get("error") {
                    return Err(HydraError::Server {
                        url: url.to_string(),
                        message: message.clone(),
                    });
                }
            }
            Err(HydraError::Json {
                url: url.to_string(),
                reason: format!("the answer is not a Hydra {what}: {e}"),
            })
        }
    }
}

/// The text of the `<title>` of an HTML page, whitespace collapsed, at most 100 characters.
fn html_title(page: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&page[..page.len().min(64 * 1024)]);
    let lower = head.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let content_start = open + lower[open..].find('>')? + 1;
    let content_end = content_start + lower[content_start..].find("</title")?;
    let title = head[content_start..content_end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then(|| shorten(&title, 100))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const URL: &str = "https://hydra.example/build/1";

    /// The test file `rel` under `src/testdata/hydra/`.
    pub(in crate::hydra) fn fixture(rel: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/testdata/hydra")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn build(rel: &str) -> Build {
        Build::from_json(URL, &fixture(rel)).unwrap()
    }

    fn eval_url(id: u64) -> String {
        format!("https://hydra.example/eval/{id}")
    }

    fn eval_of(json: &str) -> Eval {
        Eval::from_json(&eval_url(7), json.as_bytes()).unwrap()
    }

    /// The body of `/jobset/PROJECT/JOBSET/evals`: a page of evaluations.
    #[derive(Deserialize)]
    struct Evals {
        evals: Vec<Eval>,
    }

    const CHANNEL_STORE_PATH: &str =
        "/nix/store/00svgrbd1srnd74fkhik86izj3qxysx7-nixos-channel-17.09.1234.abcdef01234";

    // ---- reconstructed fixtures: the release scenario ----

    #[test]
    fn latest_finished_build_of_the_tested_job() {
        let b = build("reconstructed/hydra-latest-finished.json");
        assert_eq!(b.id, 62870011);
        assert_eq!(b.release_name().unwrap(), "nixos-17.09.1234.abcdef01234");
        assert_eq!(
            (b.project.as_str(), b.jobset.as_str(), b.job.as_str()),
            ("nixos", "release-17.09", "tested")
        );
        assert!(b.finished);
        assert_eq!(b.buildstatus, Some(0));
        assert!(b.is_success());
        assert_eq!(b.eval_id().unwrap(), 1409852);
        assert_eq!(b.timestamp, Some(1508416200));
        assert_eq!(b.starttime, Some(1508416800));
        assert_eq!(b.stoptime, Some(1508417100));
        assert_eq!(b.system, "x86_64-linux");
        assert!(b.buildproducts.is_empty());
        assert_eq!(
            b.buildoutputs["out"].path.as_deref(),
            Some("/nix/store/3ml4p9f6r1hv2bmi8g9v2fyb5zvymnn2-nixos-17.09.1234.abcdef01234")
        );
        assert_eq!(
            b.drvpath.as_deref(),
            Some("/nix/store/kq0g6a3kb2bcn9jq0w4lzbx8n5a2r1y7-nixos-17.09.1234.abcdef01234.drv")
        );
        assert_eq!(b.source_url(), URL);
        assert!(b.product_by_subtype("source-dist").is_none());
    }

    #[test]
    fn channel_job_gives_the_tarball_product() {
        let b = build("reconstructed/hydra-eval-job-nixos.channel.json");
        assert_eq!(b.job, "nixos.channel");
        let p = b.product_by_subtype("source-dist").unwrap();
        assert_eq!(p.key(), "1");
        assert_eq!(p.r#type, "file");
        assert_eq!(p.filesize, Some(440));
        let (store_path, inner) = p.store_path_and_inner().unwrap();
        assert_eq!(store_path.to_absolute_path(), CHANNEL_STORE_PATH);
        assert_eq!(inner, "/tarballs/nixos-17.09.1234.abcdef01234.tar.xz");
        assert_eq!(
            p.file_name().unwrap(),
            "nixos-17.09.1234.abcdef01234.tar.xz"
        );
        assert_eq!(
            p.sha256().unwrap().to_hex(),
            "91a0d323fb0543bf9a4d0559bfdb4719a90843a2162f78cf1ec1b74fffe9633b"
        );
        assert_eq!(p.source_url(), URL);
    }

    #[test]
    fn iso_job_gives_the_iso_product() {
        let b = build("reconstructed/hydra-eval-job-nixos.iso_minimal.x86_64-linux.json");
        assert!(b.product_by_subtype("source-dist").is_none());
        let p = b.product_by_subtype("iso").unwrap();
        assert_eq!(p.filesize, Some(4096));
        assert_eq!(
            p.file_name().unwrap(),
            "nixos-minimal-17.09.1234.abcdef01234-x86_64-linux.iso"
        );
        let (store_path, inner) = p.store_path_and_inner().unwrap();
        assert_eq!(store_path.hash_part(), "4flqhl9kzg41khyi6pam1n0005mvkr28");
        assert_eq!(
            inner,
            "/iso/nixos-minimal-17.09.1234.abcdef01234-x86_64-linux.iso"
        );
        assert_eq!(
            p.sha256().unwrap().to_hex(),
            "4c5c140dc5279b6ed6caa87af8a10db1373bb8cca8f67031a56914b1fbafdd70"
        );
    }

    #[test]
    fn products_are_chosen_by_subtype_not_by_key() {
        let b = build("reconstructed/hydra-build-nixpkgs-tarball-two-products.json");
        let tarball = b.product_by_subtype("source-dist").unwrap();
        assert_eq!(tarball.key(), "2");
        assert_eq!(
            tarball.file_name().unwrap(),
            "nixpkgs-24.11pre642175.90338afd6177.tar.xz"
        );
        assert_eq!(tarball.filesize, Some(29240136));
        assert_eq!(tarball.sha256().unwrap().0, [0x11; 32]);
        let packages = b.product_by_subtype("json-br").unwrap();
        assert_eq!(packages.key(), "1");
        assert_eq!(packages.file_name().unwrap(), "packages.json.br");
        assert!(b.product_by_subtype("iso").is_none());
    }

    #[test]
    fn product_numbers_order_numerically() {
        let json = r#"{"id": 1, "buildproducts": {
            "10": {"subtype": "iso", "path": "/nix/store/4flqhl9kzg41khyi6pam1n0005mvkr28-b/b.iso"},
            "2": {"subtype": "iso", "path": "/nix/store/4flqhl9kzg41khyi6pam1n0005mvkr28-a/a.iso"}}}"#;
        let b = Build::from_json(URL, json.as_bytes()).unwrap();
        assert_eq!(b.product_by_subtype("iso").unwrap().key(), "2");
    }

    #[test]
    fn package_builds_have_whole_store_path_products() {
        let b = build("reconstructed/hydra-build-62870014-hello.json");
        assert_eq!(b.jobsetevals, [1409101, 1409852]);
        assert_eq!(b.eval_id().unwrap(), 1409101);
        let p = &b.buildproducts["1"];
        assert_eq!((p.r#type.as_str(), p.subtype.as_str()), ("nix-build", ""));
        let (store_path, inner) = p.store_path_and_inner().unwrap();
        assert_eq!(store_path.name(), "hello-2.10");
        assert_eq!(inner, "");
        assert_eq!(p.filesize, None);
        let err = p.sha256().unwrap_err().to_string();
        assert_eq!(
            err,
            "https://hydra.example/build/1: field `buildproducts.1.sha256hash` is missing"
        );

        let glibc = build("reconstructed/hydra-build-62870015-glibc.json");
        assert_eq!(glibc.release_name().unwrap(), "glibc-2.25");
        assert_eq!(glibc.eval_id().unwrap(), 1408977);
        assert_eq!(
            glibc.buildproducts["1"].file_name().unwrap(),
            "wanm1lanl5y7az5skr8drx9sbl9qykdq-glibc-2.25"
        );
    }

    #[test]
    fn queued_build_is_not_a_success() {
        let b = build("reconstructed/hydra-build-queued.json");
        assert!(!b.finished);
        assert_eq!(b.buildstatus, None);
        assert_eq!(b.starttime, None);
        assert_eq!(b.stoptime, None);
        assert!(!b.is_success());
    }

    #[test]
    fn failed_build_is_not_a_success() {
        let b = Build::from_json(URL, br#"{"id": 3, "finished": 1, "buildstatus": 1}"#).unwrap();
        assert!(!b.is_success());
    }

    #[test]
    fn current_and_2017_evals_give_the_nixpkgs_revision() {
        let url = eval_url(1409852);
        let now = Eval::from_json(&url, &fixture("reconstructed/hydra-eval.json")).unwrap();
        assert_eq!(now.id, 1409852);
        assert_eq!(now.timestamp, Some(1508416200));
        assert_eq!(now.flake, None);
        assert_eq!(
            now.builds,
            [62870011, 62870012, 62870013, 62870014, 62870015]
        );
        assert_eq!(now.jobsetevalinputs["stableBranch"].r#type, "boolean");
        assert_eq!(now.jobsetevalinputs["stableBranch"].revision, None);
        assert_eq!(
            now.jobsetevalinputs["nixpkgs"].uri.as_deref(),
            Some("https://github.com/NixOS/nixpkgs.git")
        );
        assert_eq!(
            now.nixpkgs_revision().unwrap(),
            "abcdef0123456789abcdef0123456789abcdef01"
        );
        assert_eq!(now.source_url(), url);

        let old = Eval::from_json(&url, &fixture("reconstructed/hydra-eval-2017.json")).unwrap();
        assert_eq!(old.timestamp, None);
        assert_eq!(old.flake, None);
        assert_eq!(old.builds, now.builds);
        assert_eq!(
            old.nixpkgs_revision().unwrap(),
            now.nixpkgs_revision().unwrap()
        );
    }

    #[test]
    fn store_paths_fixture() {
        let url = "https://hydra.example/eval/1409852/store-paths";
        let paths =
            parse_store_paths(url, &fixture("reconstructed/hydra-eval-store-paths.json")).unwrap();
        let text: Vec<String> = paths.iter().map(|p| p.to_absolute_path()).collect();
        assert_eq!(
            text,
            [
                "/nix/store/r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello-2.10",
                "/nix/store/wanm1lanl5y7az5skr8drx9sbl9qykdq-glibc-2.25"
            ]
        );
    }

    #[test]
    fn store_paths_are_sorted_and_deduplicated() {
        let body = br#"[
            "/nix/store/wanm1lanl5y7az5skr8drx9sbl9qykdq-glibc-2.25",
            "/nix/store/r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello-2.10",
            "/nix/store/wanm1lanl5y7az5skr8drx9sbl9qykdq-glibc-2.25",
            "\/nix\/store\/00svgrbd1srnd74fkhik86izj3qxysx7-nixos-channel-17.09.1234.abcdef01234"
        ]"#;
        let paths = parse_store_paths("u", body).unwrap();
        let hashes: Vec<String> = paths.iter().map(|p| p.hash_part()).collect();
        assert_eq!(
            hashes,
            [
                "00svgrbd1srnd74fkhik86izj3qxysx7",
                "r29rfw7xvs9kc6lxma5aqdqbci3af4vg",
                "wanm1lanl5y7az5skr8drx9sbl9qykdq"
            ]
        );
        assert!(parse_store_paths("u", b"[]").unwrap().is_empty());
    }

    #[test]
    fn store_paths_entries_are_validated() {
        let url = "https://hydra.example/eval/1/store-paths";
        for (body, entry) in [
            (
                r#"["/nix/store/r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello-2.10", "/etc/passwd"]"#,
                1,
            ),
            (
                r#"["/nix/store/r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello/../x"]"#,
                0,
            ),
            (r#"["/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"]"#, 0),
            (r#"["/nix/store/r29rfw7xvs9kc6lxma5aqdqbci3af4vg-"]"#, 0),
        ] {
            let err = parse_store_paths(url, body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("{url}: entry {entry} is not a store path: ")),
                "{body}: {err}"
            );
        }
        let err = parse_store_paths(url, br#"{"paths": []}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Hydra list of store paths"), "{err}");
        let err = parse_store_paths(url, b"[1, 2]").unwrap_err().to_string();
        assert!(err.contains("invalid type: integer"), "{err}");
    }

    #[test]
    fn hydra_error_bodies_are_reported_as_such() {
        for (rel, message) in [
            (
                "reconstructed/hydra-error-404-eval.json",
                "Evaluation 999999999 doesn't exist.",
            ),
            (
                "reconstructed/hydra-error-404-eval-job.json",
                "This evaluation has no job with the specified name.",
            ),
            (
                "reconstructed/hydra-error-404-latest-finished.json",
                "There is no successful build to redirect to.",
            ),
            (
                "real/hydra-check-action-rs/get_build_not_found.json",
                "Invalid build ID ‘-1’.",
            ),
            (
                "real/hydra-check-action-rs/get_build_by_eval_not_found.json",
                "Evaluation -1 doesn't exist.",
            ),
        ] {
            let body = fixture(rel);
            let err = Build::from_json(URL, &body).unwrap_err();
            assert!(
                matches!(&err, HydraError::Server { message: m, .. } if m == message),
                "{rel}: {err:?}"
            );
            let err = Eval::from_json(URL, &body).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{URL}: Hydra reported an error: {message}")
            );
        }
    }

    // ---- real fixtures ----

    #[test]
    fn manual_build_of_2015() {
        let b = build("real/manual-build-24670686.json");
        assert_eq!(b.id, 24670686);
        assert_eq!(b.release_name().unwrap(), "vm-test-run-unnamed");
        assert_eq!(b.drvpath, None);
        assert!(b.is_success());
        assert_eq!(b.eval_id().unwrap(), 1213758);
        assert_eq!(b.timestamp, Some(1439388618));
        let p = b.product_by_subtype("testlog").unwrap();
        assert_eq!(p.r#type, "report");
        assert_eq!(p.defaultpath, "log.html");
        assert_eq!(p.name, "");
        assert_eq!(p.store_path_and_inner().unwrap().1, "");
    }

    #[test]
    fn openapi_examples() {
        let b = build("real/openapi-example-build-success.json");
        assert_eq!(b.id, 1);
        assert_eq!(b.release_name().unwrap(), "hello-2.10");
        assert!(b.is_success());
        assert_eq!(
            b.drvpath.as_deref(),
            Some("/nix/store/ab9zv2y5gm8hr6g318p0s6kaclwj4slr-hello-2.10.drv")
        );
        let evals: Evals =
            serde_json::from_slice(&fixture("real/openapi-example-evals-success.json")).unwrap();
        assert_eq!(evals.evals.len(), 1);
        assert_eq!(evals.evals[0].id, 2);
        assert_eq!(
            evals.evals[0].nixpkgs_revision().unwrap(),
            "ab3adfe1c769c22b6629e59ea0ef88ec8ee4563f"
        );

        let evals: Evals = serde_json::from_slice(&fixture(
            "real/manual-jobset-evals-hydra-build-ng-truncated.json",
        ))
        .unwrap();
        let e = &evals.evals[0];
        assert_eq!(e.id, 1213758);
        assert_eq!(e.builds.len(), 4);
        assert_eq!(e.jobsetevalinputs["officialRelease"].r#type, "boolean");
        assert_eq!(
            e.nixpkgs_revision().unwrap(),
            "f60e48ce81b6f428d072d3c148f6f2e59f1dfd7a"
        );
    }

    #[test]
    fn current_hydra_with_flake_jobsets() {
        let b = build("real/hydra-check-action-rs/get_build_success.json");
        assert_eq!(b.id, 6000);
        assert_eq!(
            b.release_name().unwrap(),
            "hydra-check-action-rs-llvm-cov-0.1.0"
        );
        assert_eq!(b.eval_id().unwrap(), 258256);
        assert!(b.buildproducts.is_empty());

        let builds: Vec<Build> = serde_json::from_slice(&fixture(
            "real/hydra-check-action-rs/get_build_by_eval_success.json",
        ))
        .unwrap();
        assert_eq!(builds.len(), 8);
        for b in &builds {
            assert!(b.is_success(), "{}", b.id);
            b.release_name().unwrap();
            b.eval_id().unwrap();
            for p in b.buildproducts.values() {
                assert_eq!(p.store_path_and_inner().unwrap().1, "");
            }
        }
        assert_eq!(builds[3].jobsetevals.len(), 5);
        let evals: Evals = serde_json::from_slice(&fixture(
            "real/hydra-check-action-rs/get_jobset_evals_success.json",
        ))
        .unwrap();
        assert_eq!(evals.evals.len(), 20);
        let first = &evals.evals[0];
        assert_eq!(first.id, 261599);
        assert_eq!(first.timestamp, Some(1718839626));
        assert!(first.jobsetevalinputs.is_empty());
        assert_eq!(
            first.nixpkgs_revision().unwrap(),
            "3bab15ecad1c9aef9a500119fe0fd599168ad3e9"
        );
        for e in &evals.evals {
            assert_eq!(e.nixpkgs_revision().unwrap().len(), 40);
        }
    }

    #[test]
    fn eval_of_2021_flake_jobset_without_flake_field() {
        // The issue quotes `jq .` output with the builds elided as `[ ... ]`.
        let text = String::from_utf8(fixture("real/hydra-issue-1038-eval-1711706.txt")).unwrap();
        let json = &text[text.find("\n{").unwrap()..];
        let json = json.replace("[ ... ]", "[101, 102]");
        let url = eval_url(1711706);
        let e = Eval::from_json(&url, json.as_bytes()).unwrap();
        assert_eq!(e.id, 1711706);
        assert_eq!(e.builds, [101, 102]);
        assert_eq!(e.flake, None);
        assert_eq!(e.timestamp, None);
        assert_eq!(
            e.nixpkgs_revision().unwrap_err().to_string(),
            format!(
                "{url}: field `jobsetevalinputs.nixpkgs.revision` is missing: the evaluation has \
                 no `nixpkgs` input (inputs: none) and no `flake`"
            )
        );
    }

    // ---- leniency ----

    #[test]
    fn booleans_numbers_and_nulls_in_every_form() {
        for (finished, expected) in [
            ("1", true),
            ("0", false),
            ("true", true),
            ("false", false),
            ("\"1\"", true),
            ("\"0\"", false),
            ("null", false),
        ] {
            let json = format!(r#"{{"id": 5, "finished": {finished}, "buildstatus": 0}}"#);
            let b = Build::from_json(URL, json.as_bytes()).unwrap();
            assert_eq!(b.finished, expected, "{finished}");
        }
        let b = Build::from_json(
            URL,
            br#"{"jobsetevals": ["12", 11], "buildstatus": "0", "id": "62870011",
                 "stoptime": "1508417100", "timestamp": "", "finished": "1",
                 "nixname": "x-1", "job": null, "drvpath": "", "system": null,
                 "buildproducts": {"1": {"filesize": "440", "sha256hash": "",
                    "type": null, "subtype": "source-dist", "path": null}},
                 "buildoutputs": {"out": {"path": null}},
                 "buildmetrics": null, "someFutureField": {"x": [1]}}"#,
        )
        .unwrap();
        assert_eq!(b.id, 62870011);
        assert!(b.is_success());
        assert_eq!(b.jobsetevals, [12, 11]);
        assert_eq!(b.stoptime, Some(1508417100));
        assert_eq!(b.timestamp, None);
        assert_eq!(b.job, "");
        assert_eq!(b.system, "");
        assert_eq!(b.drvpath, None);
        assert_eq!(b.buildoutputs["out"].path, None);
        let p = b.product_by_subtype("source-dist").unwrap();
        assert_eq!(p.filesize, Some(440));
        assert_eq!(p.sha256hash, None);
        assert_eq!(p.r#type, "");
        assert!(p.store_path_and_inner().is_err());
    }

    #[test]
    fn missing_fields_take_defaults_but_the_id_is_required() {
        let b = Build::from_json(URL, br#"{"id": 9}"#).unwrap();
        assert_eq!(b.id, 9);
        assert!(!b.finished);
        assert!(b.jobsetevals.is_empty() && b.buildproducts.is_empty());
        assert_eq!(
            b.eval_id().unwrap_err().to_string(),
            format!("{URL}: field `jobsetevals` of build 9 is empty: it belongs to no evaluation")
        );
        let b = Build::from_json(
            URL,
            br#"{"id": 9, "jobsetevals": null, "buildproducts": null, "buildoutputs": null}"#,
        )
        .unwrap();
        assert!(b.jobsetevals.is_empty() && b.buildproducts.is_empty());

        let err = Build::from_json(URL, br#"{"nixname": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{URL}: the answer is not a Hydra build: missing field `id`"
            )),
            "{err}"
        );
        let e = Eval::from_json(URL, br#"{"id": 3}"#).unwrap();
        assert!(e.jobsetevalinputs.is_empty() && e.builds.is_empty());
        assert!(Eval::from_json(URL, b"{}").is_err());
    }

    #[test]
    fn values_of_the_wrong_kind_are_reported_with_their_position() {
        for (json, expected) in [
            (
                r#"{"id": 1, "finished": 2}"#,
                "expected a boolean (true, false, 0 or 1), found 2 at line 1 column",
            ),
            (r#"{"id": -4}"#, "expected a non-negative integer, found -4"),
            (
                r#"{"id": 1.5}"#,
                "expected a non-negative integer, found 1.5",
            ),
            (
                r#"{"id": 1, "jobsetevals": [1, "x"]}"#,
                "found the element \"x\"",
            ),
            (
                r#"{"id": 1, "nixname": ["a"]}"#,
                "expected a string or null, found [\"a\"]",
            ),
            (
                r#"{"id": 1, "buildproducts": []}"#,
                "invalid type: sequence",
            ),
            (
                r#"{"id": 1, "stoptime": "soon"}"#,
                "expected an integer or null",
            ),
        ] {
            let err = Build::from_json(URL, json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("{URL}: the answer is not a Hydra build: ")),
                "{json}: {err}"
            );
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn html_empty_and_broken_answers() {
        let page = b"\n<!DOCTYPE html>\n<html><head><title>\n  Hydra - Overview\n</title></head>\
                     <body>...</body></html>";
        let err = Build::from_json(URL, page).unwrap_err();
        assert!(matches!(err, HydraError::Html { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{URL}: the answer is an HTML page (\"Hydra - Overview\") instead of JSON: the \
                 server (or a proxy in front of it) ignored `Accept: application/json` or \
                 answered with an error page"
            )
        );
        let err = Eval::from_json(URL, b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{URL}: the answer is an HTML page instead of JSON"
            )),
            "{err}"
        );
        let err = Build::from_json(URL, b"  \n").unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{URL}: the answer is empty; expected a JSON build")
        );
        let err = Build::from_json(URL, b"Service Unavailable")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{URL}: the answer is not valid JSON (expected value at line 1 column 1); it starts with \"Service Unavailable\"")),
            "{err}"
        );
        let err = Build::from_json(URL, br#"{"id": 1, "nixname": "x"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON (EOF while parsing"), "{err}");
        // A UTF-8 byte order mark is tolerated.
        assert_eq!(
            Build::from_json(URL, b"\xEF\xBB\xBF{\"id\": 4}")
                .unwrap()
                .id,
            4
        );
    }

    // ---- revisions ----

    #[test]
    fn revision_from_flake_uris() {
        let rev = "90338afd6177ee6e55db2d4ab6cee2a5fd4e1d7e";
        for flake in [
            format!("github:NixOS/nixpkgs/{rev}"),
            format!("github:NixOS/nixpkgs/{rev}?narHash=sha256-abc%3D"),
            format!("git+https://github.com/NixOS/nixpkgs?ref=nixos-24.11&rev={rev}"),
            format!("git+https://github.com/NixOS/nixpkgs.git?rev={rev}&shallow=1"),
            format!("gitlab:group/project/{rev}"),
            format!("github:NixOS/nixpkgs/{}", rev.to_ascii_uppercase()),
        ] {
            let e = Eval {
                flake: Some(flake.clone()),
                ..Eval::default()
            };
            assert_eq!(e.nixpkgs_revision().unwrap(), rev, "{flake}");
        }
    }

    #[test]
    fn flake_uris_without_a_revision() {
        let e = eval_of(r#"{"id": 7, "flake": "github:NixOS/nixpkgs/nixos-24.11"}"#);
        assert_eq!(
            e.nixpkgs_revision().unwrap_err().to_string(),
            "https://hydra.example/eval/7: field `flake` does not hold a git revision \
             (40 hexadecimal characters): found \"nixos-24.11\""
        );
        for flake in [
            "path:/srv/nixpkgs",
            "github:NixOS/nixpkgs",
            "git+https://x/y?ref=main",
        ] {
            let e = eval_of(&format!(r#"{{"id": 7, "flake": "{flake}"}}"#));
            let err = e.nixpkgs_revision().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "https://hydra.example/eval/7: field `flake` ({flake:?}) names no revision"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn nixpkgs_input_wins_over_flake_and_must_be_a_revision() {
        let e = eval_of(
            r#"{"id": 7, "flake": "github:a/b/1111111111111111111111111111111111111111",
                "jobsetevalinputs": {"nixpkgs": {"type": "git",
                "revision": "2222222222222222222222222222222222222222"}}}"#,
        );
        assert_eq!(
            e.nixpkgs_revision().unwrap(),
            "2222222222222222222222222222222222222222"
        );
        let e = eval_of(
            r#"{"id": 7, "jobsetevalinputs": {"nixpkgs": {"type": "git", "revision": null}}}"#,
        );
        assert_eq!(
            e.nixpkgs_revision().unwrap_err().to_string(),
            "https://hydra.example/eval/7: field `jobsetevalinputs.nixpkgs.revision` is missing \
             (the `nixpkgs` input is of type \"git\")"
        );
        for bad in [
            "abc",
            "g222222222222222222222222222222222222222",
            "22222222222222222222222222222222222222222",
            "refs/heads/master",
        ] {
            let e = eval_of(&format!(
                r#"{{"id": 7, "jobsetevalinputs": {{"nixpkgs": {{"revision": "{bad}"}}}}}}"#
            ));
            assert_eq!(
                e.nixpkgs_revision().unwrap_err().to_string(),
                format!(
                    "https://hydra.example/eval/7: field `jobsetevalinputs.nixpkgs.revision` \
                     does not hold a git revision (40 hexadecimal characters): found {bad:?}"
                )
            );
        }
        let e = eval_of(
            r#"{"id": 7, "jobsetevalinputs": {"stableBranch": {"type": "boolean"}, "src": {}}}"#,
        );
        let err = e.nixpkgs_revision().unwrap_err().to_string();
        assert!(
            err.contains("(inputs: src, stableBranch) and no `flake`"),
            "{err}"
        );
    }

    // ---- names from the server ----

    #[test]
    fn malicious_release_names_are_refused() {
        let long = "x".repeat(256);
        for name in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "/abs",
            "x\0y",
            ".hidden",
            &long,
        ] {
            let b = Build {
                id: 4,
                nixname: name.to_string(),
                ..Build::default()
            };
            let err = b.release_name().unwrap_err().to_string();
            assert!(
                err.starts_with(": field `nixname` of build 4 is not a plain file name: "),
                "{name:?}: {err}"
            );
        }
        let json = br#"{"id": 4, "nixname": "../../../etc/cron.d/x"}"#;
        let err = Build::from_json(URL, json)
            .unwrap()
            .release_name()
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with(&format!("{URL}: field `nixname`")));
    }

    #[test]
    fn malicious_product_paths_are_refused() {
        let hash = "/nix/store/00svgrbd1srnd74fkhik86izj3qxysx7-c";
        let product = |path: &str| {
            let json = format!(
                r#"{{"id": 1, "buildproducts": {{"3": {{"subtype": "iso", "path": {path:?},
                    "sha256hash": "zz"}}}}}}"#
            );
            Build::from_json(URL, json.as_bytes())
                .unwrap()
                .product_by_subtype("iso")
                .unwrap()
                .clone()
        };
        for path in [
            format!("{hash}/../../etc/passwd"),
            format!("{hash}/a/./b"),
            format!("{hash}//x"),
            format!("{hash}/x/"),
            "/etc/passwd".to_string(),
            "relative/x.iso".to_string(),
            String::new(),
        ] {
            let err = product(&path)
                .store_path_and_inner()
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "{URL}: field `buildproducts.3.path` is not a store path: "
                )),
                "{path}: {err}"
            );
        }
        for path in [
            format!("{hash}/x/"),
            format!("{hash}/.."),
            format!("{hash}/.x"),
            String::new(),
        ] {
            let err = product(&path).file_name().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{URL}: field `buildproducts.3.path` ({path:?}) does not end in a plain file name")),
                "{path}: {err}"
            );
        }
        let err = product(hash).sha256().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{URL}: field `buildproducts.3.sha256hash` is not a hexadecimal sha256 (\"zz\")"
            )),
            "{err}"
        );
    }
}
