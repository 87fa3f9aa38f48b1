//! Nix's base-32 encoding ("nix32"), used for store path digests and in `sha256:` hashes.
//!
//! The alphabet is `0123456789abcdfghijklmnpqrsvwxyz` (no `e`, `o`, `u`, `t`). Unlike RFC 4648
//! base32, the input is read as one little-endian bit string and the characters are emitted from
//! the most significant 5-bit group down to the least significant one, so the *last* byte of the
//! input drives the *first* character. There is no padding: `n` bytes always encode to
//! [`encoded_len`]`(n)` = ⌈8n/5⌉ characters.
//!
//! Decoding is strict: it rejects characters outside the alphabet, lengths that no byte string
//! encodes to, and non-canonical input whose leading character sets bits beyond the byte length.
//!
//! ```
//! use nixipfs::nixbase32;
//! let digest = [0u8; 20];
//! let text = nixbase32::encode(&digest);
//! assert_eq!(text, "00000000000000000000000000000000");
//! assert_eq!(nixbase32::decode_fixed::<20>(&text), Ok(digest));
//! ```

use thiserror::Error;

/// The 32 characters of the alphabet, in digit order. They are in ascending ASCII order, so
/// comparing two encodings of equal length as strings compares the encoded numbers.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Marks a byte that is not in [`ALPHABET`] in [`DIGIT_OF`].
const INVALID: u8 = 0xff;

/// Maps an ASCII byte to its digit value, or [`INVALID`].
const DIGIT_OF: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut digit = 0;
    while digit < ALPHABET.len() {
        table[ALPHABET[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

/// Why a string is not valid nix32.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No byte string encodes to a string of this length.
    #[error("invalid nix32 length {len}: no byte string encodes to this many characters")]
    InvalidLength {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The input does not have the length required for the expected number of bytes.
    #[error("invalid nix32 length {len}: expected {expected} characters for {bytes} bytes")]
    WrongLength {
        /// Length of the input in bytes.
        len: usize,
        /// Length that `bytes` bytes encode to.
        expected: usize,
        /// Number of bytes the caller expected.
        bytes: usize,
    },
    /// A character outside the nix32 alphabet.
    #[error("invalid nix32 character {character:?} at position {position}")]
    InvalidChar {
        /// The offending character.
        character: char,
        /// Byte offset of the character in the input.
        position: usize,
    },
    /// The first character sets bits beyond the end of the decoded bytes.
    #[error(
        "non-canonical nix32: the first character {character:?} sets bits beyond the last byte"
    )]
    NonCanonical {
        /// The first character of the input.
        character: char,
    },
}

/// Number of characters that `n` bytes encode to: ⌈8n/5⌉.
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// Number of bytes a nix32 string of `len` characters decodes to, or `None` when no byte string
/// encodes to that length.
pub const fn decoded_len(len: usize) -> Option<usize> {
    let n = len * 5 / 8;
    if encoded_len(n) == len {
        Some(n)
    } else {
        None
    }
}

/// Encodes `bytes` as nix32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&b| u16::from(b) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes a nix32 string of any valid length.
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let n = decoded_len(s.len()).ok_or(DecodeError::InvalidLength { len: s.len() })?;
    let mut out = vec![0u8; n];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

/// Decodes a nix32 string that must encode exactly `N` bytes.
pub fn decode_fixed<const N: usize>(s: &str) -> Result<[u8; N], DecodeError> {
    let expected = encoded_len(N);
    if s.len() != expected {
        return Err(DecodeError::WrongLength {
            len: s.len(),
            expected,
            bytes: N,
        });
    }
    let mut out = [0u8; N];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

/// Whether `s` is a canonical nix32 encoding of exactly `n` bytes.
pub fn is_valid(s: &str, n: usize) -> bool {
    if s.len() != encoded_len(n) {
        return false;
    }
    let input = s.as_bytes();
    if !input.iter().all(|&c| DIGIT_OF[usize::from(c)] != INVALID) {
        return false;
    }
    // Only the first character can carry bits beyond the last byte.
    match input.first() {
        Some(&c) => excess_bits(DIGIT_OF[usize::from(c)], input.len() - 1, n) == 0,
        None => true,
    }
}

/// Bits of `digit`, placed at digit position `n`, that fall beyond `len` bytes.
fn excess_bits(digit: u8, n: usize, len: usize) -> u16 {
    let bit = n * 5;
    let total = len * 8;
    if bit + 5 <= total {
        0
    } else {
        u16::from(digit) >> (total - bit)
    }
}

/// Decodes `input` into `out`; `input.len()` must be `encoded_len(out.len())`.
fn decode_into(input: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    debug_assert_eq!(input.len(), encoded_len(out.len()));
    let len = input.len();
    for (position, &c) in input.iter().enumerate() {
        let digit = DIGIT_OF[usize::from(c)];
        if digit == INVALID {
            return Err(DecodeError::InvalidChar {
                character: invalid_char_at(input, position),
                position,
            });
        }
        let n = len - 1 - position;
        let bit = n * 5;
        let i = bit / 8;
        let j = bit % 8;
        let shifted = u16::from(digit) << j;
        out[i] |= shifted as u8;
        let carry = (shifted >> 8) as u8;
        if carry != 0 {
            match out.get_mut(i + 1) {
                Some(next) => *next |= carry,
                None => {
                    return Err(DecodeError::NonCanonical {
                        character: char::from(c),
                    })
                }
            }
        }
    }
    Ok(())
}

/// The character starting at byte `position` of `input`, which came from a `&str`.
fn invalid_char_at(input: &[u8], position: usize) -> char {
    std::str::from_utf8(&input[position..])
        .ok()
        .and_then(|rest| rest.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .unwrap()
    }

    /// Known answers from test-vectors.md (NixOS/nix tests and `nix-hash`).
    #[test]
    fn known_answers() {
        let cases: &[(&str, &str)] = &[
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
            ),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            ),
            (
                "800d59cfcd3c05e900cb4e214be48f6b886a08df",
                "vw46m23bizj4n8afrc0fj19wrp7mj3c0",
            ),
            (
                // NarHash of mg5riyrz...-source on cache.nixos.org
                "982c4f00167a8d18d4431ddb3cfe2f8c0ebc1136cf2cdcfd576a64f6d3bba514",
                "0555pg9zcr3aazyxqb6g6q8vq3lc5zz3rnqx8ga1i3bs2q04yb4q",
            ),
            ("", ""),
        ];
        for (hex_input, expected) in cases {
            let bytes = hex(hex_input);
            assert_eq!(encode(&bytes), *expected, "encode {hex_input}");
            assert_eq!(decode(expected).unwrap(), bytes, "decode {expected}");
        }
        assert_eq!(
            decode_fixed::<32>("1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s").unwrap()[..],
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")[..]
        );
    }

    #[test]
    fn small_inputs() {
        // One byte 0x1f: bits 0..5 = 31 -> last char 'z', bits 5..8 = 0 -> first char '0'.
        assert_eq!(encode(&[0x1f]), "0z");
        assert_eq!(encode(&[0xff]), "7z");
        assert_eq!(decode("7z").unwrap(), vec![0xff]);
        // 0x80 in the first char would be bit 8 of a one-byte value.
        assert_eq!(
            decode("8z"),
            Err(DecodeError::NonCanonical { character: '8' })
        );
    }

    #[test]
    fn encoded_and_decoded_lengths() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 2);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
        for n in 0..200 {
            assert_eq!(decoded_len(encoded_len(n)), Some(n));
        }
        assert_eq!(decoded_len(1), None);
        assert_eq!(decoded_len(3), None);
        assert_eq!(decoded_len(51), None);
    }

    #[test]
    fn round_trip_all_lengths() {
        let mut bytes = Vec::new();
        for n in 0..100u32 {
            let enc = encode(&bytes);
            assert_eq!(enc.len(), encoded_len(bytes.len()));
            assert_eq!(decode(&enc).unwrap(), bytes);
            assert!(is_valid(&enc, bytes.len()));
            bytes.push((n.wrapping_mul(151) ^ 0xa5) as u8);
        }
    }

    #[test]
    fn rejects_bad_input() {
        let good = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
        let cases: Vec<(String, DecodeError)> = vec![
            (
                good.replacen('m', "e", 1),
                DecodeError::InvalidChar {
                    character: 'e',
                    position: 3,
                },
            ),
            (
                good.replacen('b', "B", 1),
                DecodeError::InvalidChar {
                    character: 'B',
                    position: 1,
                },
            ),
            (
                format!("{}é", &good[..50]),
                DecodeError::InvalidChar {
                    character: 'é',
                    position: 50,
                },
            ),
            (
                good[1..].to_string(),
                DecodeError::InvalidLength { len: 51 },
            ),
            // 52 characters carry 260 bits, 4 more than 256: the first digit must be < 2.
            (
                format!("2{}", &good[1..]),
                DecodeError::NonCanonical { character: '2' },
            ),
            (
                format!("z{}", &good[1..]),
                DecodeError::NonCanonical { character: 'z' },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(&input), Err(expected.clone()), "{input}");
            assert!(!is_valid(&input, 32), "{input}");
        }
        assert_eq!(
            decode_fixed::<20>(good),
            Err(DecodeError::WrongLength {
                len: 52,
                expected: 32,
                bytes: 20
            })
        );
    }

    #[test]
    fn string_order_matches_little_endian_number_order() {
        // The alphabet is sorted, so for equal lengths string order is numeric order of the
        // little-endian integer, i.e. lexicographic order of the reversed bytes.
        let mut samples: Vec<[u8; 20]> = (0..64u8)
            .map(|k| {
                let mut d = [0u8; 20];
                for (i, b) in d.iter_mut().enumerate() {
                    *b = k
                        .wrapping_mul(37)
                        .wrapping_add(i as u8)
                        .rotate_left(u32::from(k % 7));
                }
                d
            })
            .collect();
        samples.sort_by(|a, b| a.iter().rev().cmp(b.iter().rev()));
        let encoded: Vec<String> = samples.iter().map(|d| encode(d)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
    }
}
