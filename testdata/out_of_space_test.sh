#!/bin/sh
# out_of_space: a write that fails part-way must leave the previous output
# as it was. Each tool first writes an output normally; then it runs again,
# asked for a different output at the same path, under a file size limit
# (`ulimit -f`, with SIGXFSZ ignored so that write() returns EFBIG instead of
# killing it) well below what it writes, the nearest thing to a full disk
# that needs no root. It must exit 1 with one line on stderr naming the
# output and saying it is left as it was, the output must be byte-identical
# to the previous one, and no NAME.tmp may be left. Limits are in blocks of
# 512 bytes (1024 in shells that count so: each limit stays below half the
# output either way).
set -u
. "$(dirname "$0")/../testdata/tap.sh"

PATH=$bin:$PATH
export PATH
cd "$tmp"

# limited BLOCKS CMD...: CMD under the file size limit, SIGXFSZ ignored;
# stdout and stderr go to $tmp/stdout and $tmp/stderr (the stderr line is
# far below any limit used here).
limited() {
    blocks=$1; shift
    ( ulimit -f "$blocks" && trap '' XFSZ && exec "$@" ) > "$tmp/stdout" 2> "$tmp/stderr"
    echo $? > "$tmp/rc"
}

# intact TOOL DIR PATH...: the last limited run failed as it must, naming the
# first PATH; every PATH equals its copy PATH.old; DIR holds no *.tmp.
intact() {
    tool=$1 dir=$2; shift 2
    rc=$(cat "$tmp/rc")
    [ "$rc" = 1 ] || { echo "exit status $rc, expected 1"; cat "$tmp/stderr"; return 1; }
    [ "$(wc -l < "$tmp/stderr")" = 1 ] || { echo "stderr is not one line:"; cat "$tmp/stderr"; return 1; }
    grep -qE "^$tool: $1: write failed (at|before) offset [0-9]+: File too large; $1 is left as it was\$" \
        "$tmp/stderr" || { echo "unexpected message:"; cat "$tmp/stderr"; return 1; }
    for p in "$@"; do
        cmp "$p.old" "$p" || { echo "$p changed"; return 1; }
    done
    left=$(find "$dir" -name '*.tmp')
    [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

keep() { for p in "$@"; do cp "$p" "$p.old"; done; }

cat "$top"/man/man*/* > corpus.txt
head -c 3000 corpus.txt > start.txt

# tok-train: the .tok alone, then with its tokenizer.json (written first,
# committed last: a failure keeps the old pair)
tok-train -q --vocab 320 -o t.tok corpus.txt
keep t.tok
limited 1 tok-train -q --vocab 400 -o t.tok corpus.txt
ok "tok-train: the .tok cut short, the old one intact" intact tok-train . t.tok
tok-train -q --vocab 320 -o p.tok --hf-json p.json corpus.txt
keep p.tok p.json
limited 4 tok-train -q --vocab 400 -o p.tok --hf-json p.json corpus.txt
ok "tok-train --hf-json: tokenizer.json cut short, the old .tok and .json intact" \
    intact tok-train . p.json p.tok

# tok-encode: a token stream
tok-encode -q -t t.tok --doc-end line -o s.ts start.txt
keep s.ts
limited 16 tok-encode -q -t t.tok --doc-end line -o s.ts corpus.txt
ok "tok-encode: the stream cut short, the old one intact" intact tok-encode . s.ts

# shard: a set of shards appears whole or not at all
tok-encode -q -t t.tok --doc-end line -o all.ts corpus.txt
shard -q -o data --val-docs 40 all.ts > /dev/null
keep data/data_val_000000.bin data/data_train_000000.bin
limited 64 shard -q -o data --val-docs 80 all.ts
ok "shard: the train shard cut short, the old val and train shards intact" \
    intact shard data data/data_train_000000.bin data/data_val_000000.bin

# moe-train: the final checkpoint
cat > tiny.json <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 2, "batch_tokens": 256, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 1, "max_seconds": 0, "val_every": 0, "log_every": 0,
           "ckpt_every": 0, "ema_decay": 0.5}}
JSON
moe-train -q --threads 1 -c tiny.json --train 'data/data_train_*.bin' -o ck --log /dev/null
keep ck/final.safetensors
limited 64 moe-train -q --threads 1 -c tiny.json --seed 2 --train 'data/data_train_*.bin' \
    -o ck --log /dev/null
ok "moe-train: the final checkpoint cut short, the old one intact" \
    intact moe-train ck ck/final.safetensors

# moe-avg: an averaged checkpoint
moe-avg -q -o avg.st ck/final.safetensors > /dev/null
keep avg.st
limited 32 moe-avg -q -o avg.st --ema ck/final.safetensors
ok "moe-avg: the average cut short, the old one intact" intact moe-avg . avg.st

# moe-quant: a .qst
moe-quant -q --threads 1 ck/final.safetensors -o m.qst
keep m.qst
limited 8 moe-quant -q --threads 1 --matrix int8 ck/final.safetensors -o m.qst
ok "moe-quant: the .qst cut short, the old one intact" intact moe-quant . m.qst

# moe-pack: an artifact, and the parts of one unpacked
moe-pack -o m.pack --model m.qst --tokenizer t.tok > /dev/null
keep m.pack
limited 4 moe-pack -o m.pack --codec xz --model m.qst --tokenizer t.tok --config tiny.json
ok "moe-pack: the artifact cut short, the old one intact" intact moe-pack . m.pack
moe-pack --unpack m.pack -o parts > /dev/null
keep parts/model.qst parts/tokenizer.tok
moe-quant -q --threads 1 --matrix int8 ck/final.safetensors -o m8.qst
moe-pack -o m8.pack --model m8.qst --tokenizer p.tok --config tiny.json > /dev/null
limited 8 moe-pack --unpack m8.pack -o parts
# the config.json and tokenizer.tok written before model.qst failed must not appear
parts_intact() {
    [ ! -e parts/config.json ] || { echo "parts/config.json appeared"; return 1; }
    intact moe-pack parts parts/model.qst parts/tokenizer.tok
}
ok "moe-pack --unpack: model.qst cut short, the old parts intact, no new one" parts_intact

# phys-gen: scenes
phys-gen -q -n 2 -o scenes.jsonl
keep scenes.jsonl
limited 8 phys-gen -q -n 40 -o scenes.jsonl
ok "phys-gen: the scenes cut short, the old ones intact" intact phys-gen . scenes.jsonl

tap_end
