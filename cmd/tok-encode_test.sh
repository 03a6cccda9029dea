#!/bin/sh
# tok-encode: byte-exact round trips on real text, thread independence, JSONL
# documents, and every bad input giving one line, exit 1 and no output file.
# Runs the tools in $GK_BIN (the sanitizer build under `make test`); broken
# files are written by testdata/craft.py from the man5 pages.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${GK_BIN:-$top/bin}
py=${GK_VENV:-$top/build/venv}/bin/python
craft="$py $top/testdata/craft.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0
ok() { # ok DESCRIPTION COMMAND...
    desc=$1; shift
    n=$((n + 1))
    if "$@" > "$tmp/out" 2>&1; then echo "ok $n - $desc"
    else echo "not ok $n - $desc"; sed 's/^/#   /' "$tmp/out" | head -5; failed=$((failed + 1)); fi
}
# fails_cleanly DESCRIPTION PATTERN COMMAND...: exit 1, one stderr line matching
# PATTERN, and no file named out.* left in $tmp.
fails_cleanly() {
    desc=$1 pat=$2; shift 2
    "$@" > /dev/null 2> "$tmp/err"
    rc=$?
    lines=$(wc -l < "$tmp/err")
    left=$(ls "$tmp" | grep -c '^out\.' || true)
    ok "$desc (exit $rc, $lines line, $left files left)" \
        test "$rc" = 1 -a "$lines" = 1 -a "$left" = 0 -a -n "$(grep -E "$pat" "$tmp/err")"
}

en=$tmp/english.txt
cat "$top"/man/man*/* "$top"/lib/*.h > "$en"
utf=$top/testdata/text/utf8.txt
head -c 65536 "$bin/tok-encode" > "$tmp/binary"
"$bin/tok-train" -q --vocab 600 -o "$tmp/en.tok" "$en" "$utf"

roundtrip() { # roundtrip FILE [tok-encode flags]
    f=$1; shift
    "$bin/tok-encode" -q -t "$tmp/en.tok" "$@" -o "$tmp/rt.ts" "$f" &&
        "$bin/tok-encode" -q -d -t "$tmp/en.tok" -o "$tmp/rt.txt" "$tmp/rt.ts" &&
        cmp "$f" "$tmp/rt.txt"
}
ok "round trip: English text" roundtrip "$en"
ok "round trip: multi-byte UTF-8 in many scripts" roundtrip "$utf"
ok "round trip: binary bytes (NUL, invalid UTF-8), doc-end nul" roundtrip "$tmp/binary" --doc-end nul
for rule in blank line file; do
    ok "round trip: binary bytes, doc-end $rule" roundtrip "$tmp/binary" --doc-end $rule
done
ok "round trip through pipes (stdin to stdout)" sh -c \
    "'$bin/tok-encode' -q -t '$tmp/en.tok' < '$utf' | '$bin/tok-encode' -q -d -t '$tmp/en.tok' | cmp - '$utf'"

ok "compresses English: fewer tokens than bytes" sh -c \
    "'$bin/tok-encode' -q -t '$tmp/en.tok' --stats -o /dev/null '$en' 2>&1 | jq -e '.bytes_per_token > 2'"

# The same stream bytes whatever the thread count (2 and 3 cut inside chunks).
"$bin/tok-encode" -q -t "$tmp/en.tok" --threads 1 -o "$tmp/t1.ts" "$en" "$utf"
for th in 2 3; do
    "$bin/tok-encode" -q -t "$tmp/en.tok" --threads $th -o "$tmp/t$th.ts" "$en" "$utf"
    ok "stream with $th threads equals 1 thread" cmp "$tmp/t1.ts" "$tmp/t$th.ts"
done

# Documents: blank-line rule counted by hand; one BOS per document.
printf 'one\n\n\ntwo\nstill two\n\nthree' > "$tmp/docs.txt"
ok "blank-line rule: 3 documents" sh -c \
    "'$bin/tok-encode' -q -t '$tmp/en.tok' --stats -o /dev/null '$tmp/docs.txt' 2>&1 | jq -e '.documents == 3'"
ok "line rule: 7 documents (blank lines are documents too)" sh -c \
    "'$bin/tok-encode' -q -t '$tmp/en.tok' --doc-end line --stats -o /dev/null '$tmp/docs.txt' 2>&1 | jq -e '.documents == 7'"

# JSONL: each line's field is a document; decoding gives the texts joined.
jq -R -c '{id: 1, text: .}' "$utf" > "$tmp/docs.jsonl"
jq -j '.text' "$tmp/docs.jsonl" > "$tmp/jsonl_texts"
ok "JSONL: decode gives the concatenated texts" sh -c \
    "'$bin/tok-encode' -q -t '$tmp/en.tok' --jsonl text '$tmp/docs.jsonl' | '$bin/tok-encode' -q -d -t '$tmp/en.tok' | cmp - '$tmp/jsonl_texts'"
ok "JSONL: one document per line" sh -c \
    "test \$('$bin/tok-encode' -q -t '$tmp/en.tok' --jsonl text --ids '$tmp/docs.jsonl' | wc -l) = \$(wc -l < '$tmp/docs.jsonl')"
ok "--ids: one array per document (3 blank-line documents), ids below vocab" sh -c \
    "'$bin/tok-encode' -q -t '$tmp/en.tok' --ids '$utf' | jq -s -e 'length == 3 and ([.[][]] | all(. < 600))'"

# Bad inputs: one line, exit 1, no output file.
printf '' > "$tmp/empty"
fails_cleanly "empty input" "empty input" "$bin/tok-encode" -q -t "$tmp/en.tok" -o "$tmp/out.ts" "$tmp/empty"
head -c 100 "$tmp/en.tok" > "$tmp/trunc.tok"
fails_cleanly "truncated .tok" "trunc.tok: offset .*truncated" "$bin/tok-encode" -q -t "$tmp/trunc.tok" -o "$tmp/out.ts" "$en"
{ printf 'XKTK'; tail -c +5 "$tmp/en.tok"; } > "$tmp/magic.tok"
fails_cleanly "wrong magic in .tok" "offset 0: expected magic" "$bin/tok-encode" -q -t "$tmp/magic.tok" -o "$tmp/out.ts" "$en"
cp "$tmp/en.tok" "$tmp/flip.tok"
printf '\377' | dd of="$tmp/flip.tok" bs=1 seek=40 conv=notrunc 2>/dev/null
fails_cleanly "checksum mismatch in .tok" "expected checksum" "$bin/tok-encode" -q -t "$tmp/flip.tok" -o "$tmp/out.ts" "$en"
$craft tok "$tmp/vocab.tok" --vocab 70000
fails_cleanly "vocab out of range in .tok (checksum valid)" "offset 8: expected vocab" "$bin/tok-encode" -q -t "$tmp/vocab.tok" -o "$tmp/out.ts" "$en"
$craft tok "$tmp/merge.tok" --merges "97 98;300 99"
fails_cleanly "merge naming a later id in .tok" "merge 1: expected parts below 257" "$bin/tok-encode" -q -t "$tmp/merge.tok" -o "$tmp/out.ts" "$en"
$craft stream "$tmp/big.ts" --vocab 600 --bos 599 599 104 105 650
fails_cleanly "token id >= vocab in a stream" "offset 34: expected a token id below vocab 600, found 650" "$bin/tok-encode" -q -d -t "$tmp/en.tok" -o "$tmp/out.txt" "$tmp/big.ts"
"$bin/tok-encode" -q -t "$tmp/en.tok" -o "$tmp/good.ts" "$utf"
head -c $(($(wc -c < "$tmp/good.ts") - 10)) "$tmp/good.ts" > "$tmp/trunc.ts"
fails_cleanly "truncated stream" "expected 28 bytes of end record" "$bin/tok-encode" -q -d -t "$tmp/en.tok" -o "$tmp/out.txt" "$tmp/trunc.ts"
$craft stream "$tmp/v.ts" --vocab 700 --bos 1 1 2 3
fails_cleanly "stream vocab differs from the tokenizer's" "expected vocab 600 .*found 700" "$bin/tok-encode" -q -d -t "$tmp/en.tok" -o "$tmp/out.txt" "$tmp/v.ts"
printf '{"text": "a"}\n[1]\n' > "$tmp/bad.jsonl"
fails_cleanly "JSONL line that is not an object" "line 2: expected a JSON object, found a value of type array" "$bin/tok-encode" -q -t "$tmp/en.tok" --jsonl text -o "$tmp/out.ts" "$tmp/bad.jsonl"
printf '{"text": 5}\n' > "$tmp/bad2.jsonl"
fails_cleanly "JSONL field that is not a string" 'field "text": expected a string, found number' "$bin/tok-encode" -q -t "$tmp/en.tok" --jsonl text -o "$tmp/out.ts" "$tmp/bad2.jsonl"

# A FIFO (like /dev/null, not a regular file) is written in place, not renamed over.
mkfifo "$tmp/fifo"
cat "$tmp/fifo" > "$tmp/from_fifo" &
"$bin/tok-encode" -q -t "$tmp/en.tok" -o "$tmp/fifo" "$utf"
wait
ok "output to a FIFO: written through it, and it stays a FIFO" sh -c \
    "test -p '$tmp/fifo' && '$bin/tok-encode' -q -d -t '$tmp/en.tok' '$tmp/from_fifo' | cmp - '$utf'"

"$bin/tok-encode" --threads 0 -t "$tmp/en.tok" "$en" > /dev/null 2>&1
ok "bad usage exits 2" test $? = 2

echo "1..$n"
[ "$failed" = 0 ]
