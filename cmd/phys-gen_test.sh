#!/bin/sh
# phys-gen: the type list and its split, the same bytes from the same flags (in
# separate processes, so address-space layout cannot leak in), scenes that do
# not depend on how many follow them, JSON lines whose truth has one entry per
# `Frame` line and per object, --text equal to the JSON texts and read by
# tok-train/tok-encode as one document a scene, and bad usage giving one line
# and exit 2.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

pg() { "$bin/phys-gen" -q "$@"; }

pg --list > "$tmp/list"
ok "--list: 13 types, names unique, 3 held out, the rest trained" jq -e -s '
    length == 13 and (map(.type) | unique | length) == 13 and
    (map(select(.split == "heldout")) | length) == 3 and
    (map(select(.split == "trained")) | length) == 10' "$tmp/list"

pg --split all --scenes 26 --frames 12 --seed 5 > "$tmp/a.jsonl"
pg --split all --scenes 26 --frames 12 --seed 5 -o "$tmp/b.jsonl"
ok "the same flags give the same bytes (stdout and -o)" cmp "$tmp/a.jsonl" "$tmp/b.jsonl"
ok "-o leaves no temporary behind" test ! -e "$tmp/b.jsonl.tmp"
pg --split all --scenes 26 --frames 12 --seed 6 > "$tmp/c.jsonl"
ok "another seed gives other scenes" sh -c "! cmp -s '$tmp/a.jsonl' '$tmp/c.jsonl'"
pg --split all --scenes 9 --frames 12 --seed 5 > "$tmp/head.jsonl"
ok "scene k does not depend on --scenes" sh -c "head -9 '$tmp/a.jsonl' | cmp - '$tmp/head.jsonl'"

ok "--jsonl: 26 lines, each type twice in --list order, fields as documented" jq -e -s \
    --slurpfile list "$tmp/list" '
    length == 26 and (map(.type) == ($list | map(.type)) + ($list | map(.type))) and
    all(.[]; .seed == 5 and (.text | type) == "string" and (.truth.world | length) == 2) and
    (to_entries | all(.key == .value.scene))' "$tmp/a.jsonl"
ok "--jsonl: each split as --list says" jq -e -s --slurpfile list "$tmp/list" '
    ($list | map({(.type): .split}) | add) as $s | all(.[]; .split == $s[.type])' "$tmp/a.jsonl"
ok "truth: one frame per 'Frame N:' line, numbered 1.., one [x,y] per object" jq -e '
    (.text | [scan("(?m)^Frame ([0-9]+): (moving|settling|resting)$") | .[0] | tonumber]) as $f |
    (.text | [scan("(?m)^o[0-9]+ (circle|box) ")] | length) as $n |
    $f == [range(1; 13)] and (.truth.frames | length) == 12 and
    all(.truth.frames[]; length == $n and all(.[]; length == 2))' "$tmp/a.jsonl"
ok "truth: each printed position is its truth rounded to 0.1" jq -e '
    .truth.frames as $t |
    [.text | scan("(?m)^o([0-9]+) (-?[0-9]+\\.[0-9]),(-?[0-9]+\\.[0-9]) ") | map(tonumber)] as $p |
    ($p | length) == ($t | map(length) | add) and
    ([range(0; $p | length)] | all(. as $i | ($t | flatten(1))[$i] as $q |
        ($p[$i][1] - $q[0] | fabs) <= 0.0501 and ($p[$i][2] - $q[1] | fabs) <= 0.0501))' \
    "$tmp/a.jsonl"
ok "truth: every centre inside the world" jq -e '
    .truth.world as [$w, $h] | all(.truth.frames[][]; .[0] >= 0 and .[0] <= $w and .[1] >= 0 and .[1] <= $h)' \
    "$tmp/a.jsonl"

pg --split heldout --scenes 6 --frames 2 > "$tmp/h.jsonl"
ok "--split heldout: held-out types only" jq -e -s 'length == 6 and all(.[]; .split == "heldout")' "$tmp/h.jsonl"
pg --scenes 20 --frames 2 > "$tmp/t.jsonl"
ok "the default split is trained" jq -e -s 'all(.[]; .split == "trained")' "$tmp/t.jsonl"
pg --types orbit,pendulum --scenes 4 --frames 2 --objects 3-5 > "$tmp/o.jsonl"
ok "--types in turn; --objects MIN-MAX bounds each scene" jq -e -s '
    map(.type) == ["orbit", "pendulum", "orbit", "pendulum"] and
    all(.[]; (.truth.frames[0] | length) as $n | $n >= 3 and $n <= 5)' "$tmp/o.jsonl"

pg --text --split all --scenes 26 --frames 12 --seed 5 -o "$tmp/a.txt"
ok "--text: the JSON texts, a blank line between scenes" sh -c \
    "jq -r .text '$tmp/a.jsonl' | head -c -1 | cmp - '$tmp/a.txt'"
ok "--text: no blank line inside a scene" test "$(grep -c '^$' "$tmp/a.txt")" = 25
"$bin/tok-train" -q --vocab 300 -o "$tmp/p.tok" "$tmp/a.txt"
ok "tok-encode reads --text as one document a scene (blank-line rule)" test \
    "$("$bin/tok-encode" -q -t "$tmp/p.tok" --ids "$tmp/a.txt" | wc -l)" = 26
ok "and --jsonl's text fields likewise (--jsonl text)" test \
    "$("$bin/tok-encode" -q -t "$tmp/p.tok" --ids --jsonl text "$tmp/a.jsonl" | wc -l)" = 26

fails() { # fails DESCRIPTION RC PATTERN ARGS...: exit RC, one line matching PATTERN
    # (bad usage adds a line pointing at --help), nothing on stdout; PATTERN
    # has no single quote (it is quoted in sh -c), "." stands for one
    desc=$1 want=$2 pat=$3; shift 3
    "$bin/phys-gen" -q "$@" > "$tmp/stdout" 2> "$tmp/err"
    rc=$?
    lines=1; [ "$want" = 2 ] && lines=2
    ok "$desc (exit $rc)" sh -c "test $rc = $want && test \$(wc -l < '$tmp/err') = $lines &&
        test ! -s '$tmp/stdout' && head -1 '$tmp/err' | grep -qE -- '$pat'"
}
fails "--objects out of range" 2 "--objects: expected MIN-MAX with 1 <= MIN <= MAX <= 20, found .0-3." --objects 0-3
fails "--objects reversed" 2 "--objects: expected MIN-MAX .*found .9-2." --objects 9-2
fails "--objects not a range" 2 "--objects: expected MIN-MAX .*found .5." --objects 5
fails "--types with an unknown name" 2 "--types: expected type names from --list, found .pong." --types orbit,pong
fails "--split unknown" 2 "--split: expected trained, heldout or all, found .test." --split test
fails "--split with --types" 2 "--split and --types: expected one of them, found both" --split all --types orbit
fails "--jsonl with --text" 2 "--jsonl and --text: expected one of them, found both" --jsonl --text
fails "--frames 0" 2 "--frames: expected an integer in 1..100000, found .0." --frames 0
fails "--scenes not a number" 2 "--scenes: expected an integer .*found .ten." --scenes ten
fails "--dt out of range" 2 "--dt: expected a number .*found .-1." --dt -1
fails "an argument" 2 "expected no arguments, found .x." x
fails "an unknown option" 2 "expected an option of --help, found .--frobnicate." --frobnicate
fails "an option without its value" 2 "--seed: expected a value after it, found none" --seed
fails "-o in a missing directory" 1 "$tmp/no/x.jsonl" -o "$tmp/no/x.jsonl"
ok "--help exits 0 with usage" sh -c "'$bin/phys-gen' --help | grep -q 'usage: phys-gen'"

tap_end
