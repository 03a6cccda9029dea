# record-physics.mk: the physics track, simulated scenes to a scored record.
#
#   make record-physics SEED=1337     (the top Makefile includes this)
#
# phys-gen simulates PHYS_SCENES scenes of the trained types (1 to
# PHYS_OBJECTS objects, PHYS_FRAMES frames each) as JSON lines; the chain of
# `make record` (pipelines/record.mk) then runs on their text field with a
# 512-token tokenizer and the MoE of PHYS_CONFIG (8 routed + 1 shared SwiGLU
# experts, top-2, the sigmoid-bias router: the moe100m-physics card's shape at
# CPU size, 1.4M active parameters; with DEVICE=cuda, the default where the
# tools have CUDA and a GPU is seen, physics-gpu.json: 8 layers of 384, GQA
# 6/2 with head dim 64 and partial rotary 32, 8.4M active of 19M, on 20,000
# scenes), through moe-quant, moe-pack and moe-eval, into
# records/<date>_physics_seed<SEED>/. Last, moe-rollout --physics scores the
# packed artifact on PHYS_EVAL fresh scenes of every type (a different seed, so
# none was trained on), prompted with the header and the first frame and
# rolled 15 frames forward; physics.jsonl holds its lines and physics.txt the
# table (trained and held-out types, all and fittable scenes, at frames 1, 5
# and 15). Every setting is a variable, and each intermediate is reused as in
# `make record`.

PHYS_SCENES  ?= $(if $(filter cuda,$(DEVICE)),20000,3000)
PHYS_EVAL    ?= 120
PHYS_FRAMES  ?= 16
PHYS_OBJECTS ?= 1-4
# the model scaled to the machine: physics-gpu.json when training on the GPU
PHYS_CONFIG  ?= testdata/config/physics-$(if $(filter cuda,$(DEVICE)),gpu,cpu).json
PHYS_VAL_DOCS ?= $(if $(filter cuda,$(DEVICE)),400,100)
PHYS_W       ?= build/record-physics
PHYS_TAG     := $(PHYS_W)/scenes-seed$(SEED)-n$(PHYS_SCENES)-f$(PHYS_FRAMES)-o$(PHYS_OBJECTS)
PHYS_TRAIN   := $(PHYS_TAG).jsonl
PHYS_TEST    := $(PHYS_W)/eval-seed$(SEED)-n$(PHYS_EVAL)-f$(PHYS_FRAMES)-o$(PHYS_OBJECTS).jsonl
PHYS_NAME    := physics$(if $(filter cuda,$(DEVICE)),-cuda)
PHYS_RECORD   = $(RECORDS)/$(shell date +%Y-%m-%d)_$(PHYS_NAME)_seed$(SEED)
# What the sub-make of record.mk is told; its file names derive from these.
PHYS_CKPT_EVERY ?= $(if $(filter cuda,$(DEVICE)),250,25)
PHYS_VARS    := CORPUS=$(PHYS_TRAIN) CORPUS_JSONL=text VOCAB=512 CONFIG=$(PHYS_CONFIG) \
                CKPT_EVERY=$(PHYS_CKPT_EVERY) \
                NAME=$(PHYS_NAME) VAL_DOCS=$(PHYS_VAL_DOCS) W=$(PHYS_W) SEED=$(SEED) \
                DEVICE=$(DEVICE)

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
	bin/moe-rollout -q --device $(DEVICE) $(PHYS_RECORD)/model.pack --physics $(PHYS_TEST) \
	  > $(PHYS_RECORD)/physics.jsonl
	sh pipelines/physics-table.sh $(PHYS_RECORD)/physics.jsonl | tee $(PHYS_RECORD)/physics.txt

.PHONY: record-physics
