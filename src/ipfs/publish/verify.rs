//! Checking the publication on the node: a sample of published paths (every directory down to
//! the releases and channels, the first and last narinfo and NAR, and files spread over the
//! rest), each asked for with `files/stat` and compared, as a decoded CID, with the CID
//! computed here.

use super::PublishError;
use crate::ipfs::cid::Cid;
use crate::ipfs::client::IpfsClient;

/// Picks the published paths to check on the node: every directory down to the releases and
/// channels, the first and last narinfo and NAR, and files spread evenly over the rest, at
/// most `max_files` files in all.
pub fn verification_sample(paths: &[(String, Cid, bool)], max_files: usize) -> Vec<(String, Cid)> {
    let mut picked: Vec<usize> = Vec::new();
    let mut files = Vec::new();
    for (i, (path, _, is_dir)) in paths.iter().enumerate() {
        if *is_dir {
            if path.matches('/').count() <= 2 {
                picked.push(i);
            }
        } else {
            files.push(i);
        }
    }
    let mut chosen_files: Vec<usize> = Vec::new();
    let firsts_and_lasts = |pred: &dyn Fn(&str) -> bool| {
        let matching: Vec<usize> = files
            .iter()
            .copied()
            .filter(|&i| pred(&paths[i].0))
            .collect();
        [matching.first().copied(), matching.last().copied()]
    };
    for i in firsts_and_lasts(&|p: &str| p.starts_with("binary_cache/") && p.ends_with(".narinfo"))
        .into_iter()
        .chain(firsts_and_lasts(&|p: &str| {
            p.starts_with("binary_cache/nar/")
        }))
        .chain(firsts_and_lasts(&|p: &str| {
            p.starts_with("releases/") && !p.contains("/binary_cache/")
        }))
        .flatten()
    {
        if !chosen_files.contains(&i) && chosen_files.len() < max_files {
            chosen_files.push(i);
        }
    }
    let room = max_files.saturating_sub(chosen_files.len());
    if room > 0 && !files.is_empty() {
        let step = files.len().div_ceil(room).max(1);
        for &i in files.iter().step_by(step) {
            if !chosen_files.contains(&i) && chosen_files.len() < max_files {
                chosen_files.push(i);
            }
        }
    }
    picked.extend(chosen_files);
    picked.sort_unstable();
    picked
        .into_iter()
        .map(|i| (paths[i].0.clone(), paths[i].1))
        .collect()
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
    let mut checked = 0;
    let root_entry = (String::new(), *root);
    for (path, expected) in std::iter::once(&root_entry).chain(sample) {
        let mfs_path = if path.is_empty() {
            mfs_root.to_string()
        } else {
            format!("{mfs_root}/{path}")
        };
        match client.files_stat(&mfs_path).await? {
            Some(stat) if stat.cid == *expected => checked += 1,
            Some(stat) => {
                return Err(PublishError::Verification {
                    path: mfs_path,
                    expected: expected.to_string(),
                    got: stat.cid.to_string(),
                })
            }
            None => {
                return Err(PublishError::Verification {
                    path: mfs_path,
                    expected: expected.to_string(),
                    got: "nothing".to_string(),
                })
            }
        }
    }
    Ok(checked)
}

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
        let (tree, built, _) =
            build_to_car(dir.path(), &FileCache::new(), &out.path().join("m.car"));
        let paths = built.paths(&tree);
        let sample = verification_sample(&paths, 4);
        let names: Vec<&str> = sample.iter().map(|(p, _)| p.as_str()).collect();
        for expected in [
            "binary_cache",
            "channels",
            "channels/nixos-24.05",
            "releases",
            "releases/nixos-24.05",
            "releases/nixos-24.05/nixos-24.05.1.abc",
            "binary_cache/r29rfw7xvs9kc6lxma5aqdqbci3af4vg.narinfo",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        assert_eq!(
            sample
                .iter()
                .filter(
                    |(p, _)| !tree.dirs.iter().any(|d| &d.key == p) && !p.starts_with("channels/")
                )
                .count(),
            4
        );
    }
}
