"""A stand-in for the original release scripts' way of mirroring a closure: Python's urllib with
a pool of threads, walking the closure level by level (all narinfos of one level, then the next),
then downloading every NAR and checking its sha256 against FileHash. No signature checks (the
standard library has no Ed25519). One new connection per request, as urllib does.

usage: fetcher.py BASE_URL STORE_PATHS_FILE OUTDIR THREADS
"""

import concurrent.futures
import hashlib
import os
import sys
import urllib.request

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32_decode(s, size):
    out = bytearray(size)
    for n, c in enumerate(reversed(s)):
        digit = ALPHABET.index(c)
        b = n * 5
        i, j = b // 8, b % 8
        out[i] |= (digit << j) & 0xFF
        if i + 1 < size:
            out[i + 1] |= digit >> (8 - j)
    return bytes(out)


def get(url):
    with urllib.request.urlopen(url) as r:
        return r.read()


def main():
    base, roots_file, outdir, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(os.path.join(outdir, "nar"), exist_ok=True)
    with open(roots_file) as f:
        level = [line.strip()[len("/nix/store/"):][:32] for line in f if line.strip()]
    seen = set(level)
    nars = {}
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        while level:
            texts = list(pool.map(lambda h: get(f"{base}/{h}.narinfo"), level))
            following = []
            for h, text in zip(level, texts):
                with open(os.path.join(outdir, h + ".narinfo"), "wb") as f:
                    f.write(text)
                fields = dict(
                    line.split(": ", 1) for line in text.decode().splitlines() if ": " in line
                )
                nars[fields["URL"]] = fields["FileHash"]
                for ref in fields.get("References", "").split():
                    r = ref[:32]
                    if r not in seen:
                        seen.add(r)
                        following.append(r)
            level = following

        def fetch(item):
            url, file_hash = item
            want = nix32_decode(file_hash.split(":", 1)[1], 32)
            h = hashlib.sha256()
            dest = os.path.join(outdir, url)
            with urllib.request.urlopen(f"{base}/{url}") as r, open(dest + ".tmp", "wb") as f:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    f.write(chunk)
            if h.digest() != want:
                os.unlink(dest + ".tmp")
                raise RuntimeError(f"{url}: sha256 mismatch")
            os.rename(dest + ".tmp", dest)

        list(pool.map(fetch, sorted(nars.items())))
    print(f"{len(seen)} paths, {len(nars)} NARs")


if __name__ == "__main__":
    main()
