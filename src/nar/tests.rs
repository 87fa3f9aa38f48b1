//! Tests of the NAR reader, writer and unpacker against the fixture NARs made by
//! `nix-store --dump` (Nix 2.8.0) and against hand-made malformed NARs.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::*;
use crate::compression::{compressor, Compression, Decompressor};

const FILE_HI: &[u8] = include_bytes!("testdata/file-hi.nar");
const SYMLINK_TO_NOWHERE: &[u8] = include_bytes!("testdata/symlink-to-nowhere.nar");
const DIR_HELLO: &[u8] = include_bytes!("testdata/dir-hello.nar");
const DIR_HELLO_EXECUTABLE: &[u8] = include_bytes!("testdata/dir-hello-executable.nar");
const HELLO: &[u8] = include_bytes!("testdata/hello-2.10-fixture.nar");
const CHANNEL: &[u8] = include_bytes!("testdata/nixos-channel-fixture.nar");

/// name, NAR bytes, NAR size and sha256 (nix32) from test-vectors.md and the mini-cache narinfos.
const FIXTURES: &[(&str, &[u8], u64, &str)] = &[
    (
        "file-hi",
        FILE_HI,
        120,
        "1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h",
    ),
    (
        "symlink-to-nowhere",
        SYMLINK_TO_NOWHERE,
        144,
        "1bl5ry3x1fcbwgr5c2x50bn572iixh4j1p6ax5isxly2ddgn8pbp",
    ),
    (
        "dir-hello",
        DIR_HELLO,
        296,
        "09avx37fag4lg24q94pnlp9bsisr2gnyclxpbwqvbg5iss6bcc16",
    ),
    (
        "dir-hello-executable",
        DIR_HELLO_EXECUTABLE,
        328,
        "01ilps6ganzx7j3xadsi5ji2hc8c97d90c80fyx3608qbhv506bb",
    ),
    (
        "hello-2.10",
        HELLO,
        960,
        "16160n4f46zqkmhbbz2nq8h17f2srnfd5y2ajlbdynwcrf3i72h0",
    ),
    (
        "nixos-channel",
        CHANNEL,
        1440,
        "091ad3qsvyw3d86jdi01ss6gbccc2zmxxlrwynf53w69k9fddpnf",
    ),
];

/// The mini cache's compressed NARs: file name (its FileHash), NarSize and NarHash (nix32).
const CACHE_NARS: &[(&str, &[u8], u64, &str)] = &[
    (
        "0hvwd5fyad5rwdl5xj9ry4bis34jxkm6a58vxbb6a5s2b5ri467n",
        include_bytes!("testdata/0hvwd5fyad5rwdl5xj9ry4bis34jxkm6a58vxbb6a5s2b5ri467n.nar.xz"),
        560,
        "1knivfafimjmd44v5f4b4bxb8y1m383k73dkg506dq6xms57j26h",
    ),
    (
        "0nrrsjrgvs71yyw17sjrqpcklgj69kqirj10q041g6wm0z1r9dx9",
        include_bytes!("testdata/0nrrsjrgvs71yyw17sjrqpcklgj69kqirj10q041g6wm0z1r9dx9.nar.xz"),
        5336,
        "1grwb6pv30c956zkw1k7hp6v3bxbhnpggn76jhs5nrk4hdlwmiwl",
    ),
    (
        "183kf0lz9bqd235f3mdcjmvkzwjmjrzhi2cn0g426s9z3cbjbf23",
        include_bytes!("testdata/183kf0lz9bqd235f3mdcjmvkzwjmjrzhi2cn0g426s9z3cbjbf23.nar.xz"),
        960,
        "16160n4f46zqkmhbbz2nq8h17f2srnfd5y2ajlbdynwcrf3i72h0",
    ),
    (
        "1yaxyag7y6jdrx1r472f2d7gqah1x2hzsa1p36xypsr941vmmbxh",
        include_bytes!("testdata/1yaxyag7y6jdrx1r472f2d7gqah1x2hzsa1p36xypsr941vmmbxh.nar.xz"),
        1440,
        "091ad3qsvyw3d86jdi01ss6gbccc2zmxxlrwynf53w69k9fddpnf",
    ),
];

/// Nix base-32 (test-vectors.md): digit n is bits [5n, 5n+5) of the hash read as a
/// little-endian bit string, printed from the highest digit down.
fn nix32(hash: &[u8]) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let len = (hash.len() * 8).div_ceil(5);
    (0..len)
        .rev()
        .map(|n| {
            let bit = n * 5;
            let (i, j) = (bit / 8, bit % 8);
            let lo = hash[i] as usize >> j;
            let hi = hash.get(i + 1).map_or(0, |&b| (b as usize) << (8 - j));
            ALPHABET[(lo | hi) & 0x1f] as char
        })
        .collect()
}

fn sha256_nix32(data: &[u8]) -> String {
    nix32(&Sha256::digest(data))
}

#[test]
fn nix32_helper_matches_the_vectors() {
    assert_eq!(
        sha256_nix32(b"abc"),
        "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
    );
    assert_eq!(
        sha256_nix32(b""),
        "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
    );
}

fn kind_of<T: std::fmt::Debug>(r: Result<T, NarError>) -> NarErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind,
    }
}

// ---------------------------------------------------------------------------------------------
// Valid fixtures

#[test]
fn fixtures_validate_with_their_sizes_and_hashes() {
    for &(name, nar, size, hash) in FIXTURES {
        assert_eq!(nar.len() as u64, size, "{name}");
        assert_eq!(sha256_nix32(nar), hash, "{name}");
        let summary = validate(nar).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary.nar_size, size, "{name}");
    }
}

#[test]
fn fixture_summaries() {
    let s = |nar| validate(nar).unwrap();
    let summary =
        |regular_files, executables, directories, symlinks, content_bytes, nar_size| NarSummary {
            nar_size,
            regular_files,
            executables,
            directories,
            symlinks,
            content_bytes,
        };
    assert_eq!(s(FILE_HI), summary(1, 0, 0, 0, 3, 120));
    assert_eq!(s(SYMLINK_TO_NOWHERE), summary(0, 0, 0, 1, 0, 144));
    assert_eq!(s(DIR_HELLO), summary(1, 0, 1, 0, 12, 296));
    assert_eq!(s(DIR_HELLO_EXECUTABLE), summary(1, 1, 1, 0, 12, 328));
    assert_eq!(s(HELLO), summary(1, 1, 3, 1, 103, 960));
    assert_eq!(s(CHANNEL), summary(2, 0, 3, 0, 143 + 440, 1440));
}

#[test]
fn mini_cache_nars_decompress_and_validate() {
    for &(file_hash, xz, nar_size, nar_hash) in CACHE_NARS {
        // The file name is the nix32 sha256 of the compressed file.
        assert_eq!(sha256_nix32(xz), file_hash);
        // Streaming: decompress straight into the parser.
        let summary = validate(Decompressor::new(Compression::Xz, xz).unwrap()).unwrap();
        assert_eq!(summary.nar_size, nar_size, "{file_hash}");
        let mut nar = Vec::new();
        Decompressor::new(Compression::Xz, xz)
            .unwrap()
            .read_to_end(&mut nar)
            .unwrap();
        assert_eq!(sha256_nix32(&nar), nar_hash, "{file_hash}");
    }
}

#[test]
fn every_compression_round_trips_every_fixture() {
    for &(name, nar, size, hash) in FIXTURES {
        for c in Compression::ALL {
            let mut w = compressor(c, Vec::new(), None).unwrap();
            w.write_all(nar).unwrap();
            let packed = w.finish().unwrap();
            let summary = validate(Decompressor::new(c, &packed[..]).unwrap()).unwrap();
            assert_eq!(summary.nar_size, size, "{name} {c}");
            let mut back = Vec::new();
            Decompressor::new(c, &packed[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(sha256_nix32(&back), hash, "{name} {c}");
        }
    }
}

#[test]
fn truncated_compressed_nars_fail() {
    let (_, xz, _, _) = CACHE_NARS[3];
    for cut in 0..xz.len() {
        let kind = kind_of(validate(
            Decompressor::new(Compression::Xz, &xz[..cut]).unwrap(),
        ));
        assert!(
            matches!(kind, NarErrorKind::Read(_) | NarErrorKind::Truncated),
            "cut {cut}: {kind:?}"
        );
    }
}

/// Records every visitor call as a line.
#[derive(Default)]
struct Recorder(Vec<String>);

impl NarVisitor for Recorder {
    fn directory(&mut self, path: &NarPath) -> io::Result<()> {
        self.0.push(format!("dir {path}"));
        Ok(())
    }
    fn directory_end(&mut self, path: &NarPath) -> io::Result<()> {
        self.0.push(format!("end {path}"));
        Ok(())
    }
    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let mut data = Vec::new();
        contents.read_to_end(&mut data)?;
        assert_eq!(data.len() as u64, size);
        self.0.push(format!(
            "file {path} {} {size} {}",
            if executable { "x" } else { "-" },
            data[..data.len().min(8)].escape_ascii()
        ));
        Ok(())
    }
    fn symlink(&mut self, path: &NarPath, target: &[u8]) -> io::Result<()> {
        self.0.push(format!(
            "link {path} -> {}",
            String::from_utf8_lossy(target)
        ));
        Ok(())
    }
}

#[test]
fn visitor_sees_nodes_in_order() {
    let mut r = Recorder::default();
    parse(HELLO, &mut r).unwrap();
    assert_eq!(
        r.0,
        [
            "dir /",
            "dir /bin",
            "file /bin/hello x 103 #!/nix/s",
            "end /bin",
            "dir /share",
            "link /share/hello-link -> ../bin/hello",
            "end /share",
            "end /",
        ]
    );
    let mut r = Recorder::default();
    parse(CHANNEL, &mut r).unwrap();
    assert_eq!(
        r.0,
        [
            "dir /",
            "dir /nix-support",
            "file /nix-support/hydra-build-products - 143 file sou",
            "end /nix-support",
            "dir /tarballs",
            "file /tarballs/nixos-17.09.1234.abcdef01234.tar.xz - 440 \\xfd7zXZ\\x00\\x00\\x04",
            "end /tarballs",
            "end /",
        ]
    );
    let mut r = Recorder::default();
    parse(FILE_HI, &mut r).unwrap();
    assert_eq!(r.0, ["file / - 3 hi\\n"]);
}

/// Reads a few bytes of each file and leaves the rest to the parser.
struct Nibbler(u64);

impl NarVisitor for Nibbler {
    fn file(&mut self, _: &NarPath, _: bool, _: u64, contents: &mut dyn Read) -> io::Result<()> {
        let mut two = [0u8; 2];
        let n = contents.read(&mut two)?;
        self.0 += n as u64;
        Ok(())
    }
}

#[test]
fn contents_the_visitor_leaves_are_skipped() {
    for &(name, nar, _, _) in FIXTURES {
        let mut v = Nibbler(0);
        let summary = parse(nar, &mut v).unwrap();
        assert_eq!(summary, validate(nar).unwrap(), "{name}");
        assert!(v.0 <= 2 * summary.regular_files);
    }
}

/// A reader that hands out one byte at a time and is interrupted every other call.
struct Trickle<'a> {
    data: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.data.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[0];
        self.data = &self.data[1..];
        Ok(1)
    }
}

#[test]
fn byte_by_byte_interrupted_input_parses() {
    for &(name, nar, _, _) in FIXTURES {
        let mut r = Recorder::default();
        let summary = parse(
            Trickle {
                data: nar,
                interrupt: false,
            },
            &mut r,
        )
        .unwrap();
        let mut expected = Recorder::default();
        parse(nar, &mut expected).unwrap();
        assert_eq!(r.0, expected.0, "{name}");
        assert_eq!(summary.nar_size, nar.len() as u64);
    }
}

/// A reader that fails with an I/O error after `ok` bytes.
struct Failing<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn read_errors_are_reported_as_such() {
    for ok in [0, 5, 100, 0x190, 0x1a0] {
        let err = validate(Failing { data: HELLO, ok }).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Read(_)), "{ok}: {err}");
        assert_eq!(err.offset, ok as u64);
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "disk on fire");
        // Also when the visitor is reading the contents (0x190 is inside /bin/hello).
        let err = parse(Failing { data: HELLO, ok }, &mut Recorder::default()).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Read(_)), "{ok}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

fn written(node: &NarNode) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_nar(node, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

#[test]
fn writer_reproduces_the_nix_fixtures() {
    assert_eq!(written(&NarNode::file("hi\n")), FILE_HI);
    assert_eq!(
        written(&NarNode::symlink("/non-existent-48cujwe8ndf4as0bne")),
        SYMLINK_TO_NOWHERE
    );
    assert_eq!(
        written(&NarNode::directory([(
            "hello",
            NarNode::file("Hello World\n")
        )])),
        DIR_HELLO
    );
    assert_eq!(
        written(&NarNode::directory([(
            "hello",
            NarNode::executable("Hello World\n")
        )])),
        DIR_HELLO_EXECUTABLE
    );
}

/// Rebuilds a [`NarNode`] tree from a NAR.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<BTreeMap<String, NarNode>>,
    root: Option<NarNode>,
}

impl TreeBuilder {
    fn add(&mut self, path: &NarPath, node: NarNode) -> io::Result<()> {
        match (self.stack.last_mut(), path.name()) {
            (Some(dir), Some(name)) => {
                let name = String::from_utf8(name.to_vec()).map_err(io::Error::other)?;
                dir.insert(name, node);
            }
            _ => self.root = Some(node),
        }
        Ok(())
    }
}

impl NarVisitor for TreeBuilder {
    fn directory(&mut self, _: &NarPath) -> io::Result<()> {
        self.stack.push(BTreeMap::new());
        Ok(())
    }
    fn directory_end(&mut self, path: &NarPath) -> io::Result<()> {
        let entries = self.stack.pop().unwrap();
        self.add(path, NarNode::Directory(entries))
    }
    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        _: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let mut data = Vec::new();
        contents.read_to_end(&mut data)?;
        self.add(
            path,
            NarNode::File {
                executable,
                contents: data,
            },
        )
    }
    fn symlink(&mut self, path: &NarPath, target: &[u8]) -> io::Result<()> {
        let target = String::from_utf8(target.to_vec()).map_err(io::Error::other)?;
        self.add(path, NarNode::Symlink { target })
    }
}

fn tree_of(nar: &[u8]) -> Result<NarNode, NarError> {
    let mut b = TreeBuilder::default();
    parse(nar, &mut b)?;
    Ok(b.root.unwrap())
}

#[test]
fn every_fixture_round_trips_through_a_tree() {
    for &(name, nar, _, _) in FIXTURES {
        assert_eq!(written(&tree_of(nar).unwrap()), nar, "{name}");
    }
}

#[test]
fn writer_refuses_what_the_reader_would_reject() {
    let bad_trees = [
        NarNode::directory([("", NarNode::file(""))]),
        NarNode::directory([(".", NarNode::file(""))]),
        NarNode::directory([("..", NarNode::file(""))]),
        NarNode::directory([("a/b", NarNode::file(""))]),
        NarNode::directory([("a\0", NarNode::file(""))]),
        NarNode::directory([("x".repeat(4097), NarNode::file(""))]),
        NarNode::symlink(""),
        NarNode::symlink("a\0b"),
        NarNode::symlink("x".repeat(4097)),
        nested(MAX_DEPTH + 1),
    ];
    for tree in bad_trees {
        let err = write_nar(&tree, io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }
    // The limits themselves are fine.
    for tree in [
        NarNode::directory([("x".repeat(4096), NarNode::file(""))]),
        NarNode::symlink("x".repeat(4096)),
        nested(MAX_DEPTH),
    ] {
        validate(&written(&tree)[..]).unwrap();
    }
}

/// A file under `depth` nested directories named `d`.
fn nested(depth: usize) -> NarNode {
    (0..depth).fold(NarNode::file("deep"), |node, _| {
        NarNode::directory([("d", node)])
    })
}

#[test]
fn single_file_nars_match_the_tree_writer() {
    for size in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 100_000] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        for executable in [false, true] {
            let mut out = Vec::new();
            let n = write_single_file_nar(&data[..], size as u64, executable, &mut out).unwrap();
            assert_eq!(n, out.len() as u64);
            let node = NarNode::File {
                executable,
                contents: data.clone(),
            };
            assert_eq!(out, written(&node), "size {size}");
            let framing = if executable { 144 } else { 112 };
            assert_eq!(n as usize, size.div_ceil(8) * 8 + framing);
        }
    }
    assert_eq!(
        {
            let mut out = Vec::new();
            write_single_file_nar(&b"hi\n"[..], 3, false, &mut out).unwrap();
            out
        },
        FILE_HI
    );
}

#[test]
fn single_file_writer_needs_all_the_contents() {
    let err = write_single_file_nar(&b"short"[..], 6, false, io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

// ---------------------------------------------------------------------------------------------
// dump_path and unpack

#[test]
fn dump_path_reproduces_the_nix_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    fs::write(d.join("hi"), "hi\n").unwrap();
    let mut out = Vec::new();
    assert_eq!(dump_path(&d.join("hi"), &mut out).unwrap(), 120);
    assert_eq!(out, FILE_HI);

    std::os::unix::fs::symlink("/non-existent-48cujwe8ndf4as0bne", d.join("link")).unwrap();
    out.clear();
    dump_path(&d.join("link"), &mut out).unwrap();
    assert_eq!(out, SYMLINK_TO_NOWHERE);

    fs::create_dir(d.join("dir")).unwrap();
    let hello = d.join("dir/hello");
    fs::write(&hello, "Hello World\n").unwrap();
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o644)).unwrap();
    out.clear();
    dump_path(&d.join("dir"), &mut out).unwrap();
    assert_eq!(out, DIR_HELLO);

    // Nix uses the owner's execute bit only.
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o654)).unwrap();
    out.clear();
    dump_path(&d.join("dir"), &mut out).unwrap();
    assert_eq!(out, DIR_HELLO);
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o744)).unwrap();
    out.clear();
    dump_path(&d.join("dir"), &mut out).unwrap();
    assert_eq!(out, DIR_HELLO_EXECUTABLE);
}

#[test]
fn dump_path_sorts_entries_by_bytes() {
    let names = [
        "b", "B", "a", "a-b", "a.b", "Z", "\u{e4}", "_", "aa", "10", "9",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    for name in names {
        fs::write(root.join(name), name).unwrap();
    }
    let mut out = Vec::new();
    dump_path(&root, &mut out).unwrap();
    let expected = NarNode::directory(names.map(|n| (n, NarNode::file(n))));
    assert_eq!(out, written(&expected));
    let mut r = Recorder::default();
    parse(&out[..], &mut r).unwrap();
    assert_eq!(r.0[1], "file /10 - 2 10");
    assert_eq!(r.0[2], "file /9 - 1 9");
    assert_eq!(r.0[3], "file /B - 1 B");
}

#[test]
fn dump_path_refuses_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = dump_path(tmp.path(), io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("sock"), "{err}");
}

#[test]
fn dump_path_names_missing_files() {
    let err = dump_path(Path::new("/nonexistent/nixipfs-test"), io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string().contains("/nonexistent/nixipfs-test"),
        "{err}"
    );
}

#[test]
fn unpack_writes_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("hello");
    let summary = unpack(HELLO, &dest).unwrap();
    assert_eq!(summary, validate(HELLO).unwrap());
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dest), DIRECTORY_MODE);
    assert_eq!(mode(&dest.join("bin")), DIRECTORY_MODE);
    assert_eq!(mode(&dest.join("bin/hello")), EXECUTABLE_MODE);
    let script = fs::read(dest.join("bin/hello")).unwrap();
    assert_eq!(script.len(), 103);
    assert!(script.ends_with(b"echo \"Hello, world!\"\n"));
    assert_eq!(
        fs::read_link(dest.join("share/hello-link")).unwrap(),
        Path::new("../bin/hello")
    );

    let file = tmp.path().join("hi");
    unpack(FILE_HI, &file).unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"hi\n");
    assert_eq!(mode(&file), FILE_MODE);
}

#[test]
fn unpack_then_dump_gives_the_same_nar() {
    let tmp = tempfile::tempdir().unwrap();
    for &(name, nar, _, _) in FIXTURES {
        let dest = tmp.path().join(name);
        unpack(nar, &dest).unwrap();
        let mut out = Vec::new();
        dump_path(&dest, &mut out).unwrap();
        assert_eq!(out, nar, "{name}");
    }
}

#[test]
fn unpack_refuses_an_existing_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let kind = kind_of(unpack(FILE_HI, tmp.path()));
    assert!(matches!(kind, NarErrorKind::DestinationExists { .. }));
    let link = tmp.path().join("dangling");
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    let kind = kind_of(unpack(FILE_HI, &link));
    assert!(matches!(kind, NarErrorKind::DestinationExists { .. }));
    assert!(fs::symlink_metadata("/nonexistent").is_err());
}

#[test]
fn unpack_of_a_truncated_nar_fails() {
    let tmp = tempfile::tempdir().unwrap();
    for cut in (0..HELLO.len()).step_by(7) {
        let dest = tmp.path().join(format!("cut{cut}"));
        let err = unpack(&HELLO[..cut], &dest).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Truncated), "{cut}: {err}");
        assert_eq!(err.offset, cut as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// extract_file

#[test]
fn extracts_the_channel_tarball() {
    let mut out = Vec::new();
    let f = extract_file(
        CHANNEL,
        "/tarballs/nixos-17.09.1234.abcdef01234.tar.xz",
        &mut out,
    )
    .unwrap();
    assert_eq!((f.size, f.executable), (440, false));
    assert_eq!(f.summary.nar_size, 1440);
    // The sha256hash and filesize of the Hydra build product (hydra-eval-job-nixos.channel.json).
    assert_eq!(
        format!("{:x}", Sha256::digest(&out)),
        "91a0d323fb0543bf9a4d0559bfdb4719a90843a2162f78cf1ec1b74fffe9633b"
    );
    // The same through the compressed cache file, without the leading '/'.
    let (_, xz, _, _) = CACHE_NARS[3];
    let mut again = Vec::new();
    extract_file(
        Decompressor::new(Compression::Xz, xz).unwrap(),
        "tarballs/nixos-17.09.1234.abcdef01234.tar.xz",
        &mut again,
    )
    .unwrap();
    assert_eq!(again, out);
}

#[test]
fn extracts_the_hello_executable() {
    let mut out = Vec::new();
    let f = extract_file(HELLO, "/bin/hello", &mut out).unwrap();
    assert_eq!((f.size, f.executable), (103, true));
    assert_eq!(out.len(), 103);
    assert!(out.starts_with(b"#!/nix/store/wanm1lanl5y7az5skr8drx9sbl9qykdq-glibc-2.25/lib/"));
}

#[test]
fn extracts_a_root_file() {
    for root in ["", "/"] {
        let mut out = Vec::new();
        let f = extract_file(FILE_HI, root, &mut out).unwrap();
        assert_eq!((f.size, f.executable), (3, false));
        assert_eq!(out, b"hi\n");
    }
}

#[test]
fn extraction_errors_say_what_is_at_the_path() {
    let mut out = Vec::new();
    let err = extract_file(HELLO, "/bin", &mut out).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::IsDirectory), "{err}");
    assert_eq!(err.path.to_string(), "/bin");
    let err = extract_file(HELLO, "/", &mut out).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::IsDirectory), "{err}");
    let err = extract_file(HELLO, "/share/hello-link", &mut out).unwrap_err();
    match &err.kind {
        NarErrorKind::IsSymlink { target } => assert_eq!(target, "\"../bin/hello\""),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "the path is a symlink to \"../bin/hello\", not a regular file \
         (NAR byte 960, path /share/hello-link)"
    );
    let err = extract_file(SYMLINK_TO_NOWHERE, "", &mut out).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::IsSymlink { .. }), "{err}");
    for absent in [
        "/bin/hell",
        "/bin/hello/x",
        "/share/hello-link/x",
        "/BIN/hello",
        "/x",
    ] {
        let err = extract_file(HELLO, absent, &mut out).unwrap_err();
        assert!(
            matches!(err.kind, NarErrorKind::NotFound),
            "{absent}: {err}"
        );
        assert_eq!(err.path.to_string(), absent);
    }
    let err = extract_file(FILE_HI, "/hi", &mut out).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::NotFound), "{err}");
    assert!(out.is_empty());
    for bad in [
        "/bin/../bin/hello",
        "/./bin/hello",
        "//bin/hello",
        "/bin/",
        "/bin//hello",
    ] {
        let err = extract_file(HELLO, bad, &mut out).unwrap_err();
        assert!(
            matches!(err.kind, NarErrorKind::InvalidPathInside { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn extraction_validates_the_rest_of_the_nar() {
    // The tarball ends at 0x550; cutting after it must still fail.
    for cut in [0x550, 0x558, 0x560, CHANNEL.len() - 1] {
        let mut out = Vec::new();
        let err = extract_file(
            &CHANNEL[..cut],
            "/tarballs/nixos-17.09.1234.abcdef01234.tar.xz",
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Truncated), "{cut}: {err}");
        assert_eq!(
            out.len(),
            440,
            "the contents were written before the damage"
        );
    }
    let mut trailing = CHANNEL.to_vec();
    trailing.push(0);
    let kind = kind_of(extract_file(&trailing[..], "/tarballs", &mut io::sink()));
    assert!(matches!(kind, NarErrorKind::TrailingData), "{kind:?}");
}

/// A writer that refuses everything.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::StorageFull, "no space"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_are_reported_as_such() {
    let err = extract_file(HELLO, "/bin/hello", &mut Full).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::Output(_)), "{err}");
    assert_eq!(err.path.to_string(), "/bin/hello");
    assert_eq!(err.offset, 0x190);
}

// ---------------------------------------------------------------------------------------------
// Malformed NARs

#[test]
fn every_truncation_is_an_error() {
    for &(name, nar, _, _) in FIXTURES {
        for cut in 0..nar.len() {
            let err = validate(&nar[..cut]).unwrap_err();
            assert!(
                matches!(err.kind, NarErrorKind::Truncated),
                "{name} cut at {cut}: {err}"
            );
            assert_eq!(err.offset, cut as u64, "{name} cut at {cut}");
            let err = parse(&nar[..cut], &mut Recorder::default()).unwrap_err();
            assert!(
                matches!(err.kind, NarErrorKind::Truncated),
                "{name} cut at {cut}: {err}"
            );
        }
    }
}

/// A visitor that reads the contents, ignores the failure and reports success.
struct Careless;

impl NarVisitor for Careless {
    fn file(&mut self, _: &NarPath, _: bool, _: u64, contents: &mut dyn Read) -> io::Result<()> {
        let _ = contents.read_to_end(&mut Vec::new());
        Ok(())
    }
}

/// A visitor that turns every failure into its own error.
struct Rewrapping;

impl NarVisitor for Rewrapping {
    fn file(&mut self, _: &NarPath, _: bool, _: u64, contents: &mut dyn Read) -> io::Result<()> {
        contents
            .read_to_end(&mut Vec::new())
            .map(|_| ())
            .map_err(|_| io::Error::other("visitor's own error"))
    }
}

#[test]
fn truncation_inside_contents_wins_over_the_visitor() {
    // /bin/hello's contents are 0x190..0x1f7.
    for cut in [0x191, 0x1a0, 0x1f6] {
        let err = parse(&HELLO[..cut], &mut Careless).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Truncated), "{err}");
        assert_eq!(err.offset, cut as u64);
        assert_eq!(err.path.to_string(), "/bin/hello");
        let err = parse(&HELLO[..cut], &mut Rewrapping).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Truncated), "{err}");
    }
}

/// Builds NARs token by token, valid or not.
struct Raw(Vec<u8>);

impl Raw {
    fn nar() -> Raw {
        Raw(Vec::new()).s(b"nix-archive-1")
    }
    fn n(mut self, n: u64) -> Raw {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn s(mut self, s: &[u8]) -> Raw {
        self = self.n(s.len() as u64);
        self.0.extend_from_slice(s);
        self.0.resize(self.0.len().div_ceil(8) * 8, 0);
        self
    }
    fn ss(self, ss: &[&[u8]]) -> Raw {
        ss.iter().fold(self, |r, s| r.s(s))
    }
    fn file(self, contents: &[u8]) -> Raw {
        self.ss(&[b"(", b"type", b"regular", b"contents", contents, b")"])
    }
    fn dir(self) -> Raw {
        self.ss(&[b"(", b"type", b"directory"])
    }
    fn entry(self, name: &[u8]) -> Raw {
        self.ss(&[b"entry", b"(", b"name", name, b"node"])
    }
    fn entry_file(self, name: &[u8]) -> Raw {
        self.entry(name).file(b"x").s(b")")
    }
    fn close(self) -> Raw {
        self.s(b")")
    }
    fn offset(&self) -> u64 {
        self.0.len() as u64
    }
}

#[test]
fn raw_builder_agrees_with_the_writer() {
    let raw = Raw::nar().dir().entry_file(b"a").entry_file(b"b").close();
    let tree = NarNode::directory([("a", NarNode::file("x")), ("b", NarNode::file("x"))]);
    assert_eq!(raw.0, written(&tree));
    assert_eq!(Raw::nar().file(b"hi\n").0, FILE_HI);
}

#[test]
fn unsorted_and_duplicate_entries() {
    let r = Raw::nar().dir().entry_file(b"b");
    let at = r.offset() + 3 * 16;
    let r = r.entry_file(b"a").close();
    let err = validate(&r.0[..]).unwrap_err();
    match &err.kind {
        NarErrorKind::EntriesNotSorted { previous, name } => {
            assert_eq!((previous.as_str(), name.as_str()), ("\"b\"", "\"a\""));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.offset, at);
    assert_eq!(err.path, NarPath::root());
    assert_eq!(
        err.to_string(),
        format!(
            "directory entries are not sorted: \"a\" comes after \"b\" (NAR byte {at}, path /)"
        )
    );

    let r = Raw::nar().dir().entry_file(b"a").entry_file(b"a").close();
    let kind = kind_of(validate(&r.0[..]));
    assert!(matches!(kind, NarErrorKind::DuplicateEntry { ref name } if name == "\"a\""));

    // Byte order, not locale order: "B" (0x42) sorts before "a" (0x61).
    let r = Raw::nar().dir().entry_file(b"a").entry_file(b"B").close();
    assert!(matches!(
        kind_of(validate(&r.0[..])),
        NarErrorKind::EntriesNotSorted { .. }
    ));
    let r = Raw::nar().dir().entry_file(b"B").entry_file(b"a").close();
    validate(&r.0[..]).unwrap();

    // A prefix sorts first.
    let r = Raw::nar().dir().entry_file(b"ab").entry_file(b"a").close();
    assert!(matches!(
        kind_of(validate(&r.0[..])),
        NarErrorKind::EntriesNotSorted { .. }
    ));

    // The error names the directory it is in.
    let r = Raw::nar()
        .dir()
        .entry(b"sub")
        .dir()
        .entry_file(b"y")
        .entry_file(b"x")
        .close()
        .close()
        .close();
    let err = validate(&r.0[..]).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::EntriesNotSorted { .. }));
    assert_eq!(err.path.to_string(), "/sub");
}

#[test]
fn invalid_names() {
    for name in [&b""[..], b".", b"..", b"a/b", b"/", b"..\0", b"a\0b"] {
        let r = Raw::nar().dir().entry_file(name).close();
        let kind = kind_of(validate(&r.0[..]));
        assert!(
            matches!(kind, NarErrorKind::InvalidName { .. }),
            "{name:?}: {kind:?}"
        );
        let kind = kind_of(extract_file(&r.0[..], "/x", &mut io::sink()));
        assert!(matches!(kind, NarErrorKind::InvalidName { .. }));
        let tmp = tempfile::tempdir().unwrap();
        let kind = kind_of(unpack(&r.0[..], &tmp.path().join("t")));
        assert!(matches!(kind, NarErrorKind::InvalidName { .. }));
    }
    // Names that merely look odd are fine.
    for name in [&b"..."[..], b".a", b"a.", b" ", b"\xff\xfe", b"\n"] {
        let r = Raw::nar().dir().entry_file(name).close();
        validate(&r.0[..]).unwrap();
    }
}

#[test]
fn name_and_target_lengths() {
    let long = vec![b'n'; 4096];
    validate(&Raw::nar().dir().entry_file(&long).close().0[..]).unwrap();
    let longer = vec![b'n'; 4097];
    let kind = kind_of(validate(
        &Raw::nar().dir().entry_file(&longer).close().0[..],
    ));
    assert!(matches!(
        kind,
        NarErrorKind::TooLong {
            len: 4097,
            max: 4096,
            ..
        }
    ));

    let symlink = |target: &[u8]| {
        Raw::nar()
            .ss(&[b"(", b"type", b"symlink", b"target", target, b")"])
            .0
    };
    validate(&symlink(&long)[..]).unwrap();
    assert!(matches!(
        kind_of(validate(&symlink(&longer)[..])),
        NarErrorKind::TooLong { .. }
    ));
    assert!(matches!(
        kind_of(validate(&symlink(b"")[..])),
        NarErrorKind::InvalidSymlinkTarget { .. }
    ));
    assert!(matches!(
        kind_of(validate(&symlink(b"/bin\0sh")[..])),
        NarErrorKind::InvalidSymlinkTarget { .. }
    ));
}

#[test]
fn huge_declared_lengths_fail_without_allocating() {
    for huge in [1u64 << 60, u64::MAX, (1 << 32) + 1] {
        // As the magic string's length.
        let r = Raw(Vec::new()).n(huge);
        assert!(matches!(
            kind_of(validate(&r.0[..])),
            NarErrorKind::BadMagic
        ));
        // Where a keyword is expected.
        let r = Raw::nar().s(b"(").n(huge);
        let err = validate(&r.0[..]).unwrap_err();
        assert!(
            matches!(&err.kind, NarErrorKind::UnexpectedToken { found, .. } if found == &format!("a string of {huge} bytes")),
            "{err}"
        );
        assert_eq!(err.offset, 40);
        // As an entry name.
        let r = Raw::nar().dir().ss(&[b"entry", b"(", b"name"]).n(huge);
        let err = validate(&r.0[..]).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::TooLong { len, .. } if len == huge));
        // As a symlink target.
        let r = Raw::nar()
            .ss(&[b"(", b"type", b"symlink", b"target"])
            .n(huge);
        assert!(matches!(
            kind_of(validate(&r.0[..])),
            NarErrorKind::TooLong { .. }
        ));
        // As a file size: streamed, so it is simply truncated.
        let r = Raw::nar()
            .ss(&[b"(", b"type", b"regular", b"contents"])
            .n(huge)
            .s(b"some data");
        let err = validate(&r.0[..]).unwrap_err();
        assert!(matches!(err.kind, NarErrorKind::Truncated));
        assert_eq!(err.offset, r.offset());
    }
}

#[test]
fn padding_must_be_zero() {
    // In the magic string (13 bytes + 3 padding), in "type" (4 + 4) and after "hi\n" (3 + 5).
    for (at, value) in [
        (21, 1u8),
        (23, 0x80),
        (52, 1),
        (55, 0xff),
        (99, 1),
        (103, 0x20),
    ] {
        let mut nar = FILE_HI.to_vec();
        nar[at] = value;
        let err = validate(&nar[..]).unwrap_err();
        assert!(
            matches!(err.kind, NarErrorKind::NonZeroPadding),
            "{at}: {err}"
        );
        assert_eq!(err.offset, at as u64);
    }
    // The padding after the entry name "hello" (0x88..0x8d) is 0x8d..0x90.
    let mut nar = DIR_HELLO.to_vec();
    assert_eq!(&nar[0x88..0x8d], b"hello");
    nar[0x8e] = b'!';
    let err = validate(&nar[..]).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::NonZeroPadding), "{err}");
    assert_eq!(err.offset, 0x8e);
}

#[test]
fn nesting_depth_is_limited() {
    let deep = |depth: usize| {
        let mut r = Raw::nar();
        for _ in 0..depth {
            r = r.dir().entry(b"d");
        }
        r = r.file(b"deep");
        for _ in 0..depth {
            r = r.close().close();
        }
        r.0
    };
    let ok = deep(MAX_DEPTH);
    assert_eq!(ok, written(&nested(MAX_DEPTH)));
    let summary = validate(&ok[..]).unwrap();
    assert_eq!(summary.directories, MAX_DEPTH as u64);
    let err = validate(&deep(MAX_DEPTH + 1)[..]).unwrap_err();
    assert!(
        matches!(err.kind, NarErrorKind::TooDeep { max: 256 }),
        "{err}"
    );
    assert_eq!(err.path.depth(), MAX_DEPTH);
    // Far deeper input fails the same way (no stack overflow).
    let err = validate(&deep(10_000)[..]).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::TooDeep { .. }), "{err}");
}

#[test]
fn trailing_data_is_an_error() {
    for &(name, nar, _, _) in FIXTURES {
        for extra in [&[0u8][..], &[0; 8], b"nix-archive-1", FILE_HI] {
            let mut data = nar.to_vec();
            data.extend_from_slice(extra);
            let err = validate(&data[..]).unwrap_err();
            assert!(
                matches!(err.kind, NarErrorKind::TrailingData),
                "{name}: {err}"
            );
            assert_eq!(err.offset, nar.len() as u64);
        }
    }
}

#[test]
fn wrong_keywords() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Raw(Vec::new()).s(b"nix-archive-2").file(b"").0, "magic"),
        (Raw(Vec::new()).s(b"nix-archive").file(b"").0, "magic"),
        (b"\x89PNG\r\n\x1a\n0000000000000000000".to_vec(), "magic"),
        (Raw::nar().ss(&[b"(", b"type", b"fifo", b")"]).0, "type"),
        (Raw::nar().ss(&[b"[", b"type"]).0, "open"),
        (
            Raw::nar()
                .ss(&[
                    b"(",
                    b"type",
                    b"regular",
                    b"executable",
                    b"yes",
                    b"contents",
                    b"",
                    b")",
                ])
                .0,
            "executable value",
        ),
        (
            Raw::nar().ss(&[b"(", b"type", b"regular", b")"]).0,
            "no contents",
        ),
        (
            Raw::nar()
                .ss(&[
                    b"(",
                    b"type",
                    b"regular",
                    b"contents",
                    b"",
                    b"contents",
                    b"",
                    b")",
                ])
                .0,
            "contents twice",
        ),
        (
            Raw::nar()
                .dir()
                .ss(&[b"entry", b"(", b"node"])
                .file(b"")
                .close()
                .close()
                .0,
            "entry without name",
        ),
        (
            Raw::nar()
                .dir()
                .entry(b"a")
                .file(b"")
                .s(b"extra")
                .close()
                .close()
                .0,
            "extra field in entry",
        ),
        (
            Raw::nar()
                .ss(&[b"(", b"type", b"symlink", b"name", b"x", b")"])
                .0,
            "symlink without target",
        ),
        (Raw::nar().ss(&[b"(", b"type", b"Regular"]).0, "case"),
    ];
    for (nar, what) in cases {
        let kind = kind_of(validate(&nar[..]));
        if what == "magic" {
            assert!(matches!(kind, NarErrorKind::BadMagic), "{what}: {kind:?}");
        } else {
            assert!(
                matches!(kind, NarErrorKind::UnexpectedToken { .. }),
                "{what}: {kind:?}"
            );
        }
    }
    let err = validate(&Raw::nar().ss(&[b"(", b"type", b"fifo"]).0[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected \"regular\" or \"symlink\" or \"directory\", found \"fifo\" (NAR byte 56, path /)"
    );
}

// ---------------------------------------------------------------------------------------------
// Random mutations

#[test]
fn random_mutations_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x6e69_782d_6172_6368);
    let mut rejected = 0;
    for case in 0..4000 {
        let (_, base, _, _) = FIXTURES[rng.gen_range(0..FIXTURES.len())];
        let mut nar = base.to_vec();
        match rng.gen_range(0..5) {
            0 => {
                for _ in 0..rng.gen_range(1..5) {
                    let i = rng.gen_range(0..nar.len());
                    nar[i] = rng.gen();
                }
            }
            1 => {
                // Overwrite an aligned u64 (often a length) with something odd.
                let i = rng.gen_range(0..nar.len() / 8) * 8;
                let v: u64 = match rng.gen_range(0..4) {
                    0 => rng.gen(),
                    1 => rng.gen_range(0..64),
                    2 => u64::MAX - rng.gen_range(0..16),
                    _ => 1 << rng.gen_range(0..64),
                };
                nar[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            2 => {
                let i = rng.gen_range(0..=nar.len());
                nar.truncate(i);
            }
            3 => {
                let i = rng.gen_range(0..=nar.len());
                let len = rng.gen_range(1..24);
                let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                nar.splice(i..i, junk);
            }
            _ => {
                // Move an aligned block elsewhere: reorders tokens.
                let a = rng.gen_range(0..nar.len() / 8) * 8;
                let b = rng.gen_range(0..nar.len() / 8) * 8;
                let block: Vec<u8> = nar.drain(a..a + 8).collect();
                let b = b.min(nar.len());
                nar.splice(b..b, block);
            }
        }
        let result = validate(&nar[..]);
        let _ = extract_file(&nar[..], "/bin/hello", &mut io::sink());
        match result {
            Err(e) => {
                rejected += 1;
                assert!(e.offset <= nar.len() as u64, "case {case}: {e}");
                // Every error renders.
                assert!(!e.to_string().is_empty());
            }
            // A mutation that keeps the NAR valid must leave it canonical: NARs have exactly
            // one encoding per tree.
            Ok(summary) => {
                assert_eq!(summary.nar_size, nar.len() as u64);
                if let Ok(tree) = tree_of(&nar) {
                    assert_eq!(written(&tree), nar, "case {case}");
                }
            }
        }
    }
    assert!(rejected > 2000, "only {rejected} mutations were rejected");
}

// ---------------------------------------------------------------------------------------------
// Streaming large NARs

/// A deterministic stream of `remaining` pseudo-random bytes, never held in memory.
struct Pattern {
    remaining: u64,
    state: u64,
}

impl Pattern {
    fn new(size: u64) -> Pattern {
        Pattern {
            remaining: size,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
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

/// Hashes what is written to it.
struct HashWriter(Sha256, u64);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_64_mib_single_file_nar_streams() {
    const SIZE: u64 = 64 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.nar");
    let file = fs::File::create(&path).unwrap();
    let written = write_single_file_nar(Pattern::new(SIZE), SIZE, true, &file).unwrap();
    drop(file);
    assert_eq!(written, SIZE + 144);
    assert_eq!(fs::metadata(&path).unwrap().len(), written);

    let summary = validate(fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(summary.nar_size, written);
    assert_eq!(summary.content_bytes, SIZE);
    assert_eq!(summary.executables, 1);

    let mut expected = HashWriter(Sha256::new(), 0);
    io::copy(&mut Pattern::new(SIZE), &mut expected).unwrap();
    let mut out = HashWriter(Sha256::new(), 0);
    let f = extract_file(
        BufReader::new(fs::File::open(&path).unwrap()),
        "/",
        &mut out,
    )
    .unwrap();
    assert_eq!((f.size, f.executable), (SIZE, true));
    assert_eq!(out.1, SIZE);
    assert_eq!(out.0.finalize(), expected.0.finalize());

    // The same file cut short by one byte is truncated, not accepted.
    let f = fs::File::open(&path).unwrap();
    let err = validate(f.take(written - 1)).unwrap_err();
    assert!(matches!(err.kind, NarErrorKind::Truncated));
    assert_eq!(err.offset, written - 1);
}
