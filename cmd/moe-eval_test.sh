#!/bin/sh
# moe-eval: a tiny model trained by moe-train on shards made by the real
# pipeline (as cmd/moe-train_test.sh), then evaluated as a checkpoint, as a
# .qst from moe-quant and as a .pack from moe-pack. Checks that the default
# pass is moe-train's own validation (same data, same windows: its final
# logged val_loss and val_bpb), that the sliding window scores the same
# targets with a loss no higher, that a float32 .qst is the checkpoint and a
# .pack its .qst, the JSON result, and the errors.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

tiny_model
"$bin/tok-train" -q --vocab 300 -o "$tmp/other.tok" "$tmp/corpus.txt"
val="$tmp/data/data_val_*.bin"
ck=$tmp/ck/final.safetensors
jq -s '[.[] | select(.val_loss)][-1]' "$tmp/train.log" > "$tmp/train_val.json"

ev() { "$bin/moe-eval" -q --threads 2 "$@"; }
ev "$ck" --val "$val" -t "$tmp/t.tok" --max-tokens 1024 > "$tmp/flat.json"
ok "one JSON line with every field" sh -c "test \$(wc -l < '$tmp/flat.json') = 1 && jq -e '
    .model == \"$ck\" and .kind == \"checkpoint\" and .eval == \"non-overlapping\" and
    .context == 32 and .stride == 32 and .tokens > 0 and .tokens % 32 == 0 and .bytes > 0 and
    (.val_loss | type) == \"number\" and (.val_bpb | type) == \"number\" and .seconds >= 0' '$tmp/flat.json'"
ok "val_loss equals moe-train's final logged val_loss (same data, same windows) to 1e-6" \
    jq -e -n --slurpfile a "$tmp/flat.json" --slurpfile b "$tmp/train_val.json" \
    '($a[0].val_loss - $b[0].val_loss | fabs) < 1e-6 and ($a[0].val_bpb - $b[0].val_bpb | fabs) < 1e-6'
ok "val_bpb = val_loss / ln 2 x tokens / bytes" jq -e \
    '(.val_loss / (2 | log) * .tokens / .bytes - .val_bpb | fabs) < 1e-9' "$tmp/flat.json"

ev "$ck" --val "$val" -t "$tmp/t.tok" --max-tokens 1024 --stride 8 --context 32 > "$tmp/slide.json"
ok "sliding window (stride 8, context 32): the same targets and bytes" jq -e -n \
    --slurpfile a "$tmp/flat.json" --slurpfile b "$tmp/slide.json" \
    '$b[0].eval == "sliding" and $b[0].stride == 8 and $b[0].context == 32 and
     $a[0].tokens == $b[0].tokens and $a[0].bytes == $b[0].bytes'
ok "sliding window: a loss no higher than non-overlapping (more context)" jq -e -n \
    --slurpfile a "$tmp/flat.json" --slurpfile b "$tmp/slide.json" \
    '$b[0].val_loss <= $a[0].val_loss + 1e-9'
ev "$ck" --val "$val" -t "$tmp/t.tok" --max-tokens 1024 --stride 32 > "$tmp/s32.json"
ok "stride = context = seq_len: the non-overlapping loss" jq -e -n \
    --slurpfile a "$tmp/flat.json" --slurpfile b "$tmp/s32.json" \
    '($a[0].val_loss - $b[0].val_loss | fabs) < 1e-9'
ev "$ck" --val "$val" -t "$tmp/t.tok" --max-tokens 1024 --stride 8 --context 32 \
    --batch-tokens 32 > "$tmp/slide1.json"
ok "the batch size does not change the result" jq -e -n \
    --slurpfile a "$tmp/slide.json" --slurpfile b "$tmp/slide1.json" \
    '($a[0].val_loss - $b[0].val_loss | fabs) < 1e-6'
ev "$ck" --val "$val" --max-tokens 100 > "$tmp/notok.json"
ok "no tokenizer: val_bpb and bytes null; --max-tokens cut to whole sequences" jq -e \
    '.val_bpb == null and .bytes == null and .tokens == 96' "$tmp/notok.json"
ok "progress on stderr with --progress" sh -c \
    "'$bin/moe-eval' --progress --threads 2 '$ck' --val '$val' --max-tokens 64 2>&1 >/dev/null | grep -q tokens"

# A .qst from moe-quant: all-f32 is the checkpoint exactly; int8 is close.
"$bin/moe-quant" -q --threads 2 "$ck" -o "$tmp/f32.qst" --matrix f32 --embed f32 --control f32
"$bin/moe-quant" -q --threads 2 "$ck" -o "$tmp/int8.qst" --matrix int8 --embed int8
ev "$tmp/f32.qst" --val "$val" -t "$tmp/t.tok" --max-tokens 1024 > "$tmp/qf32.json"
ev "$tmp/int8.qst" --val "$val" -t "$tmp/t.tok" --max-tokens 1024 > "$tmp/qint8.json"
ok "a float32 .qst (told by content: kind qst) has the checkpoint's val_loss" jq -e -n \
    --slurpfile a "$tmp/flat.json" --slurpfile b "$tmp/qf32.json" \
    '$b[0].kind == "qst" and ($a[0].val_loss - $b[0].val_loss | fabs) < 1e-9 and
     $a[0].tokens == $b[0].tokens and $a[0].bytes == $b[0].bytes'
ok "an int8 .qst: val_bpb within 0.05 of the checkpoint's" jq -e -n \
    --slurpfile a "$tmp/flat.json" --slurpfile b "$tmp/qint8.json" \
    '$b[0].kind == "qst" and ($a[0].val_bpb - $b[0].val_bpb | fabs) < 0.05'
cp "$tmp/int8.qst" "$tmp/renamed.bin"
ok "the kind comes from the content, not the name" sh -c \
    "'$bin/moe-eval' -q --threads 2 '$tmp/renamed.bin' --val '$val' --max-tokens 64 | jq -e '.kind == \"qst\"'"

# A .pack from moe-pack: it carries its tokenizer, so no -t.
"$bin/moe-pack" -o "$tmp/m.pack" --model "$tmp/int8.qst" --tokenizer "$tmp/t.tok" > /dev/null
ev "$tmp/m.pack" --val "$val" --max-tokens 1024 > "$tmp/pack.json"
ok "a .pack (no -t: its own tokenizer) gives its .qst's val_loss and val_bpb" jq -e -n \
    --slurpfile a "$tmp/qint8.json" --slurpfile b "$tmp/pack.json" \
    '$b[0].kind == "pack" and $b[0].val_loss == $a[0].val_loss and $b[0].val_bpb == $a[0].val_bpb
     and $b[0].bytes == $a[0].bytes'
ev "$tmp/m.pack" --val "$val" --max-tokens 1024 --stride 8 > "$tmp/packs.json"
ok "a .pack with the sliding window" jq -e '.kind == "pack" and .eval == "sliding" and .stride == 8' \
    "$tmp/packs.json"
cp "$tmp/m.pack" "$tmp/bad.pack"
printf 'X' | dd of="$tmp/bad.pack" bs=1 seek=100 conv=notrunc 2> /dev/null

fails() { # fails DESCRIPTION PATTERN COMMAND...: exit 1 and one line matching PATTERN
    desc=$1 pat=$2; shift 2
    "$@" > /dev/null 2> "$tmp/err"
    rc=$?
    ok "$desc (exit $rc)" sh -c "test $rc = 1 && test \$(wc -l < '$tmp/err') = 1 && grep -qE '$pat' '$tmp/err'"
}
fails "a missing model file" "nosuch.safetensors" ev "$tmp/nosuch.safetensors" --val "$val"
fails "a file of another kind (a tokenizer)" "t.tok: offset 0: expected a moe-train checkpoint, a .qst" \
    ev "$tmp/t.tok" --val "$val"
fails "a tokenizer of another vocab" "expected vocab 320" \
    ev "$ck" --val "$val" -t "$tmp/other.tok"
fails "a .pack with a flipped byte" "bad.pack" ev "$tmp/bad.pack" --val "$val"
fails "a .pack and a tokenizer of another vocab" "other.tok: expected vocab 320" \
    ev "$tmp/m.pack" --val "$val" -t "$tmp/other.tok"
fails "shards that do not exist" "nosuch" ev "$ck" --val "$tmp/nosuch_*.bin"
fails "--device cuda in the sanitizer build (no CUDA backend)" \
    "moe-eval --device cuda: expected (a build with the CUDA backend|a usable CUDA device)" \
    ev "$ck" --val "$val" --device cuda

usage() { # usage DESCRIPTION ARGS...: exit 2
    desc=$1; shift
    "$bin/moe-eval" "$@" > /dev/null 2>&1
    rc=$?
    ok "$desc: bad usage exits 2 (exit $rc)" test $rc = 2
}
usage "an unknown flag" --frobnicate
usage "no model" --val "$val"
usage "no --val" "$ck"
usage "--context without --stride" "$ck" --val "$val" --context 16
usage "a stride longer than the context" "$ck" --val "$val" --stride 16 --context 8
usage "a context longer than seq_len" "$ck" --val "$val" --stride 8 --context 64
usage "a stride of 0" "$ck" --val "$val" --stride 0

tap_end
