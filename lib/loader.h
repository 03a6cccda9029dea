/* loader: the trainer's data, read from shards exactly as openai/parameter-golf
 * train_gpt.py reads them, and the validation pass over the val shards.
 *
 * Training (train_gpt.py's TokenStream and DistributedTokenLoader): the shard
 * files, sorted by name, form one token stream that wraps around after the
 * last shard forever. Each next_batch call takes one contiguous chunk of
 * world x (local + 1) tokens from the stream, where local = global_tokens /
 * (world x grad_accum); rank r keeps the r-th span of local + 1 tokens, and
 * its inputs are the span's first local tokens, its targets the last local
 * (shifted by one), as [local / seq_len, seq_len] row-major. Every rank reads
 * the same stream and advances by the whole chunk, so ranks stay in step
 * without talking. Same shards, rank and world give the same batches as
 * train_gpt.py, token for token.
 *
 * Validation (train_gpt.py's load_validation_tokens and eval_val): all val
 * shards concatenated, cut to whole sequences of seq_len plus the one token
 * the last target needs; the contiguous, non-overlapping sequences are split
 * across ranks and evaluated in batches; each batch's mean loss is weighted by
 * its token count. val_loss is the mean per-token cross-entropy in nats,
 * val_bpb = val_loss / ln 2 x tokens / bytes, where a target token's bytes are
 * t->len[id] of our tokenizer (see loader.c for why that is exact).
 *
 * Memory: training holds one shard at a time (as train_gpt.py does), plus one
 * micro-batch; validation holds the whole (cut) val split, as train_gpt.py.
 *
 * Checks: every shard's header is read when the loader opens (so a bad shard
 * in the set fails at once, not hours into training); golfkit shards whose
 * extras name a vocab other than the model's are refused; every token is
 * checked below the model's vocab as it is loaded (published shards carry no
 * vocab, so this is their only check), and a golfkit shard's token checksum is
 * verified before any of its tokens is used. Every error dies through gk_die
 * with one line naming the file (or pattern) and the offset or field. */
#ifndef GK_LOADER_H
#define GK_LOADER_H

#include "model.h"
#include "tok.h"

#include <stdint.h>

/* ---- training ---- */

typedef struct gk_loader gk_loader;

/* Open the training stream over every file matching PATTERNS[0..n) (glob(3)
 * patterns; a plain path matches itself), all matches sorted by name together
 * (strcmp, the order of Python's sorted() on the names) with duplicates
 * dropped. VOCAB is the model's vocab; 0 < world, 0 <= rank < world. Reads
 * every header now; dies when nothing matches, a header is bad, extras
 * disagree with VOCAB, or the set holds no token at all. The position starts
 * at shard 0, offset 0. */
gk_loader *gk_loader_open(const char *const *patterns, int n, uint32_t vocab, int rank,
                          int world);
void gk_loader_close(gk_loader *ld);

/* The shard files in stream order and their token counts. */
int gk_loader_shards(const gk_loader *ld);
const char *gk_loader_shard_path(const gk_loader *ld, int i);
int64_t gk_loader_shard_tokens(const gk_loader *ld, int i);

/* One micro-batch for this rank: tokens and targets [B, T] row-major, owned
 * by the loader and valid until the next call. */
typedef struct {
    const int *tokens, *targets;
    int B, T;
} gk_batch;

/* train_gpt.py's next_batch(global_tokens, seq_len, grad_accum_steps): the
 * trainer calls it grad_accum times a step with the same arguments. Dies
 * unless global_tokens / (world x grad_accum) is a positive multiple of
 * seq_len (train_gpt.py's reshape would fail). */
gk_batch gk_loader_next(gk_loader *ld, int64_t global_tokens, int seq_len, int grad_accum);

/* The stream position, for checkpoints: the shard index in stream order and
 * the tokens of it already consumed (0..its count; at the count, the next
 * read moves to the following shard, as TokenStream does). Restoring a
 * position saved after k calls and calling next_batch gives exactly what the
 * (k+1)-th call gave. Restore dies when the position does not fit this
 * shard set, naming WHERE (where the position came from, e.g. a
 * checkpoint's field) and the shard or offset. The rank and world are not
 * part of the position: all ranks share it. */
typedef struct {
    int64_t shard, offset;
} gk_loader_pos;
gk_loader_pos gk_loader_tell(const gk_loader *ld);
void gk_loader_seek(gk_loader *ld, gk_loader_pos pos, const char *where);

/* ---- validation ---- */

typedef struct {
    uint16_t *tokens; /* n of them: seqs x seq_len + 1 */
    int64_t n, seqs;
    int seq_len;
    uint32_t vocab;   /* every token is below it */
} gk_val;

/* Load the val shards matching PATTERNS[0..n) (sorted as above), every token
 * checked below VOCAB. MAX_TOKENS > 0 keeps only the first MAX_TOKENS targets
 * (the config's train.val_tokens; shards beyond the ones needed are not read),
 * 0 keeps all, as train_gpt.py does. Dies when fewer than seq_len + 1 tokens
 * remain ("shorter than one sequence"). */
gk_val *gk_val_load(const char *const *patterns, int n, uint32_t vocab, int seq_len,
                    int64_t max_tokens);
void gk_val_free(gk_val *v);

/* The forward pass of some backend: mean cross-entropy (nats) of B sequences
 * of T tokens with their targets, both [B, T] row-major. */
typedef double (*gk_val_forward)(void *ctx, int B, int T, const int *tokens, const int *targets);

/* This rank's share of a validation pass, as float64 sums so ranks can
 * all-reduce them (train_gpt.py's val_loss_sum, val_token_count,
 * val_byte_count) before gk_val_result. */
typedef struct {
    double loss_sum, tokens, bytes;
} gk_val_sums;

/* Evaluate this rank's sequences (train_gpt.py's eval_val: sequences
 * [total x rank / world, total x (rank + 1) / world), in batches of
 * val_batch_tokens / (world x grad_accum) / seq_len sequences, the last one
 * shorter). TOK may be NULL: bytes stay 0. Dies when a batch would hold no
 * sequence, or TOK's vocab differs from v->vocab (a target without a length). */
gk_val_sums gk_val_run(const gk_val *v, gk_val_forward fwd, void *ctx, const gk_tok *tok,
                       int64_t val_batch_tokens, int grad_accum, int rank,
                       int world);

/* The same with the CPU model of lib/model.h in float (what moe-train's CPU
 * backend calls); dies unless l->cfg.model.vocab is v->vocab. */
gk_val_sums gk_val_run_cpu(const gk_val *v, const gk_layout *l, const float *params,
                           const gk_tok *tok, int64_t val_batch_tokens, int grad_accum,
                           int rank, int world);

/* val_loss and val_bpb from the (all-reduced) sums. val_bpb is NaN when there
 * are no bytes (no tokenizer was given, or every target was a special): the
 * trainer prints it as null. */
void gk_val_result(const gk_val_sums *s, double *val_loss, double *val_bpb);

#endif
