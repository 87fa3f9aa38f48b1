//! Checks that the shared test utilities in `tests/common` behave as documented: the HTTP test
//! server (files, routes, keep-alive, every fault, the request record), the Nix-built binary
//! caches (references, signatures, all compressions, installable by real Nix), the test
//! directories and the process runner.

mod common;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::nixcache::{store_path_name, NixEnv};
use common::process::run_with_timeout;
use common::server::REDIRECT_LOOP_PREFIX;
use common::*;

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client on std::net, to see exactly what the server sends.

/// How reading a response ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed the connection (FIN).
    Eof,
    /// The server reset the connection (RST).
    Reset,
    /// Nothing more arrived within the read timeout.
    TimedOut,
    /// The declared Content-Length was read (keep-alive reads only).
    Complete,
}

#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    end: End,
    /// Whether the head arrived at all.
    had_head: bool,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> u64 {
        self.header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length")
    }
}

fn connect(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connecting to the test server");
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s
}

fn send(stream: &mut TcpStream, method: &str, target: &str, headers: &[(&str, &str)]) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
}

/// Reads until the peer closes, resets or goes quiet; returns the bytes and how it ended.
fn read_all(stream: &mut TcpStream) -> (Vec<u8>, End) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (buf, End::Eof),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (buf, End::Reset),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (buf, End::TimedOut)
            }
            Err(e) => panic!("reading from the test server: {e}"),
        }
    }
}

fn parse(bytes: Vec<u8>, end: End) -> Raw {
    let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        assert!(
            bytes.is_empty(),
            "partial head: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        return Raw {
            status: 0,
            headers: vec![],
            body: vec![],
            end,
            had_head: false,
        };
    };
    let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Raw {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
        end,
        had_head: true,
    }
}

/// One request on a fresh connection; reads everything until the connection ends.
fn request(srv: &TestServer, method: &str, target: &str, headers: &[(&str, &str)]) -> Raw {
    request_with_timeout(srv, method, target, headers, Duration::from_secs(10))
}

fn request_with_timeout(
    srv: &TestServer,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Raw {
    let mut s = connect(srv.addr(), timeout);
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Connection", "close"));
    send(&mut s, method, target, &all);
    let (bytes, end) = read_all(&mut s);
    parse(bytes, end)
}

fn get(srv: &TestServer, target: &str) -> Raw {
    request(srv, "GET", target, &[])
}

/// Reads one response with a Content-Length body from a keep-alive connection.
fn read_one(stream: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection ended inside a head"
        );
        bytes.push(byte[0]);
    }
    let mut raw = parse(bytes, End::Complete);
    let mut body = vec![0u8; raw.content_length() as usize];
    stream.read_exact(&mut body).unwrap();
    raw.body = body;
    raw
}

/// A body of `n` distinct-looking bytes.
fn sample_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

fn server_with_file(body: &[u8]) -> (TestDir, TestServer) {
    let dir = TestDir::new("server-files");
    dir.write("f.bin", body);
    let srv = TestServer::builder().static_dir(dir.path()).start();
    (dir, srv)
}

// ---------------------------------------------------------------------------------------------
// Static files, routes, keep-alive, the request record.

#[test]
fn static_files_are_served_with_get_and_head() {
    let dir = TestDir::new("static");
    dir.write("nix-cache-info", "StoreDir: /nix/store\n");
    dir.write("nar/abc.nar.xz", [0u8, 1, 2, 3]);
    dir.write("x.narinfo", "StorePath: /nix/store/x\n");
    let srv = TestServer::builder().static_dir(dir.path()).start();

    let r = get(&srv, "/nix-cache-info");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"StoreDir: /nix/store\n");
    assert_eq!(r.content_length(), 21);
    assert_eq!(r.header("content-type"), Some("text/x-nix-cache-info"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.end, End::Eof);

    let r = get(&srv, "/nar/abc.nar.xz");
    assert_eq!((r.status, r.body.as_slice()), (200, &[0u8, 1, 2, 3][..]));
    assert_eq!(r.header("content-type"), Some("application/x-nix-nar"));
    assert_eq!(
        get(&srv, "/x.narinfo").header("content-type"),
        Some("text/x-nix-narinfo")
    );

    let r = request(&srv, "HEAD", "/nar/abc.nar.xz", &[]);
    assert_eq!((r.status, r.content_length()), (200, 4));
    assert!(r.body.is_empty(), "HEAD must not send a body");

    assert_eq!(get(&srv, "/missing.narinfo").status, 404);
    assert_eq!(request(&srv, "HEAD", "/missing.narinfo", &[]).status, 404);
    assert_eq!(get(&srv, "/nar").status, 404, "directories are not served");
    assert_eq!(get(&srv, "/../etc/passwd").status, 404);
    assert_eq!(get(&srv, "/nar/%2e%2e/nix-cache-info").status, 404);
    assert_eq!(request(&srv, "POST", "/nix-cache-info", &[]).status, 405);
}

#[test]
fn keep_alive_connections_serve_several_requests() {
    let (_dir, srv) = server_with_file(b"0123456789");
    let mut s = connect(srv.addr(), Duration::from_secs(5));
    send(&mut s, "GET", "/f.bin", &[]);
    send(&mut s, "HEAD", "/f.bin", &[]);
    send(&mut s, "GET", "/nope", &[]);
    let first = read_one(&mut s);
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, &b"0123456789"[..])
    );
    assert_eq!(first.header("connection"), Some("keep-alive"));
    // The HEAD answer has a Content-Length but no body: read only its head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains("Content-Length: 10"));
    assert_eq!(read_one(&mut s).status, 404);
    send(&mut s, "GET", "/f.bin", &[("Connection", "close")]);
    let last = read_one(&mut s);
    assert_eq!(last.header("connection"), Some("close"));
    let (rest, end) = read_all(&mut s);
    assert_eq!(
        (rest.len(), end),
        (0, End::Eof),
        "the server closes after Connection: close"
    );

    assert_eq!(srv.connections_accepted(), 1);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|r| r.connection == 1));
    let attempts: Vec<u32> = srv
        .requests_for("/f.bin")
        .iter()
        .map(|r| r.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3], "HEAD and GET both count as attempts");
}

#[test]
fn many_concurrent_connections_are_served() {
    let (_dir, srv) = server_with_file(&sample_body(100_000));
    // Hold 16 idle connections open while 16 more are served.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| connect(srv.addr(), Duration::from_secs(5)))
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| get(&srv, "/f.bin")))
            .collect();
        for h in handles {
            let r = h.join().unwrap();
            assert_eq!((r.status, r.body.len()), (200, 100_000));
        }
    });
    assert_eq!(srv.count("/f.bin"), 16);
    assert_eq!(srv.connections_accepted(), 32);
    drop(idle);
}

#[test]
fn dropping_the_server_closes_idle_keep_alive_connections() {
    let (_dir, srv) = server_with_file(b"x");
    let mut s = connect(srv.addr(), Duration::from_secs(5));
    send(&mut s, "GET", "/f.bin", &[]);
    assert_eq!(read_one(&mut s).status, 200);
    let started = Instant::now();
    drop(srv);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    let (rest, end) = read_all(&mut s);
    assert!(rest.is_empty());
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
}

#[test]
fn routes_redirect_negotiate_and_run_handlers() {
    let srv = TestServer::builder()
        .route("/latest", Response::redirect(302, "{base}/build/1"))
        .route("/q?x=1", Response::text("with query"))
        .route("/q", Response::text("without query"))
        .json_route("/build/1", Response::json(r#"{"id":1}"#))
        .handler("/echo", |req| {
            Response::text(format!(
                "{} {} {}",
                req.method,
                req.attempt,
                req.header("x-test").unwrap_or("-")
            ))
        })
        .start();

    let r = get(&srv, "/latest");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/build/1", srv.url()).as_str())
    );

    let json = request(&srv, "GET", "/build/1", &[("Accept", "application/json")]);
    assert_eq!(
        (json.status, json.body.as_slice()),
        (200, &br#"{"id":1}"#[..])
    );
    assert_eq!(
        json.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let html = request(&srv, "GET", "/build/1", &[("Accept", "text/html")]);
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8_lossy(&html.body).contains("<html"));

    assert_eq!(get(&srv, "/q?x=1").body, b"with query");
    assert_eq!(get(&srv, "/q?x=2").body, b"without query");
    assert_eq!(get(&srv, "/echo").body, b"GET 1 -");
    assert_eq!(
        request(&srv, "GET", "/echo", &[("X-Test", "yes")]).body,
        b"GET 2 yes"
    );
    assert_eq!(get(&srv, "/other").status, 404);

    srv.set_route("/other", Response::text("now here"));
    assert_eq!(get(&srv, "/other").body, b"now here");
    srv.remove_route("/other");
    assert_eq!(get(&srv, "/other").status, 404);
}

#[test]
fn request_bodies_and_headers_are_recorded() {
    let srv = TestServer::builder()
        .route("/post", Response::text("ok"))
        .start();
    let mut s = connect(srv.addr(), Duration::from_secs(5));
    s.write_all(
        b"POST /post?a=b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX-One: 1\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(read_one(&mut s).body, b"ok");
    s.write_all(b"POST /post HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).body, b"ok");
    let reqs = srv.requests_for("/post");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, "/post?a=b");
    assert_eq!(reqs[0].query.as_deref(), Some("a=b"));
    assert_eq!(reqs[0].header("x-one"), Some("1"));
    assert_eq!(reqs[0].body, b"hello");
    assert_eq!(reqs[1].body, b"abcde");
    assert!(reqs[1].at >= reqs[0].at && reqs[1].since_start >= reqs[0].since_start);
    srv.clear_requests();
    assert!(srv.requests().is_empty());

    let mut bad = connect(srv.addr(), Duration::from_secs(5));
    bad.write_all(b"NONSENSE\r\n\r\n").unwrap();
    let (bytes, _) = read_all(&mut bad);
    assert_eq!(parse(bytes, End::Eof).status, 400);
}

#[test]
fn route_scenario_file_serves_the_hydra_and_cache_fixtures() {
    let scenario = fixtures_dir().join("routes-scenario.json");
    let hydra = TestServer::builder().scenario(&scenario, "hydra").start();
    let r = request(
        &hydra,
        "GET",
        "/job/nixos/release-17.09/tested/latest-finished",
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/build/62870011", hydra.url())
    );
    let json = request(
        &hydra,
        "GET",
        "/build/62870011",
        &[("Accept", "application/json")],
    );
    let expected =
        std::fs::read(fixtures_dir().join("hydra/reconstructed/hydra-latest-finished.json"))
            .unwrap();
    assert_eq!((json.status, &json.body), (200, &expected));
    let html = get(&hydra, "/build/62870011");
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let missing = request(
        &hydra,
        "GET",
        "/eval/999999999",
        &[("Accept", "application/json")],
    );
    assert_eq!(missing.status, 404);
    assert!(String::from_utf8_lossy(&missing.body).contains("doesn't exist"));

    let cache = TestServer::builder()
        .scenario(&scenario, "binary_cache")
        .start();
    let info = get(&cache, "/nix-cache-info");
    assert_eq!(info.header("content-type"), Some("text/x-nix-cache-info"));
    assert!(String::from_utf8_lossy(&info.body).contains("StoreDir: /nix/store"));
    assert_eq!(
        get(&cache, "/00000000000000000000000000000000.narinfo").status,
        404
    );
}

// ---------------------------------------------------------------------------------------------
// Faults.

#[test]
fn request_times_show_the_gaps_between_attempts() {
    let (_dir, srv) = server_with_file(b"x");
    for pause in [0, 60, 150] {
        std::thread::sleep(Duration::from_millis(pause));
        assert_eq!(get(&srv, "/f.bin").status, 200);
    }
    let gaps = srv.gaps_for("/f.bin");
    assert_eq!(gaps.len(), 2);
    assert!(
        gaps[0] >= Duration::from_millis(60) && gaps[1] >= Duration::from_millis(150),
        "{gaps:?}"
    );
    assert!(gaps[1] > gaps[0], "{gaps:?}");
    let summary = srv.log_summary();
    assert_eq!(summary.lines().count(), 3, "{summary}");
    assert!(
        summary
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("GET /f.bin attempt 3"),
        "{summary}"
    );
}

#[test]
fn status_faults_follow_the_attempt_number_then_serve_normally() {
    let dir = TestDir::new("status-faults");
    dir.write("f.bin", "payload");
    let srv2 = TestServer::builder()
        .static_dir(dir.path())
        .fault(
            "/f.bin",
            [
                Fault::Status(500),
                Fault::Status(502),
                Fault::Pass,
                Fault::Status(503),
                Fault::Status(504),
                Fault::TooManyRequests {
                    retry_after_secs: 7,
                },
            ],
        )
        .start();
    let statuses: Vec<u16> = (0..7).map(|_| get(&srv2, "/f.bin").status).collect();
    assert_eq!(statuses, [500, 502, 200, 503, 504, 429, 200]);
    assert_eq!(get(&srv2, "/f.bin").body, b"payload");
    let reqs = srv2.requests_for("/f.bin");
    assert_eq!(
        reqs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(reqs[0].fault, Some(Fault::Status(500)));
    assert_eq!(reqs[2].fault, None, "Pass is recorded as no fault");
    assert_eq!(reqs[6].fault, None);

    srv2.add_faults(
        "/f.bin",
        [
            Fault::Pass,
            Fault::TooManyRequests {
                retry_after_secs: 3,
            },
        ],
    );
    assert_eq!(get(&srv2, "/f.bin").status, 200);
    let r = get(&srv2, "/f.bin");
    assert_eq!((r.status, r.header("retry-after")), (429, Some("3")));
    assert_eq!(get(&srv2, "/f.bin").status, 200);

    srv2.set_fault_always("/f.bin", Some(Fault::Status(503)));
    assert_eq!(get(&srv2, "/f.bin").status, 503);
    assert_eq!(get(&srv2, "/f.bin").status, 503);
    srv2.set_fault_always("/f.bin", None);
    assert_eq!(get(&srv2, "/f.bin").status, 200);
}

fn faulty(body: &[u8], fault: Fault) -> (TestDir, TestServer) {
    let dir = TestDir::new("fault");
    dir.write("f.bin", body);
    let srv = TestServer::builder()
        .static_dir(dir.path())
        .fault("/f.bin", [fault])
        .start();
    (dir, srv)
}

#[test]
fn connection_faults_before_headers() {
    let (_d, srv) = faulty(b"abc", Fault::ResetBeforeHeaders);
    let r = get(&srv, "/f.bin");
    assert!(!r.had_head);
    assert_eq!(r.end, End::Reset);
    assert_eq!(
        get(&srv, "/f.bin").body,
        b"abc",
        "the second attempt is served"
    );

    let (_d, srv) = faulty(b"abc", Fault::CloseBeforeHeaders);
    let r = get(&srv, "/f.bin");
    assert!(!r.had_head);
    assert_eq!(r.end, End::Eof);
    assert_eq!(get(&srv, "/f.bin").body, b"abc");
}

#[test]
fn body_faults_cut_or_corrupt_the_body() {
    let body = sample_body(10_000);

    let (_d, srv) = faulty(&body, Fault::ResetMidBody);
    let r = get(&srv, "/f.bin");
    assert_eq!((r.status, r.content_length()), (200, 10_000));
    assert_eq!(r.end, End::Reset);
    assert!(
        r.body.len() <= 5_000 && body.starts_with(&r.body),
        "got {} bytes",
        r.body.len()
    );

    let (_d, srv) = faulty(&body, Fault::TruncatedBody);
    let r = get(&srv, "/f.bin");
    assert_eq!((r.content_length(), r.end), (10_000, End::Eof));
    assert_eq!(r.body, &body[..5_000]);

    let (_d, srv) = faulty(&body, Fault::FlipByte);
    let r = get(&srv, "/f.bin");
    assert_eq!((r.content_length(), r.body.len()), (10_000, 10_000));
    let diffs: Vec<usize> = (0..body.len()).filter(|&i| r.body[i] != body[i]).collect();
    assert_eq!(diffs, [5_000]);
    assert_eq!(r.body[5_000], body[5_000] ^ 1);

    let (_d, srv) = faulty(&body, Fault::FlipByteAt(12_345));
    let r = get(&srv, "/f.bin");
    let diffs: Vec<usize> = (0..body.len()).filter(|&i| r.body[i] != body[i]).collect();
    assert_eq!(diffs, [2_345]);

    let (_d, srv) = faulty(&body, Fault::ContentLengthTooLarge(10));
    let r = get(&srv, "/f.bin");
    assert_eq!((r.content_length(), r.end), (10_010, End::Eof));
    assert_eq!(r.body, body);

    let (_d, srv) = faulty(&body, Fault::ContentLengthTooSmall(10));
    let r = get(&srv, "/f.bin");
    assert_eq!((r.content_length(), r.end), (9_990, End::Eof));
    assert_eq!(
        r.body, body,
        "the whole body is sent after the short Content-Length"
    );
}

#[test]
fn stall_sends_some_bytes_then_waits_for_the_client() {
    let body = sample_body(1_000);
    let (_d, srv) = faulty(&body, Fault::StallAfter(100));
    let started = Instant::now();
    let r = request_with_timeout(&srv, "GET", "/f.bin", &[], Duration::from_millis(500));
    assert_eq!((r.content_length(), r.end), (1_000, End::TimedOut));
    assert_eq!(r.body, &body[..100]);
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The client has gone; the server is served normally and stops promptly.
    assert_eq!(get(&srv, "/f.bin").body, body);

    // A stall still in progress does not keep the server from stopping.
    let (_d, srv) = faulty(&body, Fault::StallAfter(0));
    let mut s = connect(srv.addr(), Duration::from_secs(10));
    send(&mut s, "GET", "/f.bin", &[]);
    std::thread::sleep(Duration::from_millis(100));
    let stopping = Instant::now();
    drop(srv);
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn trickle_and_delay_slow_the_answer_down() {
    let body = sample_body(1_000);
    let (_d, srv) = faulty(
        &body,
        Fault::Trickle {
            bytes: 100,
            interval: Duration::from_millis(50),
        },
    );
    let started = Instant::now();
    let r = get(&srv, "/f.bin");
    let took = started.elapsed();
    assert_eq!(r.body, body);
    assert!(
        took >= Duration::from_millis(450),
        "trickle took only {took:?}"
    );

    let (_d, srv) = faulty(&body, Fault::DelayHeaders(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(get(&srv, "/f.bin").body, body);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn redirect_loop_bounces_forever() {
    let (_d, srv) = faulty(b"abc", Fault::RedirectLoop);
    let mut target = "/f.bin".to_string();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = get(&srv, &target);
        assert_eq!(r.status, 302);
        let location = r.header("location").unwrap();
        target = location.strip_prefix(&srv.url()).unwrap().to_string();
        seen.push(target.clone());
    }
    let one = format!("{REDIRECT_LOOP_PREFIX}/1/f.bin");
    let two = format!("{REDIRECT_LOOP_PREFIX}/2/f.bin");
    assert_eq!(
        seen,
        [&one, &two, &one, &two, &one, &two].map(String::clone)
    );
    assert_eq!(srv.count(&one), 3);
    assert_eq!(
        get(&srv, "/f.bin").body,
        b"abc",
        "only the first attempt was faulted"
    );
}

#[test]
fn html_instead_of_json_ignores_the_accept_header() {
    let srv = TestServer::builder()
        .json_route("/build/1", Response::json("{}"))
        .fault("/build/1", [Fault::HtmlInsteadOfJson])
        .start();
    let r = request(&srv, "GET", "/build/1", &[("Accept", "application/json")]);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = request(&srv, "GET", "/build/1", &[("Accept", "application/json")]);
    assert_eq!(r.body, b"{}");
}

#[test]
fn huge_body_is_streamed_without_end() {
    let (_d, srv) = faulty(b"small", Fault::HugeBody { declared: 1 << 30 });
    let mut s = connect(srv.addr(), Duration::from_secs(10));
    send(&mut s, "GET", "/f.bin", &[]);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains("Content-Length: 1073741824"));
    let mut first = vec![0u8; 3 << 20];
    s.read_exact(&mut first).unwrap();
    let wrong = (0..first.len() as u64).find(|&i| first[i as usize] != Fault::huge_body_byte(i));
    assert_eq!(wrong, None);
    drop(s);
    let stopping = Instant::now();
    drop(srv);
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Test directories and processes.

#[test]
fn test_dirs_are_unique_and_removed() {
    let a = TestDir::new("a");
    let b = TestDir::new("a");
    assert_ne!(a.path(), b.path());
    let file = a.write("sub/dir/file", "x");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    let path = a.path().to_path_buf();
    drop(a);
    if std::env::var(common::dirs::KEEP_ENV).as_deref() != Ok("all") {
        assert!(!path.exists());
    }
    let kept = b.keep();
    assert!(kept.exists());
    common::dirs::remove_tree(&kept);
    assert!(!kept.exists());
}

#[test]
fn leftover_temp_files_are_found() {
    let dir = TestDir::new("temps");
    dir.write("nar/abc.nar.xz", "x");
    dir.write("ok.narinfo", "x");
    dir.write("tmpfile-is-fine", "x");
    assert_no_temp_files(dir.path());
    dir.write(format!("nar/{TEMP_FILE_PREFIX}123"), "x");
    dir.write("deep/er/x.part", "x");
    dir.write(".tmpAbC", "x");
    dir.write("y.tmp", "x");
    let found = common::dirs::temp_files(dir.path());
    let names: Vec<String> = found
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [".tmpAbC", "deep/er/x.part", "nar/.nixipfs-tmp-123", "y.tmp"]
    );
    let message = std::panic::catch_unwind(|| assert_no_temp_files(dir.path()))
        .expect_err("temp files must fail the check");
    let message = message.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("x.part") && message.contains(".nixipfs-tmp-123"),
        "{message}"
    );
}

#[test]
fn processes_are_captured_and_killed_at_the_deadline() {
    let out = run_with_timeout(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );

    let started = Instant::now();
    let err = run_with_timeout(
        Command::new("sh").args(["-c", "echo before; exec sleep 30"]),
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.partial.stdout, b"before\n");
    assert!(err.to_string().contains("did not finish within"));
}

// ---------------------------------------------------------------------------------------------
// Nix-built binary caches.

fn names(paths: &[String]) -> BTreeSet<&str> {
    paths.iter().map(|p| store_path_name(p)).collect()
}

fn set(items: &[&'static str]) -> BTreeSet<&'static str> {
    items.iter().copied().collect()
}

#[test]
fn nix_caches_have_the_expected_closure_references_and_files() {
    let started = Instant::now();
    let caches = nix_caches();
    match caches.build_time {
        Some(t) => eprintln!(
            "built the Nix test caches in {t:.1?} ({})",
            caches.dir.display()
        ),
        None => eprintln!(
            "reused the Nix test caches in {} ({:.1?})",
            caches.dir.display(),
            started.elapsed()
        ),
    }
    for compression in Compression::ALL {
        let cache = nix_cache(compression);
        assert_eq!(
            names(&cache.top_level),
            set(&["nixipfs-test-app", "nixipfs-test-tool"])
        );
        assert_eq!(
            names(&cache.closure),
            set(&[
                "nixipfs-test-app",
                "nixipfs-test-data",
                "nixipfs-test-hello",
                "nixipfs-test-lib",
                "nixipfs-test-link",
                "nixipfs-test-tool"
            ])
        );
        assert_eq!(names(&cache.unrelated), set(&["nixipfs-test-unrelated"]));
        assert!(cache.public_key.starts_with("test-cache-1:"));
        assert!(cache.secret_key.starts_with("test-cache-1:"));
        let info = std::fs::read_to_string(cache.dir.join("nix-cache-info")).unwrap();
        assert!(info.contains("StoreDir: /nix/store"), "{info}");

        let refs = |name: &str| -> BTreeSet<String> {
            let field = cache
                .narinfo_field(cache.path_named(name), "References")
                .unwrap_or_default();
            field
                .split_whitespace()
                .map(|r| store_path_name(r).to_string())
                .collect()
        };
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            refs("nixipfs-test-app"),
            owned(&[
                "nixipfs-test-data",
                "nixipfs-test-hello",
                "nixipfs-test-link"
            ])
        );
        assert_eq!(
            refs("nixipfs-test-hello"),
            owned(&["nixipfs-test-hello", "nixipfs-test-lib"])
        );
        assert_eq!(refs("nixipfs-test-lib"), owned(&["nixipfs-test-lib"]));
        assert_eq!(refs("nixipfs-test-link"), owned(&["nixipfs-test-tool"]));
        assert_eq!(refs("nixipfs-test-tool"), owned(&["nixipfs-test-lib"]));
        assert_eq!(refs("nixipfs-test-data"), owned(&[]));

        for path in cache.closure.iter().chain(&cache.unrelated) {
            assert_eq!(
                cache.narinfo_field(path, "Compression").as_deref(),
                Some(compression.nix_name())
            );
            let sig = cache.narinfo_field(path, "Sig").expect("a signature");
            assert!(sig.starts_with("test-cache-1:"), "{sig}");
            let nar = cache.nar_url_path(path);
            assert!(
                nar.starts_with("/nar/") && nar.ends_with(compression.nar_extension()),
                "{nar}"
            );
            let size: u64 = cache
                .narinfo_field(path, "FileSize")
                .unwrap()
                .parse()
                .unwrap();
            let file = cache.dir.join(nar.trim_start_matches('/'));
            assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
        }
    }
}

#[test]
fn nix_path_info_sees_valid_signatures_in_the_cache() {
    let cache = nix_cache(Compression::Xz);
    let dir = TestDir::new("nix-sigs");
    let env = NixEnv::new(dir.path());
    let url = cache.file_url();
    let mut args = vec!["path-info", "--store", url.as_str(), "--sigs"];
    args.extend(cache.closure.iter().map(String::as_str));
    let lines = env.run_lines("nix", &args).unwrap();
    assert_eq!(lines.len(), cache.closure.len());
    for line in &lines {
        assert!(line.contains("test-cache-1:"), "{line}");
    }
    // `nix store verify` with only the cache key trusted checks each signature.
    let mut verify = env.command("nix");
    verify
        .args(["store", "verify", "--store", &url, "--no-contents"])
        .args(["--option", "trusted-public-keys", &cache.public_key])
        .args(&cache.closure);
    env.run(&mut verify)
        .expect("signatures verify with the cache key");
    let mut wrong = env.command("nix");
    wrong
        .args(["store", "verify", "--store", &url, "--no-contents"])
        .args([
            "--option",
            "trusted-public-keys",
            "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
        ])
        .args(&cache.closure);
    assert!(
        env.run(&mut wrong).is_err(),
        "signatures must not verify with another key"
    );
}

#[test]
fn real_nix_installs_from_every_cache_compression() {
    for compression in Compression::ALL {
        let cache = nix_cache(compression);
        let store = nix_install_from(&cache.file_url(), &cache.public_key, &cache.top_level)
            .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
        assert_eq!(store.closure, cache.closure, "{compression:?}");
        let hello = store.env.real_path(cache.path_named("nixipfs-test-hello"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(hello.join("bin/hello"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o111, 0o111, "bin/hello is executable");
        assert_eq!(
            std::fs::read_link(hello.join("bin/hi")).unwrap().to_str(),
            Some("hello")
        );
        let greeting = std::fs::read_to_string(
            store
                .env
                .real_path(cache.path_named("nixipfs-test-lib"))
                .join("lib/greeting.txt"),
        )
        .unwrap();
        assert_eq!(
            greeting,
            format!("greeting from {}\n", cache.path_named("nixipfs-test-lib"))
        );
    }
}

#[test]
fn real_nix_rejects_a_cache_signed_with_another_key() {
    let cache = nix_cache(Compression::Zstd);
    let other = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let err = nix_install_from(&cache.file_url(), other, &cache.top_level)
        .expect_err("an untrusted signature must be refused");
    assert!(err.message.contains("lacks a valid signature"), "{err}");
}

#[test]
fn real_nix_installs_over_http_from_the_test_server() {
    let cache = nix_cache(Compression::Xz);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let hello_nar = cache.nar_url_path(&hello);
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault(&cache.narinfo_url_path(&hello), [Fault::Status(503)])
        .start();
    let store = nix_install_from(&srv.url(), &cache.public_key, &cache.top_level)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.closure, cache.closure);
    for path in &cache.closure {
        assert!(
            srv.count(&cache.narinfo_url_path(path)) >= 1,
            "narinfo of {path} fetched"
        );
        assert!(
            srv.count(&cache.nar_url_path(path)) >= 1,
            "NAR of {path} fetched"
        );
    }
    assert!(
        srv.count(&cache.narinfo_url_path(&hello)) >= 2,
        "the 503 was retried"
    );
    assert_eq!(srv.count(&cache.narinfo_url_path(&cache.unrelated[0])), 0);
    assert!(srv
        .requests_for(&hello_nar)
        .iter()
        .all(|r| r.method == "GET"));
}

#[test]
fn real_nix_refuses_a_corrupted_nar_from_the_test_server() {
    let cache = nix_cache(Compression::None);
    let data = cache.path_named("nixipfs-test-data").to_string();
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault_always(&cache.nar_url_path(&data), Fault::FlipByte)
        .start();
    let err = nix_install_from(&srv.url(), &cache.public_key, std::slice::from_ref(&data))
        .expect_err("a flipped byte must be detected");
    assert!(err.message.contains("hash mismatch"), "{err}");
}
