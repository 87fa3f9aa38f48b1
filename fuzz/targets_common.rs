//! The bodies of the fuzz targets, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/`
//! and by the corpus test `tests/fuzz_corpus.rs`, which runs them on the stable toolchain.
//!
//! Every function takes arbitrary bytes and feeds them to one parser of untrusted input. A
//! target fails (panics) only when the library panics, or when a property that the library
//! documents does not hold: round trips (`parse(x.to_string()) == x`, NAR bytes written back
//! identically, ...) and the safety promises of path handling (nothing outside the base).
//! Errors are formatted too, so that the error messages are exercised as well.
//!
//! [`TARGETS`] lists them all by name; the names are those of the files in `fuzz_targets/`
//! and of the seed directories in `fuzz/seeds/`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Component, Path};

use nixipfs::compression::{compressor, decompressor, Compression};
use nixipfs::config;
use nixipfs::fsutil::{check_file_name, check_relative_path, safe_join};
use nixipfs::hash::Sha256Hash;
use nixipfs::hydra::{self, Build, Eval};
use nixipfs::ipfs::car::{encode_header, CarReader, CarWriter};
use nixipfs::ipfs::cid::Cid;
use nixipfs::ipfs::dagpb::PbNode;
use nixipfs::nar::{
    self, extract_file, unpack, validate, NarErrorKind, NarNode, NarPath, NarSummary, NarVisitor,
    MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN,
};
use nixipfs::narinfo::NarInfo;
use nixipfs::nixbase32;
use nixipfs::signature::{PublicKey, SecretKey, Signature};
use nixipfs::store_path::{self, StorePath};

/// The body of a target: it is given one input.
pub type Target = fn(&[u8]);

/// Every target: its name and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("narinfo", narinfo),
    ("nar", nar),
    ("nar_extract", nar_extract),
    ("nar_unpack", nar_unpack),
    ("decompress", decompress),
    ("hydra_build", hydra_build),
    ("hydra_eval", hydra_eval),
    ("config", config),
    ("store_path", store_path),
    ("nix32", nix32),
    ("fsutil", fsutil),
    ("signature", signature),
    ("cid", cid),
    ("car", car),
    ("dagpb", dagpb),
];

/// The most decompressed output [`decompress`] reads from one input. A few bytes can expand to
/// gigabytes legitimately (a "bomb"); that is bounded by streaming, not by the codec.
pub const MAX_DECOMPRESSED: u64 = 32 << 20;

/// The key of cache.nixos.org, to exercise signature checks of narinfos.
const CACHE_NIXOS_ORG_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// Store paths that parsed paths are compared with, to check that they order as their text.
const SOME_STORE_PATHS: &[&str] = &[
    "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10",
    "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello",
    "/nix/store/9df65igwjmf2wbw0gbrrgair6piqjgmi-glibc-2.31",
    "/nix/store/00000000000000000000000000000000-a",
    "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-z",
];

fn utf8(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

// ---------------------------------------------------------------------------------------------
// narinfo

/// `NarInfo::parse`; a parsed narinfo prints as its text, its canonical form parses back to
/// the same fields, and adding a field keeps the others.
pub fn narinfo(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let info = match NarInfo::parse(text) {
        Ok(info) => info,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // narinfo.rs: "a parsed narinfo remembers its text, and `Display` writes that text back
    // byte for byte as long as the typed fields still hold what was parsed".
    assert_eq!(info.to_string(), text, "Display of an unchanged narinfo");
    assert_eq!(info.source(), Some(text));

    let canonical = info.to_canonical_string();
    let reparsed = NarInfo::parse(&canonical)
        .unwrap_or_else(|e| panic!("the canonical form does not parse: {e}\n{canonical}"));
    assert_same_fields(&info, &reparsed, &canonical);
    assert_eq!(
        reparsed.to_canonical_string(),
        canonical,
        "canonical form is not stable"
    );

    // Changing a field switches Display to the canonical form.
    let mut changed = info.clone();
    changed.nar_size = changed.nar_size.wrapping_add(1);
    assert_eq!(changed.to_string(), changed.to_canonical_string());

    let _ = info.fingerprint();
    let _ = info.hash_part();
    if let Ok(key) = PublicKey::parse(CACHE_NIXOS_ORG_KEY) {
        let _ = info.verify_signatures(&[key]);
    }

    let cid = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354";
    let with_cid = info
        .try_with_extra_field("IPFSHash", cid)
        .unwrap_or_else(|e| panic!("cannot add IPFSHash: {e}"));
    let added = NarInfo::parse(&with_cid)
        .unwrap_or_else(|e| panic!("the narinfo with IPFSHash does not parse: {e}\n{with_cid}"));
    assert_eq!(
        added.extra_fields.last(),
        Some(&("IPFSHash".to_string(), cid.to_string()))
    );
    assert_eq!(added.fingerprint(), info.fingerprint());
    assert_eq!(info.with_extra_field("IPFSHash", cid), with_cid);
}

/// The fields of two narinfos are equal, references compared as sets (the canonical form sorts
/// them).
fn assert_same_fields(a: &NarInfo, b: &NarInfo, context: &str) {
    let sorted = |i: &NarInfo| {
        let mut r = i.references.clone();
        r.sort();
        r
    };
    assert_eq!(a.store_path, b.store_path, "StorePath of\n{context}");
    assert_eq!(a.url, b.url, "URL of\n{context}");
    assert_eq!(a.compression, b.compression, "Compression of\n{context}");
    assert_eq!(a.file_hash, b.file_hash, "FileHash of\n{context}");
    assert_eq!(a.file_size, b.file_size, "FileSize of\n{context}");
    assert_eq!(a.nar_hash, b.nar_hash, "NarHash of\n{context}");
    assert_eq!(a.nar_size, b.nar_size, "NarSize of\n{context}");
    assert_eq!(sorted(a), sorted(b), "References of\n{context}");
    assert_eq!(a.deriver, b.deriver, "Deriver of\n{context}");
    assert_eq!(a.sigs, b.sigs, "Sig of\n{context}");
    assert_eq!(a.ca, b.ca, "CA of\n{context}");
    assert_eq!(a.system, b.system, "System of\n{context}");
    assert_eq!(
        a.extra_fields, b.extra_fields,
        "unknown fields of\n{context}"
    );
    assert_eq!(a.fingerprint(), b.fingerprint());
}

// ---------------------------------------------------------------------------------------------
// NAR

/// One node of a NAR as the parser reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Directory(Vec<u8>),
    DirectoryEnd(Vec<u8>),
    File {
        path: Vec<u8>,
        executable: bool,
        contents: Vec<u8>,
    },
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
    },
}

/// A visitor that records every node and checks what `NarVisitor` promises about them.
#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
    /// The last entry name seen at each depth, to check the order of entries.
    last_name: Vec<Option<Vec<u8>>>,
}

impl Recorder {
    fn check_path(&mut self, path: &NarPath) {
        assert!(path.depth() <= MAX_DEPTH, "{path} is deeper than MAX_DEPTH");
        assert_eq!(path.components().count(), path.depth());
        assert_eq!(path.is_root(), path.depth() == 0);
        if let Some(name) = path.name() {
            assert!(
                !name.is_empty() && name != b"." && name != b"..",
                "name {path}"
            );
            assert!(!name.contains(&b'/') && !name.contains(&0), "name {path}");
            assert!(name.len() as u64 <= MAX_NAME_LEN, "name {path}");
            let depth = path.depth();
            if self.last_name.len() < depth {
                self.last_name.resize(depth, None);
            }
            if let Some(last) = &self.last_name[depth - 1] {
                assert!(last.as_slice() < name, "entries not in order at {path}");
            }
            self.last_name[depth - 1] = Some(name.to_vec());
        }
    }
}

impl NarVisitor for Recorder {
    fn directory(&mut self, path: &NarPath) -> io::Result<()> {
        self.check_path(path);
        // Entries of a new directory start a new order.
        self.last_name.truncate(path.depth());
        self.events.push(Event::Directory(path.as_bytes().to_vec()));
        Ok(())
    }

    fn directory_end(&mut self, path: &NarPath) -> io::Result<()> {
        self.last_name.truncate(path.depth());
        self.events
            .push(Event::DirectoryEnd(path.as_bytes().to_vec()));
        Ok(())
    }

    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        self.check_path(path);
        let mut bytes = Vec::new();
        // The contents reader errs if the NAR ends early; the parse then fails.
        contents.read_to_end(&mut bytes)?;
        assert_eq!(bytes.len() as u64, size, "contents of {path}");
        let mut more = [0u8; 1];
        assert_eq!(contents.read(&mut more)?, 0, "contents of {path} go on");
        self.events.push(Event::File {
            path: path.as_bytes().to_vec(),
            executable,
            contents: bytes,
        });
        Ok(())
    }

    fn symlink(&mut self, path: &NarPath, target: &[u8]) -> io::Result<()> {
        self.check_path(path);
        assert!(
            !target.is_empty() && !target.contains(&0),
            "target of {path}"
        );
        assert!(target.len() as u64 <= MAX_TARGET_LEN, "target of {path}");
        self.events.push(Event::Symlink {
            path: path.as_bytes().to_vec(),
            target: target.to_vec(),
        });
        Ok(())
    }
}

/// Parses `data` with a [`Recorder`].
fn record(data: &[u8]) -> (Result<NarSummary, nar::NarError>, Vec<Event>) {
    let mut recorder = Recorder::default();
    let result = nar::parse(data, &mut recorder);
    (result, recorder.events)
}

/// The summary that `events` add up to.
fn summarize(events: &[Event], nar_size: u64) -> NarSummary {
    let mut s = NarSummary {
        nar_size,
        ..NarSummary::default()
    };
    for e in events {
        match e {
            Event::Directory(_) => s.directories += 1,
            Event::DirectoryEnd(_) => {}
            Event::File {
                executable,
                contents,
                ..
            } => {
                s.regular_files += 1;
                s.executables += u64::from(*executable);
                s.content_bytes += contents.len() as u64;
            }
            Event::Symlink { .. } => s.symlinks += 1,
        }
    }
    s
}

/// Rebuilds the tree from the events, or `None` if a name or target is not UTF-8 (which
/// [`NarNode`] cannot hold).
fn tree(events: &[Event]) -> Option<NarNode> {
    fn name_of(path: &[u8]) -> Option<String> {
        let name = path.rsplit(|&b| b == b'/').next()?;
        String::from_utf8(name.to_vec()).ok()
    }
    type Stack = Vec<(String, BTreeMap<String, NarNode>)>;
    let mut stack: Stack = Vec::new();
    let mut root = None;
    let mut place = |stack: &mut Stack, name: String, node: NarNode| match stack.last_mut() {
        Some((_, entries)) => {
            entries.insert(name, node);
        }
        None => root = Some(node),
    };
    for e in events {
        match e {
            Event::Directory(path) => stack.push((name_of(path)?, BTreeMap::new())),
            Event::DirectoryEnd(_) => {
                let (name, entries) = stack.pop()?;
                place(&mut stack, name, NarNode::Directory(entries));
            }
            Event::File {
                path,
                executable,
                contents,
            } => {
                let node = NarNode::File {
                    executable: *executable,
                    contents: contents.clone(),
                };
                place(&mut stack, name_of(path)?, node);
            }
            Event::Symlink { path, target } => {
                let target = String::from_utf8(target.clone()).ok()?;
                place(&mut stack, name_of(path)?, NarNode::Symlink { target });
            }
        }
    }
    root
}

/// `nar::parse`, `nar::validate` and `nar::extract_file` on the same bytes: they agree, the
/// visitor sees what the NAR format promises, a valid NAR is written back byte for byte, and
/// every node can be extracted (files) or is refused for what it is (directories, symlinks).
pub fn nar(data: &[u8]) {
    let (parsed, events) = record(data);
    let validated = validate(data);
    let summary = match (parsed, validated) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "parse and validate disagree");
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "parse and validate disagree");
            let mut sink = Vec::new();
            if let Ok(f) = extract_file(data, "", &mut sink) {
                panic!("extract_file accepted an invalid NAR: {f:?}, validate said {a}");
            }
            return;
        }
        (a, b) => panic!("parse says {a:?}, validate says {b:?}"),
    };
    assert_eq!(summary.nar_size, data.len() as u64);
    assert_eq!(summary, summarize(&events, data.len() as u64));

    if let Some(node) = tree(&events) {
        let mut written = Vec::new();
        let n = nar::write_nar(&node, &mut written)
            .unwrap_or_else(|e| panic!("a parsed tree cannot be written: {e}"));
        assert_eq!(n, written.len() as u64);
        assert!(
            written == data,
            "a valid NAR is not written back identically"
        );
    }

    let mut wanted_missing = "/nixipfs-no-such-entry".to_string();
    while events.iter().any(|e| match e {
        Event::Directory(p) | Event::File { path: p, .. } | Event::Symlink { path: p, .. } => {
            p == wanted_missing.as_bytes()
        }
        Event::DirectoryEnd(_) => false,
    }) {
        wanted_missing.push('x');
    }
    for e in events.iter().take(16) {
        let (path, expected) = match e {
            Event::DirectoryEnd(_) => continue,
            Event::Directory(p) => (p, None),
            Event::Symlink { path, .. } => (path, None),
            Event::File { path, .. } => (path, Some(e)),
        };
        let Ok(path) = std::str::from_utf8(path) else {
            continue;
        };
        let mut out = Vec::new();
        let result = extract_file(data, path, &mut out);
        match (e, expected, result) {
            (
                _,
                Some(Event::File {
                    executable,
                    contents,
                    ..
                }),
                Ok(f),
            ) => {
                assert_eq!(f.executable, *executable, "{path}");
                assert_eq!(f.size, contents.len() as u64, "{path}");
                assert!(out == *contents, "contents of {path}");
                assert_eq!(f.summary, summary);
            }
            (Event::Directory(_), None, Err(err)) => {
                assert!(
                    matches!(err.kind, NarErrorKind::IsDirectory),
                    "{path}: {err}"
                )
            }
            (Event::Symlink { .. }, None, Err(err)) => {
                assert!(
                    matches!(err.kind, NarErrorKind::IsSymlink { .. }),
                    "{path}: {err}"
                )
            }
            (_, _, result) => panic!("extract_file({path:?}) gave {result:?} for {e:?}"),
        }
    }
    let mut out = Vec::new();
    match extract_file(data, &wanted_missing, &mut out) {
        Err(e) if matches!(e.kind, NarErrorKind::NotFound) => assert!(out.is_empty()),
        other => panic!("extract_file({wanted_missing:?}) gave {other:?}"),
    }
}

/// `nar::extract_file` with the path inside taken from the input: the first line is the path,
/// the rest the NAR.
pub fn nar_extract(data: &[u8]) {
    let (path, nar_bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let path = String::from_utf8_lossy(path);
    let mut out = Vec::new();
    match extract_file(nar_bytes, &path, &mut out) {
        Ok(f) => {
            assert_eq!(f.size, out.len() as u64);
            let components: Vec<&str> = match path.strip_prefix('/').unwrap_or(&path) {
                "" => Vec::new(),
                p => p.split('/').collect(),
            };
            for c in &components {
                assert!(
                    !c.is_empty() && *c != "." && *c != ".." && !c.contains('\0'),
                    "extract_file accepted the path {path:?}"
                );
            }
            let summary = validate(nar_bytes)
                .unwrap_or_else(|e| panic!("extracted {path:?} from an invalid NAR: {e}"));
            assert_eq!(f.summary, summary);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `nar::unpack` into a fresh directory: nothing appears beside the destination, and a NAR that
/// unpacks gives exactly the tree the parser reports, with the documented modes.
pub fn nar_unpack(data: &[u8]) {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::Builder::new()
        .prefix("nixipfs-fuzz-unpack-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let dest = dir.path().join("out");
    let result = unpack(data, &dest);
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.path().display()))
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.path().display()));
    assert!(
        beside.is_empty() || beside == ["out"],
        "unpack wrote beside its destination: {beside:?}"
    );
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let (parsed, events) = record(data);
    assert_eq!(parsed.ok(), Some(summary));

    let mut found = Vec::new();
    walk(&dest, &mut Vec::new(), &mut found);
    assert_eq!(found, events, "the unpacked tree differs from the NAR");
    // Modes, which the events do not carry.
    let mode = |p: &Path| {
        std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for e in &events {
        let (path, expected) = match e {
            Event::Directory(p) => (p, nar::DIRECTORY_MODE),
            Event::File {
                path,
                executable: true,
                ..
            } => (path, nar::EXECUTABLE_MODE),
            Event::File { path, .. } => (path, nar::FILE_MODE),
            _ => continue,
        };
        let fs_path = fs_path(&dest, path);
        assert_eq!(mode(&fs_path), expected, "mode of {}", fs_path.display());
    }
}

/// `dest` joined with a NAR path (`/a/b` or `` for the root).
fn fs_path(dest: &Path, nar_path: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut p = dest.to_path_buf();
    for c in nar_path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

/// Lists the tree at `p` as the parser's events, entries in byte order.
fn walk(p: &Path, nar_path: &mut Vec<u8>, out: &mut Vec<Event>) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push(Event::Symlink {
            path: nar_path.clone(),
            target: target.as_os_str().as_bytes().to_vec(),
        });
    } else if ft.is_file() {
        let contents = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push(Event::File {
            path: nar_path.clone(),
            executable: meta.permissions().mode() & 0o111 != 0,
            contents,
        });
    } else if ft.is_dir() {
        out.push(Event::Directory(nar_path.clone()));
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .file_name()
                    .as_bytes()
                    .to_vec()
            })
            .collect();
        names.sort();
        for name in names {
            let len = nar_path.len();
            nar_path.push(b'/');
            nar_path.extend_from_slice(&name);
            walk(&p.join(std::ffi::OsStr::from_bytes(&name)), nar_path, out);
            nar_path.truncate(len);
        }
        out.push(Event::DirectoryEnd(nar_path.clone()));
    } else {
        panic!(
            "{} is neither a file, a directory nor a symlink",
            p.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// compression

/// `compression::decompressor` on arbitrary bytes (the first byte picks the method), reading
/// at most [`MAX_DECOMPRESSED`] bytes; and for every fourth input a compress/decompress round
/// trip of the bytes, of two concatenated streams, and of a cut stream (which must fail).
pub fn decompress(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let methods = [
        Compression::None,
        Compression::Xz,
        Compression::Bzip2,
        Compression::Zstd,
    ];
    let method = methods[usize::from(selector) % methods.len()];
    if let Ok(mut reader) = decompressor(method, body) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        while total < MAX_DECOMPRESSED {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = e.to_string();
                    break;
                }
            }
        }
        if method == Compression::None {
            assert_eq!(total, body.len() as u64);
        }
    }

    // Only every fourth input, and at the fastest level: compressors are slow to set up.
    if selector & 0x0c == 0 {
        let level = match method {
            Compression::Xz => 0,
            _ => 1,
        };
        let mut w =
            compressor(method, Vec::new(), Some(level)).unwrap_or_else(|e| panic!("{method}: {e}"));
        io::Write::write_all(&mut w, body).unwrap_or_else(|e| panic!("{method}: {e}"));
        let packed = w.finish().unwrap_or_else(|e| panic!("{method}: {e}"));
        let mut unpacked = Vec::new();
        decompressor(method, &packed[..])
            .and_then(|mut r| r.read_to_end(&mut unpacked))
            .unwrap_or_else(|e| panic!("{method} round trip: {e}"));
        assert!(unpacked == body, "{method} round trip changed the bytes");

        // Concatenated streams decode as one output.
        let twice = [&packed[..], &packed[..]].concat();
        let mut unpacked = Vec::new();
        decompressor(method, &twice[..])
            .and_then(|mut r| r.read_to_end(&mut unpacked))
            .unwrap_or_else(|e| panic!("{method} of two streams: {e}"));
        assert!(unpacked == [body, body].concat(), "{method} of two streams");

        // A cut stream is an error, never a short read.
        if method != Compression::None {
            let cut = (usize::from(selector) * 7919 + body.len()) % packed.len();
            let mut unpacked = Vec::new();
            let result =
                decompressor(method, &packed[..cut]).and_then(|mut r| r.read_to_end(&mut unpacked));
            assert!(
                result.is_err(),
                "{method} stream of {} bytes cut to {cut} decoded to {} of {} bytes",
                packed.len(),
                unpacked.len(),
                body.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hydra

const HYDRA_URL: &str = "https://hydra.example.org/build/1";

/// `hydra::Build::from_json` and every checked accessor of a build and its products.
pub fn hydra_build(data: &[u8]) {
    let build = match Build::from_json(HYDRA_URL, data) {
        Ok(b) => b,
        Err(e) => {
            let _ = (e.to_string(), e.is_not_found());
            return;
        }
    };
    assert_eq!(build.source_url(), HYDRA_URL);
    let _ = build.eval_id().map_err(|e| e.to_string());
    let _ = build.is_success();
    let _ = build.product_by_subtype("source-dist");
    match build.release_name() {
        Ok(name) => {
            assert!(check_file_name(name).is_ok(), "release name {name:?}");
            assert!(!name.starts_with('.'), "release name {name:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for (key, product) in &build.buildproducts {
        assert_eq!(product.key(), key);
        assert_eq!(product.source_url(), HYDRA_URL);
        match product.store_path_and_inner() {
            Ok((path, inner)) => {
                assert_eq!(format!("{path}{inner}"), product.path);
                if !inner.is_empty() {
                    assert!(inner.starts_with('/'), "inner path {inner:?}");
                    for c in inner[1..].split('/') {
                        assert!(!c.is_empty() && c != "." && c != "..", "{inner:?}");
                    }
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match product.sha256() {
            Ok(h) => assert_eq!(Sha256Hash::parse_nix(&h.to_string()), Ok(h)),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match product.file_name() {
            Ok(name) => assert!(check_file_name(name).is_ok(), "file name {name:?}"),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// `hydra::Eval::from_json` with the nixpkgs revision, and `hydra::parse_store_paths`.
pub fn hydra_eval(data: &[u8]) {
    let url = "https://hydra.example.org/eval/1";
    match Eval::from_json(url, data) {
        Ok(eval) => {
            assert_eq!(eval.source_url(), url);
            match eval.nixpkgs_revision() {
                Ok(rev) => assert!(
                    rev.len() == 40
                        && rev
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                    "revision {rev:?}"
                ),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match hydra::parse_store_paths(url, data) {
        Ok(paths) => {
            assert!(
                paths.windows(2).all(|w| w[0] < w[1]),
                "not sorted and unique"
            );
            for p in &paths {
                assert_eq!(
                    StorePath::from_absolute_path(&p.to_string()).as_ref(),
                    Ok(p)
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config

/// `config::parse`; what it accepts keeps the documented invariants (the URLs are checked as
/// the `url` crate parses them, which allows `https:/host` and `HTTP://host`).
pub fn config(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let cfg = match config::parse("nixos_release.json", text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for url in [&cfg.hydra, &cfg.cache] {
        assert!(!url.ends_with('/'), "URL {url:?}");
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("URL {url:?}: {e}"));
        assert!(matches!(parsed.scheme(), "http" | "https"), "URL {url:?}");
        assert!(
            parsed.host_str().is_some_and(|h| !h.is_empty()),
            "URL {url:?}"
        );
    }
    assert!((1..=config::MAX_THREADS).contains(&cfg.max_threads));
    if let Some(n) = cfg.max_ipfs_threads {
        assert!((1..=config::MAX_THREADS).contains(&n));
    }
    assert!(!cfg.releases.is_empty());
    for r in &cfg.releases {
        assert!(
            check_file_name(&r.channel).is_ok(),
            "channel {:?}",
            r.channel
        );
        assert!(!r.channel.starts_with('.'), "channel {:?}", r.channel);
        assert_eq!(
            cfg.release(&r.channel),
            Some(r),
            "channel names must be unique"
        );
        assert_ne!(r.keep, Some(0));
    }
    let _ = cfg.binary_cache_url();
}

// ---------------------------------------------------------------------------------------------
// store paths, nix32, hashes

/// `StorePath::from_absolute_path`, `from_basename` and `parse_store_path_prefix`: what parses
/// prints as its input, and store paths order as their text.
pub fn store_path(data: &[u8]) {
    let Some(s) = utf8(data) else { return };
    match StorePath::from_absolute_path(s) {
        Ok(p) => {
            assert_eq!(p.to_string(), s);
            assert_eq!(p.to_absolute_path(), s);
            assert_eq!(StorePath::from_basename(&p.basename()).as_ref(), Ok(&p));
            assert!(store_path::is_valid_hash_part(&p.hash_part()));
            let json = serde_json::to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
            let back: StorePath =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back, p);
            for other in SOME_STORE_PATHS {
                let q =
                    StorePath::from_absolute_path(other).unwrap_or_else(|e| panic!("{other}: {e}"));
                assert_eq!(p.cmp(&q), s.cmp(other), "{s} and {other} order differently");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match StorePath::from_basename(s) {
        Ok(p) => {
            assert_eq!(p.basename(), s);
            assert_eq!(StorePath::new(*p.digest(), p.name()).as_ref(), Ok(&p));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match store_path::parse_store_path_prefix(s) {
        Ok((p, rest)) => {
            assert_eq!(format!("{p}{rest}"), s);
            if !rest.is_empty() {
                assert!(rest.starts_with('/'), "rest {rest:?}");
                for c in rest[1..].split('/') {
                    assert!(!c.is_empty() && c != "." && c != "..", "rest {rest:?}");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = store_path::validate_name(s).map_err(|e| e.to_string());
}

/// `nixbase32::encode`/`decode` round trips both ways, and `Sha256Hash::parse_nix` with all
/// the forms it prints.
pub fn nix32(data: &[u8]) {
    let encoded = nixbase32::encode(data);
    assert_eq!(encoded.len(), nixbase32::encoded_len(data.len()));
    assert_eq!(nixbase32::decode(&encoded).as_deref(), Ok(data));
    assert!(nixbase32::is_valid(&encoded, data.len()));
    if let Ok(digest) = <[u8; 32]>::try_from(data.get(..32).unwrap_or_default()) {
        let h = Sha256Hash(digest);
        assert_eq!(Sha256Hash::parse_nix(&h.to_string()), Ok(h));
    }

    let Some(s) = utf8(data) else { return };
    match nixbase32::decode(s) {
        Ok(bytes) => {
            // Decoding is canonical: only one string decodes to given bytes.
            assert_eq!(nixbase32::encode(&bytes), s);
            assert!(nixbase32::is_valid(s, bytes.len()));
        }
        Err(e) => {
            let _ = e.to_string();
            if let Some(n) = nixbase32::decoded_len(s.len()) {
                assert!(!nixbase32::is_valid(s, n), "is_valid accepts {s:?}");
            }
        }
    }
    assert_eq!(
        nixbase32::decode_fixed::<32>(s).ok().map(Vec::from),
        nixbase32::decode(s).ok().filter(|b| b.len() == 32)
    );
    match Sha256Hash::parse_nix(s) {
        Ok(h) => {
            assert_eq!(Sha256Hash::parse_nix(&h.to_string()), Ok(h));
            assert_eq!(Sha256Hash::parse_nix(&h.to_sri()), Ok(h));
            assert_eq!(Sha256Hash::from_hex(&h.to_hex()), Ok(h));
            assert_eq!(Sha256Hash::from_nix32(&h.to_nix32()), Ok(h));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fsutil

/// `fsutil::check_relative_path`/`safe_join`: whenever a join succeeds, the result stays under
/// the base and has no `..`.
pub fn fsutil(data: &[u8]) {
    let Some(rel) = utf8(data) else { return };
    let checked = check_relative_path(rel);
    for base in [
        Path::new("/srv/mirror"),
        Path::new("mirror"),
        Path::new("/"),
    ] {
        match safe_join(base, rel) {
            Ok(joined) => {
                assert!(checked.is_ok());
                assert!(
                    joined.starts_with(base),
                    "{} left {}",
                    joined.display(),
                    base.display()
                );
                let inside = joined
                    .strip_prefix(base)
                    .unwrap_or_else(|e| panic!("{}: {e}", joined.display()));
                let mut count = 0;
                for c in inside.components() {
                    assert!(
                        matches!(c, Component::Normal(_)),
                        "{rel:?} joined onto {} gives {}",
                        base.display(),
                        joined.display()
                    );
                    count += 1;
                }
                assert_eq!(count, rel.split('/').count(), "{rel:?}");
                assert!(!joined.components().any(|c| c == Component::ParentDir));
                assert_eq!(joined, base.join(rel));
            }
            Err(e) => {
                assert_eq!(checked.as_ref().err(), Some(&e));
                let _ = e.to_string();
            }
        }
    }
    match check_file_name(rel) {
        Ok(()) => assert!(
            !rel.is_empty() && rel != "." && rel != ".." && !rel.contains(['/', '\0']),
            "file name {rel:?}"
        ),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// signatures

/// `PublicKey::parse`, `Signature::parse`, `SecretKey::parse`: what parses prints as its
/// (trimmed) input.
pub fn signature(data: &[u8]) {
    let Some(s) = utf8(data) else { return };
    let public = match PublicKey::parse(s) {
        Ok(k) => {
            assert_eq!(k.to_string(), s.trim());
            Some(k)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    match Signature::parse(s) {
        Ok(sig) => {
            assert_eq!(sig.to_string(), s);
            if let Some(k) = &public {
                let _ = k.verify(data, &sig);
            }
            if let Ok(k) = PublicKey::parse(CACHE_NIXOS_ORG_KEY) {
                let _ = k.verify(data, &sig);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match SecretKey::parse(s) {
        Ok(k) => {
            assert_eq!(k.to_string(), s.trim());
            let sig = k.sign(data);
            assert!(k.to_public().verify(data, &sig));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IPFS

/// Checks the round trips of a parsed CID.
fn check_cid(cid: &Cid) {
    let bytes = cid.to_bytes();
    assert_eq!(bytes.len(), cid.encoded_len());
    assert_eq!(Cid::from_bytes(&bytes).as_ref(), Ok(cid));
    assert_eq!(Cid::parse(&cid.to_string()).as_ref(), Ok(cid));
    assert_eq!(Cid::parse(&cid.to_base58btc()).as_ref(), Ok(cid));
    let v1 = cid.to_v1();
    assert_eq!(Cid::parse(&v1.to_string()), Ok(v1));
    let _ = cid.verify(&bytes);
}

/// `Cid::parse` on the input as text, and `Cid::read_bytes`/`from_bytes` on it as bytes.
pub fn cid(data: &[u8]) {
    if let Some(s) = utf8(data) {
        match Cid::parse(s) {
            Ok(cid) => check_cid(&cid),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    match Cid::read_bytes(data) {
        Ok((cid, used)) => {
            assert!(used <= data.len());
            assert_eq!(used, cid.encoded_len());
            assert_eq!(Cid::from_bytes(data).is_ok(), used == data.len());
            check_cid(&cid);
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(Cid::from_bytes(data).is_err());
        }
    }
}

/// `CarReader` over arbitrary bytes, with and without hash checks; what it reads is written
/// again with `CarWriter` and read back the same.
pub fn car(data: &[u8]) {
    let mut checked = 0usize;
    match CarReader::new(data) {
        Ok(mut reader) => loop {
            match reader.next_block() {
                Ok(Some((cid, block))) => {
                    assert_ne!(cid.verify(&block), Some(false));
                    checked += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.to_string();
                    break;
                }
            }
        },
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    }

    let Ok(reader) = CarReader::new(data) else {
        panic!("the header parsed once, but not twice");
    };
    let reader = reader.without_verification();
    let roots = reader.roots().to_vec();
    let mut blocks = Vec::new();
    for item in reader {
        match item {
            Ok(b) => blocks.push(b),
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
    assert!(
        blocks.len() >= checked,
        "verification must not read more blocks"
    );

    let mut writer = CarWriter::new(Vec::new(), &roots).unwrap_or_else(|e| panic!("{e}"));
    for (cid, block) in &blocks {
        writer
            .write_block(cid, block)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let written = writer.finish().unwrap_or_else(|e| panic!("{e}"));
    assert!(written.starts_with(&encode_header(&roots)));
    let again = CarReader::new(&written[..])
        .unwrap_or_else(|e| panic!("a written CAR does not read back: {e}"))
        .without_verification();
    assert_eq!(again.roots(), &roots[..]);
    let read: Vec<_> = again
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("a written CAR does not read back: {e}"));
    assert!(read == blocks, "blocks changed in a CAR round trip");
}

/// `PbNode::decode`; a decoded node encodes to bytes that decode to the same node.
pub fn dagpb(data: &[u8]) {
    match PbNode::decode(data) {
        Ok(node) => {
            let encoded = node.encode();
            assert_eq!(encoded.len(), node.encoded_len());
            assert_eq!(PbNode::decode(&encoded).as_ref(), Ok(&node));
            for link in &node.links {
                check_cid(&link.hash);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
