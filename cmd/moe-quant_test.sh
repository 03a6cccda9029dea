#!/bin/sh
# moe-quant: a tiny model trained by moe-train on shards made by the real
# pipeline, quantized under the default rules, a rules file, clip search and
# GPTQ. Checks that Python's safetensors reads the .qst, that --report is JSON
# with the expected schemes, that the dequantized weights (decoded in numpy
# from man5/qst.5 alone) stay close to the checkpoint, and the errors.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

tiny_data 300
cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 300, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 4, "batch_tokens": 256, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 2, "max_seconds": 0, "val_every": 0, "val_batch_tokens": 256,
           "val_tokens": 256, "log_every": 4, "ckpt_every": 0}}
JSON
"$bin/moe-train" -q --threads 2 --train "$tmp/data/data_train_*.bin" -t "$tmp/t.tok" \
    -c "$tmp/tiny.json" -o "$tmp/ck" > /dev/null
ck=$tmp/ck/final.safetensors
q() { "$bin/moe-quant" -q --threads 2 "$@"; }

q "$ck" -o "$tmp/a.qst" --report > "$tmp/a.jsonl"
ok "default run writes a .qst and one JSON object per report line" jq -e . "$tmp/a.jsonl"
ok "default schemes: block matrices int6, embedding int8, control tensors f32" \
    jq -e -s '(map(select(.name == "blocks.0.attn.c_q.weight"))[0].scheme == "int6") and
              (map(select(.name == "tok_emb.weight"))[0].scheme == "int8") and
              (map(select(.name == "blocks.1.attn.q_gain"))[0].scheme == "f32") and
              (map(select(.name == "blocks.0.resid_mix"))[0].scheme == "f32") and
              (map(select(.name == "skip_weights"))[0].scheme == "f32")' "$tmp/a.jsonl"
ok "report: bits per weight include the scales; errors are small; a summary ends it" \
    jq -e -s '(map(select(.scheme == "int6"))[0].bits_per_weight == 6.5) and
              all(.[] | select(.rel_err); .rel_err < 0.06) and
              (.[-1].event == "summary") and (.[-1].total_bytes > 0)' "$tmp/a.jsonl"

# Decode a .qst in numpy from the format description, compare with the checkpoint.
cat > "$tmp/check.py" <<'PY'
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
qst, ck, bound = sys.argv[1], sys.argv[2], float(sys.argv[3])
meta = safe_open(qst, 'np').metadata()
assert meta['golfkit.format'] == 'qst 1'
json.loads(meta['golfkit.config'])
quant = json.loads(meta['golfkit.quant'])
t, w = load_file(qst), load_file(ck)
qmax = {'int8': 127, 'int6': 31, 'int5': 15, 'int4': 7, 'ternary': 1, 'binary': 1}
bits = {'int8': 8, 'int6': 6, 'int5': 5, 'int4': 4, 'ternary': 2, 'binary': 1}
for name, e in quant.items():
    ref = w[name].astype(np.float64)
    s = e['scheme']
    if s in ('f16', 'f32'):
        d = t[name].astype(np.float64)
    else:
        x = t[name]
        rows, cols = ref.reshape(ref.shape[0] if ref.ndim == 2 else 1, -1).shape
        if e['layout'] == 'bits':
            b = bits[s]
            bitsarr = np.unpackbits(x, axis=1, bitorder='little')[:, :cols * b]
            codes = (bitsarr.reshape(rows, cols, b) << np.arange(b)).sum(axis=2)
            q = codes * 2 - 1 if s == 'binary' else codes - qmax[s]
        else:
            q = x.astype(np.int64)
        d = (q * t[name + '.scale'].astype(np.float64)[:, None]).reshape(ref.shape)
    err = np.linalg.norm(d - ref) / max(np.linalg.norm(ref), 1e-30)
    assert err < bound, (name, s, err)
PY
ok "Python's safetensors reads it; numpy's dequantization is within 6% of the checkpoint" \
    "$py" "$tmp/check.py" "$tmp/a.qst" "$ck" 0.06

printf '# int4 attention, int8 the rest of the blocks\n\nblocks.*.attn.c_[qkv].weight int4\nblocks.* int8\n' \
    > "$tmp/rules"
q "$ck" -o "$tmp/r.qst" --rules "$tmp/rules" --layout bits --embed f16 --report > "$tmp/r.jsonl"
ok "rules file: first match wins, then the flag defaults" \
    jq -e -s '(map(select(.name == "blocks.1.attn.c_k.weight"))[0].scheme == "int4") and
              (map(select(.name == "blocks.1.attn.proj.weight"))[0].scheme == "int8") and
              (map(select(.name == "blocks.1.attn.q_gain"))[0].scheme == "int8") and
              (map(select(.name == "tok_emb.weight"))[0].scheme == "f16")' "$tmp/r.jsonl"
ok "bit-packed layout decodes in numpy within 20%" "$py" "$tmp/check.py" "$tmp/r.qst" "$ck" 0.2

q "$ck" -o "$tmp/c.qst" --matrix int4 --clip-search --report > "$tmp/c.jsonl"
q "$ck" -o "$tmp/n.qst" --matrix int4 --report > "$tmp/n.jsonl"
ok "clip search is never worse than round-to-nearest of the row max" \
    jq -e -n --slurpfile c "$tmp/c.jsonl" --slurpfile r "$tmp/n.jsonl" \
    '[range($c | length - 1)] | all($c[.].rel_err <= $r[.].rel_err + 1e-12)'

q "$ck" -o "$tmp/g.qst" --matrix int4 --gptq --calib "$tmp/data/data_train_*.bin" \
    --calib-tokens 512 --act-order --block 8 --report > "$tmp/g.jsonl"
ok "GPTQ runs on the block matrices and writes a readable model" \
    jq -e -s '(map(select(.gptq)) | length == 12) and
              (map(select(.name == "tok_emb.weight"))[0].gptq == false)' "$tmp/g.jsonl"
ok "GPTQ model decodes in numpy within 25%" "$py" "$tmp/check.py" "$tmp/g.qst" "$ck" 0.25

printf 'blocks.* int6\nblocks.*.q_gain int7\n' > "$tmp/bad"
q "$ck" -o "$tmp/x.qst" --rules "$tmp/bad" 2> "$tmp/err"; rc=$?
ok "an unknown scheme in a rules file: exit 1, one line naming the line" \
    sh -c "[ $rc = 1 ] && [ \$(wc -l < '$tmp/err') = 1 ] && grep -q 'bad:2: expected a scheme.*found \"int7\"' '$tmp/err'"
printf 'blocks.*\n' > "$tmp/bad2"
q "$ck" -o "$tmp/x.qst" --rules "$tmp/bad2" 2> "$tmp/err"; rc=$?
ok "a rule without a scheme: exit 1, naming line 1" \
    sh -c "[ $rc = 1 ] && grep -q 'bad2:1: expected \"PATTERN SCHEME\"' '$tmp/err'"
q "$ck" -o "$tmp/x.qst" --matrix int3 2> "$tmp/err"; rc=$?
ok "an unknown scheme flag: exit 2" sh -c "[ $rc = 2 ] && grep -q 'found .int3.' '$tmp/err'"
ok "no half-written output after errors" sh -c "! ls '$tmp'/x.qst* 2>/dev/null"

tap_end
