#!/usr/bin/env python3
"""One simulated hour of a mirror written by scale_mirror.py, for the IPFS lifecycle numbers.

    python3 hourly_mirror.py DIR HOUR NEW [KEEP]

Adds NEW store paths (narinfo and NAR, random bytes as scale_mirror.py makes them) to
DIR/binary_cache and a release DIR/releases/bench/hour-HOUR whose binary_cache/ view links to
the newest paths (as many as the mirror had before, so the releases slide over the paths),
points the channel at it, then collects the mirror as its garbage collection would: releases
beyond the newest KEEP (default 3) are removed, and so are the paths of the global cache that
no kept release links to. Prints the published bytes of the mirror (each file once).
"""

import math
import os
import random
import shutil
import sys

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def add_path(cache, rng, n):
    low, high = math.log(300), math.log(24 * 1024)
    h = "".join(rng.choice(NIX32) for _ in range(32))
    size = int(math.exp(rng.uniform(low, high)))
    nar = f"{h}.nar.xz"
    with open(os.path.join(cache, "nar", nar), "wb") as f:
        f.write(rng.randbytes(size))
    text = (
        f"StorePath: /nix/store/{h}-pkg-{n}\nURL: nar/{nar}\nCompression: xz\n"
        f"NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n"
        f"NarSize: {size}\nReferences: \n"
    ).encode()
    with open(os.path.join(cache, f"{h}.narinfo"), "wb") as f:
        f.write(text)


def published_bytes(top):
    """Bytes of the files the mirror publishes, each real file once."""
    seen = set()
    total = 0
    for sub in ("binary_cache", "releases"):
        for root, _, files in os.walk(os.path.join(top, sub)):
            for name in files:
                if name.startswith(".") or name in ("lastsync", "ipfs_hash"):
                    continue
                real = os.path.realpath(os.path.join(root, name))
                if real in seen or not os.path.isfile(real):
                    continue
                seen.add(real)
                total += os.path.getsize(real)
    return total


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: hourly_mirror.py DIR HOUR NEW [KEEP]")
    top, hour, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    keep = int(sys.argv[4]) if len(sys.argv) == 5 else 3
    rng = random.Random(1000 + hour)
    cache = os.path.join(top, "binary_cache")
    # The paths in the order they came: the oldest first (by narinfo mtime, then name).
    def paths():
        names = [n[: -len(".narinfo")] for n in os.listdir(cache) if n.endswith(".narinfo")]
        return sorted(names, key=lambda h: (os.stat(os.path.join(cache, h + ".narinfo")).st_mtime_ns, h))
    before = len(paths())
    for i in range(new):
        add_path(cache, rng, hour * 100000 + i)
    window = paths()[-before:] if before else paths()
    channel_dir = os.path.join(top, "releases", "bench")
    release = os.path.join(channel_dir, f"hour-{hour:04}")
    view = os.path.join(release, "binary_cache")
    os.makedirs(os.path.join(view, "nar"), exist_ok=True)
    with open(os.path.join(view, "nix-cache-info"), "wb") as f:
        f.write(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
    for h in window:
        os.symlink(f"../../../../binary_cache/{h}.narinfo", os.path.join(view, f"{h}.narinfo"))
        os.symlink(
            f"../../../../../binary_cache/nar/{h}.nar.xz", os.path.join(view, "nar", f"{h}.nar.xz")
        )
    for name, data in (
        ("src-url", f"https://hydra.example/eval/{hour}\n".encode()),
        ("git-revision", f"{hour:040x}\n".encode()),
    ):
        with open(os.path.join(release, name), "wb") as f:
            f.write(data)
    link = os.path.join(top, "channels", "bench")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(f"../releases/bench/hour-{hour:04}", link)
    # The mirror's garbage collection: old releases, then unreferenced paths.
    releases = sorted(os.listdir(channel_dir))
    for old in releases[:-keep]:
        shutil.rmtree(os.path.join(channel_dir, old))
    wanted = set()
    for kept in os.listdir(channel_dir):
        kept_view = os.path.join(channel_dir, kept, "binary_cache")
        if os.path.isdir(kept_view):
            wanted.update(n[: -len(".narinfo")] for n in os.listdir(kept_view) if n.endswith(".narinfo"))
    removed = 0
    for h in paths():
        if h not in wanted:
            os.remove(os.path.join(cache, f"{h}.narinfo"))
            os.remove(os.path.join(cache, "nar", f"{h}.nar.xz"))
            removed += 1
    print(f"hour {hour}: {new} new paths, {removed} collected, {published_bytes(top)} bytes published")


main()
