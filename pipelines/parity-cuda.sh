#!/bin/sh
# parity-cuda: is moe-train --device cuda as good a trainer as PyTorch? (On the
# GPU machine: `make parity-cuda PY=/path/to/python-with-torch`.)
#
# The golf baseline (testdata/config/golf.json) trains STEPS steps on GCIDE
# shards three times: moe-train --device cuda with seed 1337 and with seed
# 1338, and testdata/ref/bench_torch.py (ref_model under torch.compile and
# bf16 autocast, flash attention, bf16 Newton-Schulz: train_gpt.py's way of
# running) starting from moe-train's seed-1337 initial weights, on the same
# batches in the same order. All three validate every VAL_EVERY steps on the
# same val_tokens of the val shards (eval_val). The two moe-train seeds give
# the run-to-run noise at each validation point; PyTorch is within noise when
# |torch - moe-train(1337)| is at most the largest |moe-train(1338) -
# moe-train(1337)| over the points. val_bpb is val_loss times the fixed
# tokens-per-byte factor of the val set (moe-train logs both; the factor is
# taken from its log). The schedule is the baseline's shape over STEPS steps:
# a linear warmdown over the last quarter, on the step clock.
#
# GCIDE (Debian dict-gcide) is about 14M tokens at vocab 1024, so 200 steps
# of 524,288 tokens see it about 7 times; both sides see the same repeats.
# Exit status 1 when PyTorch is outside the noise.
set -eu
BIN=${BIN:-bin}
OUT=${OUT:-build/parity-cuda}
PY=${PY:-python3}
STEPS=${STEPS:-200}
VAL_EVERY=${VAL_EVERY:-50}
GCIDE=${GCIDE:-/usr/share/dictd/gcide.dict.dz}
CFG=testdata/config/golf.json
mkdir -p "$OUT"
if [ ! -s "$OUT/data/gcide_val_000000.bin" ]; then
    zcat "$GCIDE" > "$OUT/gcide.txt"
    head -c 10000000 "$OUT/gcide.txt" > "$OUT/tok.txt"
    "$BIN/tok-train" -q --vocab 1024 -o "$OUT/g1024.tok" "$OUT/tok.txt"
    "$BIN/tok-encode" -q -t "$OUT/g1024.tok" "$OUT/gcide.txt" |
        "$BIN/shard" -q -o "$OUT/data" --prefix gcide --val-docs 5000 > /dev/null
fi
TRAIN="$OUT/data/gcide_train_*.bin"
VAL="$OUT/data/gcide_val_*.bin"
SETS="--set train.steps=$STEPS --set train.warmdown_steps=$((STEPS / 4))
      --set train.max_seconds=0 --set train.prime_steps=0 --set train.val_every=$VAL_EVERY
      --set train.val_tokens=262144 --set train.log_every=1 --set train.ckpt_every=0"

# shellcheck disable=SC2086 # SETS is a list of options
for seed in 1337 1338; do
    "$BIN/moe-train" -q --device cuda -c $CFG $SETS --seed $seed --save-init \
        --train "$TRAIN" --val "$VAL" -t "$OUT/g1024.tok" -o "$OUT/ckpt-$seed" \
        --log "$OUT/moe-$seed.jsonl"
done
# shellcheck disable=SC2086
"$BIN/moe-train" -c $CFG $SETS --print-config > "$OUT/effective.json"
"$PY" testdata/ref/bench_torch.py --config "$OUT/effective.json" --shards "$TRAIN" \
    --init "$OUT/ckpt-1337/ckpt_000000.safetensors" --log "$OUT/torch-1337.jsonl" \
    --val "$VAL" --val-every "$VAL_EVERY" --warmup 1 --steps $((STEPS - 1)) > "$OUT/torch.json"

# One table: val_loss (and val_bpb) at each validation point.
jq -rn --slurpfile a "$OUT/moe-1337.jsonl" --slurpfile b "$OUT/moe-1338.jsonl" \
    --slurpfile t "$OUT/torch-1337.jsonl" '
    def vals($l): [$l[] | select(.val_loss != null) | {key: (.step | tostring), value: .}]
                  | from_entries;
    (vals($a)) as $A | (vals($b)) as $B | (vals($t)) as $T
    | ([$A[] | select(.val_bpb != null) | .val_bpb / .val_loss] | first) as $f
    | ([$A | keys[] | tonumber] | sort) as $steps
    | ([$steps[] | tostring | (($B[.].val_loss - $A[.].val_loss) | fabs)] | max) as $noise
    | ([$steps[] | tostring | (($T[.].val_loss - $A[.].val_loss) | fabs)] | max) as $gap
    | "step   moe-train 1337   moe-train 1338   pytorch 1337   |1338-1337|   |torch-1337|   (val_loss; val_bpb = val_loss x \($f * 1e6 | round / 1e6))",
      ($steps[] | tostring | "\(.)\t\($A[.].val_loss * 1e4 | round / 1e4)\t\($B[.].val_loss * 1e4 | round / 1e4)\t\($T[.].val_loss * 1e4 | round / 1e4)\t\(($B[.].val_loss - $A[.].val_loss) | fabs * 1e4 | round / 1e4)\t\(($T[.].val_loss - $A[.].val_loss) | fabs * 1e4 | round / 1e4)"),
      "noise (largest |1338-1337|) \($noise * 1e4 | round / 1e4); largest |torch-1337| \($gap * 1e4 | round / 1e4): \(if $gap <= $noise then "PyTorch within run-to-run noise" else "PyTorch OUTSIDE run-to-run noise" end)"
' | tee "$OUT/parity.txt"
grep -q "within run-to-run noise" "$OUT/parity.txt"
