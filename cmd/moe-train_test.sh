#!/bin/sh
# moe-train: a tiny model trained on shards made by the real pipeline (the
# repository's own man pages through tok-train, tok-encode and shard). Checks
# the log, the checkpoints (and that Python's safetensors reads them), a
# bit-exact resume, determinism, the NaN stop, and config errors.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

tiny_data 320
cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 6, "batch_tokens": 256, "grad_accum": 2, "prime_steps": 0,
           "warmdown_steps": 3, "max_seconds": 0, "val_every": 3, "val_batch_tokens": 256,
           "val_tokens": 1024, "log_every": 1, "ckpt_every": 2}}
JSON
train() { # train OUTDIR [flags]
    d=$1; shift
    "$bin/moe-train" -q --threads 2 --train "$tmp/data/data_train_*.bin" \
        --val "$tmp/data/data_val_*.bin" -t "$tmp/t.tok" -o "$tmp/$d" "$@"
}

train a -c "$tmp/tiny.json" --save-init > "$tmp/a.log"
ok "a run writes one JSON object per line" jq -e . "$tmp/a.log"
ok "the log has a start record with the parameter count" \
    jq -e -s '.[0].event == "start" and .[0].params > 0' "$tmp/a.log"
ok "6 training steps logged, each with a finite loss" \
    jq -e -s '[.[] | select(.train_loss)] | length == 6 and all(.train_loss | isinfinite | not)' "$tmp/a.log"
ok "the loss falls from ln(vocab)" \
    jq -e -s '[.[] | select(.train_loss)] | (.[0].train_loss > 5.5) and (.[-1].train_loss < .[0].train_loss)' "$tmp/a.log"
ok "validation at steps 3 and 6 with val_bpb from the tokenizer" \
    jq -e -s '[.[] | select(.val_bpb)] | map(.step) == [3, 6]' "$tmp/a.log"
ok "checkpoints every 2 steps, the initial weights, and the final one" \
    test -s "$tmp/a/ckpt_000000.safetensors" -a -s "$tmp/a/ckpt_000002.safetensors" \
         -a -s "$tmp/a/ckpt_000004.safetensors" -a -s "$tmp/a/final.safetensors"

ok "Python's safetensors reads the checkpoint: weights, optimizer state, metadata" \
    "$py" -c "
import json, sys
from safetensors import safe_open
from safetensors.numpy import load_file
t = load_file('$tmp/a/final.safetensors')
assert t['tok_emb.weight'].shape == (320, 32), t['tok_emb.weight'].shape
assert t['blocks.1.attn.c_q.weight'].shape == (32, 32)
assert 'optim.muon_buf.blocks.0.mlp.fc.weight' in t and 'optim.adam_m.tok_emb.weight' in t
m = safe_open('$tmp/a/final.safetensors', 'np').metadata()
assert m['golfkit.step'] == '6' and json.loads(m['golfkit.config'])['model']['d_model'] == 32
"

train b -c "$tmp/tiny.json" > /dev/null
ok "same seed and inputs: byte-identical final checkpoint" cmp "$tmp/a/final.safetensors" "$tmp/b/final.safetensors"

# 6 steps at once, against 3 steps, then a resume for the other 3.
train c -c "$tmp/tiny.json" --stop-at 3 > /dev/null
train d --resume "$tmp/c/final.safetensors" > "$tmp/d.log"
ok "3 steps + resume + 3 steps: byte-identical to 6 steps" cmp "$tmp/a/final.safetensors" "$tmp/d/final.safetensors"
ok "the resumed log continues at step 4" jq -e -s '[.[] | select(.train_loss)][0].step == 4' "$tmp/d.log"

ok "--print-config prints every section" sh -c \
    "'$bin/moe-train' -c '$tmp/tiny.json' --set model.n_layer=4 --print-config | jq -e '.model.n_layer == 4 and .moe and .train'"

# The man page's table of keys and defaults is the program's, key for key.
"$bin/moe-train" --print-config |
    jq -r 'to_entries[] | .key as $s | .value | to_entries[] | "\($s).\(.key)\t\(.value)"' > "$tmp/keys"
sed -n '/^\.TS/,/^\.TE/p' "$top/man/man1/moe-train.1" | sed '1,2d;$d' > "$tmp/man_keys"
ok "moe-train(1) lists every config key with its current default" cmp "$tmp/keys" "$tmp/man_keys"

fails() { # fails DESCRIPTION PATTERN COMMAND...: exit 1 and one line matching PATTERN
    desc=$1 pat=$2; shift 2
    "$@" > /dev/null 2> "$tmp/err"
    rc=$?
    ok "$desc (exit $rc)" sh -c "test $rc = 1 && test \$(wc -l < '$tmp/err') = 1 && grep -qE '$pat' '$tmp/err'"
}
fails "an unknown config key names the nearest one" "model.n_heads: unknown key; did you mean model.n_head" \
    "$bin/moe-train" --set model.n_heads=4 --print-config
fails "a head count that does not divide" "n_kv_head" \
    "$bin/moe-train" -c "$tmp/tiny.json" --set model.n_kv_head=3 --print-config
fails "a diverging run stops at the first non-finite loss, naming the last checkpoint" \
    "step [0-9]+: expected a finite train_loss, found -?(nan|inf).*last good checkpoint: .*ckpt_0000" \
    train e -c "$tmp/tiny.json" --set train.steps=40 --set train.warmdown_steps=0 \
        --set train.tied_embed_lr=1e30 --set train.scalar_lr=1e30 --set train.ckpt_every=1
fails "a tokenizer of another vocab" "t.tok: expected vocab 100 .model.vocab., found 320" \
    train f -c "$tmp/tiny.json" --set model.vocab=100
fails "shards of another vocab" "offset 16: expected vocab 100 .the model.s., found 320" \
    "$bin/moe-train" -q -c "$tmp/tiny.json" --set model.vocab=100 --train "$tmp/data/data_train_*.bin" -o "$tmp/g"
"$bin/moe-train" --frobnicate > /dev/null 2>&1
ok "bad usage exits 2" test $? = 2
"$bin/moe-train" --device tpu --print-config > /dev/null 2>&1
ok "--device tpu is a usage error (exit 2)" test $? = 2
# The sanitizer build has no CUDA backend; the release build has one when
# nvcc was found, and no GPU on a machine without one: each says which.
for b in "$bin/moe-train" "$top/bin/moe-train"; do
    [ -x "$b" ] || continue
    fails "--device cuda with no CUDA build or no GPU: $(basename "$(dirname "$b")")" \
        "moe-train --device cuda: expected (a build with the CUDA backend|a usable CUDA device)" \
        "$b" -q -c "$tmp/tiny.json" --device cuda --train "$tmp/data/data_train_*.bin" -o "$tmp/h"
done

tap_end
