#!/bin/sh
# record: gather a finished pipeline run into records/<date>_<name>_seed<SEED>/.
#
# usage: record.sh RECORD_DIR RUN_DIR PACK AVG LIMIT SEED CONFIG DATA_TAG
# Writes the artifact (model.pack), submission.json, the train log, the
# evaluations and loss.png (gnuplot), then checks artifact + code bytes
# against LIMIT and exits 1, saying by how much, when they exceed it. The code
# bytes are the sources that build moe-eval (the parameter-golf rule counts
# train_gpt.py): cmd/moe-eval.c, lib/*.c and lib/*.h but the tests, and the
# Makefile.
set -eu
rec=$1 run=$2 pack=$3 avg=$4 limit=$5 seed=$6 config=$7 data=$8
mkdir -p "$rec"
cp "$pack" "$rec/model.pack"
cp "$run/train.log" "$rec/train.log"
cp "$run/eval-before-$avg.json" "$rec/eval-before-quant.json"
cp "$pack.eval.json" "$rec/eval-after-quant.json"
cp "$pack.verify.json" "$rec/verify.json"

code_files=$(ls cmd/moe-eval.c lib/*.c lib/*.h Makefile | grep -v -e '_test\.c$' -e '^lib/tap\.h$')
code_bytes=$(cat $code_files | wc -c)
art_bytes=$(stat -c %s "$pack")
secs() { [ -s "$1" ] && cat "$1" || echo null; }
qst=${pack%-*.pack}.qst

jq -n \
  --argjson before "$(cat "$rec/eval-before-quant.json")" \
  --argjson after "$(cat "$rec/eval-after-quant.json")" \
  --argjson config "$(bin/moe-train -c "$config" --print-config)" \
  --argjson art "$art_bytes" --argjson code "$code_bytes" --argjson limit "$limit" \
  --argjson seed "$seed" --arg version "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --argjson t_tok "$(secs "$data.tok.secs")" --argjson t_shard "$(secs "$data-shards/done.secs")" \
  --argjson t_train "$(secs "$run/final.safetensors.secs")" \
  --argjson t_avg "$(secs "$run/avg-$avg.safetensors.secs")" \
  --argjson t_quant "$(secs "$qst.secs")" --argjson t_pack "$(secs "$pack.secs")" \
  --argjson t_eval "$(secs "$pack.eval.json.secs")" \
  '{val_bpb: $after.val_bpb, val_loss: $after.val_loss,
    val_bpb_before_quant: $before.val_bpb, val_loss_before_quant: $before.val_loss,
    quant_tax_bpb: ($after.val_bpb - $before.val_bpb),
    artifact_bytes: $art, code_bytes: $code, total_bytes: ($art + $code), limit_bytes: $limit,
    seed: $seed, version: $version, date: $date, config: $config,
    seconds: {tokenizer: $t_tok, shards: $t_shard, train: $t_train, average: $t_avg,
              quantize: $t_quant, pack: $t_pack, eval: $t_eval}}' > "$rec/submission.json"

jq -r 'select(.train_loss) | "\(.step) \(.train_loss)"' "$rec/train.log" > "$rec/train_loss.dat"
jq -r 'select(.val_loss) | "\(.step) \(.val_loss)"' "$rec/train.log" > "$rec/val_loss.dat"
gnuplot <<GP
set terminal pngcairo size 900,540
set output "$rec/loss.png"
set title "$(basename "$rec")" noenhanced
set xlabel "step"
set ylabel "loss (nats per token)"
set grid
plot "$rec/train_loss.dat" with lines title "train", \
     "$rec/val_loss.dat" with linespoints title "val"
GP
rm -f "$rec/train_loss.dat" "$rec/val_loss.dat"

total=$((art_bytes + code_bytes))
jq -c '{val_bpb, val_bpb_before_quant, quant_tax_bpb, artifact_bytes, code_bytes, total_bytes}' \
    "$rec/submission.json"
if [ "$total" -gt "$limit" ]; then
    echo "record: $rec: expected artifact + code at most $limit bytes, found $total (over by $((total - limit)))" >&2
    exit 1
fi
echo "record: $rec"
