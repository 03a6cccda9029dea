# tap.sh: what the shell tests share; each sources it after `set -u`.
#   top, bin, py   the repository, the tools under test ($GK_BIN or bin/) and
#                  the venv's python ($GK_VENV or build/venv)
#   tmp            a scratch directory, removed on exit
#   ok DESC CMD..  one TAP line: ok when CMD exits 0, else "not ok" and the
#                  first lines of its output as TAP comments
#   tiny_data V    the real pipeline on the repository's man pages (a line is a
#                  document): tokenizer $tmp/t.tok of vocab V, shards $tmp/data
#                  with 40 validation documents
#   tap_end        the plan line; the script's exit status
# shellcheck shell=sh
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${GK_BIN:-$top/bin}
py=${GK_VENV:-$top/build/venv}/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0

ok() {
    desc=$1; shift
    n=$((n + 1))
    if "$@" > "$tmp/out" 2>&1; then echo "ok $n - $desc"
    else echo "not ok $n - $desc"; sed 's/^/#   /' "$tmp/out" | head -8; failed=$((failed + 1)); fi
}

tiny_data() {
    cat "$top"/man/man*/* > "$tmp/corpus.txt"
    "$bin/tok-train" -q --vocab "$1" -o "$tmp/t.tok" "$tmp/corpus.txt"
    "$bin/tok-encode" -q -t "$tmp/t.tok" --doc-end line "$tmp/corpus.txt" |
        "$bin/shard" -q -o "$tmp/data" --val-docs 40 > /dev/null
}

# tiny_model: the 2-layer model (vocab 320, seq_len 32) that the moe-eval and
# moe-rollout tests read, trained 8 steps on tiny_data's shards into
# $tmp/ck/final.safetensors (log: $tmp/train.log); its config is
# $tmp/tiny.json.
tiny_model() {
    tiny_data 320
    cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 8, "batch_tokens": 256, "grad_accum": 2, "prime_steps": 0,
           "warmdown_steps": 3, "max_seconds": 0, "val_every": 0, "val_batch_tokens": 256,
           "val_tokens": 1024, "log_every": 1, "ckpt_every": 0}}
JSON
    "$bin/moe-train" -q --threads 2 -c "$tmp/tiny.json" --train "$tmp/data/data_train_*.bin" \
        --val "$tmp/data/data_val_*.bin" -t "$tmp/t.tok" -o "$tmp/ck" > "$tmp/train.log"
}

tap_end() {
    echo "1..$n"
    [ "$failed" = 0 ]
}
