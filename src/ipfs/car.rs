//! CARv1 (content-addressed archive) files: a streaming writer and a verifying reader.
//!
//! ```text
//! CAR     = varint(len(header)) header section*
//! header  = dag-cbor {"roots": [CID…], "version": 1}   (CIDs as tag 42 over 0x00 + CID bytes)
//! section = varint(len(cid) + len(block)) cid block
//! ```
//! This is what `dag/import` takes and `dag/export` gives. The header is written before any
//! block, so the root must be known first. When it is not (a file hashed while it streams),
//! either write the CAR to something seekable and fix the header afterwards with
//! [`CarWriter::replace_roots`] (a placeholder root of the same version and codec has the same
//! length, e.g. [`placeholder_root`]), or import with `pin-roots=false` and pin the real root
//! separately. kubo and go-car refuse a CAR with no root at all.
//!
//! ```
//! use nixipfs::ipfs::car::{CarReader, CarWriter};
//! use nixipfs::ipfs::cid::{Cid, RAW};
//! let cid = Cid::sha2_256(1, RAW, b"hello\n").unwrap();
//! let mut car = CarWriter::new(Vec::new(), &[cid]).unwrap();
//! car.write_block(&cid, b"hello\n").unwrap();
//! let bytes = car.finish().unwrap();
//! let mut reader = CarReader::new(&bytes[..]).unwrap();
//! assert_eq!(reader.roots(), &[cid]);
//! let (read_cid, block) = reader.next_block().unwrap().unwrap();
//! assert_eq!((read_cid, block.as_slice()), (cid, &b"hello\n"[..]));
//! assert!(reader.next_block().unwrap().is_none());
//! ```

use std::io::{self, Read, Seek, SeekFrom, Write};

use unsigned_varint::{decode, encode};

use super::cid::{Cid, CidError, DAG_PB, SHA2_256};
use super::unixfs::BlockSink;

/// Largest header the reader accepts.
pub const MAX_HEADER_LEN: u64 = 1 << 20;
/// Largest section (CID + block) the reader accepts. kubo's blocks are at most 2 MiB (file
/// leaves 256 KiB); the margin allows for large directory nodes.
pub const MAX_SECTION_LEN: u64 = 16 << 20;

/// The CBOR tag for IPLD links.
const CID_TAG: u64 = 42;

/// Why a CAR could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CarError {
    /// Reading or writing failed.
    #[error("CAR I/O: {0}")]
    Io(#[from] io::Error),
    /// A length prefix is malformed or cut short.
    #[error("CAR {what} length: {error}")]
    Varint {
        /// Which length.
        what: &'static str,
        /// What is wrong with it, as text.
        error: String,
    },
    /// A header or section is larger than this reader accepts.
    #[error("CAR {what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Header or section.
        what: &'static str,
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The input ends inside a header or section.
    #[error("CAR truncated inside the {0}")]
    Truncated(&'static str),
    /// The header is not the dag-cbor map this format requires.
    #[error("CAR header: {0}")]
    Header(String),
    /// The header announces a version other than 1.
    #[error("unsupported CAR version {0} (only CARv1 is supported)")]
    UnsupportedVersion(u64),
    /// A CID in the header or a section is malformed.
    #[error("CAR {location}: {error}")]
    Cid {
        /// Where in the file.
        location: String,
        /// What is wrong.
        error: CidError,
    },
    /// A block does not hash to its CID.
    #[error("CAR block {0}: content does not match its CID")]
    HashMismatch(Cid),
    /// [`CarWriter::replace_roots`] with roots of a different encoded length.
    #[error(
        "the new CAR header is {new} bytes, the written one {old}: roots must keep their length"
    )]
    HeaderLengthChanged {
        /// Length of the header written first.
        old: usize,
        /// Length of the replacement.
        new: usize,
    },
}

fn cbor_head(major: u8, value: u64, out: &mut Vec<u8>) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | value as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, value as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// The dag-cbor header `{"roots": [...], "version": 1}` (keys in dag-cbor's canonical order),
/// with its varint length prefix.
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut header = Vec::with_capacity(24 + roots.len() * 42);
    cbor_head(5, 2, &mut header);
    cbor_head(3, 5, &mut header);
    header.extend_from_slice(b"roots");
    cbor_head(4, roots.len() as u64, &mut header);
    for root in roots {
        cbor_head(6, CID_TAG, &mut header);
        cbor_head(2, root.encoded_len() as u64 + 1, &mut header);
        header.push(0x00);
        root.write_bytes(&mut header);
    }
    cbor_head(3, 7, &mut header);
    header.extend_from_slice(b"version");
    cbor_head(0, 1, &mut header);
    let mut out = Vec::with_capacity(header.len() + 2);
    out.extend_from_slice(encode::u64(header.len() as u64, &mut encode::u64_buffer()));
    out.extend_from_slice(&header);
    out
}

/// The framing of one section, `varint(len(cid) + len(block)) cid`, which the block follows;
/// appended to `out`.
pub fn encode_section_prefix(cid: &Cid, block_len: usize, out: &mut Vec<u8>) {
    let len = (cid.encoded_len() + block_len) as u64;
    out.extend_from_slice(encode::u64(len, &mut encode::u64_buffer()));
    cid.write_bytes(out);
}

/// A root CID of `version` with a zero digest, to write a header before the real root is known
/// (then [`CarWriter::replace_roots`]). It has the length of any sha2-256 dag-pb CID of that
/// version.
pub fn placeholder_root(version: u8) -> Result<Cid, CidError> {
    Cid::new(version, DAG_PB, SHA2_256, &[0; 32])
}

/// Writes a CARv1 to any [`Write`], one block at a time. Wrap files and sockets in a
/// [`io::BufWriter`]: each block is two writes.
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    inner: W,
    header_len: usize,
    bytes: u64,
    blocks: u64,
    prefix: Vec<u8>,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `roots` and returns the writer.
    pub fn new(mut inner: W, roots: &[Cid]) -> Result<Self, CarError> {
        let header = encode_header(roots);
        inner.write_all(&header)?;
        Ok(CarWriter {
            inner,
            header_len: header.len(),
            bytes: header.len() as u64,
            blocks: 0,
            prefix: Vec::with_capacity(48),
        })
    }

    /// Appends one block. The CAR format allows repeats; `dag/import` stores a block once.
    pub fn write_block(&mut self, cid: &Cid, block: &[u8]) -> Result<(), CarError> {
        self.prefix.clear();
        encode_section_prefix(cid, block.len(), &mut self.prefix);
        self.inner.write_all(&self.prefix)?;
        self.inner.write_all(block)?;
        self.bytes += (self.prefix.len() + block.len()) as u64;
        self.blocks += 1;
        Ok(())
    }

    /// Bytes written so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Blocks written so far.
    pub fn blocks_written(&self) -> u64 {
        self.blocks
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CarError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write + Seek> CarWriter<W> {
    /// Rewrites the header with new roots of the same encoded length (see
    /// [`placeholder_root`]), then returns to the end of the output.
    pub fn replace_roots(&mut self, roots: &[Cid]) -> Result<(), CarError> {
        let header = encode_header(roots);
        if header.len() != self.header_len {
            return Err(CarError::HeaderLengthChanged {
                old: self.header_len,
                new: header.len(),
            });
        }
        let end = self.inner.stream_position()?;
        self.inner.seek(SeekFrom::Start(end - self.bytes))?;
        self.inner.write_all(&header)?;
        self.inner.seek(SeekFrom::Start(end))?;
        Ok(())
    }
}

impl<W: Write> BlockSink for CarWriter<W> {
    fn put_block(&mut self, cid: &Cid, block: &[u8]) -> io::Result<()> {
        self.write_block(cid, block).map_err(|e| match e {
            CarError::Io(e) => e,
            other => io::Error::other(other),
        })
    }
}

/// Reads a CARv1 block by block, checking each block against its CID.
#[derive(Debug)]
pub struct CarReader<R: Read> {
    inner: R,
    roots: Vec<Cid>,
    verify: bool,
    index: u64,
}

/// Reads the varint length in front of the header or a section; `None` at a clean end of the
/// input (no byte at all).
fn read_len<R: Read>(reader: &mut R, what: &'static str) -> Result<Option<u64>, CarError> {
    let mut buf = encode::u64_buffer();
    for i in 0..buf.len() {
        match reader.read_exact(&mut buf[i..=i]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && i == 0 => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(CarError::Truncated(what))
            }
            Err(e) => return Err(CarError::Io(e)),
        }
        if decode::is_last(buf[i]) {
            return decode::u64(&buf[..=i])
                .map(|(len, _)| Some(len))
                .map_err(|error| CarError::Varint {
                    what,
                    error: error.to_string(),
                });
        }
    }
    Err(CarError::Varint {
        what,
        error: decode::Error::Overflow.to_string(),
    })
}

fn read_exact<R: Read>(reader: &mut R, len: u64, what: &'static str) -> Result<Vec<u8>, CarError> {
    let mut buf = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(CarError::Truncated(what));
    }
    Ok(buf)
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<Self, CarError> {
        let len = read_len(&mut inner, "header")?.ok_or(CarError::Truncated("header"))?;
        if len > MAX_HEADER_LEN {
            return Err(CarError::TooLarge {
                what: "header",
                len,
                max: MAX_HEADER_LEN,
            });
        }
        let header = read_exact(&mut inner, len, "header")?;
        let roots = decode_header(&header)?;
        Ok(CarReader {
            inner,
            roots,
            verify: true,
            index: 0,
        })
    }

    /// Turns hash checking off (it is on by default). Blocks whose hash function is not
    /// sha2-256 or identity are never checked.
    pub fn without_verification(mut self) -> Self {
        self.verify = false;
        self
    }

    /// The roots named in the header.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, or `None` at the end of the file.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        let Some(len) = read_len(&mut self.inner, "section")? else {
            return Ok(None);
        };
        if len > MAX_SECTION_LEN {
            return Err(CarError::TooLarge {
                what: "section",
                len,
                max: MAX_SECTION_LEN,
            });
        }
        let mut section = read_exact(&mut self.inner, len, "section")?;
        let (cid, used) = Cid::read_bytes(&section).map_err(|error| CarError::Cid {
            location: format!("section {}", self.index),
            error,
        })?;
        section.drain(..used);
        if self.verify && cid.verify(&section) == Some(false) {
            return Err(CarError::HashMismatch(cid));
        }
        self.index += 1;
        Ok(Some((cid, section)))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>), CarError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

/// A reader of the few CBOR items a CAR header holds.
struct Cbor<'a> {
    input: &'a [u8],
}

impl Cbor<'_> {
    fn err(what: impl Into<String>) -> CarError {
        CarError::Header(what.into())
    }

    /// Reads an item head: (major type, argument).
    fn head(&mut self) -> Result<(u8, u64), CarError> {
        let (&first, rest) = self
            .input
            .split_first()
            .ok_or_else(|| Cbor::err("truncated"))?;
        let major = first >> 5;
        let info = first & 0x1f;
        let extra = match info {
            0..=23 => 0,
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(Cbor::err(format!("unsupported CBOR item 0x{first:02x}"))),
        };
        if rest.len() < extra {
            return Err(Cbor::err("truncated"));
        }
        let value = if extra == 0 {
            u64::from(info)
        } else {
            rest[..extra]
                .iter()
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
        };
        self.input = &rest[extra..];
        Ok((major, value))
    }

    fn bytes_of(&mut self, len: u64) -> Result<&[u8], CarError> {
        if len > self.input.len() as u64 {
            return Err(Cbor::err("truncated"));
        }
        let (bytes, rest) = self.input.split_at(len as usize);
        self.input = rest;
        Ok(bytes)
    }
}

fn decode_header(header: &[u8]) -> Result<Vec<Cid>, CarError> {
    let mut cbor = Cbor { input: header };
    let (major, entries) = cbor.head()?;
    if major != 5 {
        return Err(Cbor::err("not a map"));
    }
    let mut roots = None;
    let mut version = None;
    for _ in 0..entries {
        let (major, len) = cbor.head()?;
        if major != 3 {
            return Err(Cbor::err("map key is not a string"));
        }
        match cbor.bytes_of(len)? {
            b"roots" if roots.is_none() => {
                let (major, count) = cbor.head()?;
                if major != 4 {
                    return Err(Cbor::err("roots is not an array"));
                }
                let mut list = Vec::new();
                for i in 0..count {
                    let (major, tag) = cbor.head()?;
                    if major != 6 || tag != CID_TAG {
                        return Err(Cbor::err(format!("root {i} is not a CID link")));
                    }
                    let (major, len) = cbor.head()?;
                    let bytes = cbor.bytes_of(len)?;
                    match (major, bytes.split_first()) {
                        (2, Some((0x00, cid))) => {
                            list.push(Cid::from_bytes(cid).map_err(|error| CarError::Cid {
                                location: format!("header root {i}"),
                                error,
                            })?)
                        }
                        _ => return Err(Cbor::err(format!("root {i} is not a CID link"))),
                    }
                }
                roots = Some(list);
            }
            b"version" if version.is_none() => {
                let (major, value) = cbor.head()?;
                if major != 0 {
                    return Err(Cbor::err("version is not an integer"));
                }
                version = Some(value);
            }
            key => {
                return Err(Cbor::err(format!(
                    "unexpected key {:?}",
                    String::from_utf8_lossy(key)
                )))
            }
        }
    }
    if !cbor.input.is_empty() {
        return Err(Cbor::err("trailing bytes"));
    }
    match version {
        Some(1) => {}
        Some(v) => return Err(CarError::UnsupportedVersion(v)),
        None => return Err(Cbor::err("no version")),
    }
    roots.ok_or_else(|| Cbor::err("no roots"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::directory::DirectoryBuilder;
    use crate::ipfs::unixfs::{AddOptions, FileHasher};
    use std::collections::HashMap;

    #[test]
    fn header_bytes() {
        let root =
            Cid::parse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am").unwrap();
        let header = encode_header(&[root]);
        let mut expected = vec![0x3a, 0xa2, 0x65];
        expected.extend(b"roots");
        expected.extend([0x81, 0xd8, 0x2a, 0x58, 0x25, 0x00]);
        expected.extend(root.to_bytes());
        expected.push(0x67);
        expected.extend(b"version");
        expected.push(0x01);
        assert_eq!(header, expected);
        assert_eq!(decode_header(&header[1..]).unwrap(), vec![root]);
    }

    #[test]
    fn round_trip_of_a_file_and_directory() {
        // A 3-chunk file (dag-pb leaves, CIDv0) in a directory, streamed into a CAR whose
        // header is fixed afterwards.
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut car =
            CarWriter::new(io::Cursor::new(Vec::new()), &[placeholder_root(0).unwrap()]).unwrap();
        let file = FileHasher::new(AddOptions::KUBO_DEFAULT)
            .add(&data[..], &mut car)
            .unwrap();
        let mut dir = DirectoryBuilder::new(0);
        dir.add("data.bin", file.cid, file.tsize).unwrap();
        let root = dir.build(&mut car).unwrap();
        car.replace_roots(&[root.cid]).unwrap();
        assert_eq!(car.blocks_written(), 5);
        let written = car.bytes_written();
        let bytes = car.finish().unwrap().into_inner();
        assert_eq!(bytes.len() as u64, written);

        let mut reader = CarReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.roots(), &[root.cid]);
        let blocks: HashMap<Cid, Vec<u8>> = reader.by_ref().map(|b| b.unwrap()).collect();
        assert_eq!(blocks.len(), 5);
        // The blocks' sizes add up to the root's Tsize.
        assert_eq!(
            blocks.values().map(|b| b.len() as u64).sum::<u64>(),
            root.tsize
        );
        // Walk down from the root and reassemble the file.
        let dir_node = crate::ipfs::dagpb::PbNode::decode(&blocks[&root.cid]).unwrap();
        assert_eq!(dir_node.links[0].name, "data.bin");
        let file_node =
            crate::ipfs::dagpb::PbNode::decode(&blocks[&dir_node.links[0].hash]).unwrap();
        let mut joined = Vec::new();
        for link in &file_node.links {
            let leaf = crate::ipfs::dagpb::PbNode::decode(&blocks[&link.hash]).unwrap();
            let unixfs =
                crate::ipfs::unixfs::UnixfsData::decode(leaf.data.as_deref().unwrap()).unwrap();
            joined.extend(unixfs.data.unwrap());
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn detects_corruption() {
        let cid = Cid::sha2_256(1, crate::ipfs::cid::RAW, b"abc").unwrap();
        let mut car = CarWriter::new(Vec::new(), &[cid]).unwrap();
        car.write_block(&cid, b"abc").unwrap();
        let mut bytes = car.finish().unwrap();
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        let mut reader = CarReader::new(&bytes[..]).unwrap();
        assert!(matches!(reader.next_block(), Err(CarError::HashMismatch(c)) if c == cid));
        let mut lenient = CarReader::new(&bytes[..]).unwrap().without_verification();
        assert_eq!(lenient.next_block().unwrap().unwrap().1, b"abx");
        // Cut inside the section.
        let cut = &bytes[..bytes.len() - 2];
        let mut reader = CarReader::new(cut).unwrap();
        assert!(matches!(
            reader.next_block(),
            Err(CarError::Truncated("section"))
        ));
    }

    #[test]
    fn length_prefixes() {
        // A known length (300 = 0xac 0x02) and a clean end after the last section.
        let root = placeholder_root(1).unwrap();
        let block = vec![7u8; 300 - root.encoded_len()];
        let mut car = CarWriter::new(Vec::new(), &[root]).unwrap();
        car.write_block(&root, &block).unwrap();
        let bytes = car.finish().unwrap();
        let header_len = encode_header(&[root]).len();
        assert_eq!(&bytes[header_len..header_len + 2], &[0xac, 0x02]);
        let mut reader = CarReader::new(&bytes[..]).unwrap().without_verification();
        assert_eq!(reader.next_block().unwrap().unwrap().1, block);
        assert!(reader.next_block().unwrap().is_none());
        // A length cut inside its varint, one not minimally encoded, one of 11 bytes.
        let header = encode_header(&[root]);
        for (tail, expected) in [
            (&[0x80][..], "truncated"),
            (&[0x80, 0x00][..], "not minimal"),
            (&[0xff; 11][..], "too long"),
        ] {
            let mut bytes = header.clone();
            bytes.extend_from_slice(tail);
            let got = CarReader::new(&bytes[..]).unwrap().next_block();
            let ok = match expected {
                "truncated" => matches!(got, Err(CarError::Truncated("section"))),
                _ => matches!(
                    got,
                    Err(CarError::Varint {
                        what: "section",
                        ..
                    })
                ),
            };
            assert!(ok, "{expected}: {got:?}");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let root = placeholder_root(1).unwrap();
        // CARv2 pragma: {version: 2}.
        let v2 = [
            0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
        ];
        assert!(matches!(
            CarReader::new(&v2[..]),
            Err(CarError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            CarReader::new(&[][..]),
            Err(CarError::Truncated(_))
        ));
        assert!(matches!(
            CarReader::new(&[0x05, 0x01][..]),
            Err(CarError::Truncated("header"))
        ));
        assert!(matches!(
            CarReader::new(&[0xff, 0xff, 0xff, 0x7f][..]),
            Err(CarError::TooLarge { .. })
        ));
        // Not a map.
        assert!(matches!(
            CarReader::new(&[0x01, 0x01][..]),
            Err(CarError::Header(_))
        ));
        // An unknown key.
        let mut header = encode_header(&[root]);
        let pos = header.windows(5).position(|w| w == b"roots").unwrap();
        header[pos] = b'R';
        assert!(matches!(
            CarReader::new(&header[..]),
            Err(CarError::Header(m)) if m.contains("unexpected key")
        ));
        // Replacing roots must keep the header length.
        let mut car = CarWriter::new(io::Cursor::new(Vec::new()), &[root]).unwrap();
        assert!(matches!(
            car.replace_roots(&[placeholder_root(0).unwrap()]),
            Err(CarError::HeaderLengthChanged { .. })
        ));
    }
}
