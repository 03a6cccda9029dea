#!/usr/bin/env python3
"""make_fixtures: writes the hand-made shards in this directory with Python's
struct and the plain-Python xxh64 of ../read_shard.py, independently of
lib/shardfile.c, so cmd/shard_test.sh can compare our writer's bytes with them.
Run it from anywhere: python3 testdata/shard/make_fixtures.py [DIR]

  small.bin      12 tokens, vocab 16, BOS 15, 3 documents, golfkit extras
  pg.bin         a parameter-golf shard: words 0..2 only, no extras
  bad-count.bin  small.bin with header count 20 for its 12 tokens
  bad-magic.bin  small.bin with magic 20240521
  bad-sum.bin    small.bin with the low byte of token 1 changed (1 -> 0)
  big-token.bin  valid extras saying vocab 10 over tokens up to 12"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from read_shard import EXTRAS, MAGIC, NO_BOS, VERSION, xxh64  # noqa: E402


def shard(tokens, vocab=None, bos=NO_BOS, count=None, magic=MAGIC):
    body = struct.pack("<%dH" % len(tokens), *tokens)
    words = [magic, VERSION, len(tokens) if count is None else count]
    if vocab is not None:
        tsum = xxh64(body)
        words += [EXTRAS, vocab, tsum & 0xFFFFFFFF, tsum >> 32, bos]
        head = struct.pack("<8I", *words)
        hsum = xxh64(head)
        words += [hsum & 0xFFFFFFFF, hsum >> 32]
    words += [0] * (256 - len(words))
    return struct.pack("<256I", *words) + body


SMALL = [15, 1, 2, 3, 15, 4, 5, 15, 6, 7, 8, 9]


def main(out):
    small = shard(SMALL, vocab=16, bos=15)
    files = {
        "small.bin": small,
        "pg.bin": shard([1023, 0, 5, 700, 1, 5]),
        "bad-count.bin": small[:8] + struct.pack("<I", 20) + small[12:],
        "bad-magic.bin": struct.pack("<I", MAGIC + 1) + small[4:],
        "bad-sum.bin": small[:1026] + b"\x00" + small[1027:],
        "big-token.bin": shard([9, 1, 12, 3], vocab=10, bos=9),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
