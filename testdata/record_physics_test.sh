#!/bin/sh
# record-physics: pipelines/record-physics.mk end to end at toy size (a few
# dozen simulated scenes, a 2-layer MoE trained a few steps): the record
# holds the artifact and submission of `make record`, the scored rollouts of
# moe-rollout --physics (a line per evaluation scene and a summary) and the
# table of trained and held-out types over all and fittable scenes.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

cat > "$tmp/tiny.json" <<'JSON'
{"model": {"vocab": 512, "n_layer": 2, "d_model": 32, "n_head": 2, "n_kv_head": 1,
           "activation": "swiglu", "seq_len": 256},
 "moe": {"n_experts": 4, "n_shared": 1, "top_k": 2, "expert_hidden": 32,
         "router": "sigmoid_bias"},
 "train": {"steps": 6, "batch_tokens": 1024, "grad_accum": 1, "prime_steps": 0,
           "warmdown_steps": 2, "max_seconds": 0, "val_every": 3, "val_batch_tokens": 1024,
           "val_tokens": 2048, "log_every": 1}}
JSON
ok "make record-physics runs the whole chain" make --no-print-directory -C "$top" \
    record-physics SEED=3 PHYS_SCENES=60 PHYS_EVAL=6 PHYS_OBJECTS=1-2 PHYS_VAL_DOCS=10 \
    PHYS_CONFIG="$tmp/tiny.json" PHYS_W="$tmp/w" RECORDS="$tmp/records" CKPT_EVERY=3
r=$(ls -d "$tmp"/records/*_physics_seed3 2>/dev/null | head -n 1)
ok "the record holds the artifact, the submission, the rollouts and the table" \
    test -s "$r/model.pack" -a -s "$r/submission.json" -a -s "$r/physics.jsonl" -a -s "$r/physics.txt"
ok "physics.jsonl: one line per evaluation scene, then the summary over all six" \
    sh -c "test \$(jq -s 'map(select(.scene != null)) | length' '$r/physics.jsonl') = 6 &&
           jq -se 'last | .summary.scenes == 6 and .summary.frames == 15' '$r/physics.jsonl'"
ok "physics.txt: trained and held-out rows, all and fittable, and the malformed rate" \
    sh -c "grep -c '^trained/all\|^trained/fittable\|^heldout/all\|^heldout/fittable' '$r/physics.txt' |
           grep -qx 4 && grep -q '^malformed frames:' '$r/physics.txt'"

tap_end
