//! Storing narinfos in batches, and linking them into the release's view.
//!
//! Narinfos whose NARs are in place wait here to be stored in batches: one `syncfs` makes a
//! whole batch of NARs durable before their narinfos are written, instead of an fsync per file.
//! So a narinfo is never stored before its NAR is on disk, even across a power loss. The
//! release's view links each store path in the same batch, right after its narinfo is stored.
//!
//! A batch is stored on a blocking thread while the downloads go on; one batch at a time, so
//! each `syncfs` covers everything written before it.

use anyhow::{Context, Result};

use crate::binary_cache::{LocalCache, ReleaseView};
use crate::fsutil;
use crate::narinfo::NarInfo;
use crate::storage::CacheStore;
use crate::store_path::StorePath;

/// Where a batch's narinfos go.
pub(super) enum Sink {
    /// A cache directory (or the staging area).
    Dir(LocalCache),
    /// A bucket: written there, several at once, on the async threads.
    Bucket(CacheStore),
    /// Nowhere (`--print-only` for a bucket).
    Nowhere,
}

/// Narinfos (and view links) waiting to be stored.
pub(super) struct NarInfoBatch {
    sink: Sink,
    /// The staging area whose copy of each narinfo stored goes, if it has one.
    staging: Option<LocalCache>,
    /// Narinfos to store.
    pending: Vec<NarInfo>,
    /// Store paths (and NAR URLs) to link into the view once `pending` is stored.
    links: Vec<(StorePath, String)>,
    /// The release's view (none with `--print-only` or without a release), while no batch is
    /// being stored.
    view: Option<ReleaseView>,
    /// Whether there is a view at all.
    linking: bool,
    /// The batch being stored, which holds the view meanwhile.
    storing: Option<tokio::task::JoinHandle<(Option<ReleaseView>, Result<()>)>>,
    fsync: bool,
}

impl NarInfoBatch {
    /// Entries stored per batch.
    const SIZE: usize = 2048;
    /// Narinfos written to a bucket per batch.
    const BUCKET_SIZE: usize = 64;

    pub(super) fn new(
        sink: Sink,
        staging: Option<LocalCache>,
        view: Option<ReleaseView>,
        fsync: bool,
    ) -> NarInfoBatch {
        NarInfoBatch {
            sink,
            // Nothing to remove from a staging area that does not exist.
            staging: staging.filter(|s| s.exists()),
            pending: Vec::new(),
            links: Vec::new(),
            linking: view.is_some(),
            view,
            storing: None,
            fsync,
        }
    }

    /// Queues a narinfo to store (and link); starts storing the batch when it is full.
    pub(super) async fn push(&mut self, info: NarInfo) -> Result<()> {
        if self.linking {
            self.links.push((info.store_path.clone(), info.url.clone()));
        }
        self.pending.push(info);
        self.flush_if_full().await
    }

    /// Queues the links of a narinfo that is already stored.
    pub(super) async fn push_stored(&mut self, info: NarInfo) -> Result<()> {
        if self.linking {
            self.links.push((info.store_path, info.url));
        }
        self.flush_if_full().await
    }

    async fn flush_if_full(&mut self) -> Result<()> {
        // A bucket has no syncfs to share: its narinfos go up as soon as the previous batch is
        // written (at most 64 at a time), so that a run stopped late has published what it
        // verified.
        let size = match self.sink {
            Sink::Bucket(_) if self.storing.as_ref().map_or(true, |t| t.is_finished()) => 1,
            Sink::Bucket(_) => Self::BUCKET_SIZE,
            _ => Self::SIZE,
        };
        if self.pending.len() + self.links.len() >= size {
            self.start_store().await?;
        }
        Ok(())
    }

    /// Waits for the batch being stored, if any.
    async fn wait(&mut self) -> Result<()> {
        if let Some(task) = self.storing.take() {
            let (view, result) = task.await.context("the narinfo writer failed")?;
            self.view = view;
            result?;
        }
        Ok(())
    }

    /// Once the previous batch is stored, starts making the NARs written so far durable, then
    /// storing the pending narinfos and linking them, off the async threads.
    async fn start_store(&mut self) -> Result<()> {
        self.wait().await?;
        if self.pending.is_empty() && self.links.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let links = std::mem::take(&mut self.links);
        let mut view = self.view.take();
        let cache = match &self.sink {
            Sink::Dir(cache) => cache.clone(),
            Sink::Bucket(store) => {
                let store = store.clone();
                self.storing = Some(tokio::spawn(async move {
                    (view, store.write_narinfos(batch).await)
                }));
                return Ok(());
            }
            Sink::Nowhere => return Ok(()),
        };
        let staging = self.staging.clone();
        let fsync = self.fsync;
        self.storing = Some(tokio::task::spawn_blocking(move || {
            let result = (|| -> Result<()> {
                if fsync && !batch.is_empty() {
                    fsutil::sync_filesystem(cache.root())?;
                }
                for info in &batch {
                    cache.write_narinfo(info, false)?;
                    if let Some(staging) = &staging {
                        staging.remove_narinfo(&info.store_path)?;
                    }
                }
                if let Some(view) = view.as_mut() {
                    for (path, url) in &links {
                        view.link(path, url)?;
                    }
                }
                Ok(())
            })();
            (view, result)
        }));
        Ok(())
    }

    /// Stores what is left and, with fsync, makes the narinfos durable too. Returns the view,
    /// to be finished by the caller.
    pub(super) async fn finish(mut self) -> Result<Option<ReleaseView>> {
        self.start_store().await?;
        self.wait().await?;
        if let (true, Sink::Dir(cache)) = (self.fsync, &self.sink) {
            let root = cache.root().to_path_buf();
            tokio::task::spawn_blocking(move || fsutil::sync_filesystem(&root))
                .await
                .context("the narinfo writer failed")??;
        }
        Ok(self.view.take())
    }
}
