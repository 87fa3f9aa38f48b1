//! Fetching and verifying the NARs of the closure.
//!
//! Each narinfo the walk finds is admitted here: refused when its URL would leave the cache,
//! when it has no `FileHash`, or when it gives a NAR whose download or check is under way for
//! another narinfo another `FileHash` or `FileSize`; otherwise its NAR is found in place,
//! joined to a download or check of the same file under way, listed for another downloader
//! (`--print-only`), hashed on disk (a narinfo fetched now for a NAR already here), or
//! downloaded. So every narinfo stored has had its NAR checked against its own fields, and no
//! table of the fields each file was given is kept (a closure has hundreds of thousands). Downloads and checks
//! run as tasks, at most twice the fetcher's concurrency at once; each finished one hands back
//! the narinfos that were waiting for its file.
//!
//! With NAR hashes checked (the default), every download is decompressed as it streams and the
//! NAR inside checked against the narinfo's signed `NarHash` and `NarSize`, besides the file's
//! `FileHash` and `FileSize`, which no signature covers. A NAR already here is taken on trust
//! only when it carries the marker of such a check against the same fields
//! ([`fetch::nar_checked`]); otherwise it is checked again, and marked when it passes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::walk::Origin;
use super::{MirrorReport, PrintFormat};
use crate::binary_cache::{LocalCache, Upstream};
use crate::compression::Compression;
use crate::fetch::{self, Expected, ExpectedNar};
use crate::fsutil;
use crate::narinfo::NarInfo;
use crate::progress::Phase;
use crate::storage::CacheStore;

/// What became of an admitted narinfo.
pub(super) enum Admitted {
    /// It was stored before, with its NAR: only the release's view needs it.
    Stored(NarInfo),
    /// It is to be stored now without waiting for a NAR (`--print-only`).
    Store(NarInfo),
    /// Nothing to do now: its NAR is on its way, or it is listed and already stored.
    Pending,
    /// Refused, with a message naming the narinfo.
    Refused(String),
}

/// How a NAR file came to be in place, verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NarGot {
    /// Downloaded now: this many bytes.
    Downloaded(u64),
    /// It was in the cache already, and matched.
    Present,
    /// Another downloader had put it in the staging area; it matched, and was moved into the
    /// cache.
    Staged,
}

/// A finished download or check, with the narinfos that were waiting for its file.
pub(super) struct NarDone {
    /// The narinfos naming the file, with where each came from.
    pub infos: Vec<(NarInfo, Origin)>,
    /// How the file came to be in place, or what went wrong.
    pub result: Result<NarGot, String>,
}

/// The NAR files of one run: what is fetched, checked or listed, and for which narinfos.
pub(super) struct Nars<'a> {
    /// The cache's store: the directory itself, or a bucket.
    store: &'a CacheStore,
    /// Where NAR files are verified: the cache directory, or a bucket's scratch directory.
    cache: &'a LocalCache,
    /// Where another downloader puts the NARs `--print-only` lists.
    staging: LocalCache,
    upstream: &'a Upstream,
    /// How NARs are listed instead of fetched (`--print-only`); `None`: they are fetched.
    print: Option<PrintFormat>,
    check_nar_hash: bool,
    /// NAR path -> the narinfos waiting for it (stored, if fetched, once it is verified).
    waiting: HashMap<PathBuf, Vec<(NarInfo, Origin)>>,
    /// `--print-only`: fingerprints of the NAR paths listed (or found staged) in this run, so
    /// that a file two narinfos name is listed once (16 bytes a NAR).
    listed: crate::hash::FingerprintSet,
    tasks: JoinSet<(PathBuf, Result<NarGot, String>)>,
    /// Task -> the NAR path it works on, to name the file of a task that panicked.
    task_files: HashMap<tokio::task::Id, PathBuf>,
    slots: Arc<Semaphore>,
    dirs_made: HashSet<PathBuf>,
    bytes_phase: Phase,
}

impl<'a> Nars<'a> {
    pub(super) fn new(
        store: &'a CacheStore,
        upstream: &'a Upstream,
        print: Option<PrintFormat>,
        check_nar_hash: bool,
        bytes_phase: Phase,
    ) -> Nars<'a> {
        let slots = upstream.fetcher().config().concurrency.max(1) * 2;
        let cache = store.work();
        Nars {
            store,
            cache,
            staging: cache.staging(),
            upstream,
            print,
            check_nar_hash,
            waiting: HashMap::new(),
            listed: crate::hash::FingerprintSet::default(),
            tasks: JoinSet::new(),
            task_files: HashMap::new(),
            slots: Arc::new(Semaphore::new(slots)),
            dirs_made: HashSet::new(),
            bytes_phase,
        }
    }

    /// Whether no download or check is under way.
    pub(super) fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Takes a narinfo of the closure: see the module documentation. `--print-only` lines go
    /// to `out`; present and listed NARs are counted in `report`.
    pub(super) async fn admit(
        &mut self,
        narinfo: NarInfo,
        origin: Origin,
        out: &mut (dyn Write + Send),
        report: &mut MirrorReport,
    ) -> Result<Admitted> {
        let nar = match self.cache.nar_path(&narinfo) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Admitted::Refused(format!(
                    "{}: {}: refusing the narinfo's URL: {e}",
                    narinfo.store_path,
                    self.upstream.narinfo_url(&narinfo.store_path)
                )))
            }
        };
        if narinfo.file_hash.is_none() {
            return Ok(Admitted::Refused(format!(
                "{}: {}: has no FileHash, so its NAR cannot be verified",
                narinfo.store_path,
                self.upstream.narinfo_url(&narinfo.store_path)
            )));
        }
        let nar_check = if self.check_nar_hash {
            match Compression::from_narinfo(&narinfo.compression) {
                Ok(compression) => Some(ExpectedNar {
                    compression,
                    hash: narinfo.nar_hash,
                    size: narinfo.nar_size,
                }),
                Err(e) => {
                    return Ok(Admitted::Refused(format!(
                        "{}: {}: its NAR cannot be checked: {e}",
                        narinfo.store_path,
                        self.upstream.narinfo_url(&narinfo.store_path)
                    )))
                }
            }
        } else {
            None
        };
        let expected = Expected {
            size: narinfo.file_size,
            sha256: narinfo.file_hash,
            nar: nar_check,
        };
        let present = self.store.nar_present(&nar, &narinfo);
        // Where another downloader was to put the file; refused like `nar` when unsafe.
        let staged = self
            .staging
            .nar_path(&narinfo)
            .ok()
            .filter(|p| !present && self.staging.nar_present(p, &narinfo));
        if let Some(format) = self.print {
            if present {
                report.nars_present += 1;
            } else if self.listed.insert(fingerprint_of(&nar)) {
                if staged.is_some() {
                    report.nars_staged += 1;
                    return Ok(match origin {
                        Origin::Remote => Admitted::Store(narinfo),
                        Origin::Local | Origin::Staged => Admitted::Pending,
                    });
                }
                let entry = format.entry(
                    &self.upstream.nar_url(&narinfo),
                    &narinfo.url,
                    narinfo.file_hash,
                );
                out.write_all(entry.as_bytes())
                    .context("cannot write to standard output")?;
                report.nars_listed += 1;
            }
            return Ok(match origin {
                Origin::Remote => Admitted::Store(narinfo),
                Origin::Local | Origin::Staged => Admitted::Pending,
            });
        }
        if present
            && origin == Origin::Local
            && (expected.nar.is_none() || self.store.nar_trusted(&nar, &expected))
        {
            // Stored together, each verified against the other when written.
            report.nars_present += 1;
            return Ok(Admitted::Stored(narinfo));
        }
        if let Some(list) = self.waiting.get_mut(&nar) {
            // Another narinfo's download or check of the same file is under way: it checks
            // the file against the first narinfo, so this one must give the file the same
            // FileHash and FileSize, or it would be stored unverified.
            if let Some((first, _)) = list.first() {
                if (first.file_hash, first.file_size) != (narinfo.file_hash, narinfo.file_size) {
                    return Ok(Admitted::Refused(format!(
                        "{}: {}: names the NAR {} with FileHash {} and FileSize {}, but {} \
                         gives it FileHash {} and FileSize {}",
                        narinfo.store_path,
                        self.upstream.narinfo_url(&narinfo.store_path),
                        narinfo.url,
                        describe(narinfo.file_hash),
                        describe(narinfo.file_size),
                        first.store_path,
                        describe(first.file_hash),
                        describe(first.file_size),
                    )));
                }
            }
            list.push((narinfo, origin));
            return Ok(Admitted::Pending);
        }
        let permit = self.slots.clone().acquire_owned().await?;
        if present {
            // A narinfo fetched now for a NAR that is already here, or a NAR here that no
            // marker says was checked down to its NAR: the file is checked against the
            // narinfo before the narinfo is stored or linked.
            let url = self.upstream.nar_url(&narinfo);
            self.waiting.insert(nar.clone(), vec![(narinfo, origin)]);
            let file_of_task = nar.clone();
            let fetcher = self.upstream.fetcher().clone();
            let store = self.store.clone();
            let info = self.waiting[&nar][0].0.clone();
            let where_ = store.describe(&info.url);
            if let Some(dir) = nar.parent() {
                if store.is_bucket() && self.dirs_made.insert(dir.to_path_buf()) {
                    fsutil::create_dir_all_within(self.cache.root(), dir)?;
                }
            }
            let handle = self.tasks.spawn(async move {
                let _permit = permit;
                // A bucket's object is brought here to be checked, and removed after.
                let _removed = store.is_bucket().then(|| fsutil::RemoveOnDrop(nar.clone()));
                if let Err(e) = store.fetch_for_check(&nar, &info).await {
                    return (nar, Err(format!("{e:#}")));
                }
                let _decoding = fetcher.decode_permit(expected.nar).await;
                let file = nar.clone();
                let checked =
                    tokio::task::spawn_blocking(move || fetch::verify_and_mark(&file, expected))
                        .await;
                let result = match checked {
                    Ok(Ok(Ok(()))) => {
                        store.mark_checked(&info, &expected).await;
                        Ok(NarGot::Present)
                    }
                    Ok(Ok(Err(mismatch))) => Err(format!(
                        "{where_} is already in the cache and does not match this narinfo: \
                         {mismatch}"
                    )),
                    Ok(Err(e)) => Err(format!("cannot read {}: {e}", nar.display())),
                    Err(e) => Err(format!("checking {url} failed: {e}")),
                };
                (nar, result)
            });
            self.task_files.insert(handle.id(), file_of_task);
            return Ok(Admitted::Pending);
        }
        if let Some(dir) = nar.parent() {
            if self.dirs_made.insert(dir.to_path_buf()) {
                fsutil::create_dir_all_within(self.cache.root(), dir)?;
            }
        }
        self.bytes_phase.inc_total(narinfo.file_size.unwrap_or(0));
        let url = self.upstream.nar_url(&narinfo);
        let fetcher = self.upstream.fetcher().clone();
        let phase = self.bytes_phase.clone();
        let store_path = narinfo.store_path.clone();
        let store = self.store.clone();
        let info = narinfo.clone();
        self.waiting.insert(nar.clone(), vec![(narinfo, origin)]);
        let file_of_task = nar.clone();
        let handle = self.tasks.spawn(async move {
            let _permit = permit;
            if let Some(staged) = staged {
                let decoding = fetcher.decode_permit(expected.nar).await;
                let taken = take_staged(&staged, &nar, expected).await;
                drop(decoding);
                if taken {
                    return match store.commit_nar(&nar, &info, &expected).await {
                        Ok(()) => (nar, Ok(NarGot::Staged)),
                        Err(e) => (nar, Err(format!("{e:#}"))),
                    };
                }
            }
            super::failpoint("nar-download", &store_path);
            // A large NAR is fsynced on its own: that costs little next to its size and
            // overlaps the other downloads, where leaving it to the batch's syncfs would make
            // the run wait for it at the end.
            let result = if expected.size.is_some_and(|s| s <= fetch::IN_MEMORY_MAX) {
                fetcher.download_unsynced(&url, &nar, expected).await
            } else {
                fetcher.download(&url, &nar, expected).await
            };
            let result = match result {
                Ok(d) => {
                    phase.inc(d.size);
                    // Verified: now the cache's (uploaded, for a bucket).
                    match store.commit_nar(&nar, &info, &expected).await {
                        Ok(()) => Ok(NarGot::Downloaded(d.size)),
                        Err(e) => Err(format!("{e:#}")),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            (nar, result)
        });
        self.task_files.insert(handle.id(), file_of_task);
        Ok(Admitted::Pending)
    }

    /// The next finished download or check; `None` when none is under way. A task that
    /// panicked counts as a failed one, for the narinfos waiting for its file.
    pub(super) async fn next_done(&mut self) -> Option<NarDone> {
        let joined = self.tasks.join_next_with_id().await?;
        let (nar, result) = match joined {
            Ok((id, done)) => {
                self.task_files.remove(&id);
                done
            }
            Err(e) => {
                let nar = self.task_files.remove(&e.id()).unwrap_or_default();
                let message = format!("the download or check of {} failed: {e}", nar.display());
                (nar, Err(message))
            }
        };
        Some(NarDone {
            infos: self.waiting.remove(&nar).unwrap_or_default(),
            result,
        })
    }
}

/// Checks the NAR file another downloader put at `staged` against `expected`, as a download is
/// checked, and moves it to `nar` in the cache when it passes. A file that does not pass is
/// removed, with a warning; `false` then says to download the file instead.
async fn take_staged(staged: &Path, nar: &Path, expected: Expected) -> bool {
    let (staged, nar) = (staged.to_path_buf(), nar.to_path_buf());
    let taken = tokio::task::spawn_blocking(move || -> Result<(), String> {
        match fetch::verify_and_mark(&staged, expected) {
            Ok(Ok(())) => {}
            Ok(Err(mismatch)) => {
                let _ = std::fs::remove_file(&staged);
                return Err(format!(
                    "{} does not match its narinfo ({mismatch}); it was removed",
                    staged.display()
                ));
            }
            Err(e) => return Err(format!("cannot read {}: {e}", staged.display())),
        }
        std::fs::rename(&staged, &nar)
            .map_err(|e| format!("cannot move {} to {}: {e}", staged.display(), nar.display()))
    })
    .await;
    match taken {
        Ok(Ok(())) => true,
        Ok(Err(why)) => {
            tracing::warn!("{why}; downloading the file instead");
            false
        }
        Err(e) => {
            tracing::warn!("checking a staged NAR failed: {e}; downloading it instead");
            false
        }
    }
}

/// A fingerprint of a NAR file's path.
fn fingerprint_of(nar: &Path) -> u128 {
    use std::os::unix::ffi::OsStrExt;
    crate::hash::fingerprint128(nar.as_os_str().as_bytes())
}

/// A narinfo field's value for messages, or `none`.
fn describe<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}
