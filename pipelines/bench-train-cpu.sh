#!/bin/sh
# bench-train-cpu: moe-train's CPU speed against this machine's sgemm ceiling.
#
# Trains testdata/config/small-cpu.json (4 layers, d_model 256, vocab 1024,
# seq 256, 8192 tokens a step) on GCIDE shards for STEPS steps with 2 threads,
# and in the same run times OpenBLAS sgemm on 2 threads (1024^3, and the
# model's largest product shape). Model FLOPs per token follow the PaLM
# convention: 6 x (matrix parameters, the tied head included) + 12 x n_layer x
# d_model x seq_len for attention (the full T x T, as it is computed). The
# rate is the median over the steps after the first two.
set -eu
BIN=${BIN:-bin}
OUT=${OUT:-build/bench-train}
STEPS=${STEPS:-12}
THREADS=2
CFG=testdata/config/small-cpu.json
mkdir -p "$OUT"
gc=$OUT/gcide.txt
[ -s "$gc" ] || zcat /usr/share/dictd/gcide.dict.dz > "$gc"
if [ ! -s "$OUT/data/gcide_val_000000.bin" ]; then
    head -c 10000000 "$gc" > "$OUT/train10m.txt"
    "$BIN/tok-train" -q --vocab 1024 -o "$OUT/g1024.tok" "$OUT/train10m.txt"
    "$BIN/tok-encode" -q -t "$OUT/g1024.tok" "$gc" |
        "$BIN/shard" -q -o "$OUT/data" --prefix gcide --val-docs 5000 > /dev/null
fi
cc -O2 -o "$OUT/sgemm_rate" pipelines/sgemm_rate.c -I/usr/include/x86_64-linux-gnu/openblas-openmp \
    -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
    -lopenblas

"$BIN/moe-train" -q --threads $THREADS -c $CFG --set train.steps="$STEPS" --set train.val_every=0 \
    --set train.log_every=1 --set train.ckpt_every=0 --train "$OUT/data/gcide_train_*.bin" \
    -o "$OUT/ckpt" > "$OUT/train.log"
tps=$(jq -s '[.[] | select(.train_loss) | select(.step > 2) | .tokens_per_s] | sort | .[length / 2 | floor]' "$OUT/train.log")
"$BIN/moe-train" -c $CFG --print-config > "$OUT/effective.json"
flops=$(jq '.model as $m | ($m.d_model / $m.n_head) as $hd | ($m.n_kv_head * $hd) as $kv
    | ($m.mlp_mult * $m.d_model) as $f
    | ($m.n_layer * ($m.d_model * $m.d_model * 2 + $kv * $m.d_model * 2 + $f * $m.d_model * 2)
       + $m.vocab * $m.d_model) as $n
    | 6 * $n + 12 * $m.n_layer * $m.d_model * $m.seq_len' "$OUT/effective.json")
g1=$("$OUT/sgemm_rate" $THREADS 1024 1024 1024 10 | jq .gflops)
g2=$("$OUT/sgemm_rate" $THREADS 8192 512 256 10 | jq .gflops)
ours=$(awk -v t="$tps" -v f="$flops" 'BEGIN { printf "%.1f", t * f / 1e9 }')
echo "bench-train-cpu: $CFG, $STEPS steps, $THREADS threads"
printf '%-44s %12s\n' "measure" "value"
printf '%-44s %12s\n' "moe-train tokens/s (median)" "$tps"
printf '%-44s %12.2f\n' "model MFLOP per token (6N + 12 L d T)" "$(awk -v f="$flops" 'BEGIN { print f / 1e6 }')"
printf '%-44s %12s\n' "moe-train GFLOP/s" "$ours"
printf '%-44s %12s\n' "sgemm GFLOP/s, 1024x1024x1024" "$g1"
printf '%-44s %12s\n' "sgemm GFLOP/s, 8192x512x256 (the MLP's shape)" "$g2"
printf '%-44s %11.1f%%\n' "moe-train / sgemm 1024^3" "$(awk -v a="$ours" -v b="$g1" 'BEGIN { print 100 * a / b }')"
