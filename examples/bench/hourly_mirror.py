#!/usr/bin/env python3
"""A mirror that changes hour by hour, for the IPFS lifecycle numbers (the `ipfs-hourly` case).

    python3 hourly_mirror.py init DIR PATHS [SIZES]
    python3 hourly_mirror.py hour DIR HOUR NEW KEEP [SIZES]

`init` writes DIR/binary_cache with PATHS narinfos and their NARs, and the release
DIR/releases/bench/hour-0000 whose binary_cache/ is a view of every path (relative symlinks),
which the channel link points at.

`hour` adds NEW store paths and a release DIR/releases/bench/hour-HOUR whose view links to
the newest paths (as many as the mirror had before, so the releases slide over the paths),
points the channel at it, then collects the mirror as its garbage collection would: releases
beyond the newest KEEP are removed, and so are the paths of the global cache that no kept
release links to.

Both print the bytes of the files the mirror publishes, each real file once, as the last
word of their line.

SIZES is the distribution of the NAR (.nar.xz) sizes, bytes:
  lognormal:MEDIAN:SIGMA:MIN:MAX  log-normal around MEDIAN (SIGMA in natural log units),
                                  clamped to [MIN, MAX];
  loguniform:LOW:HIGH             log-uniform between LOW and HIGH (the scale mirror's sizes).
The default, lognormal:40960:2.0:200:67108864, is shaped like cache.nixos.org's NARs: many of
a few KB, a median of 40 KiB, one in 40 above 2 MiB, a few up to tens of MB. NARs are random
bytes (as compressed data is); the same arguments give the same bytes.
"""

import math
import os
import random
import shutil
import sys

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
DEFAULT_SIZES = "lognormal:40960:2.0:200:67108864"
SIG = "A" * 86 + "=="


def size_sampler(spec):
    kind, *params = spec.split(":")
    try:
        values = [float(p) for p in params]
    except ValueError:
        sys.exit(f"hourly_mirror.py: bad size distribution {spec!r}")
    if kind == "lognormal" and len(values) == 4:
        median, sigma, low, high = values
        return lambda rng: int(min(high, max(low, rng.lognormvariate(math.log(median), sigma))))
    if kind == "loguniform" and len(values) == 2:
        low, high = math.log(values[0]), math.log(values[1])
        return lambda rng: int(math.exp(rng.uniform(low, high)))
    sys.exit(
        f"hourly_mirror.py: bad size distribution {spec!r} "
        "(lognormal:MEDIAN:SIGMA:MIN:MAX or loguniform:LOW:HIGH)"
    )


def write_random(path, rng, size):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n


def add_path(cache, rng, sizes, n):
    h = "".join(rng.choice(NIX32) for _ in range(32))
    size = sizes(rng)
    nar = f"{h}.nar.xz"
    write_random(os.path.join(cache, "nar", nar), rng, size)
    text = (
        f"StorePath: /nix/store/{h}-pkg-{n}\nURL: nar/{nar}\nCompression: xz\n"
        f"FileHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n"
        f"FileSize: {size}\n"
        f"NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\n"
        f"NarSize: {size * 3}\nReferences: \nSig: cache.example.org-1:{SIG}\n"
    ).encode()
    with open(os.path.join(cache, f"{h}.narinfo"), "wb") as f:
        f.write(text)
    return h


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


def paths(cache):
    """The paths in the order they came: the oldest first (by narinfo mtime, then name)."""
    names = [n[: -len(".narinfo")] for n in os.listdir(cache) if n.endswith(".narinfo")]
    return sorted(names, key=lambda h: (os.stat(os.path.join(cache, h + ".narinfo")).st_mtime_ns, h))


def write_release(top, hour, window):
    release = os.path.join(top, "releases", "bench", f"hour-{hour:04}")
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


def init(top, count, sizes):
    rng = random.Random(1)
    cache = os.path.join(top, "binary_cache")
    os.makedirs(os.path.join(cache, "nar"), exist_ok=True)
    with open(os.path.join(cache, "nix-cache-info"), "wb") as f:
        f.write(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
    window = [add_path(cache, rng, sizes, n) for n in range(count)]
    write_release(top, 0, window)
    print(f"init: {count} paths, {published_bytes(top)}")


def hour_step(top, hour, new, keep, sizes):
    rng = random.Random(1000 + hour)
    cache = os.path.join(top, "binary_cache")
    before = len(paths(cache))
    for i in range(new):
        add_path(cache, rng, sizes, hour * 100000 + i)
    window = paths(cache)[-before:] if before else paths(cache)
    write_release(top, hour, window)
    # The mirror's garbage collection: old releases, then unreferenced paths.
    channel_dir = os.path.join(top, "releases", "bench")
    for old in sorted(os.listdir(channel_dir))[:-keep]:
        shutil.rmtree(os.path.join(channel_dir, old))
    wanted = set()
    for kept in os.listdir(channel_dir):
        kept_view = os.path.join(channel_dir, kept, "binary_cache")
        if os.path.isdir(kept_view):
            wanted.update(n[: -len(".narinfo")] for n in os.listdir(kept_view) if n.endswith(".narinfo"))
    removed = 0
    for h in paths(cache):
        if h not in wanted:
            os.remove(os.path.join(cache, f"{h}.narinfo"))
            os.remove(os.path.join(cache, "nar", f"{h}.nar.xz"))
            removed += 1
    print(f"hour {hour}: {new} new paths, {removed} collected, bytes published: {published_bytes(top)}")


def main():
    args = sys.argv[1:]
    if len(args) in (3, 4) and args[0] == "init":
        init(args[1], int(args[2]), size_sampler(args[3] if len(args) == 4 else DEFAULT_SIZES))
    elif len(args) in (5, 6) and args[0] == "hour":
        sizes = size_sampler(args[5] if len(args) == 6 else DEFAULT_SIZES)
        hour_step(args[1], int(args[2]), int(args[3]), int(args[4]), sizes)
    else:
        sys.exit(__doc__.strip().split("\n\n")[1])


main()
