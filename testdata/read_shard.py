#!/usr/bin/env python3
"""read_shard: a numpy reader of .bin shards, written from the parameter-golf
loader's logic (train_gpt.py load_data_shard) rather than from our C code, so
that cmd/shard_test.sh can check that what `shard` writes is what PyTorch
training will read.

The loader's checks, in its order: the header is 256 little-endian int32; word 0
is the magic 20240520, word 1 the version 1, word 2 the token count; the file
size is exactly 1024 + 2 * count bytes; the tokens are little-endian uint16.

On top of that, when word 3 holds golfkit's marker "GKSH", the extras are
verified with an xxh64 written here in plain Python (independent of libxxhash;
slow, about a second a megabyte: meant for test-sized shards):
words 8-9 hold the xxh64 of header bytes 0..31, words 5-6 that of the token
bytes, word 4 the vocab (every token below it), word 7 the BOS id.

Usage: read_shard.py SHARD...   prints one JSON line per shard (file, tokens,
sum, max_token, checksum "ok" or "absent"); exits 1 on the first bad shard.
testdata/shard/make_fixtures.py imports xxh64 and the constants from here."""
import json
import os
import sys

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
EXTRAS = int.from_bytes(b"GKSH", "little")
NO_BOS = 0xFFFFFFFF

_M = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def _merge(h, v):
    return ((h ^ _round(0, v)) * _P1 + _P4) & _M


def xxh64(data, seed=0):
    """XXH64 of DATA (bytes) as in the reference specification."""
    n, p = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while p + 32 <= n:
            for i in range(4):
                v[i] = _round(v[i], int.from_bytes(data[p + 8 * i:p + 8 * i + 8], "little"))
            p += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for x in v:
            h = _merge(h, x)
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while p + 8 <= n:
        h ^= _round(0, int.from_bytes(data[p:p + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p:p + 4], "little") * _P1) & _M
        h = (_rotl(h, 23) * _P2 + _P3) & _M
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M
        h = (_rotl(h, 11) * _P1) & _M
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    return h ^ (h >> 32)


def load_data_shard(path):
    """The parameter-golf loader's checks; returns (header, tokens)."""
    import numpy as np

    header_bytes = HEADER_INTS * np.dtype("<i4").itemsize
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS or int(header[0]) != MAGIC or int(header[1]) != VERSION:
        raise ValueError(f"{path}: unexpected shard header")
    num_tokens = int(header[2])
    expected = header_bytes + num_tokens * np.dtype("<u2").itemsize
    if os.path.getsize(path) != expected:
        raise ValueError(f"{path}: shard size mismatch: expected {expected} bytes")
    tokens = np.fromfile(path, dtype="<u2", count=num_tokens, offset=header_bytes)
    if tokens.size != num_tokens:
        raise ValueError(f"{path}: short read")
    return header, tokens


def check_extras(path, header, tokens):
    """Verify golfkit's extras; returns "ok", or "absent" without the marker."""
    words = [int(w) & 0xFFFFFFFF for w in header[:10]]
    if words[3] != EXTRAS:
        return "absent"
    head = b"".join(w.to_bytes(4, "little") for w in words[:8])
    if xxh64(head) != words[8] | words[9] << 32:
        raise ValueError(f"{path}: header checksum mismatch")
    if xxh64(tokens.astype("<u2").tobytes()) != words[5] | words[6] << 32:
        raise ValueError(f"{path}: token checksum mismatch")
    vocab, bos = words[4], words[7]
    if not 1 <= vocab <= 65536 or (bos != NO_BOS and bos >= vocab):
        raise ValueError(f"{path}: bad vocab {vocab} or BOS {bos}")
    if tokens.size and int(tokens.max()) >= vocab:
        raise ValueError(f"{path}: token {int(tokens.max())} >= vocab {vocab}")
    return "ok"


def main(paths):
    for path in paths:
        try:
            header, tokens = load_data_shard(path)
            checksum = check_extras(path, header, tokens)
        except (ValueError, OSError) as e:
            print(f"read_shard.py: {e}", file=sys.stderr)
            return 1
        print(json.dumps({"file": path, "tokens": int(tokens.size),
                          "sum": int(tokens.sum(dtype="u8")),
                          "max_token": int(tokens.max()) if tokens.size else None,
                          "checksum": checksum}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
