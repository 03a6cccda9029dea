#!/bin/sh
# bench-train-cuda: moe-train --device cuda against PyTorch on the same GPU, in
# one run, with the GPU's measured bf16 GEMM rate and each side's model FLOPs
# utilisation.
#
# For the golf baseline (testdata/config/golf.json: 9 x 512, vocab 1024, seq
# 1024, 524,288 tokens a step in 8 micro-batches) and the MoE of equal active
# parameters (testdata/config/golf-moe.json: 8 routed + 1 shared experts,
# top-2), it trains moe-train for STEPS steps and testdata/ref/bench_torch.py
# (ref_model.GPT under torch.compile, bf16 autocast, flash attention, Muon +
# Adam) for WARMUP + TORCH_STEPS steps, both on the same random-token shards,
# and prints one table: step time, tokens/s and MFU (medians over the steps
# after the first WARMUP), launch-to-first-step, and moe-train's tokens/s over
# PyTorch's. bin/bench-gemm gives the GEMM rate (8192^3 through kernels/gemm.h;
# the model's own shapes are listed too), and bench_torch.py --gemm torch's
# matmul rate at 8192^3 beside it.
#
# Model FLOPs per token, as the train_gpt.py anchor counts them (374.8 ms a
# step, 1.40M tokens/s, 26.9% of a measured 678 TFLOP/s on one H100):
#   6 N_active + 6 L T d
# N_active = the parameters one token uses (the tied embedding once, as the
# head's matrix; the routed experts it is not sent to left out), L layers, T
# the sequence length, d d_model: 6 L T d is the causal half of attention's
# two T x T products. MFU = tokens/s x FLOPs per token / the 8192^3 rate.
#
# Launch-to-first-step is the wall time from starting the process to the end
# of its first optimizer step: moe-train's is seen by polling its log for the
# first step line (it flushes each line), PyTorch's is measured by
# bench_torch.py from its first line (import and compilation included). Both
# run with train.prime_steps 0 and no validation or checkpoints.
#
# A failed run (moe-train's CUDA backend is new) prints an error row with the
# first line of its stderr and the bench goes on. Needs a CUDA GPU, jq, and a
# Python with torch and numpy: PY (default python3).
set -eu
BIN=${BIN:-bin}
OUT=${OUT:-build/bench-train-cuda}
PY=${PY:-python3}
STEPS=${STEPS:-13}         # moe-train's steps, the first WARMUP of them untimed
WARMUP=${WARMUP:-3}
TORCH_STEPS=${TORCH_STEPS:-5}
TIMEOUT=${TIMEOUT:-600}    # seconds a moe-train run may take before it counts as failed
CONFIGS=${CONFIGS:-"golf golf-moe"}
SETS="--set train.max_seconds=0 --set train.prime_steps=0 --set train.val_every=0
      --set train.ckpt_every=0 --set train.log_every=1"

die() { echo "bench-train-cuda: $*" >&2; exit 1; }
command -v jq > /dev/null || die "jq not found (Debian package jq)"
[ -x "$BIN/moe-train" ] || die "$BIN/moe-train not built: make"
[ -x "$BIN/bench-gemm" ] || die "$BIN/bench-gemm not built: make, with nvcc present"
"$PY" -c 'import torch, numpy' 2> /dev/null ||
    die "$PY cannot import torch and numpy: set PY to a Python that has them"
[ "$STEPS" -gt "$WARMUP" ] || die "STEPS ($STEPS) must exceed WARMUP ($WARMUP)"
mkdir -p "$OUT/data"

# Random tokens, uniform over the vocabulary, in one llm.c-layout shard (a
# 256-word header: magic, version, count; then uint16 tokens): 2^24 tokens,
# 32 steps' worth; the loaders of both sides wrap around at its end. Speed
# does not depend on the text, and random tokens spread the MoE's routing.
vocab=$("$BIN/moe-train" --print-config | jq .model.vocab)
shard=$OUT/data/random_train_000000.bin
[ -s "$shard" ] || "$PY" - "$shard" "$vocab" << 'EOF'
import os, sys
import numpy as np
path, vocab, n = sys.argv[1], int(sys.argv[2]), 1 << 24
header = np.zeros(256, dtype="<i4")
header[:3] = (20240520, 1, n)
tokens = np.random.default_rng(1337).integers(0, vocab, n).astype("<u2")
with open(path + ".tmp", "wb") as f:
    f.write(header.tobytes())
    f.write(tokens.tobytes())
os.rename(path + ".tmp", path)
EOF

"$BIN/bench-gemm" > "$OUT/gemm.jsonl" || die "bin/bench-gemm failed (no CUDA GPU?)"
device=$(jq -r 'select(.device) | .device' "$OUT/gemm.jsonl")
peak=$(jq 'select(.op == "fwd" and .shape == "square") | .tflops' "$OUT/gemm.jsonl")
"$PY" testdata/ref/bench_torch.py --gemm > "$OUT/torch-gemm.json" ||
    die "bench_torch.py --gemm failed"
torch_peak=$(jq .tflops "$OUT/torch-gemm.json")

# One JSON line per run: {"impl","config","tokens_per_s","step_ms",
# "first_step_s","active_params"} or {"impl","config","error"}.
results=$OUT/results.jsonl
: > "$results"
for cfg in $CONFIGS; do
    eff=$OUT/$cfg.json
    # shellcheck disable=SC2086 # SETS is a list of options
    "$BIN/moe-train" -c "testdata/config/$cfg.json" $SETS --print-config > "$eff"

    log=$OUT/$cfg.moe-train.jsonl
    err=$OUT/$cfg.moe-train.err
    rm -f "$log"
    t0=$(date +%s.%N)
    timeout "$TIMEOUT" "$BIN/moe-train" --device cuda -c "$eff" --train "$OUT/data/*.bin" \
        --stop-at "$STEPS" -q --log "$log" -o "$OUT/ckpt-$cfg" 2> "$err" &
    pid=$!
    while kill -0 "$pid" 2> /dev/null && ! grep -q '"train_loss"' "$log" 2> /dev/null; do
        sleep 0.05
    done
    t1=$(date +%s.%N)
    if wait "$pid"; then
        batch=$(jq .train.batch_tokens "$eff")
        jq -c -s --arg cfg "$cfg" --argjson warm "$WARMUP" --argjson batch "$batch" \
            --argjson first "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" '
            (.[] | select(.event == "start") | .active_params) as $active
            | [.[] | select(.train_loss) | select(.step > $warm) | .tokens_per_s] | sort
            | .[length / 2 | floor] as $tps
            | {impl: "moe-train", config: $cfg, tokens_per_s: $tps,
               step_ms: (1000 * $batch / $tps * 100 | round / 100),
               first_step_s: $first, active_params: $active}' "$log" >> "$results"
    else
        st=$? e=$(head -n 1 "$err")
        [ "$st" != 124 ] || e="still running after $TIMEOUT s (TIMEOUT)"
        jq -cn --arg cfg "$cfg" --arg e "${e:-exit status $st} (see $err)" \
            '{impl: "moe-train", config: $cfg, error: $e}' >> "$results"
    fi

    terr=$OUT/$cfg.torch.err
    if "$PY" testdata/ref/bench_torch.py --config "$eff" --shards "$OUT/data/*.bin" \
        --warmup "$WARMUP" --steps "$TORCH_STEPS" --name "$cfg" > "$OUT/$cfg.torch.json" \
        2> "$terr"; then
        cat "$OUT/$cfg.torch.json" >> "$results"
    else
        # the exception's own line, else the last line (a SystemExit message)
        e=$(grep -E '^[A-Za-z_.]*(Error|Exception)\b' "$terr" | tail -n 1)
        jq -cn --arg cfg "$cfg" --arg e "${e:-$(grep . "$terr" | tail -n 1)} (see $terr)" \
            '{impl: "pytorch", config: $cfg, error: $e}' >> "$results"
    fi
done

# FLOPs per token of each config, 6 N_active + 6 L T d, N_active counted as
# lib/config.c's gk_config_params counts it (checked against the runs' own
# active_params below).
flops_jq='.model as $m | .moe as $e | $m.d_model as $d
    | (if $m.mlp_hidden > 0 then $m.mlp_hidden else $m.mlp_mult * $d end) as $f
    | (if $e.expert_hidden > 0 then $e.expert_hidden else $f end) as $fe
    | ((if $m.activation == "swiglu" then 3 else 2 end) * $d * $fe) as $expert
    | (2 * $d * $d + 2 * $d * $m.n_kv_head * ($d / $m.n_head) + $m.n_head + 4 * $d
       + ($e.n_shared + $e.top_k) * $expert
       + (if $e.n_experts > 1 and $e.router != "token" then $d * $e.n_experts else 0 end)) as $block
    | ($m.vocab * $d * (if $m.tie_embeddings then 1 else 2 end) + $m.n_layer * $block
       + ($m.n_layer / 2 | floor) * $d) as $n
    | {n_active: $n, flops: (6 * $n + 6 * $m.n_layer * $m.seq_len * $d)}'
for cfg in $CONFIGS; do
    jq -c --arg cfg "$cfg" "$flops_jq"' | {($cfg): .}' "$OUT/$cfg.json"
done | jq -s add > "$OUT/flops.json"
jq -r -s --slurpfile fl "$OUT/flops.json" '.[] | select(.active_params)
    | select(.active_params != $fl[0][.config].n_active)
    | "warning: \(.impl) \(.config): \(.active_params) active parameters, the FLOP count assumes \($fl[0][.config].n_active)"' \
    "$results" >&2

echo "bench-train-cuda: $device"
echo "bf16 GEMM 8192^3: $peak TFLOP/s through kernels/gemm.h (cuBLASLt, median; MFU is against this);" \
    "torch.matmul $torch_peak TFLOP/s"
jq -r -s '[.[] | select(.op and .shape != "square")] | group_by(.shape) | sort_by(-.[0].n)
    | "model shapes, TFLOP/s fwd/dx/dW: " + (map("\(.[0].shape) \(.[0].n)x\(.[0].in)->\(.[0].out) "
      + (sort_by(.op == "dw", .op == "dx") | map(.tflops | tostring) | join("/"))) | join(", "))' \
    "$OUT/gemm.jsonl"
jq -r 'to_entries[] | "FLOPs per token = 6 N_active + 6 L T d: \(.key) \(.value.flops / 1e6 * 100 | round / 100) M (N_active \(.value.n_active))"' \
    "$OUT/flops.json"
printf '%-10s %-10s %10s %12s %7s %13s %11s\n' config impl step_ms tokens/s MFU first_step_s vs_pytorch
jq -r -s --slurpfile fl "$OUT/flops.json" --argjson peak "$peak" '. as $all | .[] | . as $r
    | if $r.error then [$r.config, $r.impl, "error: " + $r.error]
      else ($all | map(select(.config == $r.config and .impl == "pytorch" and (.error | not)))
            | .[0]) as $pt
      | [$r.config, $r.impl, $r.step_ms, $r.tokens_per_s,
         100 * $r.tokens_per_s * $fl[0][$r.config].flops / ($peak * 1e12), $r.first_step_s,
         (if $pt then $r.tokens_per_s / $pt.tokens_per_s else "-" end)]
      end | @tsv' "$results" |
    awk -F '\t' 'NF == 3 { printf "%-10s %-10s %s\n", $1, $2, $3; next }
                 { printf "%-10s %-10s %10.1f %12d %6.1f%% %13.2f %11s\n", $1, $2, $3, $4, $5, $6,
                          $7 == "-" ? "-" : sprintf("%.2fx", $7) }'
jq -r -s '. as $all | .[] | select(.config != "golf" and (.error | not)) | . as $r
    | ($all | map(select(.config == "golf" and .impl == $r.impl and (.error | not))) | .[0]) as $g
    | select($g) | "\($r.config) / golf tokens/s, \($r.impl): \($r.tokens_per_s / $g.tokens_per_s * 100 | round / 100)x"' \
    "$results"
echo "targets: moe-train >= 1.5x PyTorch on golf, MFU >= 45%, first step < 5 s, MoE >= 0.8x golf"
