#!/bin/sh
# check-cuda-model: the whole model on the GPU against the CPU reference, as
# TAP (part of `make check-cuda`, on the GPU machine).
#
# For the dense golf baseline and its MoE twin (testdata/config/golf-moe.json:
# 8 routed + 1 shared experts, top-2), moe-train runs STEPS steps on the CPU
# and on the GPU from the same seed (so the same initial weights) on the same
# shards (so the same batches), logging every step, and the two loss curves
# must agree within TOL relative at every step (testdata/ref/compare.py).
# The widths are the baseline's (9 x 512, 8 heads, 4 kv heads, vocab 1024);
# seq_len and the batch are cut to 256 and 4096 tokens so that the CPU side
# takes a minute or two, not hours. The learning rate warms down over 200
# steps, so the 50 run at 25% down to 19% of the baseline's rates: at full
# rate a 4096-token batch is too noisy and the loss jumps (to 19 at step 2),
# a chaotic regime where any rounding difference grows without bound.
#
# Why TOL is 2e-2: the GPU multiplies in bf16 (8-bit significand, relative
# rounding 2^-9 = 2e-3 per operand), the CPU in fp32. One forward's loss
# differs by about 1e-3 relative; the updates then differ too (Muon's
# orthogonalisation amplifies small gradient differences in directions of
# small singular value), and the curves drift apart slowly over the steps.
# 2e-2 holds the drift over 50 steps of a run whose loss falls by ~40%,
# while any structural mistake (a missing term, a wrong gradient) shows up
# within a few steps as a difference of 1e-1 or more.
#
# Shards: GCIDE (Debian dict-gcide), tokenized with a 1024-token BPE, built
# once into OUT and reused, as are the CPU logs (delete OUT to redo them).
set -eu
BIN=${BIN:-bin}
OUT=${OUT:-build/check-cuda-model}
STEPS=${STEPS:-50}
TOL=${TOL:-2e-2}
GCIDE=${GCIDE:-/usr/share/dictd/gcide.dict.dz}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ ! -s "$OUT/data/gcide_val_000000.bin" ]; then
    # 4 MB of text: about 1.5M tokens, several times what 50 steps read
    zcat "$GCIDE" | head -c 4000000 > "$OUT/text.txt"
    "$BIN/tok-train" -q --vocab 1024 -o "$OUT/g1024.tok" "$OUT/text.txt"
    "$BIN/tok-encode" -q -t "$OUT/g1024.tok" "$OUT/text.txt" |
        "$BIN/shard" -q -o "$OUT/data" --prefix gcide --val-docs 2000 > /dev/null
fi

SMALL="--set model.seq_len=256 --set train.batch_tokens=4096 --set train.grad_accum=1
       --set train.steps=$STEPS --set train.max_seconds=0 --set train.prime_steps=0
       --set train.warmdown_steps=200 --set train.val_every=0 --set train.log_every=1
       --set train.ckpt_every=0"
echo "1..2"
n=0
for name in dense moe; do
    n=$((n + 1))
    cfg=testdata/config/golf.json
    [ $name = moe ] && cfg=testdata/config/golf-moe.json
    for dev in cpu cuda; do
        log=$OUT/$name-$dev.jsonl
        [ $dev = cpu ] && [ -s "$log" ] && continue
        # shellcheck disable=SC2086 # SMALL is a list of options
        "$BIN/moe-train" -q --device $dev -c $cfg $SMALL --train "$OUT/data/gcide_train_*.bin" \
            -o "$OUT/ckpt-$name-$dev" --log "$log.tmp"
        mv "$log.tmp" "$log"
    done
    jq -c 'select(.event == "start") | {device, device_bytes}' "$OUT/$name-cuda.jsonl" |
        sed 's/^/# /'
    if $PY testdata/ref/compare.py "$OUT/$name-cuda.jsonl" "$OUT/$name-cpu.jsonl" \
        --steps "$STEPS" --tol "$TOL" > "$OUT/$name-compare.txt"; then
        ok=ok
    else
        ok="not ok"
    fi
    sed 's/^/# /' "$OUT/$name-compare.txt"
    echo "$ok $n - $name: GPU (bf16) and CPU (fp32) losses within $TOL over $STEPS steps"
done
