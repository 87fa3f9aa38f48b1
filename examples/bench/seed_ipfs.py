"""A stand-in for the original release scripts' way of publishing a mirror to IPFS
(create_nixipfs.py): sequential, one HTTP call at a time over one kept-alive connection, as
the scripts' ipfsapi client did.

- `files/mkdir /nixfs_T`, then the global binary cache: one `add` (pin=false, raw-leaves=true)
  per NAR, then one `files/cp /ipfs/CID /nixfs_T/binary_cache/nar/NAME` per NAR in name order; the same for nix-cache-info; then one `add` per narinfo, its bytes with an added
  `IPFSHash: CID` line (the CID of its NAR), and one `files/cp` per narinfo; `files/flush` of
  the directory.
- Each release directory: `add` of the files whose names hold binary-cache-url, git-revision,
  nixexprs.tar.xz, .iso, src-url or store-paths.xz, a `files/cp` each, then the release's
  binary_cache/ view as above (its files are in the name -> CID cache by then, so only
  `files/cp`), `files/stat` of the release for its CID, `files/flush`.
- Each channel (a link to a release): `files/cp` of the release's CID.
- `files/stat` of the root, `files/flush`, `pin/add`, `name/publish` (lifetime 2h).

Differences from the scripts. One changes a call: `files/cp` is sent with flush=true (the
default), not flush=false, which js-ipfs 0.66.1 cannot do (see `Api.cp`). None of the others
changes the calls made: nothing is written into
the mirror (the scripts rewrote each narinfo in place with its fields sorted, wrote ipfs_hash
into each release and saved ipfs_hashes; here the narinfo's bytes are sent with the line
appended, and the release's CID is kept in memory for its channel); the cache of CIDs starts
empty (a run from nothing).

With --limit N, only every k-th narinfo (in name order) and its NAR are published, k chosen
so that about N narinfos are, for a run on a deterministic subset; the release's view is cut
down the same way.

Prints a summary line and writes `KEY CID` lines (KEY relative to the mirror) for every file
of the global binary cache to --listing, if given.

usage: seed_ipfs.py HOST PORT MIRROR_DIR [--limit N] [--listing FILE]
"""

import argparse
import base64
import http.client
import json
import os
import time
import urllib.parse

RELEASE_VALID_PATHS = [
    "binary-cache-url",
    "git-revision",
    "nixexprs.tar.xz",
    ".iso",
    "src-url",
    "store-paths.xz",
]
BOUNDARY = "nixipfs-seed-stand-in-boundary"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def canonical_cid(text):
    """A CIDv1 that js-ipfs gave in base58btc (`z...`) in its canonical base32 form (`b...`);
    anything else as it is."""
    if not text.startswith("z"):
        return text
    n = 0
    for c in text[1:]:
        n = n * 58 + B58.index(c)
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(text[1:]) - len(text[1:].lstrip("1"))) + raw
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


class Api:
    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=600)
        self.calls = {}

    def call(self, command, args=(), body=None, **opts):
        query = [("arg", a) for a in args] + [(k.replace("_", "-"), v) for k, v in opts.items()]
        path = "/api/v0/" + command
        if query:
            path += "?" + urllib.parse.urlencode(query)
        headers = {}
        if body is not None:
            headers["Content-Type"] = "multipart/form-data; boundary=" + BOUNDARY
        self.conn.request("POST", path, body=body if body is not None else b"", headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        self.calls[command] = self.calls.get(command, 0) + 1
        if response.status != 200:
            raise RuntimeError(f"{command} {args}: HTTP {response.status}: {data[:300]!r}")
        return data

    def add(self, name, content):
        body = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{urllib.parse.quote(name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()
        data = self.call("add", body=body, pin="false", raw_leaves="true")
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return canonical_cid(lines[-1]["Hash"])

    def add_file(self, path):
        with open(path, "rb") as f:
            return self.add(os.path.basename(path), f.read())

    def mkdir(self, path, parents=False):
        self.call("files/mkdir", [path], parents=str(parents).lower())

    def cp(self, src, dest):
        # The scripts sent flush=false. js-ipfs 0.66.1 then computes the new directory nodes
        # without storing them and waits forever for their blocks (the call never returns),
        # so this sends its default, flush=true, which stores each new directory block.
        self.call("files/cp", [src, dest])

    def flush(self, path):
        self.call("files/flush", [path])

    def stat(self, path):
        return canonical_cid(json.loads(self.call("files/stat", [path]))["Hash"])


def selected_narinfos(cache_dir, limit):
    names = sorted(e for e in os.listdir(cache_dir) if e.endswith(".narinfo"))
    if limit and limit < len(names):
        step = len(names) / limit
        names = [names[int(i * step)] for i in range(limit)]
    return names


def nar_url(text):
    for line in text.splitlines():
        if line.startswith("URL: "):
            return line[len("URL: "):].strip()
    raise RuntimeError("narinfo without URL")


def add_binary_cache(api, local_dir, mfs_dir, hash_cache, limit, listing):
    cache_dir = os.path.join(local_dir, "binary_cache")
    mfs_cache = mfs_dir + "/binary_cache"
    api.mkdir(mfs_cache)
    api.mkdir(mfs_cache + "/nar")
    narinfos = selected_narinfos(cache_dir, limit)
    texts = {}
    for name in narinfos:
        with open(os.path.join(cache_dir, name), "rb") as f:
            texts[name] = f.read()
    if limit:
        nars = sorted({nar_url(texts[n].decode()).split("/", 1)[1] for n in narinfos})
    else:
        nars = sorted(e for e in os.listdir(os.path.join(cache_dir, "nar")) if ".nar" in e)
    for nar in nars:
        if nar not in hash_cache:
            hash_cache[nar] = api.add_file(os.path.join(cache_dir, "nar", nar))
    for nar in nars:
        api.cp("/ipfs/" + hash_cache[nar], f"{mfs_cache}/nar/{nar}")
    info = os.path.join(cache_dir, "nix-cache-info")
    if os.path.isfile(info):
        api.cp("/ipfs/" + api.add_file(info), mfs_cache + "/nix-cache-info")
    for name in narinfos:
        if name not in hash_cache:
            text = texts[name].decode()
            kept = [l for l in text.splitlines(True) if not l.startswith("IPFSHash:")]
            nar = nar_url(text).split("/", 1)[1]
            published = "".join(kept) + f"IPFSHash: {hash_cache[nar]}\n"
            hash_cache[name] = api.add(name, published.encode())
    for name in narinfos:
        api.cp("/ipfs/" + hash_cache[name], f"{mfs_cache}/{name}")
    api.flush(mfs_cache)
    if listing is not None:
        for nar in nars:
            listing.append(f"binary_cache/nar/{nar} {hash_cache[nar]}")
        for name in narinfos:
            listing.append(f"binary_cache/{name} {hash_cache[name]}")
    return len(nars) + len(narinfos)


def add_release(api, local_dir, mfs_dir, hash_cache, release_cids, limit):
    real = os.path.realpath(local_dir)
    if real in release_cids:
        api.mkdir(os.path.dirname(mfs_dir), parents=True)
        api.cp("/ipfs/" + release_cids[real], mfs_dir)
    else:
        api.mkdir(mfs_dir, parents=True)
        hashes = {}
        for f in sorted(os.listdir(local_dir)):
            if not any(p in f for p in RELEASE_VALID_PATHS):
                continue
            path = os.path.join(local_dir, f)
            if not os.path.isfile(path):
                continue
            if f in hash_cache:
                hashes[f] = hash_cache[f]
            else:
                hashes[f] = api.add_file(path)
                if f.endswith(".iso") or f.endswith(".ova"):
                    hash_cache[f] = hashes[f]
        for name, cid in hashes.items():
            api.cp("/ipfs/" + cid, f"{mfs_dir}/{name}")
        add_binary_cache(api, local_dir, mfs_dir, hash_cache, limit, None)
        release_cids[real] = api.stat(mfs_dir)
    api.flush(mfs_dir)


def subdirs(path):
    if not os.path.isdir(path):
        return []
    return sorted(
        os.path.join(path, e) for e in os.listdir(path) if os.path.isdir(os.path.join(path, e))
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("dir")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--listing")
    a = p.parse_args()
    api = Api(a.host, a.port)
    start = time.monotonic()
    root = f"/nixfs_{int(time.time())}"
    hash_cache = {}
    release_cids = {}
    listing = [] if a.listing else None
    api.mkdir(root)
    files = add_binary_cache(api, a.dir, root, hash_cache, a.limit, listing)
    for channel in subdirs(os.path.join(a.dir, "releases")):
        for release in subdirs(channel):
            name = os.path.basename(release)
            dest = f"{root}/releases/{os.path.basename(channel)}/{name}"
            add_release(api, release, dest, hash_cache, release_cids, a.limit)
    for channel in subdirs(os.path.join(a.dir, "channels")):
        dest = f"{root}/channels/{os.path.basename(channel)}"
        add_release(api, channel, dest, hash_cache, release_cids, a.limit)
    root_cid = api.stat(root)
    api.flush(root)
    api.call("pin/add", ["/ipfs/" + root_cid], recursive="true")
    published = json.loads(
        api.call(
            "name/publish",
            ["/ipfs/" + root_cid],
            lifetime="2h",
            resolve="false",
            allow_offline="true",
        )
    )
    if listing is not None:
        with open(a.listing, "w") as f:
            f.write("\n".join(listing) + "\n")
    calls = ", ".join(f"{k} {v}" for k, v in sorted(api.calls.items()))
    print(
        f"root {root_cid}; {files} binary-cache files; calls: {calls}; "
        f"published {published.get('Name')}; {time.monotonic() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
