//! The library's [`Fetcher`] against the fault-injecting test server, for both ways a download
//! is stored: bodies of at most [`IN_MEMORY_MAX`] bytes are received in memory and written at
//! once, larger ones stream through a blocking writer. Whatever the server does, the final
//! path only ever holds a complete, verified file, and no temp file is left behind.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{assert_no_temp_files, Fault, TestDir, TestServer};
use nixipfs::fetch::{Expected, FetchConfig, FetchError, Fetcher, IN_MEMORY_MAX};
use nixipfs::hash::sha256;

/// Bytes that do not repeat in any short period, so a cut or flipped byte shows.
fn body(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn fetcher() -> Fetcher {
    Fetcher::new(FetchConfig {
        concurrency: 4,
        retries: 3,
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(3),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        fsync: false,
        ..FetchConfig::default()
    })
    .expect("a fetcher")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The two sizes on either side of the in-memory limit.
fn sizes() -> [usize; 2] {
    [
        IN_MEMORY_MAX as usize / 3,
        IN_MEMORY_MAX as usize * 3 + 12345,
    ]
}

fn serve(dir: &TestDir, data: &[u8], faults: Vec<Fault>) -> TestServer {
    dir.write("www/f.bin", data);
    TestServer::builder()
        .static_dir(dir.path().join("www"))
        .fault("/f.bin", faults)
        .start()
}

fn expected(data: &[u8]) -> Expected {
    Expected {
        size: Some(data.len() as u64),
        sha256: Some(sha256(data)),
        nar: None,
    }
}

#[test]
fn transient_faults_are_retried_until_the_file_is_right() {
    let rt = runtime();
    for len in sizes() {
        let data = body(len);
        for faults in [
            vec![Fault::FlipByte],
            vec![Fault::TruncatedBody, Fault::ResetMidBody],
            vec![Fault::ContentLengthTooLarge(7)],
            vec![Fault::ContentLengthTooSmall(3)],
            vec![Fault::Status(503), Fault::ResetBeforeHeaders],
            vec![Fault::StallAfter(1000)],
        ] {
            let label = format!("{len} bytes, {faults:?}");
            let dir = TestDir::new("fetcher");
            let srv = serve(&dir, &data, faults.clone());
            let out = dir.path().join("out");
            fs::create_dir_all(&out).unwrap();
            let dest = out.join("f.bin");
            let got = rt
                .block_on(fetcher().download(&srv.url_for("/f.bin"), &dest, expected(&data)))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(got.size, len as u64, "{label}");
            assert_eq!(got.sha256, sha256(&data), "{label}");
            assert_eq!(fs::read(&dest).unwrap(), data, "{label}");
            assert_eq!(srv.count("/f.bin"), faults.len() + 1, "{label}");
            assert_no_temp_files(&out);
        }
    }
}

#[test]
fn a_file_that_never_verifies_is_an_error_and_leaves_nothing() {
    let rt = runtime();
    for len in sizes() {
        let data = body(len);
        for (what, exp) in [
            (
                "wrong hash",
                Expected {
                    size: Some(len as u64),
                    sha256: Some(sha256(b"something else")),
                    nar: None,
                },
            ),
            (
                "wrong size",
                Expected {
                    size: Some(len as u64 - 1),
                    sha256: None,
                    nar: None,
                },
            ),
        ] {
            let label = format!("{len} bytes, {what}");
            let dir = TestDir::new("fetcher");
            let srv = serve(&dir, &data, vec![]);
            let out = dir.path().join("out");
            fs::create_dir_all(&out).unwrap();
            let dest = out.join("f.bin");
            let err = rt
                .block_on(fetcher().download(&srv.url_for("/f.bin"), &dest, exp))
                .expect_err(&label);
            assert!(
                matches!(err, FetchError::Verification { .. }),
                "{label}: {err:?}"
            );
            assert!(err.to_string().contains("/f.bin"), "{label}: {err}");
            assert!(!dest.exists(), "{label}");
            // Each attempt fetched the whole file again.
            assert_eq!(srv.count("/f.bin"), 4, "{label}");
            assert_no_temp_files(&out);
        }
    }
}

#[test]
fn a_file_already_at_the_destination_is_replaced_only_when_verified() {
    let rt = runtime();
    for len in sizes() {
        let data = body(len);
        let dir = TestDir::new("fetcher");
        let srv = serve(&dir, &data, vec![]);
        srv.set_fault_always("/f.bin", Some(Fault::FlipByte));
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let dest = out.join("f.bin");
        fs::write(&dest, b"old").unwrap();
        let err = rt.block_on(fetcher().download(&srv.url_for("/f.bin"), &dest, expected(&data)));
        assert!(err.is_err(), "{len} bytes");
        assert_eq!(fs::read(&dest).unwrap(), b"old", "{len} bytes");
        srv.set_fault_always("/f.bin", None);
        rt.block_on(fetcher().download(&srv.url_for("/f.bin"), &dest, expected(&data)))
            .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), data, "{len} bytes");
        assert_no_temp_files(Path::new(&out));
    }
}

/// `data` compressed with `c`.
fn packed(c: nixipfs::compression::Compression, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = nixipfs::compression::compressor(c, Vec::new(), None).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

#[test]
fn nar_files_are_checked_down_to_the_nar_inside() {
    use nixipfs::compression::Compression;
    use nixipfs::fetch::{nar_checked, ExpectedNar};
    let rt = runtime();
    for c in Compression::ALL {
        for len in sizes() {
            let nar = body(len);
            let other: Vec<u8> = body(len).into_iter().rev().collect();
            let file = packed(c, &nar);
            let other_file = packed(c, &other);
            let expect = |served: &[u8]| Expected {
                size: Some(served.len() as u64),
                sha256: Some(sha256(served)),
                nar: Some(ExpectedNar {
                    compression: c,
                    hash: sha256(&nar),
                    size: nar.len() as u64,
                }),
            };
            let label = format!("{c}, {len} bytes");

            // The right file, through a flipped byte and a cut body.
            let dir = TestDir::new("fetcher-nar");
            let srv = serve(&dir, &file, vec![Fault::FlipByte, Fault::TruncatedBody]);
            let out = dir.path().join("out");
            fs::create_dir_all(&out).unwrap();
            let dest = out.join("f.bin");
            rt.block_on(fetcher().download(&srv.url_for("/f.bin"), &dest, expect(&file)))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(fs::read(&dest).unwrap(), file, "{label}");
            assert!(nar_checked(&dest, &expect(&file)), "{label}: marked");
            assert!(!nar_checked(&dest, &expect(&other_file)), "{label}");
            assert_no_temp_files(&out);

            // Another valid file, matching the FileHash and FileSize it is served with, and
            // bytes that do not decompress at all.
            let garbage = body(len + 3);
            for (what, served) in [("another NAR", &other_file), ("garbage", &garbage)] {
                if c == Compression::None && what == "garbage" {
                    continue;
                }
                let label = format!("{label}, {what}");
                let dir = TestDir::new("fetcher-nar");
                let srv = serve(&dir, served, vec![]);
                let out = dir.path().join("out");
                fs::create_dir_all(&out).unwrap();
                let dest = out.join("f.bin");
                let err = rt
                    .block_on(fetcher().download(&srv.url_for("/f.bin"), &dest, expect(served)))
                    .expect_err(&label);
                assert!(
                    matches!(err, FetchError::Verification { .. }),
                    "{label}: {err:?}"
                );
                let text = err.to_string();
                let why = if what == "garbage" {
                    "does not decompress"
                } else {
                    "the NAR inside"
                };
                assert!(text.contains(why), "{label}: {text}");
                assert!(!dest.exists(), "{label}");
                assert_no_temp_files(&out);
            }
        }
    }
}

#[test]
fn an_endless_error_body_is_read_only_in_part() {
    let rt = runtime();
    let srv = TestServer::builder()
        .route("/denied", common::Response::new(403))
        .fault_always("/denied", Fault::HugeBody { declared: 1 << 40 })
        .start();
    let got = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            fetcher().get_bytes(&srv.url_for("/denied"), None, 1024),
        )
        .await
    });
    let err = got
        .expect("the error body was read to its end")
        .expect_err("a 403 is an error");
    assert!(
        matches!(err, FetchError::Status { status: 403, .. }),
        "{err:?}"
    );
}
