#!/bin/sh
# shard_test: the shard tool end to end, as TAP. Token streams are made by the
# tool itself from hand-made shards (testdata/shard/, written by Python with its
# own xxh64, see make_fixtures.py): shard --cat turns a shard into a stream, and
# shard must turn that stream back into the very same bytes. Every bad input
# must give one line on stderr, exit 1, and leave no file behind (not even a
# .tmp). With $GK_VENV, testdata/read_shard.py (numpy, the parameter-golf
# loader's checks) must read what we wrote.
#
# Needs $GK_BIN (the tools), jq, od, python3; run by `make test` under prove.
set -u
: "${GK_BIN:?set GK_BIN to the directory of the tools}"
SHARD=$GK_BIN/shard
HERE=$(cd "$(dirname "$0")/.." && pwd)
FIX=$HERE/testdata/shard
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

n=0
failed=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
skip() { n=$((n + 1)); echo "ok $n # skip $1"; }
# Token bytes of a shard, one decimal id a line.
tokens() { od -An -tu2 -v -j1024 "$1" | tr -s ' ' '\n' | sed '/^$/d'; }
# fails DIR PATTERN CMD...: exit 1, one stderr line matching PATTERN, DIR empty.
fails() {
    dir=$1 pat=$2
    shift 2
    mkdir -p "$dir"
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    lines=$(wc -l <"$T/err")
    left=$(ls -A "$dir")
    if [ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q -- "$pat" "$T/err" && [ -z "$left" ]; then
        return 0
    fi
    echo "# rc=$rc, $lines stderr lines, left in $dir: '$left'" | tr '\n' ' '
    echo
    sed 's/^/# /' "$T/err"
    return 1
}

# --- the fixtures are what make_fixtures.py writes -------------------------
mkdir "$T/fix"
python3 "$FIX/make_fixtures.py" "$T/fix"
same=0
for f in small pg bad-count bad-magic bad-sum big-token; do
    cmp -s "$T/fix/$f.bin" "$FIX/$f.bin" || same=1
done
ok $same "testdata/shard fixtures are reproduced by make_fixtures.py"

# --- header layout: our writer gives the hand-made bytes ---------------------
"$SHARD" -q --cat "$FIX/small.bin" >"$T/small.ts"
ok $? "--cat of a hand-made shard"
"$SHARD" -q -o "$T/one" --prefix x "$T/small.ts" >"$T/one.json"
cmp -s "$T/one/x_train_000000.bin" "$FIX/small.bin"
ok $? "stream -> shard is byte for byte the hand-made small.bin (header words, extras, tokens)"
jq -e -s 'length == 2 and .[0].split == "train" and .[0].tokens == 12 and .[0].documents == 3
          and .[1].train_shards == 1 and .[1].val_shards == 0 and .[1].vocab == 16 and .[1].bos == 15' \
    "$T/one.json" >/dev/null
ok $? "JSON results: one shard line and a summary"

"$SHARD" --info "$FIX/small.bin" >"$T/info.json"
jq -e '.tokens == 12 and .bytes == 1048 and .version == 1 and .vocab == 16 and .bos == 15
       and .max_token == 15 and .distinct_tokens == 10 and .documents == 3 and .checksum == "ok"' \
    "$T/info.json" >/dev/null
ok $? "--info of a shard with extras"

# --- a parameter-golf shard (no extras) ------------------------------------
"$SHARD" --info "$FIX/pg.bin" >"$T/pg.json"
jq -e '.tokens == 6 and .vocab == null and .bos == null and .documents == null
       and .max_token == 1023 and .distinct_tokens == 5 and .checksum == "absent"' \
    "$T/pg.json" >/dev/null
ok $? "--info of a parameter-golf shard: checksum absent, vocab null"
fails "$T/e0" "give --vocab N" "$SHARD" --cat -o "$T/e0/pg.ts" "$FIX/pg.bin"
ok $? "--cat of a shard without extras needs --vocab"
"$SHARD" -q --cat --vocab 1024 "$FIX/pg.bin" | "$SHARD" -q -o "$T/pg" >/dev/null &&
    [ "$(tokens "$T/pg/data_train_000000.bin")" = "$(tokens "$FIX/pg.bin")" ]
ok $? "--cat --vocab 1024, then shard: the same tokens"

# --- several shards, validation split, round trip --------------------------
# 4 x small: 48 tokens, 12 documents [15 1 2 3] [15 4 5] [15 6 7 8 9] ...
"$SHARD" -q --cat "$FIX/small.bin" "$FIX/small.bin" "$FIX/small.bin" "$FIX/small.bin" >"$T/s4.ts"
"$SHARD" -q -o "$T/split" --shard-tokens 5 --val-docs 2 "$T/s4.ts" >"$T/split.json"
ok $? "--shard-tokens 5 --val-docs 2"
ls "$T/split" >"$T/names"
printf 'data_train_%06d.bin\n' 0 1 2 3 4 5 6 7 8 >"$T/want"
printf 'data_val_%06d.bin\n' 0 1 >>"$T/want"
cmp -s "$T/names" "$T/want"
ok $? "2 val shards and 9 train shards, nothing else"
counts=$(for f in "$T"/split/data_val_* "$T"/split/data_train_*; do "$SHARD" --info "$f"; done |
    jq -r .tokens | tr '\n' ' ')
[ "$counts" = "5 2 5 5 5 5 5 5 5 5 1 " ]
ok $? "token counts per shard: $counts"
val=$(for f in "$T"/split/data_val_*; do tokens "$f"; done | tr '\n' ' ')
[ "$val" = "15 1 2 3 15 4 5 " ]
ok $? "val holds exactly the first 2 documents: $val"
jq -e -s '.[-1] | .val_documents == 2 and .train_documents == 10 and .val_tokens == 7
          and .train_tokens == 41 and .tokens == 48' "$T/split.json" >/dev/null
ok $? "summary: val 2 documents / 7 tokens, train 10 / 41"
"$SHARD" -q --cat -o "$T/back.ts" "$T"/split/data_val_* "$T"/split/data_train_* >/dev/null &&
    cmp -s "$T/back.ts" "$T/s4.ts"
ok $? "round trip: stream -> 11 shards -> --cat gives the same stream bytes"

# --val-frac from a pipe (spooled in DIR, and nothing of the spool left)
cat "$T/s4.ts" | "$SHARD" -q -o "$T/frac" --val-frac 0.25 >"$T/frac.json"
jq -e -s '.[-1] | .val_documents == 3 and .train_documents == 9' "$T/frac.json" >/dev/null &&
    [ "$(ls -A "$T/frac" | tr '\n' ' ')" = "data_train_000000.bin data_val_000000.bin " ]
ok $? "--val-frac 0.25 of 12 documents from a pipe: 3 val documents, no spool left"
"$SHARD" -q -o "$T/frac2" --val-frac 0.25 "$T/s4.ts" >/dev/null &&
    cmp -s "$T/frac/data_val_000000.bin" "$T/frac2/data_val_000000.bin"
ok $? "--val-frac on a regular file (read twice) gives the same val shard"

# --- the numpy reader written from the parameter-golf loader ---------------
if [ -n "${GK_VENV:-}" ]; then
    good=0
    for f in "$T"/split/*.bin "$FIX/small.bin" "$FIX/pg.bin"; do
        py=$("$GK_VENV/bin/python" "$HERE/testdata/read_shard.py" "$f") || { good=1; break; }
        info=$("$SHARD" --info "$f")
        sum=$(tokens "$f" | awk '{ s += $1 } END { print s + 0 }')
        [ "$(echo "$py" | jq -c '[.tokens, .sum, .max_token, .checksum]')" = \
          "$(echo "$info" | jq -c --argjson s "$sum" '[.tokens, $s, .max_token, .checksum]')" ] ||
            { echo "# $f: $py vs $info, sum $sum"; good=1; }
    done
    ok $good "read_shard.py (numpy, parameter-golf checks, own xxh64) agrees with --info"
    "$GK_VENV/bin/python" "$HERE/testdata/read_shard.py" "$FIX/bad-sum.bin" 2>/dev/null
    [ $? -eq 1 ]
    ok $? "read_shard.py also refuses the corrupt shard"
else
    skip "GK_VENV not set: numpy reader not run"
    skip "GK_VENV not set: numpy reader not run"
fi

# --- bad inputs: one line, exit 1, nothing left ------------------------------
fails "$T/e1" "bad-count.bin: offset 8: expected 12 tokens (file size 1048), found header count 20" \
    "$SHARD" --cat -o "$T/e1/x.ts" "$FIX/bad-count.bin"
ok $? "header count disagreeing with the file size"
fails "$T/e2" "bad-magic.bin: offset 0: expected magic 20240520" "$SHARD" --info "$FIX/bad-magic.bin"
ok $? "wrong magic"
fails "$T/e3" "bad-sum.bin: offset 20: expected token checksum" \
    "$SHARD" --cat -o "$T/e3/x.ts" "$FIX/bad-sum.bin"
ok $? "checksum mismatch (one token byte changed)"
fails "$T/e4" "big-token.bin: offset 1028: expected a token id below vocab 10, found 12" \
    "$SHARD" --cat -o "$T/e4/x.ts" "$FIX/big-token.bin"
ok $? "token >= vocab"
size=$(wc -c <"$T/s4.ts")
head -c $((size - 10)) "$T/s4.ts" >"$T/trunc.ts"
fails "$T/e5" "trunc.ts: offset" "$SHARD" -o "$T/e5" --shard-tokens 5 --val-docs 2 "$T/trunc.ts"
ok $? "truncated stream (end record cut): no shard and no .tmp left"
head -c 60 "$T/s4.ts" | fails "$T/e6" "stdin: offset" "$SHARD" -o "$T/e6"
ok $? "stream truncated inside a block"
fails "$T/e7" "stdin: offset 0: expected a token stream header, found empty input" \
    "$SHARD" -o "$T/e7" </dev/null
ok $? "empty input"
"$SHARD" -q --cat --vocab 1024 "$FIX/pg.bin" >"$T/nobos.ts"
fails "$T/e8" "offset 12: expected a BOS id" "$SHARD" -o "$T/e8" --val-docs 1 "$T/nobos.ts"
ok $? "--val-docs on a stream without BOS"
fails "$T/e9" "expected more than 12 documents" "$SHARD" -o "$T/e9" --val-docs 12 "$T/s4.ts"
ok $? "--val-docs leaving no training document"
"$SHARD" -q -o "$T/stale" --shard-tokens 20 "$T/s4.ts" >/dev/null
"$SHARD" -q -o "$T/stale" --shard-tokens 30 "$T/s4.ts" >"$T/out" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && grep -q "data_train_000002.bin: expected no train shard beyond the 2" "$T/err" &&
    [ "$(ls -A "$T/stale" | tr '\n' ' ')" = "data_train_000000.bin data_train_000001.bin data_train_000002.bin " ]
ok $? "a stale shard from a longer run is refused, and the old files stay as they were"

# --- usage -----------------------------------------------------------------
"$SHARD" --val-docs 1 --val-frac 0.1 "$T/s4.ts" >/dev/null 2>&1
[ $? -eq 2 ]
ok $? "--val-docs with --val-frac: exit 2"
"$SHARD" --bogus >/dev/null 2>&1
[ $? -eq 2 ]
ok $? "unknown flag: exit 2"
"$SHARD" --help | grep -q -- "--shard-tokens"
ok $? "--help"

echo "1..$n"
[ $failed -eq 0 ]
