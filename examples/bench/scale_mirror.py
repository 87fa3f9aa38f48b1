#!/usr/bin/env python3
"""Writes a mirror of PATHS store paths for the IPFS scale cases (examples/bench/ipfs.rs).

    python3 scale_mirror.py DIR PATHS [SEED]

DIR/binary_cache holds PATHS narinfos and their NARs (xz-named, random bytes of 300 B to 24 KiB,
log-uniform, so about 5.4 KiB on average), and one release, DIR/releases/bench/bench-1, whose
binary_cache/ is a view of every path (relative symlinks) and which the channel link points at.
The same SEED gives the same bytes. Files are what create-nixipfs publishes; nothing is signed
for real (create-nixipfs does not check signatures).
"""

import math
import os
import random
import sys

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: scale_mirror.py DIR PATHS [SEED]")
    top, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    cache = os.path.join(top, "binary_cache")
    release = os.path.join(top, "releases", "bench", "bench-1")
    view = os.path.join(release, "binary_cache")
    for d in (os.path.join(cache, "nar"), os.path.join(view, "nar"), os.path.join(top, "channels")):
        os.makedirs(d, exist_ok=True)
    info = b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
    for d in (cache, view):
        with open(os.path.join(d, "nix-cache-info"), "wb") as f:
            f.write(info)
    sig = "A" * 86 + "=="
    low, high = math.log(300), math.log(24 * 1024)
    total = 0
    for n in range(count):
        h = "".join(rng.choice(NIX32) for _ in range(32))
        size = int(math.exp(rng.uniform(low, high)))
        nar = f"{h}.nar.xz"
        with open(os.path.join(cache, "nar", nar), "wb") as f:
            f.write(rng.randbytes(size))
        text = (
            f"StorePath: /nix/store/{h}-pkg-{n}\nURL: nar/{nar}\nCompression: xz\n"
            f"FileHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n"
            f"FileSize: {size}\n"
            f"NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n"
            f"NarSize: {size}\nReferences: \nSig: cache.example.org-1:{sig}\n"
        ).encode()
        with open(os.path.join(cache, f"{h}.narinfo"), "wb") as f:
            f.write(text)
        total += size + len(text)
        os.symlink(f"../../../../binary_cache/{h}.narinfo", os.path.join(view, f"{h}.narinfo"))
        os.symlink(f"../../../../../binary_cache/nar/{nar}", os.path.join(view, "nar", nar))
    for name, data in (
        ("src-url", b"https://hydra.example/eval/1\n"),
        ("binary-cache-url", b"https://cache.example.org\n"),
        ("store-paths", b"/nix/store/x-pkg\n"),
        ("git-revision", b"0123456789abcdef\n"),
    ):
        with open(os.path.join(release, name), "wb") as f:
            f.write(data)
    link = os.path.join(top, "channels", "bench")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink("../releases/bench/bench-1", link)
    print(f"{count} store paths, {2 * count} files, {total} bytes")


main()
