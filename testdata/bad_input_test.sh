#!/bin/sh
# bad_input: every case of testdata/bad/cases.txt, one TAP line each. Good
# files are made first with the tools themselves (tokenizers, token streams,
# shards, a two-step model, its .qst and .pack, physics scenes); each case
# then breaks one of them in its own empty directory (testdata/bad/mutate.py
# cuts, flips, overwrites and re-checksums, so that each reaches the check it
# is about), runs one tool on it and asserts the contract of golfkit(7): exit
# 1 (2 for bad usage), nothing on stdout, one line on stderr naming the file,
# offset or field and the problem (usage errors add the "Try --help" line),
# and nothing left behind: the directory is exactly as the setup left it (no
# output, no NAME.tmp, no new directory). cases.txt says how a line reads.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

PATH=$bin:$PATH
export PATH
G=$tmp/good
mkdir "$G"
mut() { "$py" "$top/testdata/bad/mutate.py" "$@"; }
craft() { "$py" "$top/testdata/craft.py" "$@"; }

# --- the good files ---------------------------------------------------------
(
    set -e
    cd "$G"
    # 50 copies of the golden corpus: text that changes only with the golden
    # files, so that the sizes and offsets the cases name stay put
    for i in $(seq 50); do cat "$top/testdata/golden/corpus.txt"; done > corpus.txt
    tok-train -q --vocab 320 -o t.tok corpus.txt
    tok-train -q --vocab 300 -o t300.tok corpus.txt
    tok-encode -q -t t.tok --doc-end line -o s.ts corpus.txt
    head -c 3000 corpus.txt | tok-encode -q -t t.tok --doc-end line -o small.ts
    shard -q -o data --val-docs 40 s.ts > /dev/null
    tok-encode -q -t t300.tok --doc-end line corpus.txt | shard -q -o data300 --val-docs 40 > /dev/null
    cat > tiny.json <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 2, "batch_tokens": 256, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 1, "max_seconds": 0, "val_every": 0, "log_every": 0,
           "ckpt_every": 0, "ema_decay": 0.5, "val_batch_tokens": 256}}
JSON
    moe-train -q --threads 1 -c tiny.json --train 'data/data_train_*.bin' -o ck --log ck.log
    mv ck/final.safetensors ck.st
    moe-train -q --threads 1 -c tiny.json --set model.n_layer=1 --set train.ema_decay=0 \
        --train 'data/data_train_*.bin' -o ck --log ck.log
    mv ck/final.safetensors ck1.st
    moe-quant -q --threads 1 ck.st -o m.qst
    moe-pack -q -o m.pack --model m.qst --tokenizer t.tok --config tiny.json > /dev/null
    phys-gen -q -n 3 -s 1 --frames 20 -o scenes.jsonl
) > "$tmp/setup.log" 2>&1
ok "the good files are made by the tools" test $? = 0 ||
    { sed 's/^/#   /' "$tmp/setup.log"; tap_end; exit 1; }

# --- the cases --------------------------------------------------------------
# check EXIT PATTERN TOOL: the contract, on $c (the case directory, whose
# listing after SETUP is in $tmp/before) and $tmp/{rc,stdout,stderr}.
check() {
    rc=$(cat "$tmp/rc")
    [ "$rc" = "$1" ] || { echo "exit status $rc, expected $1"; return 1; }
    [ ! -s "$tmp/stdout" ] || { echo "output on stdout:"; head -3 "$tmp/stdout"; return 1; }
    lines=1
    [ "$1" = 2 ] && lines=2
    [ "$(wc -l < "$tmp/stderr")" = "$lines" ] ||
        { echo "$(wc -l < "$tmp/stderr") lines on stderr, expected $lines:"; head -5 "$tmp/stderr"; return 1; }
    if [ "$1" = 2 ] && [ "$(sed -n 2p "$tmp/stderr")" != "Try '$3 --help' for more information." ]; then
        echo "second line is not the --help hint:"; cat "$tmp/stderr"; return 1
    fi
    head -1 "$tmp/stderr" | grep -q "^$3: " || { echo "not '$3: ...':"; cat "$tmp/stderr"; return 1; }
    head -1 "$tmp/stderr" | grep -qE -- "$2" ||
        { echo "does not match /$2/:"; cat "$tmp/stderr"; return 1; }
    (cd "$c" && find . | sort) > "$tmp/after"
    cmp -s "$tmp/before" "$tmp/after" ||
        { echo "left behind:"; comm -13 "$tmp/before" "$tmp/after"; return 1; }
}

trim() { printf '%s' "$1" | sed 's/^ *//; s/ *$//'; }
tab=$(printf '\t')
cases=0
while IFS='|' read -r name want pat setup cmd; do
    case $name in '#'* | '') continue ;; esac
    name=$(trim "$name") want=$(trim "$want") pat=$(trim "$pat")
    setup=$(trim "$setup") cmd=$(trim "$cmd")
    cases=$((cases + 1))
    c=$tmp/case
    rm -rf "$c"
    mkdir -p "$c/out"
    if ! (cd "$c" && eval "$setup") < /dev/null > "$tmp/setup.log" 2>&1; then
        ok "$name: setup" sh -c "cat '$tmp/setup.log'; false"
        continue
    fi
    (cd "$c" && find . | sort) > "$tmp/before"
    (cd "$c" && eval "$cmd") < /dev/null > "$tmp/stdout" 2> "$tmp/stderr"
    echo $? > "$tmp/rc"
    tool=${cmd%%[ $tab]*}
    ok "$name" check "$want" "$pat" "$tool"
done < "$top/testdata/bad/cases.txt"

echo "# $cases cases"
ok "at least 50 cases" test "$cases" -ge 50
tap_end
