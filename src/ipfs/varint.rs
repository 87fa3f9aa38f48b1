//! Unsigned LEB128 varints, as used by multiformats (CIDs, multihashes, CAR section lengths) and
//! by protobuf (dag-pb, UnixFS).
//!
//! Multiformats varints are limited to 9 bytes (63 bits) and must be minimally encoded; protobuf
//! varints may take up to 10 bytes. [`decode`] takes the limit as a parameter.

/// Longest multiformats unsigned varint, in bytes (63 bits of payload).
pub(crate) const MULTIFORMATS_MAX_LEN: usize = 9;
/// Longest protobuf varint, in bytes (64 bits of payload).
pub(crate) const PROTOBUF_MAX_LEN: usize = 10;

/// Appends the varint encoding of `value` to `out`.
pub(crate) fn encode(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes that [`encode`] writes for `value`.
pub(crate) fn encoded_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// The varint is longer than allowed, or does not fit in 64 bits.
    Overflow,
    /// The varint has superfluous trailing zero groups (multiformats forbids them).
    NotMinimal,
}

impl std::fmt::Display for VarintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VarintError::Truncated => "truncated varint",
            VarintError::Overflow => "varint too long",
            VarintError::NotMinimal => "varint not minimally encoded",
        })
    }
}

/// Decodes one varint from the start of `input`, reading at most `max_len` bytes.
///
/// Returns the value and the number of bytes read. With `minimal`, an encoding that ends in a
/// zero continuation group (such as `0x80 0x00` for 0) is rejected.
pub(crate) fn decode(
    input: &[u8],
    max_len: usize,
    minimal: bool,
) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate() {
        if i >= max_len {
            return Err(VarintError::Overflow);
        }
        let group = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift >= 64 || (shift > 0 && group >> (64 - shift) != 0) {
            return Err(VarintError::Overflow);
        }
        value |= group << shift;
        if byte & 0x80 == 0 {
            if minimal && i > 0 && byte == 0 {
                return Err(VarintError::NotMinimal);
            }
            return Ok((value, i + 1));
        }
    }
    if input.len() >= max_len {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Reads one varint from a byte stream. Returns `Ok(None)` on a clean end of stream (no byte
/// read at all).
pub(crate) fn read<R: std::io::Read + ?Sized>(
    reader: &mut R,
    max_len: usize,
) -> std::io::Result<Option<Result<u64, VarintError>>> {
    let mut buf = [0u8; PROTOBUF_MAX_LEN];
    let mut len = 0;
    loop {
        let mut byte = [0u8; 1];
        let n = loop {
            match reader.read(&mut byte) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(if len == 0 {
                None
            } else {
                Some(Err(VarintError::Truncated))
            });
        }
        if len >= max_len {
            return Ok(Some(Err(VarintError::Overflow)));
        }
        buf[len] = byte[0];
        len += 1;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(decode(&buf[..len], max_len, true).map(|(v, _)| v)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (0x7f, &[0x7f]),
            (0x80, &[0x80, 0x01]),
            (0x70, &[0x70]),
            (300, &[0xac, 0x02]),
            (262144, &[0x80, 0x80, 0x10]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes, "encode {value}");
            assert_eq!(encoded_len(value), bytes.len(), "encoded_len {value}");
            assert_eq!(
                decode(bytes, PROTOBUF_MAX_LEN, true),
                Ok((value, bytes.len()))
            );
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode(&[], 9, true), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80], 9, true), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80, 0x00], 9, true), Err(VarintError::NotMinimal));
        assert_eq!(decode(&[0x80, 0x00], 9, false), Ok((0, 2)));
        assert_eq!(decode(&[0xff; 12], 10, true), Err(VarintError::Overflow));
        // 10 bytes whose last group does not fit in 64 bits.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(decode(&too_big, 10, true), Err(VarintError::Overflow));
        // A multiformats varint may not take 10 bytes.
        let mut max = Vec::new();
        encode(u64::MAX, &mut max);
        assert_eq!(
            decode(&max, MULTIFORMATS_MAX_LEN, true),
            Err(VarintError::Overflow)
        );
    }

    #[test]
    fn reads_from_stream() {
        let mut input: &[u8] = &[0xac, 0x02, 0x05];
        assert_eq!(read(&mut input, 9).unwrap(), Some(Ok(300)));
        assert_eq!(read(&mut input, 9).unwrap(), Some(Ok(5)));
        assert_eq!(read(&mut input, 9).unwrap(), None);
        let mut cut: &[u8] = &[0x80];
        assert_eq!(
            read(&mut cut, 9).unwrap(),
            Some(Err(VarintError::Truncated))
        );
    }
}
