#!/bin/sh
# pack_every_byte: every byte of a small .pack, changed, is caught by the tool.
# moe-pack packs a made-up model (the .qst is opaque to it), a crafted
# tokenizer and a config, once with each codec; then every byte of each
# artifact in turn is inverted (one file per byte), and `moe-pack --verify`
# must refuse every one of those files: exit 1, nothing on stdout, one line
# on stderr naming that file and an offset. lib/pack_test.c goes further on
# the reader alone: all 255 other values of every byte, and every truncation.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

cd "$tmp"
head -c 64 /dev/urandom > m.qst
printf '{"model": {"vocab": 257}}\n' > c.json
"$py" "$top/testdata/craft.py" tok t.tok

for codec in zstd xz; do
    "$bin/moe-pack" -o "$codec.pack" --codec "$codec" --model m.qst --tokenizer t.tok \
        --config c.json > /dev/null
    ok "$codec: the good pack verifies" sh -c "'$bin/moe-pack' --verify $codec.pack > /dev/null"
    size=$(wc -c < "$codec.pack")
    rm -rf flip
    mkdir flip
    "$py" - "$codec.pack" <<'PY'
import sys
good = open(sys.argv[1], "rb").read()
for i in range(len(good)):
    bad = bytearray(good)
    bad[i] ^= 0xFF
    open("flip/%05d.pack" % i, "wb").write(bad)
PY
    : > rcs
    : > err
    for f in flip/*.pack; do
        "$bin/moe-pack" --verify "$f" >> out 2>> err
        echo $? >> rcs
    done
    ok "$codec: all $size inverted bytes of a $size-byte pack are refused (exit 1)" \
        test "$(grep -cx 1 rcs)" = "$size"
    ok "$codec: nothing on stdout for any of them" test ! -s out
    # one line per file, in file order, each naming that file and an offset
    ls flip/*.pack | sed 's|^|moe-pack: |; s|$|: offset|' > want
    sed 's/\(: offset\) [0-9]*: expected .*/\1/' err > got
    ok "$codec: each refusal is one line naming its file and an offset" cmp want got
done

tap_end
