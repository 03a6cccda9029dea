"""mutate: derive a broken file from a good one, deterministically, for the
bad-input tests (testdata/bad/cases.txt). The good files are made by the tools
at test time; each case names the edits that break one of them, so nothing
binary is stored and a change of format shows up as a failing case, not as a
stale fixture.

usage: mutate.py IN OUT EDIT...    (IN "-" starts from no bytes)

Edits apply left to right to the bytes of IN; OUT gets the result. Offsets and
counts are decimal, negative offsets count from the end.

  cut N          keep the first N bytes (N < 0: drop the last -N)
  flip OFF       invert every bit of the byte at OFF
  hex OFF HEX    overwrite bytes at OFF with HEX (e.g. 58585858)
  u16|u32|u64 OFF V   overwrite a little-endian unsigned integer (V may be
                 negative: two's complement)
  append HEX     add bytes at the end
  fix FMT        recompute the checksums of format FMT after the edits before
                 it, so that a reader gets past them to the check under test:
                   tok      the u64 xxh64 at the end (tok(5))
                   shard    the token and header checksums (shard(5))
                   tstream  the header, every block and the end record
                            (tstream(5); blocks are re-read from their n)
                   pack     the header checksum of bytes 0..55 (pack(5))
                   st       golfkit.xxh64 of the data buffer (safetensors(5))
  meta KEY VAL   safetensors: set __metadata__ KEY to the string VAL (the
                 header is rewritten and padded; golfkit.xxh64 is kept)
  unmeta KEY     safetensors: remove __metadata__ KEY
  field T K JSON safetensors: set field K of tensor T's entry to JSON
  f32 T I V      safetensors: element I of F32 tensor T becomes V (nan, inf
                 or a number); then `fix st` to pass the checksum
  i8 T I V       safetensors: byte I of tensor T (I8 or U8) becomes V
  f16 T I HEX    safetensors: element I of F16 tensor T becomes the 16 bits HEX
"""
import json
import struct
import sys

import xxhash


def xxh(b, seed=0):
    return xxhash.xxh64(bytes(b), seed=seed).intdigest()


def st_split(b):
    n = struct.unpack_from("<Q", b, 0)[0]
    return json.loads(bytes(b[8:8 + n]).decode()), bytearray(b[8 + n:])


def st_join(hdr, data):
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return bytearray(struct.pack("<Q", len(text)) + text + data)


def st_elem(hdr, data, name, i, size):
    begin = hdr[name]["data_offsets"][0]
    return begin + i * size


def fix(b, fmt):
    if fmt == "tok":
        struct.pack_into("<Q", b, len(b) - 8, xxh(b[:-8]))
    elif fmt == "shard":
        n = struct.unpack_from("<i", b, 8)[0]
        struct.pack_into("<Q", b, 20, xxh(b[1024:1024 + 2 * n]))
        struct.pack_into("<Q", b, 32, xxh(b[:32]))
    elif fmt == "tstream":
        struct.pack_into("<Q", b, 16, xxh(b[:16]))
        at, k = 24, 0
        while True:
            n = struct.unpack_from("<I", b, at)[0]
            if n == 0:
                struct.pack_into("<Q", b, at + 24, xxh(b[at + 8:at + 24], k))
                break
            struct.pack_into("<Q", b, at + 4 + 2 * n, xxh(b[at + 4:at + 4 + 2 * n], k))
            at, k = at + 4 + 2 * n + 8, k + 1
    elif fmt == "pack":
        struct.pack_into("<Q", b, 56, xxh(b[:56]))
    elif fmt == "st":
        hdr, data = st_split(b)
        hdr["__metadata__"]["golfkit.xxh64"] = "%016x" % xxh(data)
        b[:] = st_join(hdr, data)
    else:
        sys.exit("mutate: fix: unknown format " + fmt)


def main(argv):
    src, out, ed = argv[1], argv[2], argv[3:]
    b = bytearray() if src == "-" else bytearray(open(src, "rb").read())
    i = 0
    while i < len(ed):
        op = ed[i]
        if op == "cut":
            n = int(ed[i + 1])
            b = b[:n] if n >= 0 else b[:len(b) + n]
            i += 2
        elif op == "flip":
            b[int(ed[i + 1])] ^= 0xFF
            i += 2
        elif op == "hex":
            off, h = int(ed[i + 1]), bytes.fromhex(ed[i + 2])
            off = off if off >= 0 else len(b) + off
            b[off:off + len(h)] = h
            i += 3
        elif op in ("u16", "u32", "u64"):
            bits = int(op[1:])
            off, v = int(ed[i + 1]), int(ed[i + 2]) % (1 << bits)
            struct.pack_into("<" + {16: "H", 32: "I", 64: "Q"}[bits], b, off, v)
            i += 3
        elif op == "append":
            b += bytes.fromhex(ed[i + 1])
            i += 2
        elif op == "fix":
            fix(b, ed[i + 1])
            i += 2
        elif op == "meta":
            hdr, data = st_split(b)
            hdr["__metadata__"][ed[i + 1]] = ed[i + 2]
            b = st_join(hdr, data)
            i += 3
        elif op == "unmeta":
            hdr, data = st_split(b)
            del hdr["__metadata__"][ed[i + 1]]
            b = st_join(hdr, data)
            i += 2
        elif op == "field":
            hdr, data = st_split(b)
            hdr[ed[i + 1]][ed[i + 2]] = json.loads(ed[i + 3])
            b = st_join(hdr, data)
            i += 4
        elif op in ("f32", "i8", "f16"):
            hdr, data = st_split(b)
            size = {"f32": 4, "i8": 1, "f16": 2}[op]
            at = st_elem(hdr, data, ed[i + 1], int(ed[i + 2]), size)
            v = ed[i + 3]
            if op == "f32":
                struct.pack_into("<f", data, at, float(v))
            elif op == "i8":
                struct.pack_into("<b", data, at, int(v))
            else:
                struct.pack_into("<H", data, at, int(v, 16))
            b = st_join(hdr, data)
            i += 4
        else:
            sys.exit("mutate: unknown edit " + op)
    open(out, "wb").write(b)


if __name__ == "__main__":
    main(sys.argv)
