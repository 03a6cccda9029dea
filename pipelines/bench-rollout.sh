#!/bin/sh
# bench-rollout: moe-rollout's decoding rate, in two tables.
#
# 1. Generation of one sequence (256 tokens from BOS, the KV cache growing)
#    on THREADS CPU threads (default 2), for the physics record's model and
#    for a 9x512 golf baseline (vocab 1024, its initial weights: the rate does
#    not depend on what they are, and near-uniform logits rarely sample the
#    BOS that would end generation early), next to
#    the llama2.c-style anchor: fp32 inference one token at a time is a
#    chain of matrix-vector products, so its best rate is OpenBLAS's measured
#    sgemv rate (pipelines/sgemm_rate.c, M = 1, at the golf model's 512x512
#    and 1024x512 shapes, the better of the two) over the model's FLOPs per
#    token (moe-rollout's flops_per_token: 2 per active weight plus the
#    attention over the cache at the tokens' mean position). With a GPU, the
#    same generations with --device cuda.
# 2. With a GPU: moe-rollout --physics on 120 scenes (as make record-physics
#    scores) on the CPU (every thread) and on the GPU at each --batch of
#    BATCHES (default "1 16 128"): fed tokens a second, the scores, and how
#    many scene lines each GPU run shares with the CPU's (bf16 products can
#    turn a greedy near-tie the other way).
#
# usage: bench-rollout.sh [PHYSICS_MODEL]   (default: the newest physics
# record's model.pack in records/). GCIDE (default Debian's) gives the golf
# model its tokenizer.
set -eu
phys=${1:-$(ls -d records/*_physics_seed*/model.pack | tail -n 1)}
THREADS=${THREADS:-2}
GCIDE=${GCIDE:-/usr/share/dictd/gcide.dict.dz}
w=build/bench-rollout
mkdir -p "$w"
gpu=0
command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 && gpu=1

# the golf model: a 1024-token BPE of 2 MB of GCIDE, the weights of step 0
if [ ! -s "$w/golf/final.safetensors" ]; then
    zcat "$GCIDE" | head -c 2000000 > "$w/gcide.txt"
    bin/tok-train -q --vocab 1024 -o "$w/g1024.tok" "$w/gcide.txt"
    bin/tok-encode -q -t "$w/g1024.tok" "$w/gcide.txt" |
        bin/shard -q -o "$w/data" --prefix gcide --val-docs 200 > /dev/null
    bin/moe-train -q -c testdata/config/golf.json --set train.batch_tokens=1024 \
        --set train.grad_accum=1 --set train.steps=0 --set train.val_every=0 \
        --set train.ckpt_every=0 --set train.warmdown_steps=0 --set train.prime_steps=0 \
        --train "$w/data/gcide_train_*.bin" -t "$w/g1024.tok" -o "$w/golf" > /dev/null
fi
# SGEMM_RATE: a prebuilt pipelines/sgemm_rate.c, for a machine without the
# OpenBLAS headers
rate=${SGEMM_RATE:-$w/sgemm_rate}
[ -x "$rate" ] || cc -O2 -o "$rate" pipelines/sgemm_rate.c \
    -I/usr/include/x86_64-linux-gnu/openblas-openmp -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
    -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas
gemv=$({ "$rate" "$THREADS" 1 512 512 2000; "$rate" "$THREADS" 1 1024 512 2000; } |
    jq -s 'map(.gflops) | max')

gen() { # NAME DEVICE MODEL [-t TOK]: the stats line of 256 tokens into $w/NAME.json
    name=$1 dev=$2
    shift 2
    bin/moe-rollout --threads "$THREADS" --device "$dev" "$@" --max-tokens 256 --seed 1 \
        > /dev/null 2> "$w/$name.json"
}
runs="physics:cpu golf:cpu"
[ $gpu = 1 ] && runs="$runs physics:cuda golf:cuda"
echo "generation from BOS, 256 tokens at most, sampled (seed 1); sgemv $gemv GFLOP/s on $THREADS threads"
printf '%-8s %-6s %10s %14s %12s %14s %10s\n' model device generated flops/token tokens/s \
    "anchor tok/s" "x anchor"
for r in $runs; do
    m=${r%:*} dev=${r#*:}
    if [ "$m" = golf ]; then
        gen "$m-$dev" "$dev" "$w/golf/final.safetensors" -t "$w/g1024.tok"
    else
        gen "$m-$dev" "$dev" "$phys"
    fi
    jq -r --arg m "$m" --arg d "$dev" --argjson g "$gemv" '
        ($g * 1e9 / .flops_per_token) as $anchor |
        [$m, $d, .generated, .flops_per_token, .tokens_per_s, ($anchor * 10 | round / 10),
         (.tokens_per_s / $anchor * 100 | round / 100)] | @tsv' "$w/$m-$dev.json" |
        awk -F '\t' '{ printf "%-8s %-6s %10s %14s %12s %14s %10s\n", $1, $2, $3, $4, $5, $6, $7 }'
done
[ $gpu = 1 ] || { echo "no GPU: the --physics table needs one"; exit 0; }

scenes=$w/scenes.jsonl
bin/phys-gen -q --scenes 120 --seed 1001340 --split all --frames 16 --objects 1-4 -o "$scenes"
roll() { # NAME ARGS...: the JSON lines to $w/NAME.jsonl
    name=$1
    shift
    bin/moe-rollout -q --threads "$(nproc)" "$phys" --physics "$scenes" "$@" > "$w/$name.jsonl"
}
roll cpu --device cpu
names=cpu
for b in ${BATCHES:-1 16 128}; do
    roll cuda-b$b --device cuda --batch "$b"
    names="$names cuda-b$b"
done
echo
echo "--physics on $(wc -l < "$scenes") scenes, CPU on $(nproc) threads"
printf '%-12s %6s %10s %9s %12s %12s %10s %16s\n' run batch tokens tok/s "trained@15" \
    "heldout@15" malformed "same as cpu"
for n in $names; do
    jq -c 'select(.summary == null) | [.err, .generated, .stop_reason]' "$w/$n.jsonl" > "$w/$n.lines"
done
for n in $names; do
    same=$(paste -d '\t' "$w/cpu.lines" "$w/$n.lines" | awk -F '\t' '$1 == $2' | wc -l)
    jq -r --arg n "$n" --arg same "$same/$(wc -l < "$w/cpu.lines")" 'select(.summary) | .summary
      | def pct: if . == null then "-" else (. * 1e4 | round / 1e4 | tostring) + "%" end;
      [$n, .batch, .fed_tokens, .tokens_per_s, (.trained.fittable.err["15"] | pct),
       (.heldout.fittable.err["15"] | pct), .malformed_rate, $same] | @tsv' "$w/$n.jsonl" |
        awk -F '\t' '{ printf "%-12s %6s %10s %9s %12s %12s %10s %16s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
done
