"""craft: write golfkit files from their man5 pages alone, valid or broken on
purpose, for the tests. Independent of the C writers, so a test that reads what
this writes checks the C reader against the documented layout, not against
itself.

usage:
  craft.py tok OUT [--vocab V] [--merges "a b;c d"] [--special NAME]... [--pretok P]
  craft.py stream OUT --vocab V --bos B TOKEN...   (tokens may be >= vocab on purpose)
"""
import struct
import sys

import xxhash


def tok_bytes(vocab, merges, specials, pretok):
    body = b"GKTK" + struct.pack("<5I", 1, vocab, len(merges), len(specials), pretok)
    for a, b in merges:
        body += struct.pack("<2I", a, b)
    for s in specials:
        body += struct.pack("<I", len(s)) + s
    return body + struct.pack("<Q", xxhash.xxh64(body, seed=0).intdigest())


def stream_bytes(vocab, bos, tokens):
    head = b"GKTS" + struct.pack("<3I", 1, vocab, bos)
    out = head + struct.pack("<Q", xxhash.xxh64(head, seed=0).intdigest())
    blocks = 0
    if tokens:
        data = struct.pack("<%dH" % len(tokens), *tokens)
        out += struct.pack("<I", len(tokens)) + data
        out += struct.pack("<Q", xxhash.xxh64(data, seed=0).intdigest())
        blocks = 1
    counts = struct.pack("<2Q", len(tokens), sum(t == bos for t in tokens))
    return out + struct.pack("<2I", 0, 0) + counts + struct.pack(
        "<Q", xxhash.xxh64(counts, seed=blocks).intdigest())


def main(argv):
    kind, out, rest = argv[1], argv[2], argv[3:]
    opts = {"--vocab": None, "--merges": "", "--pretok": "1", "--bos": "0"}
    specials, tokens = [], []
    i = 0
    while i < len(rest):
        if rest[i] == "--special":
            specials.append(rest[i + 1].encode())
            i += 2
        elif rest[i] in opts:
            opts[rest[i]] = rest[i + 1]
            i += 2
        else:
            tokens.append(int(rest[i]))
            i += 1
    if kind == "tok":
        merges = [tuple(int(x) for x in m.split()) for m in opts["--merges"].split(";") if m]
        specials = specials or [b"<|bos|>"]
        vocab = int(opts["--vocab"]) if opts["--vocab"] else 256 + len(merges) + len(specials)
        data = tok_bytes(vocab, merges, specials, int(opts["--pretok"]))
    else:
        data = stream_bytes(int(opts["--vocab"]), int(opts["--bos"]), tokens)
    with open(out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main(sys.argv)
