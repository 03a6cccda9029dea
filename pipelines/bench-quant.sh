#!/bin/sh
# bench-quant: the quantization tax table (val_bpb after quantization minus
# before) for int8, int6, int5 and int4 block matrices, each by plain
# round-to-nearest, with per-row clip search, and with GPTQ (clip search on
# top, calibrated on the train shards). The embedding stays int8 and control
# tensors float32 (moe-quant's golf defaults); each row also gives the .qst
# bytes and the zstd-22 artifact bytes.
#
# usage: bench-quant.sh CKPT TOKENIZER 'VAL_GLOB' 'TRAIN_GLOB' OUTDIR [MAX_TOKENS]
set -eu
ckpt=$1 tok=$2 val=$3 train=$4 out=$5 max=${6:-131072}
BIN=${BIN:-bin}
mkdir -p "$out"
bpb() { "$BIN/moe-eval" -q "$1" --val "$val" -t "$tok" --max-tokens "$max" | jq .val_bpb; }
before=$(bpb "$ckpt")
echo "bench-quant: $ckpt, val_bpb before quantization $before (first $max val tokens)"
printf '%-8s %-6s %10s %10s %12s %12s\n' scheme method val_bpb tax qst_bytes pack_bytes
for s in int8 int6 int5 int4; do
    for m in rtn clip gptq; do
        case $m in
        rtn) flags= ;;
        clip) flags=--clip-search ;;
        gptq) flags="--clip-search --gptq --calib $train" ;;
        esac
        q=$out/$s-$m.qst
        # shellcheck disable=SC2086
        "$BIN/moe-quant" -q "$ckpt" -o "$q" --matrix $s $flags
        "$BIN/moe-pack" -q -o "$out/$s-$m.pack" --model "$q" --tokenizer "$tok" > /dev/null
        after=$(bpb "$out/$s-$m.pack")
        printf '%-8s %-6s %10.4f %+10.4f %12d %12d\n' $s $m "$after" \
            "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" \
            "$(stat -c %s "$q")" "$(stat -c %s "$out/$s-$m.pack")"
    done
done
