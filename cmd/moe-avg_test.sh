#!/bin/sh
# moe-avg: checkpoints of a tiny model trained on shards made by the real
# pipeline (as cmd/moe-train_test.sh makes them), averaged uniformly, with
# weights, and as moe-train's EMA; the results checked element by element
# with numpy. Also: EMA tensors survive a bit-exact resume, a config
# mismatch is refused naming the key, and bad usage exits 2.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

tiny_data 320
cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "moe": {"n_experts": 2, "top_k": 1},
 "train": {"steps": 6, "batch_tokens": 256, "grad_accum": 2, "prime_steps": 0,
           "warmdown_steps": 3, "max_seconds": 0, "val_every": 0, "log_every": 0,
           "ckpt_every": 2}}
JSON
train() { # train OUTDIR [flags]
    d=$1; shift
    "$bin/moe-train" -q --threads 2 --train "$tmp/data/data_train_*.bin" -o "$tmp/$d" "$@"
}
avg() { "$bin/moe-avg" -q "$@"; }

train a -c "$tmp/tiny.json" > /dev/null
A2=$tmp/a/ckpt_000002.safetensors A4=$tmp/a/ckpt_000004.safetensors AF=$tmp/a/final.safetensors

# check.py EXPR: load the named files with safetensors.numpy and assert.
cat > "$tmp/check.py" <<'PY'
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
def L(p): return load_file(p)
def meta(p): return safe_open(p, 'np').metadata()
def params(t): return {k: v for k, v in t.items() if not k.startswith(('optim.', 'ema.'))}
def bufs(t): return [k for k in t if k.endswith('router_bias')]
def close(out, ref, tol):
    assert set(out) == set(ref), sorted(set(out) ^ set(ref))
    for k in ref:
        d = np.max(np.abs(out[k].astype(np.float64) - ref[k]))
        assert d <= tol, (k, d)
exec(sys.argv[1])
PY
check() { "$py" "$tmp/check.py" "$1"; }

avg -o "$tmp/u.safetensors" "$A2" "$A4" "$AF" > "$tmp/u.json"
ok "uniform: one JSON line naming the inputs, equal weights and the output" \
    jq -e --arg o "$tmp/u.safetensors" '.method == "uniform" and (.inputs | length) == 3 and
        .weights == [1/3, 1/3, 1/3] and .output == $o and .step == 6' "$tmp/u.json"
ok "uniform: the elementwise mean of three checkpoints; buffers from the last" check "
a, b, c, u = L('$A2'), L('$A4'), L('$AF'), L('$tmp/u.safetensors')
assert bufs(c), 'the MoE model has router biases'
ref = {k: (params(a)[k].astype(np.float64) + b[k] + c[k]) / 3 for k in params(a)}
for k in bufs(c): ref[k] = c[k]
close(u, ref, 1e-7)
for k in bufs(c): assert np.array_equal(u[k], c[k])
"
ok "the output has no optimizer state; its metadata says what was averaged" check "
m = meta('$tmp/u.safetensors')
assert m['golfkit.step'] == '6' and m['golfkit.format'] == 'moe-train checkpoint 1'
assert json.loads(m['golfkit.avg'])['method'] == 'uniform'
assert json.loads(m['golfkit.config']) == json.loads(meta('$AF')['golfkit.config'])
"
avg -o "$tmp/u2.safetensors" "$A2" "$A4" "$AF" > /dev/null
ok "deterministic: the same inputs give the same bytes" cmp "$tmp/u.safetensors" "$tmp/u2.safetensors"
ok "the output reads back through moe-avg (gk_ckpt_open, gk_ckpt_read_params)" \
    avg -o "$tmp/uu.safetensors" "$tmp/u.safetensors"

avg -o "$tmp/w.safetensors" --weights 1,3 "$A4" "$AF" > "$tmp/w.json"
ok "weighted: weights normalized in the JSON line" jq -e '.method == "weighted" and .weights == [0.25, 0.75]' "$tmp/w.json"
ok "weighted: 0.25 a + 0.75 b elementwise" check "
a, b, w = L('$A4'), L('$AF'), L('$tmp/w.safetensors')
ref = {k: 0.25 * params(a)[k].astype(np.float64) + 0.75 * b[k].astype(np.float64) for k in params(a)}
for k in bufs(b): ref[k] = b[k]
close(w, ref, 1e-7)
"
avg -o "$tmp/one.safetensors" "$AF" > /dev/null
ok "the average of one checkpoint is its parameters exactly" check "
a, o = L('$AF'), L('$tmp/one.safetensors')
assert set(o) == set(params(a))
for k in o: assert np.array_equal(o[k], a[k]), k
"

# EMA: kept by moe-train, written out by moe-avg --ema.
train e -c "$tmp/tiny.json" --set train.ema_decay=0.9 > /dev/null
ok "train.ema_decay 0.9: the checkpoint holds ema.* for every trained tensor, not buffers" check "
t = L('$tmp/e/final.safetensors')
p = params(t)
assert all('ema.' + k in t for k in p if k not in bufs(t)) and not any('ema.' + k in t for k in bufs(t))
assert any(not np.array_equal(t['ema.' + k], p[k]) for k in p if k not in bufs(t))
"
ok "without ema_decay, no ema.* tensors" check "assert not any(k.startswith('ema.') for k in L('$AF'))"
avg -o "$tmp/ema.safetensors" --ema "$tmp/e/final.safetensors" > "$tmp/ema.json"
ok "--ema: one JSON line" jq -e '.method == "ema" and .step == 6' "$tmp/ema.json"
ok "--ema: the output is the ema.* tensors (and the buffers) exactly" check "
t, o = L('$tmp/e/final.safetensors'), L('$tmp/ema.safetensors')
assert set(o) == set(params(t))
for k in o: assert np.array_equal(o[k], t[k] if k in bufs(t) else t['ema.' + k]), k
"
ok "--ema: the EMA after 1 step is 0.9 init + 0.1 params, with --save-init" sh -c "
'$bin/moe-train' -q --threads 2 --train '$tmp/data/data_train_*.bin' -o '$tmp/e1' -c '$tmp/tiny.json' \
    --set train.ema_decay=0.9 --save-init --stop-at 1 > /dev/null &&
'$py' '$tmp/check.py' \"
i, t = L('$tmp/e1/ckpt_000000.safetensors'), L('$tmp/e1/final.safetensors')
for k in params(t):
    if k in bufs(t): continue
    ref = np.float32(0.9) * i[k] + np.float32(0.1) * t[k]
    assert np.max(np.abs(t['ema.' + k] - ref)) <= 1e-6, k
\""
train c -c "$tmp/tiny.json" --set train.ema_decay=0.9 --stop-at 3 > /dev/null
train d --resume "$tmp/c/final.safetensors" > /dev/null
ok "with EMA, 3 steps + resume + 3 steps: byte-identical to 6 steps" \
    cmp "$tmp/e/final.safetensors" "$tmp/d/final.safetensors"

fails() { # fails DESCRIPTION RC PATTERN COMMAND...: exit RC, the first line matching
    # PATTERN, and nothing else (bad usage adds a line pointing at --help)
    desc=$1 want=$2 pat=$3; shift 3
    "$@" > /dev/null 2> "$tmp/err"
    rc=$?
    lines=1; [ "$want" = 2 ] && lines=2
    ok "$desc (exit $rc)" sh -c "test $rc = $want && test \$(wc -l < '$tmp/err') = $lines && head -1 '$tmp/err' | grep -qE -- '$pat'"
}
train g -c "$tmp/tiny.json" --set model.d_model=64 --stop-at 1 > /dev/null
fails "a checkpoint of another config is refused, naming the first differing key" 1 \
    "g/final.safetensors: field model.d_model: expected 32 \\(as in .*a/final.safetensors\\), found 64" \
    avg -o "$tmp/x.safetensors" "$AF" "$tmp/g/final.safetensors"
ok "and nothing is written" test ! -e "$tmp/x.safetensors"
fails "--ema of a checkpoint without EMA" 1 "final.safetensors: expected ema.* tensors" \
    avg -o "$tmp/x.safetensors" --ema "$AF"
fails "--weights of the wrong count" 2 "expected 2 weights" avg -o "$tmp/x.safetensors" --weights 1 "$A4" "$AF"
fails "--weights all zero" 2 "positive sum" avg -o "$tmp/x.safetensors" --weights 0,0 "$A4" "$AF"
fails "no output" 2 "-o FILE" avg "$AF"
fails "no inputs" 2 "found none" avg -o "$tmp/x.safetensors"
fails "--ema with other inputs" 2 "--ema takes one checkpoint" avg -o "$tmp/x.safetensors" --ema "$AF" "$A4"
"$bin/moe-avg" --frobnicate > /dev/null 2>&1
ok "an unknown option exits 2" test $? = 2
ok "--help exits 0 with usage" sh -c "'$bin/moe-avg' --help | grep -q 'usage: moe-avg'"

tap_end
