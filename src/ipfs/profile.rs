//! Import profiles: named sets of the parameters that decide the CIDs of files and directories,
//! as IPIP-499 names them (kubo 0.40's `ipfs add --profile`), and the layout the original
//! release scripts used.
//!
//! | parameter | `unixfs-v1-2025` | `unixfs-v0-2015` | `legacy-raw-v0` |
//! |---|---|---|---|
//! | CID version of dag-pb nodes | 1 | 0 | 0 |
//! | leaves | raw | dag-pb | raw |
//! | chunks | 1 MiB | 256 KiB | 256 KiB |
//! | links per file node | 1024 | 174 | 174 |
//! | HAMT past 256 KiB of | the directory block's bytes, `>` | link bytes, `>` | link bytes, `>=` |
//!
//! `unixfs-v0-2015` is kubo's default `ipfs add`; `legacy-raw-v0` is `ipfs add --raw-leaves` of
//! kubo 0.22, what nixipfs has always published.
//!
//! ```
//! use nixipfs::ipfs::profile::Profile;
//! let layout = Profile::UnixfsV0_2015.layout();
//! let file = layout.file_hasher().add(&b"hello\n"[..], &mut |_: &_, _: &[u8]| Ok(())).unwrap();
//! assert_eq!(file.cid.to_string(), "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN");
//! ```

use std::fmt;
use std::str::FromStr;

use super::directory::{DirectoryBuilder, Sharding};
use super::unixfs::{AddOptions, FileHasher, CHUNK_SIZE, MAX_LINKS};

/// A named import profile (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// CIDv1, raw leaves, 1 MiB chunks, 1024 links, HAMT past 256 KiB of block bytes.
    UnixfsV1_2025,
    /// CIDv0, dag-pb leaves, 256 KiB chunks, 174 links, HAMT past 256 KiB of link bytes.
    UnixfsV0_2015,
    /// CIDv0 directories over raw leaves, 256 KiB chunks, 174 links, kubo 0.22's HAMT rule.
    LegacyRawV0,
}

impl Profile {
    /// Every profile, in the order the help lists them.
    pub const ALL: [Profile; 3] = [
        Profile::UnixfsV1_2025,
        Profile::UnixfsV0_2015,
        Profile::LegacyRawV0,
    ];

    /// The profile that publishing uses unless told otherwise.
    pub const DEFAULT: Profile = Profile::UnixfsV1_2025;

    /// The profile's name, as the command line and the config spell it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::UnixfsV1_2025 => "unixfs-v1-2025",
            Profile::UnixfsV0_2015 => "unixfs-v0-2015",
            Profile::LegacyRawV0 => "legacy-raw-v0",
        }
    }

    /// Its parameters.
    pub fn layout(self) -> Layout {
        match self {
            Profile::UnixfsV1_2025 => Layout {
                add: AddOptions::V1,
                chunk_size: 1 << 20,
                max_links: 1024,
                sharding: Sharding::BlockBytesAbove,
            },
            Profile::UnixfsV0_2015 => Layout {
                add: AddOptions::KUBO_DEFAULT,
                chunk_size: CHUNK_SIZE,
                max_links: MAX_LINKS,
                sharding: Sharding::LinkBytesAbove,
            },
            Profile::LegacyRawV0 => Layout {
                add: AddOptions::V0_RAW_LEAVES,
                chunk_size: CHUNK_SIZE,
                max_links: MAX_LINKS,
                sharding: Sharding::Kubo,
            },
        }
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::DEFAULT
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?} (expected unixfs-v1-2025, unixfs-v0-2015 or legacy-raw-v0)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(name: &str) -> Result<Profile, UnknownProfile> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownProfile(name.to_string()))
    }
}

/// The parameters that decide CIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// CID version of dag-pb nodes, and raw or dag-pb leaves.
    pub add: AddOptions,
    /// Bytes per chunk.
    pub chunk_size: usize,
    /// Links per file node.
    pub max_links: usize,
    /// When a directory is sharded.
    pub sharding: Sharding,
}

impl Layout {
    /// A file importer with these parameters.
    pub fn file_hasher(&self) -> FileHasher {
        FileHasher::with_layout(self.add, self.chunk_size, self.max_links)
    }

    /// An empty directory with these parameters.
    pub fn directory(&self) -> DirectoryBuilder {
        DirectoryBuilder::new(self.add.cid_version).with_sharding(self.sharding)
    }

    /// The layout with dag-pb nodes of CID version `version`.
    pub fn with_cid_version(mut self, version: u8) -> Layout {
        self.add.cid_version = version;
        self
    }

    /// A one-word description of every parameter (what the cache of CIDs is keyed by), e.g.
    /// `v0-raw-262144-174-kubo`.
    pub fn descriptor(&self) -> String {
        format!(
            "v{}-{}-{}-{}-{}",
            self.add.cid_version,
            if self.add.raw_leaves { "raw" } else { "pb" },
            self.chunk_size,
            self.max_links,
            match self.sharding {
                Sharding::Kubo => "kubo",
                Sharding::LinkBytesAbove => "links",
                Sharding::BlockBytesAbove => "block",
                Sharding::Never => "never",
                Sharding::Always => "always",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::cid::Cid;

    fn file_cid(layout: &Layout, data: &[u8]) -> String {
        layout
            .file_hasher()
            .add(data, &mut |_: &Cid, _: &[u8]| Ok(()))
            .unwrap()
            .cid
            .to_string()
    }

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert!("unixfs-v2".parse::<Profile>().is_err());
        let descriptors: std::collections::HashSet<String> = Profile::ALL
            .iter()
            .map(|p| p.layout().descriptor())
            .collect();
        assert_eq!(descriptors.len(), 3);
        assert_eq!(
            Profile::LegacyRawV0.layout().descriptor(),
            "v0-raw-262144-174-kubo"
        );
    }

    #[test]
    fn known_answers_per_profile() {
        // kubo's default add and the raw-leaves column of the known-answer table.
        let v0 = Profile::UnixfsV0_2015.layout();
        let legacy = Profile::LegacyRawV0.layout();
        let v1 = Profile::UnixfsV1_2025.layout();
        let zeros = vec![0u8; 1_048_576];
        assert_eq!(
            file_cid(&v0, &zeros),
            "QmVkbauSDEaMP4Tkq6Epm9uW75mWm136n81YH8fGtfwdHU"
        );
        assert_eq!(
            file_cid(&legacy, &zeros),
            "Qmbig3qCRjdufAtQptiZ9F34poRoRJywcyxH7BmmCce4YF"
        );
        // 1 MiB is one chunk of unixfs-v1-2025: a single raw leaf.
        let raw = Cid::sha2_256(1, crate::ipfs::cid::RAW, &zeros).unwrap();
        assert_eq!(file_cid(&v1, &zeros), raw.to_string());
        assert_ne!(file_cid(&v1, &vec![0u8; 1_048_577]), raw.to_string());
    }
}
