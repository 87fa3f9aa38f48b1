//! Compression methods of binary-cache NAR files.
//!
//! A narinfo names the compression of its NAR file in the `Compression` field. This module maps
//! those names to [`Compression`] and wraps the matching streaming codecs:
//!
//! - [`Decompressor`] (or the boxed [`decompressor`]) turns a compressed byte stream into the NAR
//!   bytes without holding either in memory;
//! - [`Compressor`] (from [`compressor`]) produces compressed files, for example test data. It
//!   must be finished explicitly with [`Compressor::finish`].
//!
//! Only the methods that cache.nixos.org uses or has used are supported: `none`, `xz`, `bzip2`
//! and `zstd`. Other names that Nix knows (`br`, `gzip`, `lz4`, `lzip`, ...) are rejected with
//! [`CompressionError::Unsupported`].
//!
//! ```
//! use std::io::{Read, Write};
//! use nixipfs::compression::{compressor, Compression, Decompressor};
//!
//! let c = Compression::from_narinfo("xz").unwrap();
//! let mut w = compressor(c, Vec::new(), None).unwrap();
//! w.write_all(b"nix-archive-1").unwrap();
//! let packed = w.finish().unwrap();
//!
//! let mut out = Vec::new();
//! Decompressor::new(c, &packed[..]).unwrap().read_to_end(&mut out).unwrap();
//! assert_eq!(out, b"nix-archive-1");
//! ```

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

/// The largest zstd window (as a power of two) that [`Decompressor`] accepts: 2^27 bytes =
/// 128 MiB, zstd's own default limit. It bounds the memory a hostile zstd frame can demand.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The most memory the xz decoder may use (256 MiB): enough for the 64 MiB dictionary of
/// `xz -9` (and `-9e`), not for a hostile header declaring a 4 GiB one.
pub const XZ_MEMORY_LIMIT: u64 = 256 << 20;

/// A compression method of a NAR file in a binary cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed (`none`).
    None,
    /// xz / LZMA2 (`xz`), the historical default of cache.nixos.org.
    Xz,
    /// bzip2 (`bzip2`), what Nix assumes when a narinfo has no `Compression` field.
    Bzip2,
    /// Zstandard (`zstd`).
    Zstd,
}

/// A compression name that this program cannot handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The name is unknown, or names a method that is not supported here.
    #[error("compression method {0:?} is not supported (supported: none, xz, bzip2, zstd)")]
    Unsupported(String),
}

impl Compression {
    /// All supported methods.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Xz,
        Compression::Bzip2,
        Compression::Zstd,
    ];

    /// Parses the value of a narinfo `Compression` field. The match is exact: `"none"`, `"xz"`,
    /// `"bzip2"` or `"zstd"`. An empty or absent field is the narinfo parser's business (Nix
    /// reads an absent field as bzip2); here `""` is an error like any other unknown name.
    pub fn from_narinfo(s: &str) -> Result<Compression, CompressionError> {
        match s {
            "none" => Ok(Compression::None),
            "xz" => Ok(Compression::Xz),
            "bzip2" => Ok(Compression::Bzip2),
            "zstd" => Ok(Compression::Zstd),
            other => Err(CompressionError::Unsupported(other.to_owned())),
        }
    }

    /// The name used in narinfo files, the inverse of [`Compression::from_narinfo`].
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// The suffix that Nix appends to `.nar` for files with this compression: `".xz"`,
    /// `".bz2"`, `".zst"`, or `""` for uncompressed NARs.
    pub fn file_extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Bzip2 => ".bz2",
            Compression::Zstd => ".zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = CompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::from_narinfo(s)
    }
}

/// A streaming decoder for one [`Compression`] method, reading compressed bytes from `R`.
///
/// Concatenated xz streams, concatenated bzip2 streams and multiple zstd frames are all decoded
/// as one continuous output, as `xz -d`, `bzip2 -d` and `zstd -d` do. Corrupt input is reported
/// as an [`io::Error`] from `read`; a stream that ends early gives
/// [`io::ErrorKind::UnexpectedEof`] or another error, never a silent short read.
pub struct Decompressor<R: BufRead> {
    inner: DecoderInner<R>,
}

enum DecoderInner<R: BufRead> {
    None(R),
    Xz(xz2::bufread::XzDecoder<R>),
    Bzip2(bzip2::bufread::MultiBzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decompressor<R> {
    /// Starts decoding `reader` with method `c`. Fails only if the codec cannot be set up.
    pub fn new(c: Compression, reader: R) -> io::Result<Decompressor<R>> {
        let inner = match c {
            Compression::None => DecoderInner::None(reader),
            Compression::Xz => {
                // The .xz stream decoder (not liblzma's auto decoder, which also takes legacy
                // .lzma) with a memory limit, so a header cannot make it allocate gigabytes.
                let stream = xz2::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    xz2::stream::CONCATENATED,
                )
                .map_err(io::Error::other)?;
                DecoderInner::Xz(xz2::bufread::XzDecoder::new_stream(reader, stream))
            }
            Compression::Bzip2 => DecoderInner::Bzip2(bzip2::bufread::MultiBzDecoder::new(reader)),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(reader)?;
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                DecoderInner::Zstd(d)
            }
        };
        Ok(Decompressor { inner })
    }
}

impl<R: BufRead> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            DecoderInner::None(r) => r.read(buf),
            DecoderInner::Xz(r) => r.read(buf),
            DecoderInner::Bzip2(r) => r.read(buf),
            DecoderInner::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: BufRead> fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.inner {
            DecoderInner::None(_) => Compression::None,
            DecoderInner::Xz(_) => Compression::Xz,
            DecoderInner::Bzip2(_) => Compression::Bzip2,
            DecoderInner::Zstd(_) => Compression::Zstd,
        };
        f.debug_struct("Decompressor")
            .field("method", &method)
            .finish()
    }
}

/// Like [`Decompressor::new`], boxed: a streaming reader of the decompressed bytes of `r`.
pub fn decompressor<'a, R: BufRead + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(Box::new(Decompressor::new(c, r)?))
}

/// A streaming encoder for one [`Compression`] method, writing compressed bytes to `W`.
///
/// Call [`Compressor::finish`] after the last write: it writes the end of the stream and returns
/// the inner writer. A `Compressor` that is dropped without `finish` may leave an incomplete
/// stream behind.
pub struct Compressor<W: Write> {
    inner: EncoderInner<W>,
}

enum EncoderInner<W: Write> {
    None(W),
    Xz(xz2::write::XzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// Starts compressing into `w` with method `c`.
///
/// `level` is the method's own level: xz 0–9 (default 6), bzip2 1–9 (default 9), zstd 1–22
/// (default 3); it is ignored for [`Compression::None`]. zstd frames carry a content checksum.
/// A level outside the range is an
/// [`io::ErrorKind::InvalidInput`] error.
pub fn compressor<W: Write>(c: Compression, w: W, level: Option<u32>) -> io::Result<Compressor<W>> {
    let check = |lo: u32, hi: u32, default: u32| -> io::Result<u32> {
        let l = level.unwrap_or(default);
        if (lo..=hi).contains(&l) {
            Ok(l)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{c} compression level {l} is outside {lo}..={hi}"),
            ))
        }
    };
    let inner = match c {
        Compression::None => EncoderInner::None(w),
        Compression::Xz => EncoderInner::Xz(xz2::write::XzEncoder::new(w, check(0, 9, 6)?)),
        Compression::Bzip2 => EncoderInner::Bzip2(bzip2::write::BzEncoder::new(
            w,
            bzip2::Compression::new(check(1, 9, 9)?),
        )),
        Compression::Zstd => {
            let l = check(1, 22, 3)?;
            // `check` bounds l to 1..=22, so the conversion cannot fail.
            let l = i32::try_from(l).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut e = zstd::stream::write::Encoder::new(w, l)?;
            // A frame checksum lets the decoder detect corruption, as xz and bzip2 do.
            e.include_checksum(true)?;
            EncoderInner::Zstd(e)
        }
    };
    Ok(Compressor { inner })
}

impl<W: Write> Compressor<W> {
    /// Writes the end of the compressed stream, flushes, and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self.inner {
            EncoderInner::None(w) => w,
            EncoderInner::Xz(e) => e.finish()?,
            EncoderInner::Bzip2(e) => e.finish()?,
            EncoderInner::Zstd(e) => e.finish()?,
        };
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            EncoderInner::None(w) => w.write(buf),
            EncoderInner::Xz(w) => w.write(buf),
            EncoderInner::Bzip2(w) => w.write(buf),
            EncoderInner::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            EncoderInner::None(w) => w.flush(),
            EncoderInner::Xz(w) => w.flush(),
            EncoderInner::Bzip2(w) => w.flush(),
            EncoderInner::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.inner {
            EncoderInner::None(_) => Compression::None,
            EncoderInner::Xz(_) => Compression::Xz,
            EncoderInner::Bzip2(_) => Compression::Bzip2,
            EncoderInner::Zstd(_) => Compression::Zstd,
        };
        f.debug_struct("Compressor")
            .field("method", &method)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NAR of the fake glibc in the mini cache, compressed with xz by the fixture generator.
    const GLIBC_NAR_XZ: &[u8] =
        include_bytes!("nar/testdata/0hvwd5fyad5rwdl5xj9ry4bis34jxkm6a58vxbb6a5s2b5ri467n.nar.xz");
    /// The same NAR, uncompressed (560 bytes).
    const GLIBC_NAR_LEN: usize = 560;

    fn decompress(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decompressor::new(c, data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn compress(c: Compression, data: &[u8], level: Option<u32>) -> Vec<u8> {
        let mut w = compressor(c, Vec::new(), level).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    /// Data that compresses but is not trivial: a pseudo-random walk over a small alphabet.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"nix-archive-1()"[(x >> 16) as usize % 15]
            })
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_narinfo(c.as_str()), Ok(c));
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        }
        let ext: Vec<_> = Compression::ALL
            .iter()
            .map(|c| c.file_extension())
            .collect();
        assert_eq!(ext, ["", ".xz", ".bz2", ".zst"]);
    }

    #[test]
    fn unsupported_names_are_errors_naming_the_value() {
        for name in ["br", "lz4", "gzip", "", "XZ", "xz ", "zst", "bz2"] {
            let err = Compression::from_narinfo(name).unwrap_err();
            assert_eq!(err, CompressionError::Unsupported(name.to_owned()));
            let msg = err.to_string();
            assert!(msg.contains(&format!("{name:?}")), "{msg}");
            assert!(msg.contains("not supported"), "{msg}");
        }
    }

    #[test]
    fn fixture_xz_decompresses() {
        let nar = decompress(Compression::Xz, GLIBC_NAR_XZ).unwrap();
        assert_eq!(nar.len(), GLIBC_NAR_LEN);
        assert_eq!(&nar[8..21], b"nix-archive-1");
    }

    #[test]
    fn every_method_round_trips() {
        let data = sample(300_000);
        for c in Compression::ALL {
            let packed = compress(c, &data, None);
            if c != Compression::None {
                assert!(packed.len() < data.len() / 2, "{c}: {}", packed.len());
                assert_ne!(&packed[..16], &data[..16]);
            }
            assert_eq!(decompress(c, &packed).unwrap(), data, "{c}");
        }
    }

    #[test]
    fn empty_input_round_trips() {
        for c in Compression::ALL {
            let packed = compress(c, b"", None);
            assert_eq!(decompress(c, &packed).unwrap(), b"", "{c}");
        }
    }

    #[test]
    fn concatenated_streams_decode_as_one() {
        for c in [Compression::Xz, Compression::Bzip2, Compression::Zstd] {
            let mut packed = compress(c, b"first part, ", None);
            packed.extend(compress(c, b"second part", None));
            assert_eq!(
                decompress(c, &packed).unwrap(),
                b"first part, second part",
                "{c}"
            );
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = sample(100_000);
        for c in [Compression::Xz, Compression::Bzip2, Compression::Zstd] {
            let packed = compress(c, &data, None);
            for cut in [0, 1, packed.len() / 2, packed.len() - 1] {
                if cut == 0 && c != Compression::Zstd {
                    // An empty input is not a stream at all; xz and bzip2 report it as an error
                    // or as empty output, either of which differs from the data.
                    let r = decompress(c, &packed[..0]);
                    assert!(r.as_ref().map_or(true, |v| v.is_empty()), "{c}");
                    continue;
                }
                let r = decompress(c, &packed[..cut]);
                assert!(r.is_err(), "{c} cut at {cut} of {} gave Ok", packed.len());
            }
        }
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let data = sample(100_000);
        for c in [Compression::Xz, Compression::Bzip2, Compression::Zstd] {
            let mut packed = compress(c, &data, None);
            let mid = packed.len() / 2;
            packed[mid] ^= 0x55;
            match decompress(c, &packed) {
                Err(_) => {}
                Ok(out) => panic!("{c}: corrupt stream decoded to {} bytes", out.len()),
            }
        }
    }

    #[test]
    fn not_compressed_data_is_rejected() {
        for c in [Compression::Xz, Compression::Bzip2, Compression::Zstd] {
            assert!(
                decompress(c, b"nix-archive-1 is not compressed").is_err(),
                "{c}"
            );
        }
    }

    #[test]
    fn levels_are_checked() {
        for (c, bad) in [
            (Compression::Xz, 10),
            (Compression::Bzip2, 0),
            (Compression::Bzip2, 10),
            (Compression::Zstd, 0),
            (Compression::Zstd, 23),
        ] {
            let err = compressor(c, Vec::new(), Some(bad)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{c} {bad}");
        }
        for (c, good) in [
            (Compression::Xz, 0),
            (Compression::Xz, 9),
            (Compression::Bzip2, 1),
            (Compression::Zstd, 19),
        ] {
            let packed = compress(c, b"level test", Some(good));
            assert_eq!(decompress(c, &packed).unwrap(), b"level test");
        }
    }

    #[test]
    fn zstd_window_larger_than_the_limit_is_refused() {
        // A frame compressed with a 2^28 window (long-distance mode) needs more than
        // ZSTD_WINDOW_LOG_MAX allows; the decoder must refuse it rather than allocate.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(ZSTD_WINDOW_LOG_MAX + 1).unwrap();
        // The window is only recorded as large when the content size is unknown or large.
        enc.include_contentsize(false).unwrap();
        enc.write_all(&sample(1000)).unwrap();
        let packed = enc.finish().unwrap();
        assert!(decompress(Compression::Zstd, &packed).is_err());
    }

    #[test]
    fn boxed_decompressor_reads_the_same() {
        let mut out = Vec::new();
        decompressor(Compression::Xz, GLIBC_NAR_XZ)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), GLIBC_NAR_LEN);
    }
}
