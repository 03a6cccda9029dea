#!/bin/sh
# bench-tok: tok-train and tok-encode side by side with sentencepiece on GCIDE.
#
# Training: the first 10 MB of GCIDE at vocab 1024 and 8192, 2 threads each,
# spm_train with the parameter-golf settings (bpe, byte_fallback, split_digits,
# nmt_nfkc, character_coverage 0.999). Both are timed by GNU time (wall seconds,
# peak RSS). Held-out: the last 2 MB, never trained on; bytes per token counts
# the raw UTF-8 bytes of that text. spm_encode sees the text line by line and
# so never spends a token on a newline; its figure is favoured by that. Encoding
# speed: the whole 40 MB through tok-encode (2 threads) and spm_encode (which
# has one). Prints a table with ratios (ours / spm: above 1 favours us for
# speed and bytes per token).
set -eu
BIN=${BIN:-bin}
OUT=${OUT:-build/bench}
THREADS=2
mkdir -p "$OUT"
all=$OUT/gcide.txt train=$OUT/train.txt held=$OUT/heldout.txt
[ -s "$all" ] || zcat /usr/share/dictd/gcide.dict.dz > "$all"
size=$(stat -c %s "$all")
head -c 10000000 "$all" > "$train"
tail -c 2000000 "$all" > "$held"

timed() { # timed LOG cmd...: run, keep "seconds peak_kib" in LOG
    log=$1; shift
    /usr/bin/time -f '%e %M' -o "$log" "$@"
}

row() { printf '%-34s %12s %12s %8s\n' "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }'; }

held_bytes=$(stat -c %s "$held")
echo "bench-tok: GCIDE $size bytes; train on the first 10000000, held out the last $held_bytes; $THREADS threads"
row "measure" "tok-train" "spm" "ratio"
for V in 1024 8192; do
    timed "$OUT/gk_$V.time" "$BIN/tok-train" -q --vocab "$V" --threads $THREADS \
        -o "$OUT/gk_$V.tok" "$train"
    timed "$OUT/spm_$V.time" spm_train --input="$train" --model_prefix="$OUT/spm_$V" \
        --vocab_size="$V" --model_type=bpe --byte_fallback=true --split_digits=true \
        --normalization_rule_name=nmt_nfkc --character_coverage=0.999 \
        --num_threads=$THREADS --minloglevel=2 > "$OUT/spm_$V.log" 2>&1
    read -r gs gm < "$OUT/gk_$V.time"
    read -r ss sm < "$OUT/spm_$V.time"
    row "train vocab $V: seconds" "$gs" "$ss" "$(ratio "$ss" "$gs")"
    row "train vocab $V: peak RSS MiB" "$((gm / 1024))" "$((sm / 1024))" "$(ratio "$sm" "$gm")"
    gt=$("$BIN/tok-encode" -q -t "$OUT/gk_$V.tok" --stats -o /dev/null "$held" 2>&1 |
        jq -r '.tokens - .documents')
    st=$(spm_encode --model="$OUT/spm_$V.model" --output_format=id < "$held" | wc -w)
    gb=$(awk -v b="$held_bytes" -v t="$gt" 'BEGIN { printf "%.4f", b / t }')
    sb=$(awk -v b="$held_bytes" -v t="$st" 'BEGIN { printf "%.4f", b / t }')
    row "held-out vocab $V: bytes/token" "$gb" "$sb" "$(ratio "$gb" "$sb")"
done
timed "$OUT/gk_enc.time" "$BIN/tok-encode" -q --threads $THREADS -t "$OUT/gk_8192.tok" \
    -o "$OUT/gcide.gkts" "$all"
timed "$OUT/spm_enc.time" spm_encode --model="$OUT/spm_8192.model" --output_format=id \
    --output="$OUT/gcide.spm" "$all"
read -r ge _ < "$OUT/gk_enc.time"
read -r se _ < "$OUT/spm_enc.time"
gmb=$(awk -v b="$size" -v s="$ge" 'BEGIN { printf "%.1f", b / s / 1e6 }')
smb=$(awk -v b="$size" -v s="$se" 'BEGIN { printf "%.1f", b / s / 1e6 }')
row "encode 40 MB, vocab 8192: MB/s" "$gmb" "$smb" "$(ratio "$gmb" "$smb")"
"$BIN/tok-encode" -d -q -t "$OUT/gk_8192.tok" "$OUT/gcide.gkts" | cmp -s - "$all" &&
    echo "round trip of the 40 MB through tok-encode and tok-encode -d: byte-exact" ||
    { echo "round trip of the 40 MB: MISMATCH"; exit 1; }

# Why the default pre-tokenizer is none: held-out bytes per token of each mode.
echo
printf '%-34s %12s %12s %12s\n' "held-out bytes/token, tok-train" none ws digits
for V in 1024 8192; do
    line=$(printf '%-34s' "vocab $V")
    for P in none ws digits; do
        "$BIN/tok-train" -q --vocab "$V" --pretok $P --threads $THREADS -o "$OUT/p_$P.tok" "$train"
        b=$("$BIN/tok-encode" -q -t "$OUT/p_$P.tok" --stats -o /dev/null "$held" 2>&1 | jq -r '.bytes_per_token')
        line="$line $(printf '%12.4f' "$b")"
    done
    echo "$line"
done
