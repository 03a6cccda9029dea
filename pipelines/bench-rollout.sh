#!/bin/sh
# bench-rollout: moe-rollout --physics on the CPU and on the GPU, side by side
# in one run on the same scenes: decoding rate (tokens fed a second: prompt
# and generated tokens, one decoder step per token per scene), wall time, the
# scores, and how many scene lines each GPU run shares with the CPU's
# (greedy decoding; bf16 products can turn a near-tie of two tokens the
# other way, and a scene's rollout then goes its own way).
#
# usage: bench-rollout.sh [MODEL [SCENES]]
#   MODEL   a .pack, .qst or checkpoint with a tokenizer (default: the
#           physics record's model.pack in records/)
#   SCENES  phys-gen JSON lines (default: 120 fresh scenes of every type, as
#           make record-physics scores)
# BATCHES: the --batch values of the GPU runs (default "1 16 128").
set -eu
model=${1:-$(ls -d records/*_physics_seed*/model.pack | tail -n 1)}
w=build/bench-rollout
mkdir -p "$w"
scenes=${2:-$w/scenes.jsonl}
if [ $# -lt 2 ]; then
    bin/phys-gen -q --scenes 120 --seed 1001340 --split all --frames 16 --objects 1-4 \
        -o "$scenes"
fi
threads=$(nproc)

run() { # NAME ARGS...: the JSON lines to $w/NAME.jsonl
    name=$1
    shift
    bin/moe-rollout -q --threads "$threads" "$model" --physics "$scenes" "$@" > "$w/$name.jsonl"
}
run cpu --device cpu
names=cpu
for b in ${BATCHES:-1 16 128}; do
    run cuda-b$b --device cuda --batch "$b"
    names="$names cuda-b$b"
done

echo "model $model, scenes $scenes ($(wc -l < "$scenes") lines), $(nproc) CPU threads"
printf '%-12s %6s %10s %9s %12s %12s %10s %16s\n' run batch tokens tok/s "trained@15" \
    "heldout@15" malformed "same as cpu"
jq -c 'select(.summary == null) | [.err, .generated, .stop_reason]' "$w/cpu.jsonl" > "$w/cpu.lines"
for n in $names; do
    jq -c 'select(.summary == null) | [.err, .generated, .stop_reason]' "$w/$n.jsonl" > "$w/$n.lines"
    same=$(paste -d '\t' "$w/cpu.lines" "$w/$n.lines" | awk -F '\t' '$1 == $2' | wc -l)
    total=$(wc -l < "$w/cpu.lines")
    jq -r --arg n "$n" --arg same "$same/$total" 'select(.summary) | .summary
      | def pct: if . == null then "-" else (. * 1e4 | round / 1e4 | tostring) + "%" end;
      [$n, .batch, .fed_tokens, .tokens_per_s, (.trained.fittable.err["15"] | pct),
       (.heldout.fittable.err["15"] | pct), .malformed_rate, $same] | @tsv' "$w/$n.jsonl" |
        awk -F '\t' '{ printf "%-12s %6s %10s %9s %12s %12s %10s %16s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
done
