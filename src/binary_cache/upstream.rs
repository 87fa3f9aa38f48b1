//! The upstream binary cache: its URLs, fetching its narinfos, and deciding which keys they
//! must be signed by.
//!
//! A fetched narinfo is taken only when it parses, describes the store path it was asked for,
//! and, when trusted keys are configured, carries a valid signature by one of them. Signatures
//! can be checked one narinfo at a time ([`Upstream::fetch_narinfo`]) or in batches
//! ([`Upstream::fetch_narinfo_unchecked`] then [`Upstream::check_signatures`]), with the same
//! outcome for every narinfo.

use crate::fetch::Fetcher;
use crate::narinfo::{NarInfo, SignatureCheck, MAX_NARINFO_SIZE};
use crate::signature::{PublicKey, CACHE_NIXOS_ORG_KEY};
use crate::store_path::StorePath;

/// Why an upstream narinfo was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamNarInfoError {
    /// The cache does not have it (404).
    #[error("the cache has no narinfo for it")]
    NotFound,
    /// Fetching failed, or it was malformed, for another path, or not signed by a trusted key;
    /// the message names the URL.
    #[error("{0}")]
    Refused(String),
}

/// An upstream binary cache and the keys its narinfos must be signed by.
#[derive(Clone)]
pub struct Upstream {
    fetcher: Fetcher,
    url: String,
    trusted_keys: Vec<PublicKey>,
}

impl Upstream {
    /// The cache at `url` (a trailing `/` is ignored), reached through `fetcher`; empty
    /// `trusted_keys` accept any narinfo.
    pub fn new(fetcher: Fetcher, url: &str, trusted_keys: Vec<PublicKey>) -> Upstream {
        Upstream {
            fetcher,
            url: url.trim_end_matches('/').to_string(),
            trusted_keys,
        }
    }

    /// The HTTP client.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The cache's base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys a fetched narinfo must be signed by (empty: not checked).
    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted_keys
    }

    /// The URL of the narinfo of `path`.
    pub fn narinfo_url(&self, path: &StorePath) -> String {
        format!("{}/{}.narinfo", self.url, path.hash_part())
    }

    /// The URL of the NAR of `info`.
    pub fn nar_url(&self, info: &NarInfo) -> String {
        format!("{}/{}", self.url, info.url)
    }

    /// Fetches the narinfo of `path` and checks it, signatures included.
    pub async fn fetch_narinfo(&self, path: &StorePath) -> Result<NarInfo, UpstreamNarInfoError> {
        let info = self.fetch_narinfo_unchecked(path).await?;
        if !self.trusted_keys.is_empty() {
            let check = info.verify_signatures(&self.trusted_keys);
            if let Some(error) = self.signature_refusal(path, check) {
                return Err(UpstreamNarInfoError::Refused(error));
            }
        }
        Ok(info)
    }

    /// [`crate::fetch::FetchError::HostDown`] if the cache's host counts as down.
    pub fn host_down(&self) -> Option<crate::fetch::FetchError> {
        self.fetcher.host_down_for(&self.url)
    }

    /// Fetches the narinfo of `path` and checks everything but its signatures, which the
    /// caller checks with [`Upstream::check_signatures`].
    pub async fn fetch_narinfo_unchecked(
        &self,
        path: &StorePath,
    ) -> Result<NarInfo, UpstreamNarInfoError> {
        use UpstreamNarInfoError::Refused;
        let url = self.narinfo_url(path);
        let body = match self
            .fetcher
            .get_bytes(&url, None, MAX_NARINFO_SIZE as u64)
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(UpstreamNarInfoError::NotFound),
            Err(e) => return Err(Refused(e.to_string())),
        };
        let text =
            std::str::from_utf8(&body).map_err(|_| Refused(format!("{url} is not UTF-8 text")))?;
        let info = NarInfo::parse(text)
            .map_err(|e| Refused(format!("{url} is not a valid narinfo: {e}")))?;
        if info.store_path != *path {
            return Err(Refused(format!(
                "{url} describes {} instead of {path}",
                info.store_path
            )));
        }
        Ok(info)
    }

    /// Checks the signatures of fetched narinfos with one batch verification: each narinfo
    /// comes back taken, or refused with a message naming its URL.
    pub fn check_signatures(
        &self,
        infos: Vec<NarInfo>,
    ) -> Vec<Result<NarInfo, (StorePath, String)>> {
        if self.trusted_keys.is_empty() {
            return infos.into_iter().map(Ok).collect();
        }
        let refs: Vec<&NarInfo> = infos.iter().collect();
        let checks = NarInfo::verify_signatures_batch(&refs, &self.trusted_keys);
        infos
            .into_iter()
            .zip(checks)
            .map(
                |(info, check)| match self.signature_refusal(&info.store_path, check) {
                    None => Ok(info),
                    Some(error) => Err((info.store_path, error)),
                },
            )
            .collect()
    }

    /// Why the narinfo of `path` is refused after its signatures were checked, if it is.
    fn signature_refusal(&self, path: &StorePath, check: SignatureCheck) -> Option<String> {
        if self.trusted_keys.is_empty() {
            return None;
        }
        let url = self.narinfo_url(path);
        match check {
            SignatureCheck::Valid { .. } => None,
            SignatureCheck::Invalid { key_name } => Some(format!(
                "{url} has a signature by {key_name} that does not verify"
            )),
            SignatureCheck::NoTrustedSignature => {
                let names: Vec<&str> = self.trusted_keys.iter().map(|k| k.name()).collect();
                Some(format!(
                    "{url} is not signed by a trusted key ({}); pass --trusted-public-key \
                     with the cache's key, or --no-check-sigs",
                    names.join(", ")
                ))
            }
        }
    }
}

/// The keys to check narinfos from `cache_url` against: the given ones, or cache.nixos.org's
/// own key for cache.nixos.org. With none for another cache, or with checks off, says once that
/// signatures are not checked.
pub fn trusted_keys_for(cache_url: &str, given: &[PublicKey], check_sigs: bool) -> Vec<PublicKey> {
    if !check_sigs {
        tracing::warn!(
            "signature checks are off (--no-check-sigs): narinfos from {cache_url} are not checked"
        );
        return Vec::new();
    }
    if !given.is_empty() {
        return given.to_vec();
    }
    let host = url::Url::parse(cache_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    if host.as_deref() == Some("cache.nixos.org") {
        match PublicKey::parse(CACHE_NIXOS_ORG_KEY) {
            Ok(k) => return vec![k],
            Err(e) => tracing::error!("the built-in cache.nixos.org key does not parse: {e}"),
        }
    }
    tracing::warn!(
        "no trusted public key is configured for {cache_url}: narinfo signatures are not checked \
         (pass --trusted-public-key NAME:KEY to check them)"
    );
    Vec::new()
}
