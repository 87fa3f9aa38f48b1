//! The dag-pb block format (codec 0x70): a protobuf `PBNode` with links and opaque data.
//!
//! ```text
//! message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
//! ```
//!
//! The encoding follows go-merkledag/boxo byte for byte, which is what makes CIDs match kubo's:
//! all links come first (field 2), then the data (field 1); within a link Hash, Name and Tsize
//! are always written, in that order, even when the name is empty or the size is 0. Link order
//! is the caller's: boxo sorts links stably by name before encoding (see
//! [`crate::ipfs::unixfs`]). Decoding is strict, as the dag-pb spec asks: fields in this order,
//! no unknown fields, no duplicates; varints (read and written by the `unsigned-varint` crate)
//! minimally encoded.

use unsigned_varint::{decode, encode};

use super::cid::{Cid, CidError, DAG_PB};

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The target.
    pub hash: Cid,
    /// The link name: the entry name in a directory, empty in a file.
    pub name: String,
    /// The cumulative size of the target DAG (every block in it, in bytes).
    pub tsize: u64,
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// Links, in encoding order.
    pub links: Vec<PbLink>,
    /// The data (a UnixFS `Data` message in UnixFS DAGs); `None` leaves the field out.
    pub data: Option<Vec<u8>>,
}

/// A node in block form: its bytes, its CID and the cumulative size of its DAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBlock {
    /// CID of the block.
    pub cid: Cid,
    /// The dag-pb block.
    pub block: Vec<u8>,
    /// Cumulative size: the block plus the Tsize of every link.
    pub tsize: u64,
}

/// Why a dag-pb block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagPbError {
    /// The block ends inside a field.
    #[error("dag-pb: truncated {0}")]
    Truncated(&'static str),
    /// A varint is malformed.
    #[error("dag-pb: {what}: {error}")]
    Varint {
        /// Which field.
        what: &'static str,
        /// The varint problem, as text.
        error: String,
    },
    /// A field that dag-pb does not allow, or a field out of the canonical order.
    #[error("dag-pb: unexpected field {field} (wire type {wire_type}) in {message}")]
    UnexpectedField {
        /// `PBNode` or `PBLink`.
        message: &'static str,
        /// Field number.
        field: u64,
        /// Protobuf wire type.
        wire_type: u64,
    },
    /// A link without a Hash.
    #[error("dag-pb: link {0} has no Hash")]
    MissingHash(usize),
    /// A link Hash that is not a CID.
    #[error("dag-pb: link {index}: {error}")]
    BadHash {
        /// Position of the link.
        index: usize,
        /// Why the hash is not a CID.
        error: CidError,
    },
    /// A link name that is not UTF-8.
    #[error("dag-pb: link {0} has a name that is not UTF-8")]
    BadName(usize),
}

/// Appends the varint encoding of `value` to `out`.
pub(crate) fn put_varint(value: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(encode::u64(value, &mut encode::u64_buffer()));
}

/// Number of bytes that [`put_varint`] writes for `value`.
pub(crate) fn varint_len(value: u64) -> usize {
    encode::u64(value, &mut encode::u64_buffer()).len()
}

fn put_tag(field: u64, wire_type: u64, out: &mut Vec<u8>) {
    put_varint(field << 3 | wire_type, out);
}

fn put_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    put_tag(field, 2, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl PbLink {
    fn encoded_len(&self) -> usize {
        let hash = self.hash.encoded_len();
        let name = self.name.len();
        1 + varint_len(hash as u64)
            + hash
            + 1
            + varint_len(name as u64)
            + name
            + 1
            + varint_len(self.tsize)
    }
}

impl PbNode {
    /// Encodes the node as go-merkledag does (links in the given order, then data).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        let mut hash = Vec::with_capacity(64);
        for link in &self.links {
            put_tag(2, 2, &mut out);
            put_varint(link.encoded_len() as u64, &mut out);
            hash.clear();
            link.hash.write_bytes(&mut hash);
            put_bytes(1, &hash, &mut out);
            put_bytes(2, link.name.as_bytes(), &mut out);
            put_tag(3, 0, &mut out);
            put_varint(link.tsize, &mut out);
        }
        if let Some(data) = &self.data {
            put_bytes(1, data, &mut out);
        }
        out
    }

    /// The node encoded, with its sha2-256 CID of `cid_version` and its cumulative size.
    pub fn to_block(&self, cid_version: u8) -> Result<NodeBlock, CidError> {
        let block = self.encode();
        let cid = Cid::sha2_256(cid_version, DAG_PB, &block)?;
        let tsize = block.len() as u64 + self.links.iter().map(|l| l.tsize).sum::<u64>();
        Ok(NodeBlock { cid, block, tsize })
    }

    /// Length of [`PbNode::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let links: usize = self
            .links
            .iter()
            .map(|l| {
                let len = l.encoded_len();
                1 + varint_len(len as u64) + len
            })
            .sum();
        let data = self
            .data
            .as_ref()
            .map_or(0, |d| 1 + varint_len(d.len() as u64) + d.len());
        links + data
    }

    /// Decodes a dag-pb block.
    pub fn decode(block: &[u8]) -> Result<PbNode, DagPbError> {
        let mut node = PbNode::default();
        let mut fields = Fields::new(block, "PBNode");
        while let Some((field, value)) = fields.next_field()? {
            match (field, value) {
                (2, Value::Bytes(bytes)) if node.data.is_none() => {
                    node.links.push(decode_link(bytes, node.links.len())?);
                }
                (1, Value::Bytes(bytes)) if node.data.is_none() => {
                    node.data = Some(bytes.to_vec());
                }
                (field, value) => {
                    return Err(DagPbError::UnexpectedField {
                        message: "PBNode",
                        field,
                        wire_type: value.wire_type(),
                    })
                }
            }
        }
        Ok(node)
    }
}

fn decode_link(bytes: &[u8], index: usize) -> Result<PbLink, DagPbError> {
    let mut hash = None;
    let mut name: Option<String> = None;
    let mut tsize = None;
    let mut fields = Fields::new(bytes, "PBLink");
    while let Some((field, value)) = fields.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) if hash.is_none() && name.is_none() && tsize.is_none() => {
                hash =
                    Some(Cid::from_bytes(b).map_err(|error| DagPbError::BadHash { index, error })?);
            }
            (2, Value::Bytes(b)) if name.is_none() && tsize.is_none() => {
                name = Some(
                    std::str::from_utf8(b)
                        .map_err(|_| DagPbError::BadName(index))?
                        .to_owned(),
                );
            }
            (3, Value::Varint(v)) if tsize.is_none() => tsize = Some(v),
            (field, value) => {
                return Err(DagPbError::UnexpectedField {
                    message: "PBLink",
                    field,
                    wire_type: value.wire_type(),
                })
            }
        }
    }
    Ok(PbLink {
        hash: hash.ok_or(DagPbError::MissingHash(index))?,
        name: name.unwrap_or_default(),
        tsize: tsize.unwrap_or(0),
    })
}

/// A protobuf field value of the two wire types dag-pb and UnixFS use.
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl Value<'_> {
    fn wire_type(&self) -> u64 {
        match self {
            Value::Varint(_) => 0,
            Value::Bytes(_) => 2,
        }
    }
}

/// A minimal protobuf field reader (wire types 0 and 2 only).
pub(crate) struct Fields<'a> {
    input: &'a [u8],
    message: &'static str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(input: &'a [u8], message: &'static str) -> Self {
        Fields { input, message }
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DagPbError> {
        let (value, rest) = decode::u64(self.input).map_err(|error| match error {
            decode::Error::Insufficient => DagPbError::Truncated(what),
            other => DagPbError::Varint {
                what,
                error: other.to_string(),
            },
        })?;
        self.input = rest;
        Ok(value)
    }

    /// The next (field number, value), or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, DagPbError> {
        if self.input.is_empty() {
            return Ok(None);
        }
        let tag = self.varint("field tag")?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        match wire_type {
            0 => Ok(Some((field, Value::Varint(self.varint("varint field")?)))),
            2 => {
                let len = self.varint("length")?;
                if len > self.input.len() as u64 {
                    return Err(DagPbError::Truncated("length-delimited field"));
                }
                let (bytes, rest) = self.input.split_at(len as usize);
                self.input = rest;
                Ok(Some((field, Value::Bytes(bytes))))
            }
            _ => Err(DagPbError::UnexpectedField {
                message: self.message,
                field,
                wire_type,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::cid::RAW;

    #[test]
    fn empty_directory_block() {
        let node = PbNode {
            links: vec![],
            data: Some(vec![0x08, 0x01]),
        };
        assert_eq!(node.encode(), [0x0a, 0x02, 0x08, 0x01]);
        assert_eq!(node.encoded_len(), 4);
        assert_eq!(PbNode::decode(&node.encode()).unwrap(), node);
    }

    #[test]
    fn links_before_data_and_every_link_field_written() {
        let hash = Cid::sha2_256(1, RAW, b"x").unwrap();
        let node = PbNode {
            links: vec![
                PbLink {
                    hash,
                    name: String::new(),
                    tsize: 0,
                },
                PbLink {
                    hash,
                    name: "a".into(),
                    tsize: 300,
                },
            ],
            data: Some(vec![0x08, 0x02]),
        };
        let bytes = node.encode();
        assert_eq!(bytes.len(), node.encoded_len());
        let mut expected = vec![0x12, 2 + 36 + 2 + 2, 0x0a, 36];
        expected.extend(hash.to_bytes());
        expected.extend([0x12, 0x00, 0x18, 0x00]);
        expected.extend([0x12, 2 + 36 + 3 + 3, 0x0a, 36]);
        expected.extend(hash.to_bytes());
        expected.extend([0x12, 0x01, b'a', 0x18, 0xac, 0x02]);
        expected.extend([0x0a, 0x02, 0x08, 0x02]);
        assert_eq!(bytes, expected);
        assert_eq!(PbNode::decode(&bytes).unwrap(), node);
    }

    #[test]
    fn node_without_data() {
        let node = PbNode {
            links: vec![PbLink {
                hash: Cid::sha2_256(0, DAG_PB, b"").unwrap(),
                name: "n".into(),
                tsize: 7,
            }],
            data: None,
        };
        assert_eq!(PbNode::decode(&node.encode()).unwrap(), node);
        assert_eq!(PbNode::decode(&[]).unwrap(), PbNode::default());
    }

    #[test]
    fn rejects_non_canonical_or_broken_blocks() {
        // Data before links.
        let hash = Cid::sha2_256(1, RAW, b"x").unwrap();
        let mut link = vec![0x0a, 36];
        link.extend(hash.to_bytes());
        let mut bytes = vec![0x0a, 0x02, 0x08, 0x01, 0x12, link.len() as u8];
        bytes.extend(&link);
        assert!(matches!(
            PbNode::decode(&bytes),
            Err(DagPbError::UnexpectedField { field: 2, .. })
        ));
        // Unknown field 3 in PBNode.
        assert!(matches!(
            PbNode::decode(&[0x18, 0x01]),
            Err(DagPbError::UnexpectedField { field: 3, .. })
        ));
        // Truncated data.
        assert!(matches!(
            PbNode::decode(&[0x0a, 0x05, 0x08]),
            Err(DagPbError::Truncated(_))
        ));
        // A link without hash.
        assert_eq!(
            PbNode::decode(&[0x12, 0x02, 0x18, 0x01]),
            Err(DagPbError::MissingHash(0))
        );
        // A link whose hash is not a CID.
        assert!(matches!(
            PbNode::decode(&[0x12, 0x03, 0x0a, 0x01, 0x05]),
            Err(DagPbError::BadHash { index: 0, .. })
        ));
        // A field tag cut inside its varint, and one not minimally encoded.
        assert!(matches!(
            PbNode::decode(&[0x80]),
            Err(DagPbError::Truncated("field tag"))
        ));
        assert!(matches!(
            PbNode::decode(&[0x8a, 0x00, 0x00]),
            Err(DagPbError::Varint {
                what: "field tag",
                ..
            })
        ));
        // A fixed64 wire type.
        assert!(matches!(
            PbNode::decode(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DagPbError::UnexpectedField { wire_type: 1, .. })
        ));
    }
}
