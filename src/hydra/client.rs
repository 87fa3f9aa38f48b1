//! [`HydraClient`]: the requests to one Hydra server, made through [`Fetcher`].
//!
//! Every request asks for `application/json`, is retried by the fetcher on transient failures,
//! and is refused when its answer is larger than [`MAX_JSON_SIZE`] (or
//! [`MAX_STORE_PATHS_SIZE`] for the list of an evaluation's store paths). A 404 becomes
//! [`HydraError::NotFound`] with Hydra's own message; the answers are parsed by the types of the
//! `api` module, and the client checks that they are what was asked for.

use super::api::{parse_store_paths, Build, Eval};
use super::error::HydraError;
use crate::fetch::{FetchError, Fetcher};
use crate::store_path::StorePath;

/// Largest JSON answer accepted for a build or an evaluation (16 MiB). An evaluation lists the
/// ids of its builds: about 300 000 for a nixpkgs trunk evaluation, some 3 MiB.
pub const MAX_JSON_SIZE: u64 = 16 << 20;

/// Largest `/eval/ID/store-paths` answer accepted (256 MiB). It lists every output of the
/// evaluation's succeeded builds, about 100 bytes each: a nixpkgs evaluation gives tens of MiB.
pub const MAX_STORE_PATHS_SIZE: u64 = 256 << 20;

/// The `Accept` header of every request; without it Hydra answers with HTML pages.
const ACCEPT_JSON: &str = "application/json";

/// Checks a project, jobset or job name before it becomes a URL path segment. Hydra's own names
/// never have these problems; the check keeps a mistyped name from changing the request's path.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not names");
    }
    if name.contains('/') {
        return Err("it contains `/`");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or control characters");
    }
    if name.contains(['?', '#', '%', '\\']) {
        return Err("it contains one of `?`, `#`, `%`, `\\`");
    }
    Ok(())
}

/// `name` as a URL path segment, after [`check_name`]; characters outside the unreserved set are
/// percent-encoded.
fn path_segment(what: &'static str, name: &str) -> Result<String, HydraError> {
    check_name(name).map_err(|reason| HydraError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    })?;
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// A client of one Hydra server.
#[derive(Clone)]
pub struct HydraClient {
    fetcher: Fetcher,
    base: String,
}

impl HydraClient {
    /// A client of the Hydra at `base_url` (e.g. `https://hydra.nixos.org`; a trailing `/` is
    /// ignored), making its requests through `fetcher` (with its retries and concurrency limit).
    pub fn new(fetcher: Fetcher, base_url: &str) -> HydraClient {
        HydraClient {
            fetcher,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// The base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `HYDRA/eval/ID`: the web page of an evaluation, which releases record as `src-url`.
    pub fn eval_url(&self, eval_id: u64) -> String {
        format!("{}/eval/{eval_id}", self.base)
    }

    /// `url`'s answer, at most `limit` bytes.
    async fn get(&self, url: &str, limit: u64) -> Result<bytes::Bytes, HydraError> {
        self.fetcher
            .get_bytes(url, Some(ACCEPT_JSON), limit)
            .await
            .map_err(from_fetch)
    }

    /// The latest finished, successful build of a job (`/job/P/J/JOB/latest-finished`, which
    /// Hydra redirects to `/build/ID`). An answer that is not finished and successful is an
    /// error. A job without any successful build gives [`HydraError::NotFound`].
    pub async fn latest_finished(
        &self,
        project: &str,
        jobset: &str,
        job: &str,
    ) -> Result<Build, HydraError> {
        let url = format!(
            "{}/job/{}/{}/{}/latest-finished",
            self.base,
            path_segment("project", project)?,
            path_segment("jobset", jobset)?,
            path_segment("job", job)?
        );
        let body = self.get(&url, MAX_JSON_SIZE).await?;
        let build = Build::from_json(&url, &body)?;
        if !build.is_success() {
            return Err(HydraError::invalid(
                &url,
                format!(
                    "build {} is not a finished, successful build (finished: {}, buildstatus: {})",
                    build.id,
                    build.finished,
                    build
                        .buildstatus
                        .map_or_else(|| "null".to_string(), |s| s.to_string())
                ),
            ));
        }
        Ok(build)
    }

    /// A build by id (`/build/ID`).
    pub async fn build(&self, id: u64) -> Result<Build, HydraError> {
        let url = format!("{}/build/{id}", self.base);
        let body = self.get(&url, MAX_JSON_SIZE).await?;
        let build = Build::from_json(&url, &body)?;
        if build.id != id {
            return Err(HydraError::invalid(
                &url,
                format!("asked for build {id}, got build {}", build.id),
            ));
        }
        Ok(build)
    }

    /// An evaluation by id (`/eval/ID`).
    pub async fn eval(&self, id: u64) -> Result<Eval, HydraError> {
        let url = self.eval_url(id);
        let body = self.get(&url, MAX_JSON_SIZE).await?;
        let eval = Eval::from_json(&url, &body)?;
        if eval.id != id {
            return Err(HydraError::invalid(
                &url,
                format!("asked for evaluation {id}, got evaluation {}", eval.id),
            ));
        }
        Ok(eval)
    }

    /// The output paths of the evaluation's succeeded builds (`/eval/ID/store-paths`), sorted
    /// and without duplicates.
    pub async fn eval_store_paths(&self, id: u64) -> Result<Vec<StorePath>, HydraError> {
        let url = format!("{}/eval/{id}/store-paths", self.base);
        let body = self.get(&url, MAX_STORE_PATHS_SIZE).await?;
        parse_store_paths(&url, &body)
    }

    /// The build of job `job` in evaluation `eval_id` (`/eval/ID/job/NAME`, which Hydra redirects
    /// to `/build/ID`), or `None` when the evaluation has no such job (404), so that optional
    /// jobs can be skipped. Hydra answers 404 for a missing evaluation too, so read the
    /// evaluation with [`HydraClient::eval`] first. The build may have failed: check
    /// [`Build::is_success`].
    pub async fn eval_job(&self, eval_id: u64, job: &str) -> Result<Option<Build>, HydraError> {
        let url = format!(
            "{}/eval/{eval_id}/job/{}",
            self.base,
            path_segment("job", job)?
        );
        let body = match self.get(&url, MAX_JSON_SIZE).await {
            Ok(body) => body,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let build = Build::from_json(&url, &body)?;
        if !build.job.is_empty() && build.job != job {
            return Err(HydraError::invalid(
                &url,
                format!(
                    "asked for job {job:?}, got build {} of job {:?}",
                    build.id, build.job
                ),
            ));
        }
        Ok(Some(build))
    }
}

impl std::fmt::Debug for HydraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HydraClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The error of a failed request: 404 becomes [`HydraError::NotFound`] with Hydra's message.
fn from_fetch(e: FetchError) -> HydraError {
    match e {
        FetchError::NotFound {
            url,
            status,
            detail,
        } => {
            let message = detail
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| format!("HTTP {status}"));
            HydraError::NotFound { url, message }
        }
        other => HydraError::Fetch(other),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::fetch::FetchConfig;
    use crate::hydra::api::tests::fixture;

    #[test]
    fn request_names_are_checked_and_encoded() {
        assert_eq!(
            path_segment("job", "nixos.iso_minimal.x86_64-linux").unwrap(),
            "nixos.iso_minimal.x86_64-linux"
        );
        assert_eq!(path_segment("job", "a:b'é").unwrap(), "a%3Ab%27%C3%A9");
        for bad in [
            "", ".", "..", "a/b", "a b", "a\nb", "a?b", "a#b", "a%2F", "a\\b",
        ] {
            let err = path_segment("jobset", bad).unwrap_err();
            assert!(
                matches!(err, HydraError::InvalidName { what: "jobset", .. }),
                "{bad:?}: {err:?}"
            );
        }
    }

    // ---- the client against a tiny HTTP server ----

    /// One canned answer: status, extra headers, body.
    type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

    /// Serves `routes` (path -> answer), one request per connection, and records each
    /// request as "PATH accept=VALUE". Like Hydra, it answers HTML to requests that do not
    /// accept JSON.
    fn serve(
        routes: impl FnOnce(&str) -> HashMap<String, Answer>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = routes(&base);
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                let mut accept = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("accept") {
                            accept = value.trim().to_string();
                        }
                    }
                }
                log2.lock().unwrap().push(format!("{path} accept={accept}"));
                let html = (
                    200,
                    vec![],
                    b"<html><head><title>Hydra</title></head></html>".to_vec(),
                );
                let missing = (404, vec![], br#"{"error": "No such page."}"#.to_vec());
                let (status, headers, body) = if accept != "application/json" {
                    &html
                } else {
                    routes.get(&path).unwrap_or(&missing)
                };
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        (base, log)
    }

    fn json(rel: &str) -> Answer {
        (
            200,
            vec![("Content-Type", "application/json".into())],
            fixture(rel),
        )
    }

    fn redirect(to: String) -> Answer {
        (302, vec![("Location", to)], Vec::new())
    }

    fn client(base: &str) -> HydraClient {
        let fetcher = Fetcher::new(FetchConfig {
            retries: 0,
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(5),
            ..FetchConfig::default()
        })
        .unwrap();
        HydraClient::new(fetcher, &format!("{base}/"))
    }

    fn scenario(base: &str) -> HashMap<String, Answer> {
        let mut r = HashMap::new();
        r.insert(
            "/job/nixos/release-17.09/tested/latest-finished".into(),
            redirect(format!("{base}/build/62870011")),
        );
        r.insert(
            "/build/62870011".into(),
            json("reconstructed/hydra-latest-finished.json"),
        );
        r.insert(
            "/eval/1409852".into(),
            json("reconstructed/hydra-eval.json"),
        );
        r.insert(
            "/eval/1409852/store-paths".into(),
            json("reconstructed/hydra-eval-store-paths.json"),
        );
        r.insert(
            "/eval/1409852/job/nixos.channel".into(),
            redirect(format!("{base}/build/62870012")),
        );
        r.insert(
            "/build/62870012".into(),
            json("reconstructed/hydra-eval-job-nixos.channel.json"),
        );
        r.insert(
            "/eval/1409852/job/nixos.ova.x86_64-linux".into(),
            (
                404,
                vec![],
                fixture("reconstructed/hydra-error-404-eval-job.json"),
            ),
        );
        r.insert(
            "/eval/999999999".into(),
            (
                404,
                vec![],
                fixture("reconstructed/hydra-error-404-eval.json"),
            ),
        );
        r.insert(
            "/job/nixos/release-17.09/nothing/latest-finished".into(),
            (
                404,
                vec![],
                fixture("reconstructed/hydra-error-404-latest-finished.json"),
            ),
        );
        r.insert(
            "/job/nixos/release-17.09/queued/latest-finished".into(),
            json("reconstructed/hydra-build-queued.json"),
        );
        r.insert("/eval/5".into(), json("reconstructed/hydra-eval.json"));
        r.insert(
            "/eval/6".into(),
            (
                200,
                vec![],
                b"<!DOCTYPE html><title>502 Bad Gateway</title>".to_vec(),
            ),
        );
        r.insert(
            "/eval/1409852/job/nixos.iso_minimal.x86_64-linux".into(),
            redirect(format!("{base}/build/62870012")),
        );
        r
    }

    #[tokio::test]
    async fn a_release_is_read_through_redirects_with_json_accepted() {
        let (base, log) = serve(scenario);
        let hydra = client(&base);
        assert_eq!(hydra.base(), base);

        let build = hydra
            .latest_finished("nixos", "release-17.09", "tested")
            .await
            .unwrap();
        assert_eq!(
            build.release_name().unwrap(),
            "nixos-17.09.1234.abcdef01234"
        );
        assert_eq!(
            build.source_url(),
            format!("{base}/job/nixos/release-17.09/tested/latest-finished")
        );
        let eval_id = build.eval_id().unwrap();
        let eval = hydra.eval(eval_id).await.unwrap();
        assert_eq!(
            eval.nixpkgs_revision().unwrap(),
            "abcdef0123456789abcdef0123456789abcdef01"
        );
        assert_eq!(hydra.eval_url(eval_id), format!("{base}/eval/1409852"));
        let paths = hydra.eval_store_paths(eval_id).await.unwrap();
        assert_eq!(paths.len(), 2);
        let channel = hydra
            .eval_job(eval_id, "nixos.channel")
            .await
            .unwrap()
            .unwrap();
        let tarball = channel.product_by_subtype("source-dist").unwrap();
        assert_eq!(tarball.filesize, Some(440));
        let no_ova = hydra
            .eval_job(eval_id, "nixos.ova.x86_64-linux")
            .await
            .unwrap();
        assert!(no_ova.is_none());

        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "/job/nixos/release-17.09/tested/latest-finished accept=application/json",
                "/build/62870011 accept=application/json",
                "/eval/1409852 accept=application/json",
                "/eval/1409852/store-paths accept=application/json",
                "/eval/1409852/job/nixos.channel accept=application/json",
                "/build/62870012 accept=application/json",
                "/eval/1409852/job/nixos.ova.x86_64-linux accept=application/json",
            ]
        );
    }

    #[tokio::test]
    async fn errors_name_the_url_and_what_went_wrong() {
        let (base, _log) = serve(scenario);
        let hydra = client(&base);

        let err = hydra.eval(999999999).await.unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            format!(
                "{base}/eval/999999999: not found on Hydra: Evaluation 999999999 doesn't exist."
            )
        );
        let err = hydra
            .latest_finished("nixos", "release-17.09", "nothing")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{base}/job/nixos/release-17.09/nothing/latest-finished: not found on Hydra: \
                 There is no successful build to redirect to."
            )
        );
        let err = hydra
            .latest_finished("nixos", "release-17.09", "queued")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{base}/job/nixos/release-17.09/queued/latest-finished: build 62870099 is \
                 not a finished, successful build (finished: false, buildstatus: null)"
            )
        );
        let err = hydra.eval(5).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{base}/eval/5: asked for evaluation 5, got evaluation 1409852")
        );
        let err = hydra.eval(6).await.unwrap_err();
        assert!(
            matches!(err, HydraError::Html { ref title, .. } if title == " (\"502 Bad Gateway\")"),
            "{err:?}"
        );
        let err = hydra
            .eval_job(1409852, "nixos.iso_minimal.x86_64-linux")
            .await
            .unwrap_err();
        assert!(
            err.to_string().ends_with("asked for job \"nixos.iso_minimal.x86_64-linux\", got build 62870012 of job \"nixos.channel\""),
            "{err}"
        );
        let err = hydra.build(1).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{base}/build/1: not found on Hydra: No such page.")
        );
        let err = hydra
            .latest_finished("nixos", "../admin", "x")
            .await
            .unwrap_err();
        assert!(
            matches!(err, HydraError::InvalidName { what: "jobset", .. }),
            "{err:?}"
        );
    }
}
