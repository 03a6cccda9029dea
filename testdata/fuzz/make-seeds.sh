#!/bin/sh
# make-seeds: the seed corpora of the fuzzing harnesses, testdata/fuzz/NAME/,
# made by the tools themselves on tiny inputs: real valid files of each format
# (a tokenizer of each pre-tokenizer mode, token streams, shards with and
# without the golfkit extras, checkpoints of a dense and a MoE model of
# d_model 8, .qst files of each scheme and layout, .pack files of each codec,
# configs, JSONL and phys-gen text), plus a few truncations of each. The
# tools' outputs carry their version in the metadata, so running it again
# changes bytes, not what the files exercise; files it does not name (the
# crash-* inputs kept after a finding) are left alone.
#
#   sh testdata/fuzz/make-seeds.sh [BIN]     BIN: the tools (default bin/)
#
# Needs jq, zstd and xz (make deps installs them); the safetensors file of
# every dtype comes from the unit test build/asan/test/safetensors when it is
# there.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$top/bin}
out=$top/testdata/fuzz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# truncations FILE N...: FILE's first N bytes, for each N, beside it as
# NAME-cutN.EXT.
truncations() {
    f=$1; shift
    for n in "$@"; do head -c "$n" "$f" > "${f%.*}-cut$n.${f##*.}"; done
}

mkdir -p "$out"/tok "$out"/tstream "$out"/shard "$out"/safetensors "$out"/ckpt \
         "$out"/qst "$out"/pack "$out"/config "$out"/jsonl "$out"/physparse

# Text: the golden corpus and a few phys-gen scenes.
corpus=$top/testdata/golden/corpus.txt
"$bin/phys-gen" -q -n 3 -s 7 --frames 6 --objects 1-3 --split all --text -o "$out/physparse/scenes.txt"
"$bin/phys-gen" -q -n 2 -s 9 --frames 4 --objects 2-2 --types billiards --text \
    -o "$out/physparse/billiards.txt"
truncations "$out/physparse/scenes.txt" 200 333

# Tokenizers: vocab 260 (3 merges) for the model; 300 in each pre-tokenizer mode.
"$bin/tok-train" -q --vocab 260 -o "$out/tok/v260.tok" "$corpus"
for p in none ws digits; do
    "$bin/tok-train" -q --vocab 300 --pretok $p --special '<|eot|>' -o "$out/tok/v300-$p.tok" "$corpus"
done
cp "$top/testdata/golden/golden.tok" "$out/tok/golden.tok"
truncations "$out/tok/v300-ws.tok" 31 100 250

# Token streams: the corpus a document a line, and the phys-gen text.
"$bin/tok-encode" -q -t "$out/tok/v260.tok" --doc-end line "$corpus" > "$out/tstream/lines.ts"
"$bin/tok-encode" -q -t "$out/tok/v300-digits.tok" "$out/physparse/scenes.txt" > "$out/tstream/scenes.ts"
truncations "$out/tstream/lines.ts" 23 500

# Shards: val and train of the stream (golfkit extras), and a plain llm.c one.
"$bin/shard" -q -o "$tmp/sh" --val-docs 3 "$out/tstream/lines.ts" > /dev/null
cp "$tmp/sh/data_val_000000.bin" "$out/shard/val.bin"
cp "$tmp/sh/data_train_000000.bin" "$out/shard/train.bin"
cp "$top/testdata/shard/pg.bin" "$out/shard/plain.bin"
truncations "$out/shard/val.bin" 1000 1030

# Checkpoints: a dense and a MoE model, a few steps on those shards.
cat > "$tmp/dense.json" <<'JSON'
{"model": {"vocab": 260, "n_layer": 2, "d_model": 8, "n_head": 2, "n_kv_head": 1,
           "mlp_mult": 1, "seq_len": 8},
 "train": {"steps": 2, "batch_tokens": 16, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 1, "max_seconds": 0, "val_every": 0, "val_batch_tokens": 16,
           "val_tokens": 16, "log_every": 1, "ckpt_every": 1, "ema_decay": 0.9}}
JSON
cp "$tmp/dense.json" "$out/config/dense.json"
jq '.model.n_layer = 1 | .model.activation = "swiglu" | .train.ema_decay = 0 |
    .moe = {"n_experts": 2, "n_shared": 1, "top_k": 1, "router": "sigmoid_bias"}' \
    "$tmp/dense.json" > "$out/config/moe.json"
for m in dense moe; do
    "$bin/moe-train" -q --threads 1 -c "$out/config/$m.json" --train "$out/shard/train.bin" \
        --save-init -o "$tmp/$m" > /dev/null
done
cp "$tmp/dense/ckpt_000000.safetensors" "$out/ckpt/dense-init.safetensors"
cp "$tmp/dense/final.safetensors" "$out/ckpt/dense-final.safetensors"
cp "$tmp/moe/final.safetensors" "$out/ckpt/moe-final.safetensors"
truncations "$out/ckpt/dense-init.safetensors" 8 600

# safetensors: a checkpoint, the unit test's file of every dtype when built,
# and one without the golfkit checksum, as Python writes them.
cp "$out/ckpt/dense-init.safetensors" "$out/safetensors/ckpt.safetensors"
st=$top/build/asan/test/safetensors
if [ -x "$st" ]; then ASAN_OPTIONS=detect_leaks=0 "$st" --write-all "$out/safetensors/all-dtypes.safetensors"; fi
h='{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[1,3],"data_offsets":[8,11]}}'
{ printf "\\$(printf %03o ${#h})\\0\\0\\0\\0\\0\\0\\0%s" "$h"; printf '\0\0\200\77\0\0\0\100\1\2\3'; } \
    > "$out/safetensors/python-style.safetensors"
truncations "$out/safetensors/python-style.safetensors" 50

# .qst: the dense model in each scheme and both layouts, the MoE one in int6.
q() { # q NAME CKPT ARGS...: moe-quant CKPT with ARGS into qst/NAME.qst
    name=$1 ck=$2; shift 2
    "$bin/moe-quant" -q --threads 1 "$ck" -o "$out/qst/$name.qst" "$@" > /dev/null
}
q int8 "$out/ckpt/dense-final.safetensors" --matrix int8 --control f16
q int6-bits "$out/ckpt/dense-final.safetensors" --layout bits
q int4-clip "$out/ckpt/dense-final.safetensors" --matrix int4 --clip-search --embed int5
q ternary-bits "$out/ckpt/dense-final.safetensors" --matrix ternary --embed binary --layout bits
q f32 "$out/ckpt/dense-final.safetensors" --matrix f32 --embed f32
q moe-int6 "$out/ckpt/moe-final.safetensors"
truncations "$out/qst/int8.qst" 300

# .pack: zstd with the config, xz without; as files and as payloads (the
# frame decoded behind the same header: pack_fuzz.c says why).
"$bin/moe-pack" -o "$out/pack/zstd.pack" --model "$out/qst/int6-bits.qst" \
    --tokenizer "$out/tok/v260.tok" --config "$out/config/dense.json" --level 3 > /dev/null
"$bin/moe-pack" -o "$out/pack/xz.pack" --model "$out/qst/moe-int6.qst" \
    --tokenizer "$out/tok/v260.tok" --codec xz --level 1 > /dev/null
{ head -c 64 "$out/pack/zstd.pack"; tail -c +65 "$out/pack/zstd.pack" | zstd -dqc; } > "$out/pack/zstd.payload"
{ head -c 64 "$out/pack/xz.pack"; tail -c +65 "$out/pack/xz.pack" | xz -dqc; } > "$out/pack/xz.payload"
truncations "$out/pack/zstd.pack" 64 700

# Configs: the repository's, and --set lines.
for c in golf golf-moe moe physics-cpu small-cpu; do cp "$top/testdata/config/$c.json" "$out/config/"; done
printf 'model.n_layer=4\nmodel.activation=swiglu\nmoe.n_experts=4\nmoe.top_k=2\ntrain.lr_schedule=cosine\n' \
    > "$out/config/set-lines.txt"
truncations "$out/config/golf.json" 100

# JSONL: phys-gen's scenes (their "text" field is long) and short documents.
"$bin/phys-gen" -q -n 2 -s 3 --frames 20 --objects 3-4 --jsonl -o "$out/jsonl/scenes.jsonl"
jq -Rc '{text: ., n: length}' "$corpus" > "$out/jsonl/lines.jsonl"
cp "$corpus" "$out/jsonl/plain.txt"
truncations "$out/jsonl/lines.jsonl" 150
du -sh "$out"
