"""hf_check: does Hugging Face `tokenizers` encode like golfkit?

Usage: python hf_check.py TOKENIZER_JSON TEXT IDS [--doc-end blank|line|nul|file]

TOKENIZER_JSON is what `tok-train --hf-json` wrote. TEXT is a UTF-8 text file,
cut into documents by the same rule as golfkit's --doc-end (lib/corpus.h; the
default, blank, ends a document after its first run of two or more newlines,
which stays with it). IDS holds golfkit's ids, one document a line, either a
JSON array (what `tok-encode --ids` prints) or decimal ids separated by
spaces. BOS is not part of either side.

Each document is encoded by `tokenizers` without special tokens, with
encode_special_tokens on (so a special's name in the text is plain text, as in
golfkit), and compared.
Prints one line per mismatching document (at most 10) and a summary; exits 0
when every document matches, 1 otherwise, 2 on bad usage.
"""
import json
import re
import sys

from tokenizers import Tokenizer


def documents(text, rule):
    if rule == "file":
        return [text] if text else []
    if rule == "line":
        return re.findall(r"[^\n]*\n|[^\n]+", text)
    if rule == "nul":
        return re.findall(r"[^\x00]*\x00|[^\x00]+", text)
    # blank: up to and with the first run of two or more newlines.
    return re.findall(r".*?\n\n+|.+", text, re.S)


def parse_ids(line):
    line = line.strip()
    if line.startswith("["):
        return json.loads(line)
    return [int(x) for x in line.split()]


def main(argv):
    args = argv[1:]
    rule = "blank"
    if "--doc-end" in args:
        i = args.index("--doc-end")
        rule = args[i + 1]
        del args[i:i + 2]
    if len(args) != 3 or rule not in ("blank", "line", "nul", "file"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    tok = Tokenizer.from_file(args[0])
    # golfkit never finds special tokens inside text; tokenizers does unless told
    # not to (a setting that tokenizer.json cannot carry).
    tok.encode_special_tokens = True
    with open(args[1], "rb") as f:
        text = f.read().decode("utf-8")
    docs = documents(text, rule)
    with open(args[2]) as f:
        ours = [parse_ids(line) for line in f if line.strip()]
    if len(ours) != len(docs):
        print(f"hf_check: {args[2]}: expected {len(docs)} documents, found {len(ours)}")
        return 1
    bad = 0
    for k, (doc, mine) in enumerate(zip(docs, ours)):
        theirs = tok.encode(doc, add_special_tokens=False).ids
        if theirs != mine:
            bad += 1
            if bad <= 10:
                at = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b),
                          min(len(theirs), len(mine)))
                print(f"hf_check: document {k} {doc[:40]!r}: token {at}: "
                      f"tokenizers {theirs[at:at + 5]}, golfkit {mine[at:at + 5]}")
        elif tok.decode(theirs, skip_special_tokens=False) != doc:
            bad += 1
            print(f"hf_check: document {k}: decode does not give the text back")
    print(f"hf_check: {len(docs) - bad}/{len(docs)} documents encode identically")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
