# record.mk: raw text to a verified record, one Make target per stage.
#
#   make record SEED=1337                 the whole chain (the top Makefile includes this)
#   make record QUANT=int5                re-runs quant, pack and eval only
#   make record CORPUS=my.txt             any text (or JSONL with CORPUS_JSONL=FIELD)
#   make record SHARDS='dir/*_train_*.bin' VAL='dir/*_val_*.bin' TOKENIZER=t.tok
#   make record DEVICE=cuda               train and evaluate on the GPU (the default
#                                         when the tools were built with CUDA and
#                                         nvidia-smi sees a GPU)
#
# Every intermediate is a file whose name carries the settings it depends on
# (vocab, seed, config, quantizer, codec), so changing one variable re-runs
# only the stages downstream of it and reuses every file before it. Stage
# wall times go to NAME.secs beside each output; the record gathers them.

SEED       ?= 1337
VOCAB      ?= 1024
CONFIG     ?= testdata/config/small-cpu.json
CORPUS     ?=
CORPUS_JSONL ?=
DOC_END    ?= blank
SHARDS     ?=
VAL        ?=
TOKENIZER  ?=
VAL_DOCS   ?= 5000
TOK_TRAIN_BYTES ?= 10000000
AVG        ?= swa
AVG_LAST   ?= 3
QUANT      ?= int6
QUANT_FLAGS ?= --clip-search
CODEC      ?= zstd
NAME       ?= $(basename $(notdir $(CONFIG)))
LIMIT      ?= 16000000
# Asked once per make (":="): nvidia-smi is not run again at every expansion.
ifeq ($(origin DEVICE),undefined)
DEVICE     := $(if $(NVCC),$(if $(shell nvidia-smi -L 2>/dev/null),cuda,cpu),cpu)
endif

W      ?= build/record
RECORDS ?= records
CKPT_EVERY ?= 25
CFGTAG := $(basename $(notdir $(CONFIG)))
TIMED  := sh pipelines/timed.sh

# ---- data: corpus -> tokenizer -> shards (skipped when SHARDS is given) ----
ifeq ($(SHARDS),)
ifeq ($(CORPUS),)
CORPUS_TXT := $(W)/gcide.txt
$(CORPUS_TXT):
	@mkdir -p $(W)
	zcat /usr/share/dictd/gcide.dict.dz > $@.tmp && mv $@.tmp $@
else
CORPUS_TXT := $(CORPUS)
endif
DATA_TAG   := $(W)/$(notdir $(basename $(CORPUS_TXT)))-v$(VOCAB)
JSONL_FLAG := $(if $(CORPUS_JSONL),--jsonl $(CORPUS_JSONL),--doc-end $(DOC_END))
# The tokenizer learns from the first TOK_TRAIN_BYTES: a byte cut for text,
# whole lines for JSONL (a cut line is not JSON).
TOK_CUT    := $(if $(CORPUS_JSONL),LC_ALL=C awk -v max=$(TOK_TRAIN_BYTES) \
                '{ n += length($$0) + 1; if (n > max && NR > 1) exit; print }',head -c $(TOK_TRAIN_BYTES))
TOK        := $(if $(TOKENIZER),$(TOKENIZER),$(DATA_TAG).tok)
TRAIN_GLOB := $(DATA_TAG)-shards/data_train_*.bin
VAL_GLOB   := $(DATA_TAG)-shards/data_val_*.bin
SHARD_DONE := $(DATA_TAG)-shards/done

$(DATA_TAG).tok: $(CORPUS_TXT) | bin/tok-train
	@mkdir -p $(W)
	$(TOK_CUT) $< > $(DATA_TAG).tok-train.txt
	$(TIMED) $@.secs bin/tok-train -q --vocab $(VOCAB) $(JSONL_FLAG) -o $@ $(DATA_TAG).tok-train.txt
	rm -f $(DATA_TAG).tok-train.txt

$(SHARD_DONE): $(TOK) $(CORPUS_TXT) | bin/tok-encode bin/shard
	rm -rf $(dir $@) && mkdir -p $(dir $@)
	$(TIMED) $@.secs sh -c 'bin/tok-encode -q -t $(TOK) $(JSONL_FLAG) $(CORPUS_TXT) | \
	  bin/shard -q -o $(dir $@) --val-docs $(VAL_DOCS) > $(dir $@)shards.json'
	touch $@
else
TOK        := $(TOKENIZER)
TRAIN_GLOB := $(SHARDS)
VAL_GLOB   := $(VAL)
DATA_TAG   := $(W)/shards-$(words $(SHARDS))
SHARD_DONE :=
endif

# ---- train -> average -> quantize -> pack -> verify -> eval ----
RUN   := $(DATA_TAG)-$(CFGTAG)-seed$(SEED)$(if $(filter cuda,$(DEVICE)),-cuda)
FINAL := $(RUN)/final.safetensors
AVGED := $(RUN)/avg-$(AVG).safetensors
QST   := $(RUN)/model-$(AVG)-$(QUANT).qst
PACK  := $(RUN)/model-$(AVG)-$(QUANT)-$(CODEC).pack

$(FINAL): $(SHARD_DONE) $(CONFIG) | bin/moe-train
	rm -rf $(RUN) && mkdir -p $(RUN)
	$(TIMED) $@.secs bin/moe-train -q --device $(DEVICE) -c $(CONFIG) --seed $(SEED) -t $(TOK) \
	  --train '$(TRAIN_GLOB)' --val '$(VAL_GLOB)' --set train.ckpt_every=$(CKPT_EVERY) \
	  -o $(RUN)/ckpt --log $(RUN)/train.log
	mv $(RUN)/ckpt/final.safetensors $@

# swa: the uniform average of the last AVG_LAST checkpoints and the final one;
# none: the final weights as they are.
$(AVGED): $(FINAL) | bin/moe-avg
ifeq ($(AVG),none)
	cp $< $@ && echo 0 > $@.secs
else
	$(TIMED) $@.secs bin/moe-avg -q -o $@ \
	  $$(ls $(RUN)/ckpt/ckpt_*.safetensors 2>/dev/null | tail -n $(AVG_LAST)) $<
endif

$(QST): $(AVGED) | bin/moe-quant
	$(TIMED) $@.secs bin/moe-quant -q $< -o $@ --matrix $(QUANT) $(QUANT_FLAGS) \
	  --report > $@.report.jsonl

$(PACK): $(QST) $(TOK) | bin/moe-pack
	$(TIMED) $@.secs bin/moe-pack -q -o $@ --codec $(CODEC) --model $< --tokenizer $(TOK) > $@.json
	bin/moe-pack --verify $@ --limit $(LIMIT) > $@.verify.json

$(RUN)/eval-before-$(AVG).json: $(AVGED) | bin/moe-eval
	$(TIMED) $@.secs bin/moe-eval -q --device $(DEVICE) $< --val '$(VAL_GLOB)' -t $(TOK) > $@

$(PACK).eval.json: $(PACK) | bin/moe-eval
	$(TIMED) $@.secs bin/moe-eval -q --device $(DEVICE) $< --val '$(VAL_GLOB)' > $@

# ---- the record ----
RECORD_DIR = $(RECORDS)/$(shell date +%Y-%m-%d)_$(NAME)_seed$(SEED)

record-files: $(PACK).eval.json $(RUN)/eval-before-$(AVG).json
	sh pipelines/record.sh $(RECORD_DIR) $(RUN) $(PACK) $(AVG) $(LIMIT) $(SEED) $(CONFIG) $(DATA_TAG)

.PHONY: record-files
