//! HAMT-sharded UnixFS directories, built as boxo's `ipld/unixfs/hamt` builds them.
//!
//! A shard is a dag-pb node with `Data { Type: HAMTShard, Data: bitfield, hashType: 0x22,
//! fanout: 256 }`. Each entry name is hashed with murmur3-x64-64 (the first 64 bits of
//! murmur3 x64 128, seed 0, big-endian); level `d` of the trie uses byte `d` of that hash as
//! the slot index. A slot holding one entry links to it under `"%02X" + name`; a slot shared by
//! several entries links to a sub-shard under `"%02X"` alone. The bitfield marks used slots,
//! slot `i` being bit `i % 8` of byte `31 - i / 8`, with leading zero bytes trimmed (go-bitfield's
//! `Bytes`). For a set of entries built by insertions only, this shape is unique, so the
//! recursive construction here gives kubo's CIDs.

use super::dagpb::{PbLink, PbNode};
use super::unixfs::{Added, BlockSink, DataType, UnixfsData};

/// Multihash code of murmur3-x64-64, the HAMT hash function (`hashType`).
pub const HASH_MURMUR3_X64_64: u64 = 0x22;
/// Slots per shard (kubo's `DefaultShardWidth`).
pub const FANOUT: usize = 256;
/// Trie levels a 64-bit hash can index with 8 bits per level.
const MAX_DEPTH: usize = 8;

/// One directory entry to place in the trie: its index in the directory's entries, and the
/// hash of its name (16 bytes; the name and target stay where the directory keeps them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) index: usize,
    pub(crate) hash: [u8; 8],
}

impl Entry {
    pub(crate) fn new(index: usize, name: &str) -> Self {
        Entry {
            index,
            hash: murmur3_x64_64(name.as_bytes()).to_be_bytes(),
        }
    }
}

/// Why a shard could not be built.
#[derive(Debug)]
pub(crate) enum HamtError {
    /// More than one entry shares all 64 bits of hash.
    TooDeep(String, String),
    /// The sink or the CID builder failed.
    Io(std::io::Error),
    /// The CID version is invalid.
    Cid(super::cid::CidError),
}

/// Builds the HAMT over `entries` and emits its blocks, sub-shards first; `target` gives the
/// name and DAG of an entry by index. The entries are sorted by hash once, so that the
/// entries of every shard are a contiguous run: no shard copies its entries.
pub(crate) fn build<'a, S: BlockSink + ?Sized>(
    entries: &mut [Entry],
    target: &dyn Fn(usize) -> (&'a str, Added),
    cid_version: u8,
    sink: &mut S,
) -> Result<Added, HamtError> {
    entries.sort_unstable_by_key(|e| e.hash);
    build_shard(entries, 0, target, cid_version, sink)
}

/// Blocks kept in order: their CIDs and bytes.
type Blocks = Vec<(super::cid::Cid, Vec<u8>)>;

/// [`build`], with the sub-shards of the root built at once on the current rayon pool; the
/// blocks reach `sink` in the same order.
pub(crate) fn build_parallel<'a, S: BlockSink + ?Sized>(
    entries: &mut [Entry],
    target: &(dyn Fn(usize) -> (&'a str, Added) + Sync),
    cid_version: u8,
    sink: &mut S,
) -> Result<Added, HamtError> {
    use rayon::prelude::*;
    entries.par_sort_unstable_by_key(|e| e.hash);
    let groups = slot_groups(entries, 0);
    let built: Vec<(PbLink, Blocks)> = groups
        .par_iter()
        .map(|&(slot, group)| {
            let mut blocks = Vec::new();
            let mut collect = |cid: &super::cid::Cid, block: &[u8]| {
                blocks.push((*cid, block.to_vec()));
                Ok(())
            };
            let link = slot_link(slot, group, 0, target, cid_version, &mut collect)?;
            Ok((link, blocks))
        })
        .collect::<Result<_, HamtError>>()?;
    let mut links = Vec::with_capacity(built.len());
    for (link, blocks) in built {
        for (cid, block) in &blocks {
            sink.put_block(cid, block).map_err(HamtError::Io)?;
        }
        links.push(link);
    }
    let slots: Vec<u8> = groups.iter().map(|&(slot, _)| slot).collect();
    shard_node(&slots, links, cid_version, sink)
}

/// The entries of a shard at `depth` (sorted by hash, agreeing on their first `depth`
/// bytes), by slot: each slot used, with its run of entries.
fn slot_groups(entries: &[Entry], depth: usize) -> Vec<(u8, &[Entry])> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let slot = entries[start].hash[depth];
        let end = start
            + entries[start..]
                .iter()
                .take_while(|e| e.hash[depth] == slot)
                .count();
        groups.push((slot, &entries[start..end]));
        start = end;
    }
    groups
}

/// The link of slot `slot` of a shard at `depth` to its `group` of entries: the entry itself
/// when it is alone, else a sub-shard, built (its blocks emitted) here.
fn slot_link<'a, S: BlockSink + ?Sized>(
    slot: u8,
    group: &[Entry],
    depth: usize,
    target: &dyn Fn(usize) -> (&'a str, Added),
    cid_version: u8,
    sink: &mut S,
) -> Result<PbLink, HamtError> {
    if let [only] = group {
        let (name, added) = target(only.index);
        return Ok(PbLink {
            hash: added.cid,
            name: format!("{slot:02X}{name}"),
            tsize: added.tsize,
        });
    }
    if depth + 1 >= MAX_DEPTH {
        return Err(HamtError::TooDeep(
            target(group[0].index).0.to_owned(),
            target(group[1].index).0.to_owned(),
        ));
    }
    let child = build_shard(group, depth + 1, target, cid_version, sink)?;
    Ok(PbLink {
        hash: child.cid,
        name: format!("{slot:02X}"),
        tsize: child.tsize,
    })
}

/// Builds the shard over `entries` (sorted by hash, agreeing on their first `depth` bytes),
/// emits its blocks, sub-shards first, and returns it.
fn build_shard<'a, S: BlockSink + ?Sized>(
    entries: &[Entry],
    depth: usize,
    target: &dyn Fn(usize) -> (&'a str, Added),
    cid_version: u8,
    sink: &mut S,
) -> Result<Added, HamtError> {
    let groups = slot_groups(entries, depth);
    let mut links = Vec::with_capacity(groups.len());
    for &(slot, group) in &groups {
        links.push(slot_link(slot, group, depth, target, cid_version, sink)?);
    }
    let slots: Vec<u8> = groups.iter().map(|&(slot, _)| slot).collect();
    shard_node(&slots, links, cid_version, sink)
}

/// The shard node whose used slots are `slots`, linking `links` (in slot order): emitted to
/// `sink` and returned.
fn shard_node<S: BlockSink + ?Sized>(
    slots: &[u8],
    links: Vec<PbLink>,
    cid_version: u8,
    sink: &mut S,
) -> Result<Added, HamtError> {
    let mut bitfield = [0u8; FANOUT / 8];
    for &slot in slots {
        bitfield[FANOUT / 8 - 1 - usize::from(slot) / 8] |= 1 << (slot % 8);
    }
    let first_used = bitfield
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bitfield.len());
    let mut data = UnixfsData::new(DataType::HamtShard);
    data.data = Some(bitfield[first_used..].to_vec());
    data.hash_type = Some(HASH_MURMUR3_X64_64);
    data.fanout = Some(FANOUT as u64);
    let node = PbNode {
        links,
        data: Some(data.encode()),
    };
    let node = node.to_block(cid_version).map_err(HamtError::Cid)?;
    sink.put_block(&node.cid, &node.block)
        .map_err(HamtError::Io)?;
    Ok(Added {
        cid: node.cid,
        tsize: node.tsize,
    })
}

/// murmur3 x64 128 with seed 0, first half (`h1`): what Go's `murmur3.Sum64` and the
/// `murmur3-x64-64` multihash give.
pub fn murmur3_x64_64(data: &[u8]) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mut h1: u64 = 0;
    let mut h2: u64 = 0;
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let mut k1 = u64::from_le_bytes(block[..8].try_into().unwrap_or([0; 8]));
        let mut k2 = u64::from_le_bytes(block[8..].try_into().unwrap_or([0; 8]));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let mut k1: u64 = 0;
    let mut k2: u64 = 0;
    for (i, &byte) in tail.iter().enumerate() {
        if i < 8 {
            k1 ^= u64::from(byte) << (8 * i);
        } else {
            k2 ^= u64::from(byte) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1.wrapping_add(h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_vectors() {
        // First 8 bytes of murmur3 x64 128 (seed 0), as @multiformats/murmur3's murmur3128
        // (the hash js-ipfs uses for HAMT shards) prints them in hex.
        let cases: &[(&str, &str)] = &[
            ("", "0000000000000000"),
            ("hello", "cbd8a7b341bd9b02"),
            ("hello.txt", "df19ab11523994d9"),
            ("0123456789abcdef", "4be06d94cf4ad1a7"),
            ("0123456789abcdefghijklmnopq", "3f072b98d041b50b"),
        ];
        for &(input, expected) in cases {
            assert_eq!(
                format!("{:016x}", murmur3_x64_64(input.as_bytes())),
                expected,
                "{input:?}"
            );
        }
    }
}
