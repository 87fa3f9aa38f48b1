#!/usr/bin/env python3
"""Prints the CIDs (hex of their bytes) of the blocks of a CARv1 file, one a line.

    python3 car_blocks.py FILE.car
"""
import sys

def varint(b, i):
    x = s = 0
    while True:
        c = b[i]; i += 1
        x |= (c & 0x7f) << s; s += 7
        if c < 0x80:
            return x, i

data = open(sys.argv[1], "rb").read()
n, i = varint(data, 0)
i += n
out = []
while i < len(data):
    n, j = varint(data, i)
    end = j + n
    if data[j] == 0x12 and data[j + 1] == 0x20:
        cid = data[j:j + 34]
    else:
        k = j
        _, k = varint(data, k); _, k = varint(data, k); _, k = varint(data, k); ln, k = varint(data, k)
        cid = data[j:k + ln]
    out.append(cid.hex())
    i = end
sys.stdout.write("\n".join(out) + "\n")
