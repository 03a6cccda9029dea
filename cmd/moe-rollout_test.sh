#!/bin/sh
# moe-rollout: a tiny model trained by moe-train on shards made by the real
# pipeline (as cmd/moe-eval_test.sh), then generation from the checkpoint
# and from a .pack of it (moe-quant, moe-pack: its own tokenizer, read in
# memory). Checks the bytes on stdout and the JSON line on stderr, greedy
# and seeded determinism, --max-tokens, the context limit, a stop string
# (stops, and is not printed), --chat's template, a prompt from a file, and
# the one-line errors and exit statuses of bad input and bad usage.
set -u
. "$(dirname "$0")/../testdata/tap.sh"

tiny_model
"$bin/tok-train" -q --vocab 300 -o "$tmp/other.tok" "$tmp/corpus.txt"
ck=$tmp/ck/final.safetensors
"$bin/moe-quant" -q --threads 2 "$ck" -o "$tmp/m.qst" --matrix int8 --embed int8
"$bin/moe-pack" -o "$tmp/m.pack" --model "$tmp/m.qst" --tokenizer "$tmp/t.tok" > /dev/null

ro() { "$bin/moe-rollout" --threads 2 "$@"; }
# gen NAME ARGS...: stdout to $tmp/NAME.txt, the stats line to $tmp/NAME.json
gen() { name=$1; shift; ro "$@" > "$tmp/$name.txt" 2> "$tmp/$name.json"; }

gen ck "$ck" -t "$tmp/t.tok" --prompt "The " --max-tokens 12 --seed 1
ok "from a checkpoint: bytes on stdout, exit 0" test -s "$tmp/ck.txt"
ok "one JSON line on stderr with every field" sh -c "test \$(wc -l < '$tmp/ck.json') = 1 && jq -e '
    .kind == \"checkpoint\" and .prompt_tokens >= 2 and .generated >= 1 and .generated <= 12 and
    (.stop_reason | IN(\"max_tokens\", \"bos\")) and .tokens_per_s >= 0 and .peak_rss_bytes > 0' \
    '$tmp/ck.json'"
gen ck2 "$ck" -t "$tmp/t.tok" --prompt "The " --max-tokens 12 --seed 1
ok "the same seed: the same bytes" cmp "$tmp/ck.txt" "$tmp/ck2.txt"
same=0
for s in 2 3 4 5; do
    gen s$s "$ck" -t "$tmp/t.tok" --prompt "The " --max-tokens 12 --seed $s
    cmp -s "$tmp/ck.txt" "$tmp/s$s.txt" && same=$((same + 1))
done
ok "other seeds: other bytes (at most 1 of 4 the same, found $same)" test $same -le 1

gen pk "$tmp/m.pack" --prompt "The " --max-tokens 20 --temperature 0
ok "from a .pack (its own tokenizer, no -t): bytes, kind pack" sh -c \
    "test -s '$tmp/pk.txt' && jq -e '.kind == \"pack\"' '$tmp/pk.json'"
gen pk2 "$tmp/m.pack" --prompt "The " --max-tokens 20 --temperature 0 --seed 9
ok "greedy ignores the seed" cmp "$tmp/pk.txt" "$tmp/pk2.txt"
gen qst "$tmp/m.qst" -t "$tmp/t.tok" --prompt "The " --max-tokens 20 --temperature 0
ok "the .qst inside the .pack generates the same bytes as the .qst file" \
    cmp "$tmp/pk.txt" "$tmp/qst.txt"
gen topk1 "$tmp/m.pack" --prompt "The " --max-tokens 20 --top-k 1 --seed 3
ok "top-k 1 is greedy" cmp "$tmp/pk.txt" "$tmp/topk1.txt"

gen mx "$tmp/m.pack" --max-tokens 5 --temperature 0 --repetition-penalty 1.3 --top-p 0.9
ok "--max-tokens 5: at most 5 tokens, and stop_reason max_tokens unless the model ended" jq -e \
    '.generated <= 5 and (.stop_reason == "max_tokens" and .generated == 5 or .stop_reason == "bos")' \
    "$tmp/mx.json"
gen ctx "$tmp/m.pack" --max-tokens 1000 --temperature 0 --repetition-penalty 2
ok "a generation longer than the context stops at it (seq_len 32 = prompt + generated - 1)" \
    jq -e '.stop_reason == "context" and .prompt_tokens + .generated == 33 or .stop_reason == "bos"' \
    "$tmp/ctx.json"

# A stop string: 3 bytes (no NUL or newline) from inside a seeded text; the same run with it prints the text before its first
# occurrence (the held-back bytes of a partial match included), nothing more.
"$py" -c '
import sys
t = open(sys.argv[1], "rb").read()
i = next(i for i in range(3, len(t) - 2) if all(c not in (0, 10) for c in t[i:i + 3]))
open(sys.argv[2], "wb").write(t[i:i + 3])
open(sys.argv[3], "wb").write(t[:t.find(t[i:i + 3])])' "$tmp/s2.txt" "$tmp/stop" "$tmp/before"
stop=$(cat "$tmp/stop")
gen st "$ck" -t "$tmp/t.tok" --prompt "The " --max-tokens 12 --seed 2 --stop "$stop"
ok "a stop string stops: stop_reason stop: stop_reason stop" jq -e '.stop_reason == "stop"' "$tmp/st.json"
ok "the stop string is not printed; the text before it is" cmp "$tmp/before" "$tmp/st.txt"
gen nost "$tmp/m.pack" --prompt "The " --max-tokens 20 --temperature 0 --stop "never occurs zz"
ok "a stop string that never occurs holds nothing back" cmp "$tmp/pk.txt" "$tmp/nost.txt"

printf 'The ' > "$tmp/prompt.txt"
gen pf "$tmp/m.pack" --prompt-file "$tmp/prompt.txt" --max-tokens 20 --temperature 0
ok "--prompt-file F: the same as --prompt with F's bytes" cmp "$tmp/pk.txt" "$tmp/pf.txt"
gen chat "$tmp/m.pack" --chat --prompt "hello" --max-tokens 8 --temperature 0
ok "--chat: the template's tokens in the prompt, stops at <|user|> or earlier" sh -c \
    "jq -e '.prompt_tokens > 6 and (.stop_reason | IN(\"max_tokens\", \"stop\", \"bos\"))' '$tmp/chat.json' &&
     ! grep -qF '<|user|>' '$tmp/chat.txt'"
gen quiet "$tmp/m.pack" --max-tokens 3 -q
ok "-q: no statistics line" test ! -s "$tmp/quiet.json"

cp "$tmp/m.pack" "$tmp/bad.pack"
printf 'X' | dd of="$tmp/bad.pack" bs=1 seek=100 conv=notrunc 2> /dev/null
head -c 5000 /dev/urandom > "$tmp/long.txt"

fails() { # fails DESCRIPTION PATTERN COMMAND...: exit 1 and one line matching PATTERN
    desc=$1 pat=$2; shift 2
    "$@" > /dev/null 2> "$tmp/err"
    rc=$?
    ok "$desc (exit $rc)" sh -c "test $rc = 1 && test \$(wc -l < '$tmp/err') = 1 && grep -qE -- '$pat' '$tmp/err'"
}
fails "a missing model file" "nosuch.safetensors" ro "$tmp/nosuch.safetensors" -t "$tmp/t.tok"
fails "a file of another kind (a tokenizer)" "t.tok: offset 0: expected a moe-train checkpoint" \
    ro "$tmp/t.tok" -t "$tmp/t.tok"
fails "a .pack with a flipped byte" "bad.pack" ro "$tmp/bad.pack"
fails "a tokenizer of another vocab" "other.tok: expected vocab 320" \
    ro "$ck" -t "$tmp/other.tok"
fails "a prompt longer than the context" "long.txt: expected a prompt of at most the model.s seq_len 32" \
    ro "$tmp/m.pack" --prompt-file "$tmp/long.txt"
fails "a missing prompt file" "nosuch.txt" ro "$tmp/m.pack" --prompt-file "$tmp/nosuch.txt"

usage() { # usage DESCRIPTION ARGS...: exit 2
    desc=$1; shift
    "$bin/moe-rollout" "$@" > /dev/null 2>&1
    rc=$?
    ok "$desc: bad usage exits 2 (exit $rc)" test $rc = 2
}
usage "an unknown flag" --frobnicate
usage "no model"
usage "a checkpoint without a tokenizer" "$ck"
usage "--prompt and --prompt-file" "$tmp/m.pack" --prompt a --prompt-file "$tmp/prompt.txt"
usage "--max-tokens 0" "$tmp/m.pack" --max-tokens 0
usage "--top-p 0" "$tmp/m.pack" --top-p 0
usage "--top-p above 1" "$tmp/m.pack" --top-p 1.5
usage "a negative temperature" "$tmp/m.pack" --temperature -1
usage "an empty stop string" "$tmp/m.pack" --stop ""

# --physics: six scenes of trained and held-out types from phys-gen. The tiny
# model cannot fit a scene in its 32 positions nor write frames, so this checks
# the report's structure and that its counts agree with the scene lines;
# lib/physparse_test.c checks the error itself on hand-made frames.
"$bin/phys-gen" -q --types falling_balls,billiards,pendulum,seesaw,orbit,funnel --scenes 6 \
    --frames 12 --objects 1-3 -o "$tmp/scenes.jsonl"
ro "$tmp/m.pack" --physics "$tmp/scenes.jsonl" --frames 5 > "$tmp/phys.jsonl" 2> "$tmp/phys.err"
prc=$?
ok "--physics: exit 0 (found $prc), 6 scene lines and a summary line" sh -c "test $prc = 0 &&
    test \$(wc -l < '$tmp/phys.jsonl') = 7 && tail -n 1 '$tmp/phys.jsonl' | jq -e .summary"
ok "--physics: every scene line has its fields, 5 errors, nulls from malformed_at on" jq -s -e '
    .[:6] | length == 6 and all(.[]; (.err | length) == 5 and (.fittable | type) == "boolean" and
      (.split | IN("trained", "heldout")) and has("scene") and has("type") and
      (if .malformed_at == null then all(.err[]; . != null)
       else all(.err[.malformed_at - 1:][]; . == null) and all(.err[:.malformed_at - 1][]; . != null)
       end))' "$tmp/phys.jsonl"
ok "--physics: the summary's counts add up and the malformed rate is in [0, 1]" jq -s -e '
    (.[:6]) as $sc | .[6].summary as $s |
    $s.scenes == 6 and $s.frames == 5 and $s.report_frames == [1, 5] and
    $s.trained.all.scenes + $s.heldout.all.scenes == 6 and $s.trained.all.scenes == 3 and
    ([$s.types[].all.scenes] | add) == 6 and ($s.types | length) == 6 and
    $s.fittable_scenes == ([$sc[] | select(.fittable)] | length) and
    $s.fittable_scenes == $s.all.fittable.scenes and
    $s.malformed_frames == ([$sc[].err[] | select(. == null)] | length) and
    $s.malformed_rate >= 0 and $s.malformed_rate <= 1 and
    $s.all.all.n["1"] == ([$sc[] | select(.err[0] != null)] | length) and
    $s.all.all.n["5"] == ([$sc[] | select(.err[4] != null)] | length) and
    ($s.all.all.err | has("1") and has("5"))' "$tmp/phys.jsonl"
printf '{"type": "orbit"}\n' > "$tmp/bad.jsonl"
fails "--physics: a scene line without its fields" "bad.jsonl: line 1: field split: expected a string, found none" \
    ro "$tmp/m.pack" --physics "$tmp/bad.jsonl"
fails "--physics: scenes shorter than --prompt-frames + --frames" \
    "scenes.jsonl: line 1: field text: expected frame 13 " \
    ro "$tmp/m.pack" --physics "$tmp/scenes.jsonl" --prompt-frames 3 --frames 10
# --batch: scenes rolled out together, each in its own stream of the decoder,
# must give each scene the bytes it gets alone. A model with room for the
# prompts (seq_len 256), so the rollouts really run, of different lengths.
sed -e 's/"seq_len": 32/"seq_len": 256/' -e 's/batch_tokens": 256/batch_tokens": 512/g' \
    -e 's/"steps": 8/"steps": 3/' "$tmp/tiny.json" > "$tmp/long.json"
"$bin/moe-train" -q --threads 2 -c "$tmp/long.json" --train "$tmp/data/data_train_*.bin" \
    --val "$tmp/data/data_val_*.bin" -t "$tmp/t.tok" -o "$tmp/ckl" > /dev/null
"$bin/phys-gen" -q --types falling_balls,pendulum,orbit --scenes 5 --frames 4 --objects 1-1 \
    --seed 3 -o "$tmp/small.jsonl"
for b in 1 3; do
    ro "$tmp/ckl/final.safetensors" -t "$tmp/t.tok" --physics "$tmp/small.jsonl" --frames 2 \
        --batch $b > "$tmp/b$b.jsonl"
done
ok "--batch 3 and --batch 1: the same scene lines, and rollouts that ran" sh -c "
    head -n 5 '$tmp/b1.jsonl' > '$tmp/b1.scenes' && head -n 5 '$tmp/b3.jsonl' > '$tmp/b3.scenes' &&
    cmp '$tmp/b1.scenes' '$tmp/b3.scenes' &&
    jq -s -e '[.[:5][] | select(.stop_reason != \"prompt_too_long\" and .generated > 0)] |
              length >= 3' '$tmp/b1.jsonl' &&
    tail -n 1 '$tmp/b3.jsonl' | jq -e '.summary | .batch == 3 and .device == \"cpu\" and
              .fed_tokens > 0'"
usage "--batch without --physics" "$tmp/m.pack" --batch 2
fails "--device cuda in a build without CUDA (the sanitizer build)" \
    "expected a build with the CUDA backend" ro "$tmp/m.pack" --device cuda --max-tokens 2
usage "--physics with --prompt" "$tmp/m.pack" --physics "$tmp/scenes.jsonl" --prompt a
usage "--report-frames beyond --frames" "$tmp/m.pack" --physics "$tmp/scenes.jsonl" --frames 5 \
    --report-frames 1,9

tap_end
