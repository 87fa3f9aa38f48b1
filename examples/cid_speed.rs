//! Measures how fast `FileHasher` computes a file's UnixFS CID.
//!
//! ```text
//! cargo run --release --example cid_speed -- [FILE | --size MIB] [--profile P | --cid-version N --raw-leaves]
//! ```
//! `--profile` takes an import profile (`unixfs-v1-2025`, `unixfs-v0-2015`, `legacy-raw-v0`)
//! with its chunk size and links per node; otherwise 256 KiB chunks and 174 links.
//! Without FILE, hashes MIB (default 256) MiB of pseudo-random bytes generated on the fly, so
//! nothing is held in memory but the current chunk. Prints the root CID and the throughput.

use std::io::{self, Read};
use std::time::Instant;

use nixipfs::ipfs::cid::Cid;
use nixipfs::ipfs::profile::Profile;
use nixipfs::ipfs::unixfs::{AddOptions, FileHasher};

/// An endless-until-`remaining` stream of xorshift64 bytes.
struct PseudoRandom {
    state: u64,
    remaining: u64,
}

impl Read for PseudoRandom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.remaining as usize) & !7;
        let n = if n == 0 {
            buf.len().min(self.remaining as usize)
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = AddOptions::KUBO_DEFAULT;
    let mut size_mib: u64 = 256;
    let mut path = None;
    let mut profile: Option<Profile> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => size_mib = args.next().ok_or("--size needs a value")?.parse()?,
            "--cid-version" => {
                options.cid_version = args.next().ok_or("--cid-version needs a value")?.parse()?
            }
            "--raw-leaves" => options.raw_leaves = true,
            "--profile" => profile = Some(args.next().ok_or("--profile needs a value")?.parse()?),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}").into()),
            _ => path = Some(arg),
        }
    }
    let input: Box<dyn Read> = match &path {
        Some(path) => Box::new(std::fs::File::open(path)?),
        None => Box::new(PseudoRandom {
            state: 0x9e37_79b9_7f4a_7c15,
            remaining: size_mib << 20,
        }),
    };
    let start = Instant::now();
    let hasher = match profile {
        Some(p) => {
            options = p.layout().add;
            p.layout().file_hasher()
        }
        None => FileHasher::new(options),
    };
    let file = hasher.add(input, &mut |_: &Cid, _: &[u8]| Ok(()))?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{} ({} bytes, Tsize {}, {} blocks)",
        file.cid, file.file_size, file.tsize, file.blocks
    );
    println!(
        "{:.1} MB/s ({:.2} s, {}{:?})",
        file.file_size as f64 / 1e6 / seconds,
        seconds,
        profile.map_or(String::new(), |p| format!("{p}: ")),
        options
    );
    Ok(())
}
