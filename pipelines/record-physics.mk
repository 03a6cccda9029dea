# record-physics.mk: the physics track, simulated scenes to a scored record.
#
#   make record-physics SEED=1337     (the top Makefile includes this)
#
# phys-gen simulates PHYS_SCENES scenes of the trained types (1 to
# PHYS_OBJECTS objects, PHYS_FRAMES frames each) as JSON lines; the chain of
# `make record` (pipelines/record.mk) then runs on their text field with a
# 512-token tokenizer and the MoE of PHYS_CONFIG (8 routed + 1 shared SwiGLU
# experts, top-2, the sigmoid-bias router: the moe100m-physics card's shape at
# CPU size), through moe-quant, moe-pack and moe-eval, into
# records/<date>_physics_seed<SEED>/. Last, moe-rollout --physics scores the
# packed artifact on PHYS_EVAL fresh scenes of every type (a different seed, so
# none was trained on), prompted with the header and the first frame and
# rolled 15 frames forward; physics.jsonl holds its lines and physics.txt the
# table (trained and held-out types, all and fittable scenes, at frames 1, 5
# and 15). Every setting is a variable, and each intermediate is reused as in
# `make record`.

PHYS_SCENES  ?= 3000
PHYS_EVAL    ?= 120
PHYS_FRAMES  ?= 16
PHYS_OBJECTS ?= 1-4
PHYS_CONFIG  ?= testdata/config/physics-cpu.json
PHYS_VAL_DOCS ?= 100
PHYS_W       ?= build/record-physics
PHYS_TAG     := $(PHYS_W)/scenes-seed$(SEED)-n$(PHYS_SCENES)-f$(PHYS_FRAMES)-o$(PHYS_OBJECTS)
PHYS_TRAIN   := $(PHYS_TAG).jsonl
PHYS_TEST    := $(PHYS_W)/eval-seed$(SEED)-n$(PHYS_EVAL)-f$(PHYS_FRAMES)-o$(PHYS_OBJECTS).jsonl
PHYS_RECORD   = $(RECORDS)/$(shell date +%Y-%m-%d)_physics_seed$(SEED)
# What the sub-make of record.mk is told; its file names derive from these.
PHYS_VARS    := CORPUS=$(PHYS_TRAIN) CORPUS_JSONL=text VOCAB=512 CONFIG=$(PHYS_CONFIG) \
                NAME=physics VAL_DOCS=$(PHYS_VAL_DOCS) W=$(PHYS_W) SEED=$(SEED)

$(PHYS_TRAIN): | bin/phys-gen
	@mkdir -p $(PHYS_W)
	bin/phys-gen -q --scenes $(PHYS_SCENES) --seed $(SEED) --split trained \
	  --frames $(PHYS_FRAMES) --objects $(PHYS_OBJECTS) -o $@

# The evaluation scenes: every type, from a seed the training scenes never use.
$(PHYS_TEST): | bin/phys-gen
	@mkdir -p $(PHYS_W)
	bin/phys-gen -q --scenes $(PHYS_EVAL) --seed $$(($(SEED) + 1000003)) --split all \
	  --frames $(PHYS_FRAMES) --objects $(PHYS_OBJECTS) -o $@

record-physics: deps-check
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory $(PHYS_TRAIN) $(PHYS_TEST)
	$(MAKE) --no-print-directory record-files $(PHYS_VARS)
	bin/moe-rollout -q $(PHYS_RECORD)/model.pack --physics $(PHYS_TEST) > $(PHYS_RECORD)/physics.jsonl
	sh pipelines/physics-table.sh $(PHYS_RECORD)/physics.jsonl | tee $(PHYS_RECORD)/physics.txt

.PHONY: record-physics
