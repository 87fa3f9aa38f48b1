//! Checking the publication on the node: a sample of published paths (every directory down to
//! the releases and channels, the first and last narinfo and NAR, and files spread over the
//! rest), each asked for with `files/stat` and compared, as a decoded CID, with the CID
//! computed here.

use super::PublishError;
use crate::ipfs::cid::Cid;
use crate::ipfs::client::IpfsClient;

/// Picks the published paths to check on the node: every directory down to the releases and
/// channels, the first and last narinfo and NAR, and files spread evenly over the rest, at
/// most `max_files` files in all. `walk` calls its argument with every published path, its
/// CID and whether it is a directory, in tree order (as [`super::Built::visit`] does); it is
/// called twice, and only the paths picked are kept.
pub fn verification_sample<W>(walk: W, max_files: usize) -> Vec<(String, Cid)>
where
    W: Fn(&mut dyn FnMut(&str, &Cid, bool)),
{
    // First pass: how many files, and the first and last of each kind, by file number.
    let kinds: [&dyn Fn(&str) -> bool; 3] = [
        &|p: &str| p.starts_with("binary_cache/") && p.ends_with(".narinfo"),
        &|p: &str| p.starts_with("binary_cache/nar/"),
        &|p: &str| p.starts_with("releases/") && !p.contains("/binary_cache/"),
    ];
    let mut firsts_and_lasts = [[None::<usize>; 2]; 3];
    let mut files = 0usize;
    walk(&mut |path, _, is_dir| {
        if is_dir {
            return;
        }
        for (kind, ends) in kinds.iter().zip(firsts_and_lasts.iter_mut()) {
            if kind(path) {
                ends[0].get_or_insert(files);
                ends[1] = Some(files);
            }
        }
        files += 1;
    });
    let mut chosen: Vec<usize> = Vec::new();
    for n in firsts_and_lasts.into_iter().flatten().flatten() {
        if !chosen.contains(&n) && chosen.len() < max_files {
            chosen.push(n);
        }
    }
    let room = max_files.saturating_sub(chosen.len());
    if room > 0 && files > 0 {
        let step = files.div_ceil(room).max(1);
        for n in (0..files).step_by(step) {
            if !chosen.contains(&n) && chosen.len() < max_files {
                chosen.push(n);
            }
        }
    }
    // Second pass: the directories near the top and the files chosen, in tree order.
    let mut picked = Vec::new();
    let mut file = 0usize;
    walk(&mut |path, cid, is_dir| {
        if is_dir {
            if path.matches('/').count() <= 2 {
                picked.push((path.to_string(), *cid));
            }
        } else {
            if chosen.contains(&file) {
                picked.push((path.to_string(), *cid));
            }
            file += 1;
        }
    });
    picked
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
        let sample = verification_sample(|f| built.visit(&tree, f), 4);
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
