//! Checking the publication on the node: a sample of published paths (every directory down to
//! the releases and channels, the first and last narinfo and NAR, and files spread over the
//! rest), each asked for with `files/stat` and compared, as a decoded CID, with the CID
//! computed here.

use super::PublishError;
use crate::ipfs::cid::Cid;
use crate::ipfs::client::IpfsClient;

/// Picks the published paths to check on the node as the walk goes, without listing them:
/// every directory down to the releases and channels (at most two `/` in the path), the first
/// and last narinfo and NAR of the global cache and the first and last file of the releases
/// (outside their views), and files spread over the rest (a reservoir sample of fixed seed,
/// so the same mirror gives the same sample), at most `max_files` files in all.
#[derive(Debug, Clone)]
pub struct Sampler {
    max_files: usize,
    dirs: Vec<(String, Cid)>,
    /// Per kind: the first and last file seen.
    ends: [[Option<(String, Cid)>; 2]; 3],
    /// The reservoir: files picked among those seen.
    spread: Vec<(String, Cid)>,
    seen: u64,
    state: u64,
}

/// Which of the three kinds of [`Sampler`] a published path is.
fn kind(path: &str) -> Option<usize> {
    if path.starts_with("binary_cache/nar/") {
        Some(1)
    } else if path.starts_with("binary_cache/") && path.ends_with(".narinfo") {
        Some(0)
    } else if path.starts_with("releases/") && !path.contains("/binary_cache/") {
        Some(2)
    } else {
        None
    }
}

impl Sampler {
    /// A sampler of at most `max_files` files.
    pub fn new(max_files: usize) -> Sampler {
        Sampler {
            max_files,
            dirs: Vec::new(),
            ends: Default::default(),
            spread: Vec::new(),
            seen: 0,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A directory published at `path`.
    pub fn dir(&mut self, path: &str, cid: Cid) {
        if path.matches('/').count() <= 2 {
            self.dirs.push((path.to_string(), cid));
        }
    }

    /// A file published at `path`.
    pub fn file(&mut self, path: &str, cid: Cid) {
        if let Some(k) = kind(path) {
            let ends = &mut self.ends[k];
            if ends[0].is_none() {
                ends[0] = Some((path.to_string(), cid));
            } else {
                ends[1] = Some((path.to_string(), cid));
            }
        }
        self.seen += 1;
        let room = self.max_files;
        if self.spread.len() < room {
            self.spread.push((path.to_string(), cid));
        } else if room > 0 {
            let j = self.next_random() % self.seen;
            if let Ok(j) = usize::try_from(j) {
                if j < room {
                    self.spread[j] = (path.to_string(), cid);
                }
            }
        }
    }

    /// The directories, then the files picked (the ends first).
    pub fn finish(self) -> Vec<(String, Cid)> {
        let mut files: Vec<(String, Cid)> = Vec::new();
        let ends = self.ends.into_iter().flatten().flatten();
        for file in ends.chain(self.spread) {
            if files.len() < self.max_files && !files.iter().any(|f| f.0 == file.0) {
                files.push(file);
            }
        }
        let mut picked = self.dirs;
        picked.extend(files);
        picked
    }
}

/// Checks with `files/stat` that the node has `root` at `mfs_root`, and each sampled path
/// below it with the CID computed here (decoded CIDs are compared, not their text). Returns
/// the number of paths checked.
pub async fn verify_on_node(
    client: &IpfsClient,
    mfs_root: &str,
    root: &Cid,
    sample: &[(String, Cid)],
) -> Result<usize, PublishError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let root_entry = (String::new(), *root);
    let checks = std::iter::once(&root_entry)
        .chain(sample)
        .map(|(path, expected)| async move {
            let mfs_path = if path.is_empty() {
                mfs_root.to_string()
            } else {
                format!("{mfs_root}/{path}")
            };
            let got = match client.files_stat(&mfs_path).await? {
                Some(stat) if stat.cid == *expected => return Ok(()),
                Some(stat) => stat.cid.to_string(),
                None => "nothing".to_string(),
            };
            Err(PublishError::Verification {
                path: mfs_path,
                expected: expected.to_string(),
                got,
            })
        });
    // A few at a time, answered in order: the first path that fails is the one reported.
    let checked: Vec<()> = stream::iter(checks)
        .buffered(VERIFY_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(checked.len())
}

/// Paths asked for at once when checking the publication.
const VERIFY_CONCURRENCY: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::file_cache::FileCache;
    use crate::ipfs::publish::fixtures::{build_to_car, small_mirror};

    #[test]
    fn the_sample_covers_directories_and_spread_files() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let out = tempfile::tempdir().unwrap();
        let (walked, _) = build_to_car(dir.path(), &FileCache::new(), &out.path().join("m.car"));
        let sample = &walked.sample;
        let names: Vec<&str> = sample.iter().map(|(p, _)| p.as_str()).collect();
        for expected in [
            "binary_cache",
            "binary_cache/nar",
            "channels",
            "channels/nixos-24.05",
            "releases",
            "releases/nixos-24.05",
            "releases/nixos-24.05/nixos-24.05.1.abc",
            "binary_cache/r29rfw7xvs9kc6lxma5aqdqbci3af4vg.narinfo",
            "binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo",
            "binary_cache/nar/a.nar.xz",
            "binary_cache/nar/b.nar.xz",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        let is_dir = |p: &str| walked.paths.iter().any(|(q, _, d)| q == p && *d);
        assert_eq!(sample.iter().filter(|(p, _)| !is_dir(p)).count(), 4);
        // Each with its CID.
        for (path, cid) in sample {
            assert!(
                walked.paths.contains(&(path.clone(), *cid, is_dir(path))),
                "{path}"
            );
        }
    }

    #[test]
    fn the_spread_is_fixed_and_bounded() {
        let cid = crate::ipfs::cid::Cid::sha2_256(1, crate::ipfs::cid::RAW, b"x").unwrap();
        let pick = |n: usize| {
            let mut s = Sampler::new(5);
            for i in 0..n {
                s.file(&format!("other/{i}"), cid);
            }
            s.finish()
        };
        assert_eq!(pick(3).len(), 3);
        let many = pick(10_000);
        assert_eq!(many.len(), 5);
        assert_eq!(many, pick(10_000));
        // Spread over the files, not the first ones only.
        assert!(
            many.iter().any(|(p, _)| p.as_str() > "other/5000"),
            "{many:?}"
        );
    }
}
