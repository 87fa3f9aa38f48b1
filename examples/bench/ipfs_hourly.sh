#!/bin/sh
# Simulated hourly publications of a mirror to an IPFS node, with the mirror's and the node's
# garbage collection between them (BENCHMARKS.md, "IPFS lifecycle: hourly publishes").
#
#   ipfs_hourly.sh NIXIPFS MIRROR PORT REPO HOURS NEW KEEP OUT
#
# MIRROR is a mirror written by scale_mirror.py and published nowhere yet; PORT the API port
# of a node started on 127.0.0.1 with its repository in REPO (tests/common starts one the same
# way). Hour 0 publishes the mirror as it is; each next hour hourly_mirror.py adds NEW store
# paths and a release, keeps KEEP releases and collects the rest of the mirror, and the mirror
# is published again with --ipfs-keep KEEP --ipfs-gc and a CAR file of the whole DAG. Prints a
# line per hour: blocks sent to the node, blocks of this DAG that the previous DAG did not
# have (from the two CAR files), blocks of the DAG, bytes the mirror publishes (each file
# once), the node's RepoSize (repo/stat) and the bytes of REPO/blocks, then wall, user and
# system seconds and peak RSS (KiB) of the publication.
set -e
bin=$1; dir=$2; port=$3; repo=$4; hours=$5; new=$6; keep=$7; out=$8
here=$(dirname "$0")
mkdir -p "$out"
api="127.0.0.1:$port"
publish() {
  /usr/bin/time -f "%e %U %S %M" "$bin" create-nixipfs --dir "$dir" --ipfsapi "$api" --no-ipns \
    --ipfs-keep "$keep" --ipfs-gc --car "$out/hour-$1.car" > "$out/hour-$1.out" 2> "$out/hour-$1.err"
}
repo_size() {
  curl -s -X POST "http://$api/api/v0/repo/stat" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["RepoSize"])'
}
publish 0
python3 "$here/car_blocks.py" "$out/hour-0.car" | sort > "$out/hour-0.blocks"
echo "hour sent_blocks new_blocks dag_blocks mirror_bytes repo_size blocks_bytes wall user sys rss_kib"
h=1
while [ "$h" -le "$hours" ]; do
  published=$(python3 "$here/hourly_mirror.py" "$dir" "$h" "$new" "$keep" \
    | sed 's/.*, \([0-9]*\) bytes published/\1/')
  publish "$h"
  python3 "$here/car_blocks.py" "$out/hour-$h.car" | sort > "$out/hour-$h.blocks"
  fresh=$(comm -13 "$out/hour-$((h - 1)).blocks" "$out/hour-$h.blocks" | wc -l)
  blocks=$(wc -l < "$out/hour-$h.blocks")
  sent=$(grep -o 'sent [0-9]* blocks' "$out/hour-$h.err" | tail -n 1 | cut -d' ' -f2)
  stored=$(du -sb --apparent-size "$repo/blocks" | cut -f1)
  rm -f "$out/hour-$((h - 1)).car"
  echo "$h $sent $fresh $blocks $published $(repo_size) $stored $(tail -n 1 "$out/hour-$h.err")"
  h=$((h + 1))
done
