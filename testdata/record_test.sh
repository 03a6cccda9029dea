#!/bin/sh
# record: the whole pipeline of pipelines/record.mk on a tiny corpus and
# model (the repository's man pages, a 2-layer model, a few steps), then a
# change of QUANT that must re-run only quantize, pack and eval.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

cat "$top"/man/man*/* > "$tmp/corpus.txt"
cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 320, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "seq_len": 32},
 "train": {"steps": 8, "batch_tokens": 256, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 4, "max_seconds": 0, "val_every": 4, "val_batch_tokens": 256,
           "val_tokens": 1024, "log_every": 1}}
JSON
rec() { make --no-print-directory -C "$top" record-files W="$tmp/w" RECORDS="$tmp/records" \
    CONFIG="$tmp/tiny.json" CORPUS="$tmp/corpus.txt" DOC_END=line VOCAB=320 VAL_DOCS=40 \
    CKPT_EVERY=2 NAME=tiny "$@"; }

ok "make record-files runs the whole chain" rec
r=$(ls -d "$tmp"/records/*_tiny_seed1337 2>/dev/null | head -n 1)
ok "the record holds the artifact, submission, log, evaluations and plot" \
    test -s "$r/model.pack" -a -s "$r/submission.json" -a -s "$r/train.log" -a -s "$r/loss.png" \
         -a -s "$r/eval-before-quant.json" -a -s "$r/eval-after-quant.json"
ok "submission.json: bpb before and after quantization, sizes within the limit, stage times" \
    jq -e '(.val_bpb | type == "number") and (.val_bpb_before_quant | type == "number")
           and .artifact_bytes > 0 and .code_bytes > 0 and .total_bytes <= .limit_bytes
           and .seed == 1337 and (.seconds.train | type == "number")' "$r/submission.json"
ok "the artifact verifies" "$top/bin/moe-pack" --verify "$r/model.pack"

# Upstream files keep their times when only QUANT changes.
ls -l --time-style=+%s.%N "$tmp"/w/*.tok "$tmp"/w/*-shards/done "$tmp"/w/*-seed1337/final.safetensors \
    "$tmp"/w/*-seed1337/avg-swa.safetensors > "$tmp/before"
ok "QUANT=int8 re-runs the downstream stages" rec QUANT=int8
ls -l --time-style=+%s.%N "$tmp"/w/*.tok "$tmp"/w/*-shards/done "$tmp"/w/*-seed1337/final.safetensors \
    "$tmp"/w/*-seed1337/avg-swa.safetensors > "$tmp/after"
ok "... and not the tokenizer, shards, training or averaging (4 files, same times)" \
    sh -c "test \$(wc -l < '$tmp/before') = 4 && cmp '$tmp/before' '$tmp/after'"
ok "... making the int8 model, artifact and evaluation" \
    test -s "$(ls "$tmp"/w/*-seed1337/model-swa-int8-zstd.pack.eval.json)"

ok "an artifact over the limit fails the record, saying by how much" sh -c \
    "! make --no-print-directory -C '$top' record-files W='$tmp/w' RECORDS='$tmp/records' \
       CONFIG='$tmp/tiny.json' CORPUS='$tmp/corpus.txt' DOC_END=line VOCAB=320 VAL_DOCS=40 \
       CKPT_EVERY=2 NAME=tiny LIMIT=1000 2> '$tmp/err' && grep -q 'over by' '$tmp/err'"

tap_end
