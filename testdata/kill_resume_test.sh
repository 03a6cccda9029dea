#!/bin/sh
# kill_resume: moe-train killed with SIGKILL at random moments, then resumed
# from the newest checkpoint it left (or started again when it left none),
# must end in a final checkpoint byte-identical to an uninterrupted run: a
# kill never leaves a checkpoint that reads back wrong (they are written to
# NAME.tmp, fsynced and renamed), and a resume continues bit for bit. The
# kill delays are random, printed as TAP comments; KILL_SEED=N repeats them.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

tiny_data 320
cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 40, "batch_tokens": 256, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 10, "max_seconds": 0, "val_every": 0, "log_every": 1,
           "ckpt_every": 4}}
JSON
train() { # train OUTDIR [flags]
    d=$1; shift
    "$bin/moe-train" -q --threads 1 --train "$tmp/data/data_train_*.bin" -o "$tmp/$d" \
        --log "$tmp/$d.log" "$@"
}
train whole -c "$tmp/tiny.json"
start=$(date +%s.%N)
train timing -c "$tmp/tiny.json"
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
seed=${KILL_SEED:-$(date +%s)}
echo "# an uninterrupted run takes ${secs}s; kill delays from KILL_SEED=$seed"

for k in 1 2 3 4; do
    delay=$(awk -v s="$seed" -v k="$k" -v t="$secs" 'BEGIN { srand(s + k); printf "%.3f", rand() * t }')
    d=killed$k
    # moe-train itself in the background (not a subshell around it), so the
    # signal reaches the trainer
    "$bin/moe-train" -q --threads 1 --train "$tmp/data/data_train_*.bin" -o "$tmp/$d" \
        --log "$tmp/$d.log" -c "$tmp/tiny.json" &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    last=$(ls "$tmp/$d"/ckpt_*.safetensors 2> /dev/null | tail -n 1)
    leftover=$(ls "$tmp/$d" | grep -c '\.tmp$')
    echo "# kill $k after ${delay}s: newest checkpoint ${last:-none}, $leftover temporary file(s) left"
    if [ -n "$last" ]; then
        train "$d" --resume "$last"
    else
        train "$d" -c "$tmp/tiny.json"
    fi
    from=scratch
    [ -n "$last" ] && from=$(basename "$last")
    ok "kill -9 after ${delay}s, resumed from $from: final checkpoint byte-identical" \
        cmp "$tmp/whole/final.safetensors" "$tmp/$d/final.safetensors"
done

tap_end
