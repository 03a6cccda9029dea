#!/bin/sh
# prepare: moe-train's side of the PyTorch parity check, on this machine.
#
# usage: sh testdata/ref/prepare.sh [CONFIG...]   (default: the four configs here)
# Makes parity/data (a vocab-1024 tokenizer trained on the first 10 MB of
# GCIDE; the first 3 MB encoded into one shard), then for each CONFIG runs
# moe-train on the CPU with --save-init and leaves in parity/NAME/ what the
# reference needs: eff.json (the effective config), init.safetensors (the
# initial weights) and ours.jsonl (the log). Deterministic: a rerun gives the
# same bytes. On the GPU machine, with parity/ carried:
#   python3 testdata/ref/ref_train.py --config parity/NAME/eff.json \
#       --init parity/NAME/init.safetensors --shards 'parity/data/*.bin' \
#       --steps 50 --device cuda > ref.jsonl
#   python3 testdata/ref/compare.py parity/NAME/ours.jsonl ref.jsonl --steps 50
set -eu
BIN=${BIN:-bin}
P=parity
mkdir -p $P
if [ ! -s $P/data/gcide_train_000000.bin ]; then
    zcat /usr/share/dictd/gcide.dict.dz | head -c 10000000 > $P/train10m.txt
    "$BIN/tok-train" -q --vocab 1024 -o $P/g1024.tok $P/train10m.txt
    head -c 3000000 $P/train10m.txt | "$BIN/tok-encode" -q -t $P/g1024.tok |
        "$BIN/shard" -q -o $P/data --prefix gcide > /dev/null
fi
[ $# -gt 0 ] || set -- testdata/ref/dense.json testdata/ref/moe-token.json \
    testdata/ref/moe-softmax.json testdata/ref/moe-sigmoid.json
for cfg in "$@"; do
    name=$(basename "$cfg" .json)
    d=$P/$name
    mkdir -p "$d"
    "$BIN/moe-train" -c "$cfg" --print-config > "$d/eff.json"
    "$BIN/moe-train" -q -c "$cfg" --save-init --train "$P/data/gcide_train_*.bin" \
        -o "$d/ckpt" > "$d/ours.jsonl"
    mv "$d/ckpt/ckpt_000000.safetensors" "$d/init.safetensors"
    rm -rf "$d/ckpt"
    echo "$name: $(jq -s -c '[.[] | select(.train_loss)] | {steps: length, first: .[0].train_loss, last: .[-1].train_loss}' "$d/ours.jsonl")"
done
