//! `nixipfs cid`: the CIDs it prints equal kubo's known answers, what the real node's `add`
//! gives for the same files and trees with the profile's parameters, and, for the 1024 links
//! per node of `unixfs-v1-2025`, what the node's own importer library builds.

mod common;

use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

use common::ipfs_node::{node_dir, IpfsNode};
use common::process::run_with_timeout;
use common::{assert_success, output_text, run_nixipfs, TestDir};
use nixipfs::ipfs::cid::Cid;
use nixipfs::ipfs::unixfs::{AddOptions, FileHasher};

/// Runs `nixipfs cid` with `args` and returns CID by path, as printed.
fn cids(args: &[&str]) -> HashMap<String, Cid> {
    let out = run_nixipfs(std::iter::once("cid").chain(args.iter().copied()));
    assert_success(&out);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (cid, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("not `CID  PATH`: {line:?}"));
            (path.to_string(), Cid::parse(cid).unwrap())
        })
        .collect()
}

/// The inputs of the known-answer table, and `dir1/`.
fn table_inputs(dir: &TestDir) -> Vec<(String, Vec<u8>)> {
    let inputs = vec![
        ("hello".to_string(), b"hello\n".to_vec()),
        ("empty".to_string(), Vec::new()),
        ("z262144".to_string(), vec![0; 262_144]),
        ("z262145".to_string(), vec![0; 262_145]),
        ("z300000".to_string(), vec![0; 300_000]),
        ("z1048576".to_string(), vec![0; 1_048_576]),
    ];
    for (name, data) in &inputs {
        dir.write(name, data);
    }
    dir.write("dir1/hello.txt", b"hello\n");
    dir.write("dir1/sub/world.txt", b"world\n");
    dir.write("dir1/.hidden", b"left out, as ipfs add -r leaves it out");
    fs::create_dir_all(dir.join("emptydir")).unwrap();
    inputs
}

#[test]
fn cids_equal_kubo_known_answers() {
    let dir = TestDir::new("cid-table");
    table_inputs(&dir);
    // (name, kubo default add = unixfs-v0-2015, --raw-leaves = legacy-raw-v0)
    let table = [
        (
            "hello",
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
        ),
        (
            "empty",
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        ),
        (
            "z262144",
            "QmRk1rduJvo5DfEYAaLobS2za9tDszk35hzaNSDCJ74DA7",
            "bafkreiekhhjkxu4ztk3tyng3er3ijhg56mb44oe3gwbgquhzu4afrg2ksa",
        ),
        (
            "z262145",
            "QmbVuw4C4vcmVKqxoWtgDVobvcHrSn51qsmQmyxjk4sB2Q",
            "Qmc2SWxBGrBtWKZxuyg8999QuzXsPR47zsWiM7Yq9YFUXT",
        ),
        (
            "z300000",
            "QmXZSW216AmapthUD5r9LAoFg2LmkYY291aSKKi5cWUj6Y",
            "QmX5eBYbJUfvQVkwreS6PfQXTaH1iupAzLdGT6xrmW7cSY",
        ),
        (
            "z1048576",
            "QmVkbauSDEaMP4Tkq6Epm9uW75mWm136n81YH8fGtfwdHU",
            "Qmbig3qCRjdufAtQptiZ9F34poRoRJywcyxH7BmmCce4YF",
        ),
        (
            "emptydir",
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
        ),
        (
            "dir1",
            "QmYCTjyRvygoxFxcvizAceYYAtnbKKJwk5z6tJpHvx4NTe",
            "QmYwMk71acMYzHu38dpYWLUT3USz7RAaES5H5FKhMyksg4",
        ),
    ];
    let paths: Vec<String> = table
        .iter()
        .map(|(name, _, _)| dir.join(name).display().to_string())
        .collect();
    let args = |profile: Option<&str>| -> Vec<String> {
        let mut args: Vec<String> = profile
            .map(|p| vec!["--profile".to_string(), p.to_string()])
            .unwrap_or_default();
        args.extend(paths.iter().cloned());
        args
    };
    let run = |profile| {
        let args = args(profile);
        cids(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let v0 = run(Some("unixfs-v0-2015"));
    let legacy = run(Some("legacy-raw-v0"));
    let default = run(None);
    for ((name, kubo, raw_leaves), path) in table.iter().zip(&paths) {
        assert_eq!(v0[path].to_string(), *kubo, "{name}, unixfs-v0-2015");
        assert_eq!(
            legacy[path].to_string(),
            *raw_leaves,
            "{name}, legacy-raw-v0"
        );
        assert_eq!(default[path], legacy[path], "{name}: the default profile");
    }
    // unixfs-v1-2025: 1 MiB is one chunk (a raw leaf); small trees are the v1 column.
    let v1 = run(Some("unixfs-v1-2025"));
    assert_eq!(
        v1[&paths[5]],
        Cid::sha2_256(1, nixipfs::ipfs::cid::RAW, &vec![0; 1_048_576]).unwrap()
    );
    assert_eq!(
        v1[&paths[7]].to_string(),
        "bafybeie5c2xqxv72fokquxqckoo3equu5ifbxw2aoprbnycswjq7bqdjyu"
    );

    // A symbolic link is a UnixFS symlink, not its target; a missing path fails the run
    // after the others are printed.
    std::os::unix::fs::symlink("hello", dir.join("link")).unwrap();
    let link = dir.join("link").display().to_string();
    let missing = dir.join("missing").display().to_string();
    let out = run_nixipfs(["cid", link.as_str(), missing.as_str(), paths[0].as_str()]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{}", output_text(&out));
    assert!(!stdout.contains(&format!("{}  {link}", legacy[&paths[0]])));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

/// A multipart body for `add` of a tree: a part per directory and file, in the order given.
fn multipart(parts: &[(&str, Option<&[u8]>)]) -> (String, Vec<u8>) {
    let boundary = "nixipfs-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, data) in parts {
        let encoded = name.replace('/', "%2F");
        let kind = match data {
            Some(_) => "application/octet-stream",
            None => "application/x-directory",
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{encoded}\"\r\nContent-Type: {kind}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data.unwrap_or(b""));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// What the node's `add` of `parts` with `query` answers for the top entry `top`.
async fn node_add(node: &IpfsNode, query: &str, parts: &[(&str, Option<&[u8]>)], top: &str) -> Cid {
    let (content_type, body) = multipart(parts);
    let answer = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(format!("{}/api/v0/add?pin=false&{query}", node.url()))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let text = answer.text().await.unwrap();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        if value["Name"] == top {
            return Cid::parse(value["Hash"].as_str().unwrap()).unwrap();
        }
    }
    panic!("no entry {top} in the answer:\n{text}");
}

/// Bytes that do not repeat, `len` long.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cids_equal_what_the_node_adds_with_the_profile_parameters() {
    let node = IpfsNode::shared();
    let dir = TestDir::new("cid-node");
    let big = noise(7, 3 * 1_048_576 + 12_345);
    let small = noise(9, 5000);
    dir.write("tree/big.bin", &big);
    dir.write("tree/docs/small.txt", &small);
    dir.write("tree/docs/hello.txt", b"hello\n");
    dir.write("tree/empty", b"");
    let parts: Vec<(&str, Option<&[u8]>)> = vec![
        ("tree", None),
        ("tree/big.bin", Some(&big[..])),
        ("tree/docs", None),
        ("tree/docs/hello.txt", Some(&b"hello\n"[..])),
        ("tree/docs/small.txt", Some(&small[..])),
        ("tree/empty", Some(&b""[..])),
    ];
    let tree = dir.join("tree").display().to_string();
    let big_path = dir.join("tree/big.bin").display().to_string();
    for (profile, query) in [
        (
            "unixfs-v0-2015",
            "cid-version=0&raw-leaves=false&chunker=size-262144",
        ),
        (
            "legacy-raw-v0",
            "cid-version=0&raw-leaves=true&chunker=size-262144",
        ),
        (
            "unixfs-v1-2025",
            "cid-version=1&raw-leaves=true&chunker=size-1048576",
        ),
    ] {
        let printed = cids(&["--profile", profile, &tree, &big_path]);
        let added = node_add(node, query, &parts, "tree").await;
        assert_eq!(printed[&tree], added, "{profile}: the tree");
        let added = node_add(node, query, &parts[1..2], "tree/big.bin").await;
        assert_eq!(printed[&big_path], added, "{profile}: big.bin");
    }
}

#[test]
fn a_thousand_and_more_links_per_node_as_the_importer_builds_them() {
    // The node's importer library (ipfs-unixfs-importer, the one js-ipfs adds with) with 1 KiB
    // chunks: 1025 and 2100 chunks need a second level at 1024 links per node, none at 2100.
    let script = r#"
import { importer } from 'ipfs-unixfs-importer'
const blockstore = { put: async (cid) => cid, get: async () => { throw new Error('no') } }
for (const [len, links] of [[1025 * 1024, 1024], [2100 * 1024, 1024], [2100 * 1024, 4096]]) {
  const data = new Uint8Array(len)
  for (let i = 0; i < len; i++) data[i] = (i * 7 + (i >> 10)) & 255
  for await (const entry of importer([{ path: 'f', content: data }], blockstore, {
    cidVersion: 1, rawLeaves: true, maxChunkSize: 1024, maxChildrenPerNode: links,
  })) console.log(`${len} ${links} ${entry.cid.toString()}`)
}
"#;
    // An evaluated module resolves `ipfs-unixfs-importer` from the working directory.
    let mut cmd = Command::new("node");
    cmd.args(["--input-type=module", "-e", script])
        .current_dir(node_dir());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (len, links): (usize, usize) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
        let data: Vec<u8> = (0..len)
            .map(|i| ((i * 7 + (i >> 10)) & 255) as u8)
            .collect();
        let ours = FileHasher::with_layout(AddOptions::V1, 1024, links)
            .add(&data[..], &mut |_: &Cid, _: &[u8]| Ok(()))
            .unwrap();
        assert_eq!(
            ours.cid,
            Cid::parse(fields[2]).unwrap(),
            "{len} bytes, {links} links"
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "{text}");
}
