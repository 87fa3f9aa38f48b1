//! Publishing to a real IPFS node (js-ipfs, see `tests/common/ipfs_node.rs`): the CIDs the
//! node computes equal the ones computed here, `create-nixipfs` publishes a hand-made mirror
//! that can be read back through the node, reruns send only what is new, a CAR file carries
//! the whole DAG to another node, and the node's absence or its lost blocks are handled.
//!
//! Most tests share one node (each with its own mirror and MFS paths); those that need a node
//! of their own (an empty one, or one whose blocks they delete) start it.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::ipfs_node::{free_port, IpfsNode};
use common::TestDir;
use nixipfs::ipfs::api_addr::ApiAddr;
use nixipfs::ipfs::car::CarReader;
use nixipfs::ipfs::cid::{Cid, DAG_PB};
use nixipfs::ipfs::client::{IpfsClient, Timeouts};
use nixipfs::ipfs::directory::DirectoryBuilder;
use nixipfs::ipfs::profile::Profile;
use nixipfs::ipfs::publish::{publish, PublishOptions, PublishReport, SendMethod};
use nixipfs::ipfs::unixfs::{AddOptions, FileHasher};

const CHANNEL: &str = "nixos-24.05";
const RELEASE_1: &str = "nixos-24.05.100.aaaaaaa";
const RELEASE_2: &str = "nixos-24.05.200.bbbbbbb";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        call: Duration::from_secs(30),
        long: Duration::from_secs(60),
    }
}

fn client(node: &IpfsNode) -> IpfsClient {
    IpfsClient::new(ApiAddr::parse(&[node.url()]).unwrap(), timeouts()).unwrap()
}

fn args(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// Publishing options with the layout these tests compute their expected CIDs with
/// (`legacy-raw-v0`: CIDv0 directories over raw leaves); the default profile is published by
/// the gateway test and the profile tests.
fn options(dir: &Path, api: Option<ApiAddr>, mfs_prefix: &str) -> PublishOptions {
    PublishOptions {
        dir: dir.to_path_buf(),
        profile: Profile::LegacyRawV0,
        api,
        mfs_prefix: mfs_prefix.to_string(),
        timeouts: timeouts(),
        concurrency: 2,
        ..PublishOptions::default()
    }
}

/// Publishes as `create-nixipfs` does, and checks its result lines against the report.
async fn run(opts: &PublishOptions) -> anyhow::Result<PublishReport> {
    let mut out = Vec::new();
    let report = publish(opts, &mut out).await?;
    let mut expected = format!("nixfs: /ipfs/{}\n", report.root);
    if let Some(name) = &report.ipns_name {
        expected.push_str(&format!("published: /ipns/{name}\n"));
    }
    if let Some(car) = &report.car_file {
        expected.push_str(&format!("car: {}\n", car.display()));
    }
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    Ok(report)
}

/// Bytes that differ from test to test (`tag`) and file to file, `len` long.
fn content(tag: &str, name: &str, len: usize) -> Vec<u8> {
    let seed = format!("{tag}/{name}/");
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = seed.bytes().fold(1469598103934665603, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    out.extend_from_slice(seed.as_bytes());
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// A store path hash part made from `tag` and `n` (32 characters of the nix32 alphabet).
fn hash_part(tag: &str, n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    content(tag, &format!("hash{n}"), 64)
        .iter()
        .skip(16)
        .take(32)
        .map(|b| ALPHABET[usize::from(*b) % 32] as char)
        .collect()
}

fn narinfo_text(hash: &str, nar: &str, size: usize) -> String {
    format!(
        "StorePath: /nix/store/{hash}-pkg\nURL: nar/{nar}\nCompression: xz\n\
         FileHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\nFileSize: {size}\n\
         NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\nNarSize: {size}\n\
         References: \nSig: cache.example.org-1:{sig}\n",
        sig = "A".repeat(86) + "=="
    )
}

/// Adds one NAR and its narinfo to the global cache; returns the narinfo's name and the NAR's.
fn add_store_path(dir: &Path, tag: &str, n: usize, nar_len: usize) -> (String, String) {
    let hash = hash_part(tag, n);
    let nar = format!("{hash}.nar.xz");
    write(
        dir,
        &format!("binary_cache/nar/{nar}"),
        &content(tag, &nar, nar_len),
    );
    let narinfo = format!("{hash}.narinfo");
    write(
        dir,
        &format!("binary_cache/{narinfo}"),
        narinfo_text(&hash, &nar, nar_len).as_bytes(),
    );
    (narinfo, nar)
}

/// A complete release linking the given store paths, and the channel link pointing at it.
fn add_release(dir: &Path, tag: &str, name: &str, paths: &[(String, String)]) {
    let rel = format!("releases/{CHANNEL}/{name}");
    write(
        dir,
        &format!("{rel}/src-url"),
        format!("https://hydra.example/eval/{tag}-{name}\n").as_bytes(),
    );
    write(
        dir,
        &format!("{rel}/binary-cache-url"),
        b"https://cache.example.org\n",
    );
    write(
        dir,
        &format!("{rel}/store-paths"),
        &content(tag, &format!("{name}/store-paths"), 700),
    );
    write(
        dir,
        &format!("{rel}/store-paths.xz"),
        &content(tag, &format!("{name}/store-paths.xz"), 300),
    );
    write(
        dir,
        &format!("{rel}/nixexprs.tar.xz"),
        &content(tag, &format!("{name}/nixexprs"), 5000),
    );
    write(
        dir,
        &format!("{rel}/nixos-minimal.iso"),
        &content(tag, &format!("{name}/iso"), 600_000),
    );
    write(
        dir,
        &format!("{rel}/binary_cache/nix-cache-info"),
        NIX_CACHE_INFO,
    );
    fs::create_dir_all(dir.join(format!("{rel}/binary_cache/nar"))).unwrap();
    for (narinfo, nar) in paths {
        symlink(
            format!("../../../../binary_cache/{narinfo}"),
            dir.join(format!("{rel}/binary_cache/{narinfo}")),
        )
        .unwrap();
        symlink(
            format!("../../../../../binary_cache/nar/{nar}"),
            dir.join(format!("{rel}/binary_cache/nar/{nar}")),
        )
        .unwrap();
    }
    // git-revision last: the release is complete.
    write(
        dir,
        &format!("{rel}/git-revision"),
        format!("{tag}{name}\n").as_bytes(),
    );
    fs::create_dir_all(dir.join("channels")).unwrap();
    let link = dir.join(format!("channels/{CHANNEL}"));
    let _ = fs::remove_file(&link);
    symlink(format!("../releases/{CHANNEL}/{name}"), link).unwrap();
}

const NIX_CACHE_INFO: &[u8] = b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

/// The mirror every test starts from: three store paths (one NAR of two chunks), one release.
fn make_mirror(dir: &Path, tag: &str) -> Vec<(String, String)> {
    write(dir, "binary_cache/nix-cache-info", NIX_CACHE_INFO);
    write(dir, "binary_cache/lastsync", b"1700000000\n");
    write(dir, "lastsync", b"1700000000\n");
    let paths: Vec<_> = [(0, 300_000), (1, 1000), (2, 50)]
        .into_iter()
        .map(|(n, len)| add_store_path(dir, tag, n, len))
        .collect();
    add_release(dir, tag, RELEASE_1, &paths[..2]);
    paths
}

fn local_cid(data: &[u8], options: AddOptions) -> Cid {
    FileHasher::new(options)
        .add(data, &mut |_: &Cid, _: &[u8]| Ok(()))
        .unwrap()
        .cid
}

fn car_blocks(path: &Path) -> (Vec<Cid>, HashSet<Cid>) {
    let bytes = fs::read(path).unwrap();
    let mut reader = CarReader::new(&bytes[..]).unwrap();
    let roots = reader.roots().to_vec();
    let mut blocks = HashSet::new();
    while let Some((cid, _)) = reader.next_block().unwrap() {
        blocks.insert(cid);
    }
    (roots, blocks)
}

async fn stat_cid(client: &IpfsClient, path: &str) -> Cid {
    client
        .files_stat(path)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{path} does not exist on the node"))
        .cid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_answers_added_through_the_node_equal_local_cids() {
    let node = IpfsNode::shared();
    let client = client(node);
    let version = client.version().await.unwrap();
    assert_eq!(version.agent, "js-ipfs");

    let inputs: Vec<Vec<u8>> = vec![
        b"hello\n".to_vec(),
        Vec::new(),
        vec![0; 262_144],
        vec![0; 262_145],
        vec![0; 300_000],
        vec![0; 1_048_576],
        content("known-answers", "random", 46_000_000 / 64),
    ];
    for options in [
        AddOptions::KUBO_DEFAULT,
        AddOptions::V0_RAW_LEAVES,
        AddOptions::V1,
    ] {
        for data in &inputs {
            let local = local_cid(data, options);
            let answer = client.add_bytes("f", data.clone(), options).await.unwrap();
            assert_eq!(
                answer.cid,
                local,
                "{} bytes with {options:?}: the node computed {}, here {local}",
                data.len(),
                answer.cid
            );
        }
    }
    // The table's answers, compared as decoded CIDs with what the node said above.
    for (data, options, expected) in [
        (
            &inputs[0],
            AddOptions::V0_RAW_LEAVES,
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
        ),
        (
            &inputs[3],
            AddOptions::V0_RAW_LEAVES,
            "Qmc2SWxBGrBtWKZxuyg8999QuzXsPR47zsWiM7Yq9YFUXT",
        ),
        (
            &inputs[5],
            AddOptions::V1,
            "bafybeiggzq4ryi7hscq5hzvzcnk4urnxt3asp37dhgvnjilf7exskximla",
        ),
        (
            &inputs[4],
            AddOptions::KUBO_DEFAULT,
            "QmXZSW216AmapthUD5r9LAoFg2LmkYY291aSKKi5cWUj6Y",
        ),
    ] {
        let answer = client.add_bytes("f", data.clone(), options).await.unwrap();
        assert_eq!(answer.cid, Cid::parse(expected).unwrap());
    }

    // A directory built here and imported as a CAR resolves through the node by path.
    let mut blocks = Vec::new();
    let mut sink = |cid: &Cid, block: &[u8]| {
        blocks.push((*cid, block.to_vec()));
        Ok(())
    };
    let world = FileHasher::new(AddOptions::V0_RAW_LEAVES)
        .add(&b"world, known answers\n"[..], &mut sink)
        .unwrap();
    let mut sub = DirectoryBuilder::new(0);
    sub.add("world.txt", world.cid, world.tsize).unwrap();
    let sub = sub.build(&mut sink).unwrap();
    let mut top = DirectoryBuilder::new(0);
    top.add("sub", sub.cid, sub.tsize).unwrap();
    let top = top.build(&mut sink).unwrap();
    let mut car = nixipfs::ipfs::car::CarWriter::new(Vec::new(), &[top.cid]).unwrap();
    for (cid, block) in &blocks {
        car.write_block(cid, block).unwrap();
    }
    client
        .dag_import_bytes(car.finish().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(
        stat_cid(&client, &format!("/ipfs/{}/sub", top.cid)).await,
        sub.cid
    );
    assert_eq!(
        client
            .cat(&format!("/ipfs/{}/sub/world.txt", top.cid))
            .await
            .unwrap(),
        b"world, known answers\n"
    );
    assert_eq!(
        client.pin_ls(&top.cid).await.unwrap().as_deref(),
        Some("recursive")
    );
}

/// Checks what the node serves for a mirror published as `report`.
async fn check_published(
    client: &IpfsClient,
    dir: &Path,
    report: &PublishReport,
    paths: &[(String, String)],
) {
    let root = report.root;
    let mfs = report.mfs_path.as_deref().unwrap();
    assert_eq!(stat_cid(client, mfs).await, root);
    assert_eq!(
        client.pin_ls(&root).await.unwrap().as_deref(),
        Some("recursive")
    );
    let options = AddOptions::V0_RAW_LEAVES;

    // NARs: same bytes, the CID computed here.
    for (narinfo, nar) in paths {
        let disk = fs::read(dir.join(format!("binary_cache/nar/{nar}"))).unwrap();
        let nar_cid = stat_cid(client, &format!("{mfs}/binary_cache/nar/{nar}")).await;
        assert_eq!(nar_cid, local_cid(&disk, options));
        assert_eq!(
            client
                .cat(&format!("/ipfs/{root}/binary_cache/nar/{nar}"))
                .await
                .unwrap(),
            disk
        );
        // The narinfo: the bytes on disk, then `IPFSHash: <NAR CID>`.
        let on_disk = fs::read_to_string(dir.join(format!("binary_cache/{narinfo}"))).unwrap();
        assert!(
            !on_disk.contains("IPFSHash"),
            "the narinfo on disk was changed"
        );
        let served = String::from_utf8(
            client
                .files_read(&format!("{mfs}/binary_cache/{narinfo}"))
                .await
                .unwrap(),
        )
        .unwrap();
        let ipfs_hash = served
            .strip_prefix(on_disk.as_str())
            .unwrap_or_else(|| panic!("served narinfo does not start with the file:\n{served}"))
            .strip_prefix("IPFSHash: ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("no IPFSHash line last:\n{served}"));
        assert_eq!(Cid::parse(ipfs_hash).unwrap(), nar_cid);
        assert_eq!(
            stat_cid(client, &format!("{mfs}/binary_cache/{narinfo}")).await,
            local_cid(served.as_bytes(), options)
        );
    }
    assert_eq!(
        client
            .cat(&format!("/ipfs/{root}/binary_cache/nix-cache-info"))
            .await
            .unwrap(),
        NIX_CACHE_INFO
    );
    assert!(client
        .files_stat(&format!("{mfs}/binary_cache/lastsync"))
        .await
        .unwrap()
        .is_none());

    // Releases: their files, their ipfs_hash, their view of the cache; the channel.
    for (key, cid) in &report.releases {
        let disk = dir.join(key);
        assert_eq!(stat_cid(client, &format!("{mfs}/{key}")).await, *cid);
        let ipfs_hash = fs::read_to_string(disk.join("ipfs_hash")).unwrap();
        assert_eq!(Cid::parse(ipfs_hash.trim()).unwrap(), *cid);
        for file in [
            "src-url",
            "nixos-minimal.iso",
            "store-paths.xz",
            "git-revision",
        ] {
            let bytes = fs::read(disk.join(file)).unwrap();
            assert_eq!(
                client.cat(&format!("/ipfs/{cid}/{file}")).await.unwrap(),
                bytes,
                "{key}/{file}"
            );
        }
        assert!(client
            .files_stat(&format!("{mfs}/{key}/ipfs_hash"))
            .await
            .unwrap()
            .is_none());
        for entry in fs::read_dir(disk.join("binary_cache")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".narinfo") {
                assert_eq!(
                    stat_cid(client, &format!("{mfs}/{key}/binary_cache/{name}")).await,
                    stat_cid(client, &format!("{mfs}/binary_cache/{name}")).await
                );
            }
        }
    }
    let channel_target = fs::read_link(dir.join(format!("channels/{CHANNEL}"))).unwrap();
    let release_key = format!(
        "releases/{CHANNEL}/{}",
        channel_target.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(
        stat_cid(client, &format!("{mfs}/channels/{CHANNEL}")).await,
        stat_cid(client, &format!("{mfs}/{release_key}")).await
    );
    let ipfs_root = fs::read_to_string(dir.join("ipfs_root")).unwrap();
    assert_eq!(Cid::parse(ipfs_root.trim()).unwrap(), root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_nixipfs_publishes_the_mirror_and_reruns_send_only_new_blocks() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-e2e");
    let out = TestDir::new("ipfs-e2e-cars");
    let mut paths = make_mirror(dir.path(), "e2e");
    let narinfo_before = fs::read(dir.join(format!("binary_cache/{}", paths[0].0))).unwrap();

    // First run, with the multiaddr form of the address, also writing a CAR file.
    let api = ApiAddr::parse(&args(&[&node.multiaddr()])).unwrap();
    let car_1 = out.join("first.car");
    let first = run(&PublishOptions {
        car: Some(car_1.clone()),
        ..options(dir.path(), Some(api.clone()), "/e2e-1/nixfs")
    })
    .await
    .unwrap();
    assert_eq!(first.root.version(), 0);
    assert_eq!(first.root.codec(), DAG_PB);
    assert!(first
        .mfs_path
        .as_deref()
        .unwrap()
        .starts_with("/e2e-1/nixfs_"));
    assert!(first.sent.blocks_sent > 0 && first.sent.import_requests >= 1);
    assert_eq!(first.sent.add_calls, 0);
    assert!(first.verified_paths >= 10, "{first:?}");
    assert_eq!(first.releases.len(), 1);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let name = first.ipns_name.clone().unwrap();
    assert_eq!(
        client.name_resolve(&name).await.unwrap(),
        format!("/ipfs/{}", first.root)
    );
    check_published(&client, dir.path(), &first, &paths).await;
    assert_eq!(
        fs::read(dir.join(format!("binary_cache/{}", paths[0].0))).unwrap(),
        narinfo_before
    );
    let (roots, blocks_1) = car_blocks(&car_1);
    assert_eq!(roots, vec![first.root]);
    assert_eq!(blocks_1.len() as u64, first.sent.car_file_blocks);

    // A rerun with nothing changed reads nothing and sends nothing.
    let second = run(&options(dir.path(), Some(api.clone()), "/e2e-2/nixfs"))
        .await
        .unwrap();
    assert_eq!(second.root, first.root);
    assert_eq!(second.sent.blocks_sent, 0, "{second:?}");
    assert_eq!(second.sent.import_requests, 0);
    assert_eq!(second.sent.add_calls, 0);
    assert_eq!(second.hashing.files_read, 0);
    assert!(!second.repaired);
    assert!(!first.already_pinned && second.already_pinned, "{second:?}");

    // A new release with a new store path: only the blocks that are new are sent.
    paths.push(add_store_path(dir.path(), "e2e", 3, 400_000));
    let release_2_paths = vec![paths[1].clone(), paths[3].clone()];
    add_release(dir.path(), "e2e", RELEASE_2, &release_2_paths);
    let car_3 = out.join("third.car");
    let third = run(&PublishOptions {
        car: Some(car_3.clone()),
        ..options(dir.path(), Some(api), "/e2e-3/nixfs")
    })
    .await
    .unwrap();
    assert_ne!(third.root, first.root);
    let (_, blocks_3) = car_blocks(&car_3);
    let new_blocks = blocks_3.difference(&blocks_1).count() as u64;
    assert!(new_blocks > 10);
    assert_eq!(third.sent.blocks_sent, new_blocks, "{third:?}");
    assert_eq!(third.releases.len(), 2);
    // The first release was taken by its ipfs_hash: same CID as before.
    assert_eq!(third.releases[0], first.releases[0]);
    check_published(&client, dir.path(), &third, &paths).await;
    assert_eq!(
        stat_cid(
            &client,
            &format!("{}/channels/{CHANNEL}", third.mfs_path.as_deref().unwrap())
        )
        .await,
        third.releases[1].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_file_carries_the_whole_dag_to_a_fresh_node() {
    let dir = TestDir::new("ipfs-car");
    let out = TestDir::new("ipfs-car-out");
    let paths = make_mirror(dir.path(), "car");
    let car = out.join("mirror.car");
    let report = run(&PublishOptions {
        car: Some(car.clone()),
        ..options(dir.path(), None, "/car/nixfs")
    })
    .await
    .unwrap();
    assert!(report.node.is_none() && report.mfs_path.is_none() && report.ipns_name.is_none());
    assert!(!dir.join("ipfs_root").exists());
    assert!(!dir
        .join(format!("releases/{CHANNEL}/{RELEASE_1}/ipfs_hash"))
        .exists());
    let (roots, blocks) = car_blocks(&car);
    assert_eq!(roots, vec![report.root]);
    assert_eq!(blocks.len() as u64, report.sent.car_file_blocks);
    // Handed to another host or served: others may read it, as any new file.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&car).unwrap().permissions());
    assert_eq!(mode & 0o044, 0o044, "the CAR file has mode {mode:o}");

    let fresh = IpfsNode::start();
    let client = client(&fresh);
    client
        .dag_import_bytes(fs::read(&car).unwrap(), true)
        .await
        .unwrap();
    assert_eq!(
        client.pin_ls(&report.root).await.unwrap().as_deref(),
        Some("recursive")
    );
    let root = report.root;
    for (narinfo, nar) in &paths {
        let disk = fs::read(dir.join(format!("binary_cache/nar/{nar}"))).unwrap();
        assert_eq!(
            client
                .cat(&format!("/ipfs/{root}/binary_cache/nar/{nar}"))
                .await
                .unwrap(),
            disk
        );
        let served = client
            .cat(&format!("/ipfs/{root}/binary_cache/{narinfo}"))
            .await
            .unwrap();
        let line = format!(
            "IPFSHash: {}\n",
            local_cid(&disk, AddOptions::V0_RAW_LEAVES)
        );
        assert!(String::from_utf8(served).unwrap().ends_with(&line));
    }
    let release = format!("releases/{CHANNEL}/{RELEASE_1}");
    assert_eq!(
        stat_cid(&client, &format!("/ipfs/{root}/channels/{CHANNEL}")).await,
        stat_cid(&client, &format!("/ipfs/{root}/{release}")).await
    );
    assert_eq!(
        client
            .cat(&format!("/ipfs/{root}/{release}/nixos-minimal.iso"))
            .await
            .unwrap(),
        fs::read(dir.join(format!("{release}/nixos-minimal.iso"))).unwrap()
    );

    // Publishing the same mirror to that node yields the same root and needs no block.
    let again = run(&options(
        dir.path(),
        Some(ApiAddr::parse(&args(&[&fresh.port().to_string()])).unwrap()),
        "/car/nixfs",
    ))
    .await
    .unwrap();
    assert_eq!(again.root, root);
    assert_eq!(again.sent.blocks_sent, 0, "{again:?}");
    assert!(dir.join("ipfs_root").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_an_error_unless_a_car_is_written() {
    // The shared node answers: proof that the address checked below is really not a node.
    let node = IpfsNode::shared();
    client(node).version().await.unwrap();
    let dir = TestDir::new("ipfs-unreachable");
    make_mirror(dir.path(), "unreachable");
    let port = free_port();
    let api = ApiAddr::parse(&args(&["127.0.0.1", &port.to_string()])).unwrap();
    let err = run(&options(dir.path(), Some(api.clone()), "/u/nixfs"))
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("--car"), "{message}");
    for file in [
        "ipfs_hashes",
        "ipfs_root",
        &format!("releases/{CHANNEL}/{RELEASE_1}/ipfs_hash"),
    ] {
        assert!(!dir.join(file).exists(), "{file} was written");
    }

    let car = dir.join("offline.car");
    let report = run(&PublishOptions {
        car: Some(car.clone()),
        ..options(dir.path(), Some(api), "/u/nixfs")
    })
    .await
    .unwrap();
    assert!(report.node.is_none());
    assert_eq!(car_blocks(&car).0, vec![report.root]);
    // The CAR root is what the shared node gets for the same mirror.
    let published = run(&options(
        dir.path(),
        Some(ApiAddr::parse(&args(&[&node.url()])).unwrap()),
        "/u/nixfs",
    ))
    .await
    .unwrap();
    assert_eq!(published.root, report.root);
}

// On a single-threaded runtime: the blocking threads that hash files drive the import
// requests through the runtime the test itself runs.
#[tokio::test(flavor = "current_thread")]
async fn cid_version_1_gives_cidv1_directories() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-v1");
    let paths = make_mirror(dir.path(), "v1");
    let api = ApiAddr::parse(&args(&["127.0.0.1", &node.port().to_string()])).unwrap();
    // Small dag/import requests: the blocks go in several CARs.
    let report = run(&PublishOptions {
        cid_version: Some(1),
        publish_ipns: false,
        segment_bytes: 200_000,
        ..options(dir.path(), Some(api), "/v1/nixfs")
    })
    .await
    .unwrap();
    assert!(report.sent.import_requests >= 4, "{:?}", report.sent);
    assert!(report.sent.car_bytes_sent > report.sent.block_bytes_sent);
    assert_eq!((report.root.version(), report.root.codec()), (1, DAG_PB));
    assert!(report.root.to_string().starts_with("bafy"));
    assert!(report.ipns_name.is_none());
    let mfs = report.mfs_path.unwrap();
    let nar = fs::read(dir.join(format!("binary_cache/nar/{}", paths[0].1))).unwrap();
    let nar_cid = stat_cid(&client, &format!("{mfs}/binary_cache/nar/{}", paths[0].1)).await;
    assert_eq!(nar_cid, local_cid(&nar, AddOptions::V1));
    let served = client
        .files_read(&format!("{mfs}/binary_cache/{}", paths[0].0))
        .await
        .unwrap();
    assert!(String::from_utf8(served)
        .unwrap()
        .ends_with(&format!("IPFSHash: {nar_cid}\n")));
    assert!(nar_cid.to_string().starts_with("bafybei"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dag_import_files_are_added_one_by_one() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-add");
    let paths = make_mirror(dir.path(), "add");
    let api = ApiAddr::parse(&args(&[&format!("http://127.0.0.1:{}", node.port())])).unwrap();
    let first = run(&PublishOptions {
        method: SendMethod::Add,
        ..options(dir.path(), Some(api.clone()), "/add-1/nixfs")
    })
    .await
    .unwrap();
    assert_eq!(first.sent.import_requests, 0);
    assert!(first.sent.add_calls >= 10, "{first:?}");
    check_published(&client, dir.path(), &first, &paths).await;

    let second = run(&PublishOptions {
        method: SendMethod::Add,
        ..options(dir.path(), Some(api), "/add-2/nixfs")
    })
    .await
    .unwrap();
    assert_eq!(second.root, first.root);
    assert_eq!((second.sent.add_calls, second.sent.blocks_sent), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_lost_by_the_node_are_found_and_sent_again() {
    let own = IpfsNode::start();
    let client = client(&own);
    let dir = TestDir::new("ipfs-repair");
    let paths = make_mirror(dir.path(), "repair");
    let api = ApiAddr::parse(&args(&[&own.url()])).unwrap();
    let first = run(&options(dir.path(), Some(api.clone()), "/repair-1/nixfs"))
        .await
        .unwrap();
    let sent_first = first.sent.blocks_sent;

    // Unpin, drop the MFS copy and collect garbage: the node loses the blocks, the cache
    // still says it has them.
    client
        .files_rm(first.mfs_path.as_deref().unwrap())
        .await
        .unwrap();
    client.pin_rm(&first.root).await.unwrap();
    client.repo_gc().await.unwrap();
    assert!(
        client.refs_local().await.unwrap().len() < 3,
        "the blocks are gone"
    );

    let second = run(&PublishOptions {
        timeouts: Timeouts {
            long: Duration::from_secs(4),
            ..timeouts()
        },
        ..options(dir.path(), Some(api), "/repair-2/nixfs")
    })
    .await
    .unwrap();
    assert!(second.repaired, "{second:?}");
    assert_eq!(second.root, first.root);
    assert_eq!(second.sent.blocks_sent, sent_first, "{second:?}");
    check_published(&client, dir.path(), &second, &paths).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_ipfs_hash_is_not_added_again() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-hash");
    make_mirror(dir.path(), "ipfs-hash");
    let api = ApiAddr::parse(&args(&[&node.url()])).unwrap();
    let first = run(&options(dir.path(), Some(api.clone()), "/hash-1/nixfs"))
        .await
        .unwrap();
    let release = dir.join(format!("releases/{CHANNEL}/{RELEASE_1}"));
    let old_src_url = fs::read(release.join("src-url")).unwrap();
    fs::write(release.join("src-url"), b"changed after publishing\n").unwrap();

    let second = run(&options(dir.path(), Some(api.clone()), "/hash-2/nixfs"))
        .await
        .unwrap();
    assert_eq!(second.releases, first.releases);
    assert_eq!(second.root, first.root);
    assert_eq!(second.sent.blocks_sent, 0);
    let mfs = second.mfs_path.unwrap();
    assert_eq!(
        client
            .files_read(&format!("{mfs}/releases/{CHANNEL}/{RELEASE_1}/src-url"))
            .await
            .unwrap(),
        old_src_url
    );

    // Without its ipfs_hash the release is looked at again.
    fs::remove_file(release.join("ipfs_hash")).unwrap();
    let third = run(&options(dir.path(), Some(api), "/hash-3/nixfs"))
        .await
        .unwrap();
    assert_ne!(third.releases[0].1, first.releases[0].1);
    let mfs = third.mfs_path.unwrap();
    assert_eq!(
        client
            .files_read(&format!("{mfs}/releases/{CHANNEL}/{RELEASE_1}/src-url"))
            .await
            .unwrap(),
        b"changed after publishing\n"
    );
    let ipfs_hash = fs::read_to_string(release.join("ipfs_hash")).unwrap();
    assert_eq!(Cid::parse(ipfs_hash.trim()).unwrap(), third.releases[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_binary_cache_is_a_sharded_directory_the_node_resolves() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-hamt");
    write(dir.path(), "binary_cache/nix-cache-info", NIX_CACHE_INFO);
    // 3500 narinfos (all naming one NAR): the directory's estimated size passes 256 KiB.
    let nar = "shared.nar.xz";
    write(
        dir.path(),
        &format!("binary_cache/nar/{nar}"),
        &content("hamt", nar, 2000),
    );
    let names: Vec<String> = (0..3500)
        .map(|n| {
            let hash = hash_part("hamt", n);
            write(
                dir.path(),
                &format!("binary_cache/{hash}.narinfo"),
                narinfo_text(&hash, nar, 2000).as_bytes(),
            );
            format!("{hash}.narinfo")
        })
        .collect();
    let out = TestDir::new("ipfs-hamt-car");
    let car = out.join("hamt.car");
    let report = run(&PublishOptions {
        car: Some(car.clone()),
        verify_files: 40,
        ..options(
            dir.path(),
            Some(ApiAddr::parse(&args(&[&node.url()])).unwrap()),
            "/hamt/nixfs",
        )
    })
    .await
    .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.verified_paths >= 40);

    // The binary_cache node is a HAMT shard.
    let mfs = report.mfs_path.clone().unwrap();
    let cache_cid = stat_cid(&client, &format!("{mfs}/binary_cache")).await;
    let bytes = fs::read(&car).unwrap();
    let mut reader = CarReader::new(&bytes[..]).unwrap();
    let mut shard = None;
    while let Some((cid, block)) = reader.next_block().unwrap() {
        if cid == cache_cid {
            shard = Some(block);
        }
    }
    let node_block = nixipfs::ipfs::dagpb::PbNode::decode(&shard.unwrap()).unwrap();
    let data = nixipfs::ipfs::unixfs::UnixfsData::decode(&node_block.data.unwrap()).unwrap();
    assert_eq!(data.data_type, nixipfs::ipfs::unixfs::DataType::HamtShard);

    // Entries resolve through the shard, with the published bytes.
    let nar_cid = stat_cid(&client, &format!("{mfs}/binary_cache/nar/{nar}")).await;
    for name in [&names[0], &names[1749], &names[3499]] {
        let on_disk = fs::read_to_string(dir.join(format!("binary_cache/{name}"))).unwrap();
        let served = client
            .cat(&format!("/ipfs/{}/binary_cache/{name}", report.root))
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(served).unwrap(),
            format!("{on_disk}IPFSHash: {nar_cid}\n")
        );
    }
}

/// Whether the node lists the block of `cid` among its blocks.
async fn node_has_block(client: &IpfsClient, cid: &Cid) -> bool {
    client
        .refs_local()
        .await
        .unwrap()
        .contains(&nixipfs::ipfs::client::block_key(cid))
}

async fn pin_of(client: &IpfsClient, cid: &Cid) -> Option<String> {
    client.pin_ls(cid).await.unwrap()
}

/// Waits for the next second: each publication's MFS directory is named by its time.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_roots_leave_the_node_and_the_newest_stay() {
    let own = IpfsNode::start();
    let client = client(&own);
    let dir = TestDir::new("ipfs-keep");
    let out = TestDir::new("ipfs-keep-car");
    let paths = make_mirror(dir.path(), "keep");
    let api = ApiAddr::parse(&args(&[&own.url()])).unwrap();
    let keep_opts = || options(dir.path(), Some(api.clone()), "/keep/nixfs");

    // Someone else's pin and MFS entry on the same node.
    let foreign = client
        .add_bytes("foreign", content("keep", "foreign", 1000), AddOptions::V1)
        .await
        .unwrap()
        .cid;
    client.pin_add(&foreign).await.unwrap();
    client
        .files_cp(&format!("/ipfs/{foreign}"), "/foreign", true)
        .await
        .unwrap();

    // 1: a store path that the next publications no longer have (a garbage-collected one).
    let first = run(&keep_opts()).await.unwrap();
    let (gone_narinfo, gone_nar) = &paths[2];
    let gone_block = local_cid(
        &fs::read(dir.join(format!("binary_cache/nar/{gone_nar}"))).unwrap(),
        AddOptions::V0_RAW_LEAVES,
    );
    assert!(node_has_block(&client, &gone_block).await);
    fs::remove_file(dir.join(format!("binary_cache/nar/{gone_nar}"))).unwrap();
    fs::remove_file(dir.join(format!("binary_cache/{gone_narinfo}"))).unwrap();

    // 2: the root was pinned by someone else (a CAR of the mirror imported with its root
    // pinned) before this mirror published it: that pin is not this mirror's to remove.
    let car = out.join("second.car");
    let second_car = run(&PublishOptions {
        car: Some(car.clone()),
        ..options(dir.path(), None, "/keep/nixfs")
    })
    .await
    .unwrap();
    client
        .dag_import_bytes(fs::read(&car).unwrap(), true)
        .await
        .unwrap();
    next_second().await;
    let second = run(&keep_opts()).await.unwrap();
    assert_eq!(second.root, second_car.root);
    assert!(second.already_pinned);

    // 3 and 4, each with a new store path; the fourth lets go of the first.
    let mut reports = vec![first, second];
    for n in [10, 11] {
        add_store_path(dir.path(), "keep", n, 2000 + n);
        next_second().await;
        reports.push(run(&keep_opts()).await.unwrap());
    }
    let fourth = &reports[3];
    assert_eq!(fourth.unpinned, vec![reports[0].root], "{fourth:?}");
    assert_eq!(
        fourth.mfs_removed,
        vec![reports[0].mfs_path.clone().unwrap()]
    );
    assert!(!fourth.collected);
    assert_eq!(pin_of(&client, &reports[0].root).await, None);
    // Unpinned, not collected: the block is still there.
    assert!(node_has_block(&client, &gone_block).await);

    // 5, with garbage collection: lets go of the second (its MFS copy only).
    add_store_path(dir.path(), "keep", 12, 2012);
    next_second().await;
    let fifth = run(&PublishOptions {
        gc: true,
        ..keep_opts()
    })
    .await
    .unwrap();
    assert!(fifth.unpinned.is_empty(), "{fifth:?}");
    assert_eq!(
        fifth.mfs_removed,
        vec![reports[1].mfs_path.clone().unwrap()]
    );
    assert!(fifth.collected);
    reports.push(fifth);

    let roots: HashSet<Cid> = reports.iter().map(|r| r.root).collect();
    assert_eq!(roots.len(), 5, "every publication had a new root");
    for (i, report) in reports.iter().enumerate() {
        let mfs = report.mfs_path.as_deref().unwrap();
        let stat = client.files_stat(mfs).await.unwrap();
        let pin = pin_of(&client, &report.root).await;
        if i < 2 {
            assert_eq!(stat, None, "publication {}: {mfs} is still there", i + 1);
        } else {
            assert_eq!(stat.unwrap().cid, report.root, "publication {}", i + 1);
        }
        let expected_pin = (i != 0).then(|| "recursive".to_string());
        assert_eq!(pin, expected_pin, "publication {}", i + 1);
    }
    // The block only the first root had is gone; someone else's pin and MFS entry stay.
    assert!(!node_has_block(&client, &gone_block).await);
    assert_eq!(
        pin_of(&client, &foreign).await.as_deref(),
        Some("recursive")
    );
    assert_eq!(stat_cid(&client, "/foreign").await, foreign);
    assert!(node_has_block(&client, &foreign).await);
    let log = fs::read_to_string(dir.join("ipfs_roots")).unwrap();
    assert_eq!(log.lines().count(), 1 + 3, "{log}");
    for report in &reports[2..] {
        assert!(log.contains(&report.root.to_string()), "{log}");
    }

    // 6 and 7, nothing new: the fifth root's record and MFS copy are taken up again, and the
    // three roots kept stay (the newest three roots, not the newest three publications).
    for _ in 0..2 {
        next_second().await;
        let again = run(&keep_opts()).await.unwrap();
        assert_eq!(again.root, reports[4].root);
        assert_eq!(again.mfs_path, reports[4].mfs_path, "{again:?}");
        assert!(
            again.unpinned.is_empty() && again.mfs_removed.is_empty(),
            "{again:?}"
        );
    }
    for report in &reports[2..] {
        let mfs = report.mfs_path.as_deref().unwrap();
        assert_eq!(stat_cid(&client, mfs).await, report.root);
        assert_eq!(
            pin_of(&client, &report.root).await.as_deref(),
            Some("recursive")
        );
    }
    let again = fs::read_to_string(dir.join("ipfs_roots")).unwrap();
    assert_eq!(again.lines().count(), 1 + 3, "{again}");
    assert!(
        again
            .lines()
            .last()
            .unwrap()
            .starts_with(&reports[4].root.to_string()),
        "{again}"
    );
}

/// `--ipfs-gc` asks the node for `repo/gc` only when there can be garbage: a publication with
/// nothing new costs the node no collection (it walks every pinned tree), and what a run
/// without `--ipfs-gc` let go is collected by the next run that asks, even when that run has
/// nothing new of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_collected_when_there_can_be_some_and_only_then() {
    let own = IpfsNode::start();
    let client = client(&own);
    let dir = TestDir::new("ipfs-gc-needed");
    let paths = make_mirror(dir.path(), "gcneed");
    let api = ApiAddr::parse(&args(&[&own.url()])).unwrap();
    let opts = |gc: bool| PublishOptions {
        gc,
        keep: 1,
        ..options(dir.path(), Some(api.clone()), "/gcneed/nixfs")
    };
    let pending = dir.join("ipfs_gc_pending");

    // 1: blocks sent: collected.
    let first = run(&opts(true)).await.unwrap();
    assert!(first.sent.blocks_sent > 0, "{first:?}");
    assert!(first.collected && !first.collection_skipped, "{first:?}");
    assert!(!pending.exists());

    // 2: nothing new; the first record and its MFS copy are taken up: nothing to collect.
    next_second().await;
    let second = run(&opts(true)).await.unwrap();
    assert_eq!(second.root, first.root);
    assert_eq!(second.sent.blocks_sent, 0, "{second:?}");
    assert_eq!(second.mfs_path, first.mfs_path);
    assert!(second.mfs_removed.is_empty(), "{second:?}");
    assert!(!second.collected && second.collection_skipped, "{second:?}");
    assert!(!pending.exists());

    // 3: a store path gone, published without --ipfs-gc: the old root is unpinned, its
    // blocks stay, and the node is listed as holding garbage.
    let (gone_narinfo, gone_nar) = &paths[2];
    let gone_block = local_cid(
        &fs::read(dir.join(format!("binary_cache/nar/{gone_nar}"))).unwrap(),
        AddOptions::V0_RAW_LEAVES,
    );
    fs::remove_file(dir.join(format!("binary_cache/nar/{gone_nar}"))).unwrap();
    fs::remove_file(dir.join(format!("binary_cache/{gone_narinfo}"))).unwrap();
    next_second().await;
    let third = run(&opts(false)).await.unwrap();
    assert_eq!(third.unpinned, vec![first.root], "{third:?}");
    assert!(!third.collected && !third.collection_skipped, "{third:?}");
    assert!(node_has_block(&client, &gone_block).await);
    assert_eq!(
        fs::read_to_string(&pending).unwrap(),
        format!("{}\n", third.node.clone().unwrap())
    );

    // 4: nothing new, with --ipfs-gc: the garbage the third run left is collected.
    next_second().await;
    let fourth = run(&opts(true)).await.unwrap();
    assert_eq!(fourth.root, third.root);
    assert_eq!(fourth.sent.blocks_sent, 0, "{fourth:?}");
    assert!(fourth.collected, "{fourth:?}");
    assert!(!node_has_block(&client, &gone_block).await);
    assert!(!pending.exists());

    // 5: nothing new again: nothing to collect.
    next_second().await;
    let fifth = run(&opts(true)).await.unwrap();
    assert!(!fifth.collected && fifth.collection_skipped, "{fifth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_root_is_let_go_before_its_successor_is_published() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-successor");
    make_mirror(dir.path(), "successor");
    let api = ApiAddr::parse(&args(&[&node.url()])).unwrap();
    let keep_one = PublishOptions {
        keep: 1,
        ..options(dir.path(), Some(api), "/successor/nixfs")
    };
    let first = run(&keep_one).await.unwrap();

    // The second publication pins and copies its root, then fails (IPNS, under a key the node
    // does not have): the first root stays.
    add_store_path(dir.path(), "successor", 10, 3000);
    next_second().await;
    let err = run(&PublishOptions {
        ipns_key: Some("no-such-key".to_string()),
        ..keep_one.clone()
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("IPNS"), "{err:#}");
    let first_mfs = first.mfs_path.as_deref().unwrap();
    assert_eq!(stat_cid(&client, first_mfs).await, first.root);
    assert_eq!(
        pin_of(&client, &first.root).await.as_deref(),
        Some("recursive")
    );
    let log = fs::read_to_string(dir.join("ipfs_roots")).unwrap();
    assert!(log.lines().last().unwrap().contains(" pending "), "{log}");

    // The next successful one lets go of both the first and the failed one.
    add_store_path(dir.path(), "successor", 11, 3001);
    next_second().await;
    let third = run(&keep_one).await.unwrap();
    assert_eq!(third.unpinned.len(), 2, "{third:?}");
    assert!(third.unpinned.contains(&first.root));
    assert_eq!(pin_of(&client, &first.root).await, None);
    assert!(client.files_stat(first_mfs).await.unwrap().is_none());
    assert_eq!(
        stat_cid(&client, third.mfs_path.as_deref().unwrap()).await,
        third.root
    );
    assert_eq!(
        pin_of(&client, &third.root).await.as_deref(),
        Some("recursive")
    );
    let log = fs::read_to_string(dir.join("ipfs_roots")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_publishes_its_layout_and_switching_hashes_again_once() {
    let node = IpfsNode::shared();
    let client = client(node);
    let dir = TestDir::new("ipfs-profiles");
    make_mirror(dir.path(), "profiles");
    // A NAR of several 1 MiB chunks.
    let (_, nar) = add_store_path(dir.path(), "profiles", 5, 2_600_000);
    let nar_bytes = fs::read(dir.join(format!("binary_cache/nar/{nar}"))).unwrap();
    let api = ApiAddr::parse(&args(&[&node.url()])).unwrap();
    let mut release_cids = HashSet::new();
    for (profile, add, chunk, version) in [
        (Profile::UnixfsV1_2025, AddOptions::V1, 1 << 20, 1),
        (Profile::UnixfsV0_2015, AddOptions::KUBO_DEFAULT, 262_144, 0),
        (Profile::LegacyRawV0, AddOptions::V0_RAW_LEAVES, 262_144, 0),
    ] {
        let opts = |prefix: &str| PublishOptions {
            profile,
            publish_ipns: false,
            ..options(dir.path(), Some(api.clone()), prefix)
        };
        let report = run(&opts(&format!("/profiles-{profile}/nixfs")))
            .await
            .unwrap();
        assert_eq!(report.root.version(), version, "{profile}");
        // Switching profiles hashes every file again.
        assert_eq!(report.hashing.files_read, report.hashing.files, "{profile}");
        let mfs = report.mfs_path.as_deref().unwrap();
        // The node's own add with the profile's parameters gives the NAR's CID.
        let added = client
            .add_bytes_chunked("nar", nar_bytes.clone(), add, chunk)
            .await
            .unwrap();
        assert_eq!(
            stat_cid(&client, &format!("{mfs}/binary_cache/nar/{nar}")).await,
            added.cid,
            "{profile}"
        );
        let cache = fs::read_to_string(dir.join("ipfs_hashes")).unwrap();
        assert!(
            cache.contains(&format!("\nlayout {}\n", profile.layout().descriptor())),
            "{profile}"
        );
        // Once.
        let again = run(&opts(&format!("/profiles-{profile}-again/nixfs")))
            .await
            .unwrap();
        assert_eq!(again.root, report.root, "{profile}");
        assert_eq!(again.hashing.files_read, 0, "{profile}");
        // Never a release of an earlier profile, taken by its ipfs_hash.
        assert!(release_cids.insert(report.releases[0].1), "{profile}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_nixipfs_flags_choose_the_profile_and_the_roots_that_stay() {
    let own = IpfsNode::start();
    let client = client(&own);
    let dir = TestDir::new("ipfs-cli");
    make_mirror(dir.path(), "cli");
    let publish = || {
        let out = common::run_nixipfs([
            "create-nixipfs",
            "--dir",
            dir.path().to_str().unwrap(),
            "--ipfsapi",
            &own.url(),
            "--no-ipns",
            "--cid-profile",
            "unixfs-v1-2025",
            "--ipfs-keep",
            "1",
            "--ipfs-gc",
        ]);
        common::assert_success(&out);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let root = stdout
            .lines()
            .find_map(|l| l.strip_prefix("nixfs: /ipfs/"))
            .unwrap_or_else(|| panic!("no root in {stdout:?}"));
        Cid::parse(root).unwrap()
    };
    let first = publish();
    add_store_path(dir.path(), "cli", 10, 1234);
    next_second().await;
    let second = publish();
    assert_ne!(first, second);
    assert_eq!((first.version(), second.version()), (1, 1));
    assert_eq!(pin_of(&client, &first).await, None);
    assert_eq!(pin_of(&client, &second).await.as_deref(), Some("recursive"));
    let log = fs::read_to_string(dir.join("ipfs_roots")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    let cache = fs::read_to_string(dir.join("ipfs_hashes")).unwrap();
    assert!(
        cache.contains("\nlayout v1-raw-1048576-1024-block\n"),
        "{cache}"
    );
}

/// The status of `GET path` at `base` (`http://127.0.0.1:PORT`), 0 when nothing answers.
fn gateway_status(base: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").unwrap();
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    }
}

#[test]
fn a_nix_client_installs_a_closure_through_the_gateway() {
    // A mirror made by release-nixos from a cache that real Nix built and signed, published
    // with the default profile to a node that serves its HTTP gateway; a Nix client that
    // requires signatures by the cache's key installs closures from /ipfs/ROOT/binary_cache,
    // from a channel's view and from /ipns/NAME/binary_cache.
    common::nixcache::require_nix();
    let m = common::mirror::FixtureMirror::made("ipfs-gateway");
    let node = IpfsNode::start_with_gateway();
    let out = common::run_nixipfs([
        "create-nixipfs",
        "--dir",
        m.d().to_str().unwrap(),
        "--ipfsapi",
        &node.url(),
    ]);
    common::assert_success(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {stdout:?}"))
            .to_string()
    };
    let root = Cid::parse(&line("nixfs: /ipfs/")).unwrap();
    let name = line("published: /ipns/");
    assert_eq!(
        (root.version(), root.codec()),
        (1, DAG_PB),
        "the default profile"
    );
    let gw = node.gateway_url();
    let info = format!("/ipfs/{root}/binary_cache/nix-cache-info");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gateway_status(&gw, &info) != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway does not serve {info}:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let data = common::hydra::release_data();
    let p = &data.paths;
    let roots = vec![p.pkg1.clone(), p.channel1.clone(), p.pkgnp.clone()];
    for base in [
        format!("{gw}/ipfs/{root}/binary_cache"),
        format!("{gw}/ipns/{name}/binary_cache"),
    ] {
        let installed = common::nix_install_from(&base, &m.key, &roots)
            .unwrap_or_else(|e| panic!("installing from {base}: {e}"));
        assert_eq!(installed.closure, data.closure_of(&roots), "{base}");
    }
    let channel = common::hydra::names::NIXOS_CHANNEL;
    let base = format!("{gw}/ipfs/{root}/channels/{channel}/binary_cache");
    let roots = vec![p.pkg1.clone(), p.iso1.clone()];
    let installed = common::nix_install_from(&base, &m.key, &roots)
        .unwrap_or_else(|e| panic!("installing from {base}: {e}"));
    assert_eq!(installed.closure, data.closure_of(&roots), "{base}");

    // A complete closure never makes Nix ask for what the mirror lacks. A path it lacks is an
    // error, not "not here": js-ipfs's gateway answers 500 where kubo's answers 404, and Nix
    // retries a 500, then fails (see README, "Serving Nix clients from a gateway").
    let absent = common::nix_install_from(
        &format!("{gw}/ipfs/{root}/binary_cache"),
        &m.key,
        &["/nix/store/00000000000000000000000000000000-absent".to_string()],
    );
    let err = absent.expect_err("installed a path the mirror does not have");
    assert!(err.to_string().contains("HTTP error 500"), "{err}");
    // Signatures are required: a client trusting another key installs nothing.
    let other_key = "other-cache-1:MNx5MjF7nzO2k0fyClm0EW3jmiUhGNlJ6M0tbDhuuvA=";
    let refused = common::nix_install_from(
        &format!("{gw}/ipfs/{root}/binary_cache"),
        other_key,
        std::slice::from_ref(&p.pkg1),
    );
    let err = refused.expect_err("installed with a key that signed nothing");
    assert!(err.to_string().contains("signature"), "{err}");
}
