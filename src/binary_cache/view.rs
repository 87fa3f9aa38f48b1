//! A release's view of the binary cache: `RELEASE/binary_cache/` holds relative symlinks to the
//! global cache's narinfos and NARs of the release's closure, plus its own `nix-cache-info`, so
//! the release directory alone is a valid binary cache and the garbage collector knows what the
//! release needs.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{canonical, LocalCache, BINARY_CACHE_DIR, NIX_CACHE_INFO};
use crate::fsutil;
use crate::store_path::StorePath;

/// What linking a release changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Symlinks created or corrected.
    pub created: usize,
    /// Symlinks that were already right.
    pub kept: usize,
    /// Stale entries removed.
    pub removed: usize,
}

/// A release's `binary_cache/` view being brought up to date: [`ReleaseView::link`] adds the
/// links of one store path as soon as its narinfo is stored, [`ReleaseView::finish`] removes
/// what was not linked since [`ReleaseView::open`].
#[derive(Debug)]
pub struct ReleaseView {
    view: PathBuf,
    cache_root: PathBuf,
    /// What was linked since `open` (not kept for a fresh view), as fingerprints of the paths
    /// relative to the view ([`fingerprint`]): 16 bytes an entry, for closures of hundreds of
    /// thousands of paths.
    wanted: crate::hash::FingerprintSet,
    /// Whether the view did not exist before `open`.
    fresh: bool,
    dirs_made: HashSet<PathBuf>,
    stats: LinkStats,
}

impl ReleaseView {
    /// Creates `release_dir/binary_cache` (with its `nix-cache-info`) if needed.
    pub fn open(release_dir: &Path, cache: &LocalCache) -> Result<ReleaseView> {
        let release_dir = fsutil::absolute(release_dir)?;
        fs::create_dir_all(&release_dir)
            .with_context(|| format!("cannot create {}", release_dir.display()))?;
        // Both ends resolved, so the links lead from the release to the cache inside the
        // mirror even when either was named through a symlink.
        let release_dir = canonical(&release_dir)?;
        let view = release_dir.join(BINARY_CACHE_DIR);
        // A view made now holds only what is linked from now on: nothing to prune.
        let fresh = fs::symlink_metadata(&view).is_err();
        fsutil::create_dir_all_within(&release_dir, &view)?;
        fsutil::write_if_changed(&view.join("nix-cache-info"), NIX_CACHE_INFO.as_bytes())?;
        let mut wanted = crate::hash::FingerprintSet::default();
        wanted.insert(fingerprint(Path::new("nix-cache-info")));
        Ok(ReleaseView {
            view,
            cache_root: cache.root().to_path_buf(),
            wanted,
            fresh,
            dirs_made: HashSet::new(),
            stats: LinkStats::default(),
        })
    }

    /// Links the narinfo of `store_path` and its NAR at `url` (relative to the cache).
    pub fn link(&mut self, store_path: &StorePath, url: &str) -> Result<()> {
        fsutil::check_relative_path(url)
            .with_context(|| format!("the narinfo of {store_path} has an unsafe URL"))?;
        let name = format!("{}.narinfo", store_path.hash_part());
        for rel in [PathBuf::from(name), PathBuf::from(url)] {
            let link = self.view.join(&rel);
            let target_abs = self.cache_root.join(&rel);
            let link_dir = link.parent().unwrap_or(&self.view).to_path_buf();
            if !self.dirs_made.contains(&link_dir) {
                fsutil::create_dir_all_within(&self.view, &link_dir)?;
                self.dirs_made.insert(link_dir.clone());
            }
            let target = fsutil::relative_path(&link_dir, &target_abs);
            // Nothing there yet is the usual case: creating a symlink is atomic by itself.
            // Otherwise keep a right link and replace anything else the careful way.
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => self.stats.created += 1,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::read_link(&link) {
                    Ok(existing) if existing == target => self.stats.kept += 1,
                    _ => {
                        fsutil::atomic_symlink(&target, &link)?;
                        self.stats.created += 1;
                    }
                },
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", link.display()))
                }
            }
            if !self.fresh {
                self.wanted.insert(fingerprint(&rel));
            }
        }
        Ok(())
    }

    /// Removes the entries that were not linked, and directories left empty.
    pub fn finish(mut self) -> Result<LinkStats> {
        if self.fresh {
            return Ok(self.stats);
        }
        let view = &self.view;
        for entry in walkdir::WalkDir::new(view)
            .min_depth(1)
            .contents_first(true)
        {
            let entry = entry.with_context(|| format!("cannot list {}", view.display()))?;
            let rel = entry.path().strip_prefix(view).unwrap_or(entry.path());
            if entry.file_type().is_dir() {
                // Remove directories left empty.
                let _ = fs::remove_dir(entry.path());
                continue;
            }
            if !self.wanted.contains(&fingerprint(rel)) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                self.stats.removed += 1;
            }
        }
        Ok(self.stats)
    }
}

/// A relative path as the set of wanted entries keeps it.
fn fingerprint(rel: &Path) -> u128 {
    use std::os::unix::ffi::OsStrExt;
    crate::hash::fingerprint128(rel.as_os_str().as_bytes())
}

/// Everything a release's `binary_cache/` view links to, as paths relative to the cache root
/// (`HASH.narinfo`, `nar/FILE`), after checking that each link resolves to an existing file
/// inside `cache_root`. Symlinks on the way are resolved, so the release and the cache may be
/// named through other paths. A link that is dangling or leads outside the cache is an error:
/// such a release was not mirrored into this cache, or not completely.
pub fn release_links(release_dir: &Path, cache_root: &Path) -> Result<BTreeSet<PathBuf>> {
    let view = release_dir.join(BINARY_CACHE_DIR);
    let meta = fs::symlink_metadata(&view).with_context(|| {
        format!(
            "release {} has no {BINARY_CACHE_DIR}/",
            release_dir.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("{} is not a directory", view.display());
    }
    let cache_root = canonical(cache_root)?;
    let mut out = BTreeSet::new();
    for entry in walkdir::WalkDir::new(&view).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot list {}", view.display()))?;
        if !entry.path_is_symlink() {
            continue;
        }
        let link = entry.path();
        let target = fs::read_link(link)
            .with_context(|| format!("cannot read the link {}", link.display()))?;
        let joined = link.parent().unwrap_or(&view).join(&target);
        let resolved = match fs::canonicalize(&joined) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
                "{} points at {}, which is missing: the release is incomplete; \
                 run update-binary-cache for it before collecting garbage",
                link.display(),
                fsutil::absolute(&joined)?.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot inspect {}", joined.display()))
            }
        };
        let Ok(rel) = resolved.strip_prefix(&cache_root) else {
            bail!(
                "{} points at {}, outside the cache {}: the release was not mirrored into \
                 this cache",
                link.display(),
                resolved.display(),
                cache_root.display()
            );
        };
        out.insert(rel.to_path_buf());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary_cache::tests::info;
    use crate::narinfo::NarInfo;

    /// Makes the view hold exactly `infos`, as one mirroring run would.
    fn link_all(release: &Path, cache: &LocalCache, infos: &[&NarInfo]) -> Result<LinkStats> {
        let mut view = ReleaseView::open(release, cache)?;
        for info in infos {
            view.link(&info.store_path, &info.url)?;
        }
        view.finish()
    }

    #[test]
    fn release_view_links_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::create(&dir.path().join("binary_cache")).unwrap();
        let i = info("a", "nar/abc.nar.xz");
        fs::create_dir_all(cache.root().join("nar")).unwrap();
        fs::write(cache.root().join("nar/abc.nar.xz"), b"nar").unwrap();
        cache.write_narinfo(&i, false).unwrap();
        let release = dir.path().join("releases/chan/rel");
        fs::create_dir_all(&release).unwrap();
        let stats = link_all(&release, &cache, &[&i]).unwrap();
        assert_eq!(stats.created, 2);
        let link = release
            .join("binary_cache")
            .join(format!("{}.narinfo", i.hash_part()));
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!(
                "../../../../binary_cache/{}.narinfo",
                i.hash_part()
            ))
        );
        assert_eq!(
            fs::read_link(release.join("binary_cache/nar/abc.nar.xz")).unwrap(),
            PathBuf::from("../../../../../binary_cache/nar/abc.nar.xz")
        );
        assert_eq!(
            fs::read(release.join("binary_cache/nar/abc.nar.xz")).unwrap(),
            b"nar"
        );
        let links = release_links(&release, cache.root()).unwrap();
        assert!(links.contains(Path::new("nar/abc.nar.xz")));
        // Linking again changes nothing; linking an empty closure removes the links.
        assert_eq!(link_all(&release, &cache, &[&i]).unwrap().kept, 2);
        let stats = link_all(&release, &cache, &[]).unwrap();
        assert_eq!(stats.removed, 2);
        assert!(!release.join("binary_cache/nar").exists());
        assert!(release.join("binary_cache/nix-cache-info").exists());
    }

    #[test]
    fn dangling_links_make_the_view_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::create(&dir.path().join("binary_cache")).unwrap();
        let release = dir.path().join("releases/chan/rel");
        fs::create_dir_all(release.join("binary_cache")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../binary_cache/gone.narinfo",
            release.join("binary_cache/gone.narinfo"),
        )
        .unwrap();
        let err = release_links(&release, cache.root()).unwrap_err();
        assert!(format!("{err:#}").contains("incomplete"), "{err:#}");
        let err = release_links(&dir.path().join("nope"), cache.root()).unwrap_err();
        assert!(
            format!("{err:#}").contains("has no binary_cache/"),
            "{err:#}"
        );
    }

    #[test]
    fn links_out_of_the_cache_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::create(&dir.path().join("binary_cache")).unwrap();
        let other = LocalCache::create(&dir.path().join("other_cache")).unwrap();
        fs::write(other.root().join("x.narinfo"), b"x").unwrap();
        let release = dir.path().join("releases/chan/rel");
        fs::create_dir_all(release.join("binary_cache")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../other_cache/x.narinfo",
            release.join("binary_cache/x.narinfo"),
        )
        .unwrap();
        let err = release_links(&release, cache.root()).unwrap_err();
        assert!(format!("{err:#}").contains("outside the cache"), "{err:#}");
        assert_eq!(
            release_links(&release, other.root()).unwrap(),
            BTreeSet::from([PathBuf::from("x.narinfo")])
        );
    }

    #[test]
    fn links_are_made_between_resolved_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mirror");
        let alias = dir.path().join("alias");
        fs::create_dir_all(&mirror).unwrap();
        std::os::unix::fs::symlink(&mirror, &alias).unwrap();
        let cache = LocalCache::create(&alias.join("binary_cache")).unwrap();
        assert_eq!(
            cache.root(),
            fs::canonicalize(&mirror).unwrap().join("binary_cache")
        );
        let i = info("a", "nar/abc.nar.xz");
        fs::create_dir_all(cache.root().join("nar")).unwrap();
        fs::write(cache.root().join("nar/abc.nar.xz"), b"nar").unwrap();
        cache.write_narinfo(&i, false).unwrap();
        let release = mirror.join("releases/chan/rel");
        link_all(&release, &cache, &[&i]).unwrap();
        assert_eq!(
            fs::read_link(release.join("binary_cache/nar/abc.nar.xz")).unwrap(),
            PathBuf::from("../../../../../binary_cache/nar/abc.nar.xz")
        );
        let via_alias = alias.join("releases/chan/rel");
        let links = release_links(&via_alias, &alias.join("binary_cache")).unwrap();
        assert!(links.contains(Path::new("nar/abc.nar.xz")), "{links:?}");
    }
}
