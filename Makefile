# golfkit: build, test, benchmark and install the dependencies.
#
#   make            build every tool into bin/ (-Wall -Wextra -Werror), and
#                   bin/check-cuda when nvcc is present
#   make check-cuda every CUDA kernel, then the whole model, against the CPU
#                   reference (on a GPU machine)
#   make test       sanitizer build + every test through prove (TAP)
#   make deps       install the Debian packages the build and tests need (root)
#   make record SEED=1337  text -> tokenizer -> shards -> train -> average ->
#                   quantize -> pack -> verify -> eval (pipelines/record.mk)
#   make record-physics SEED=1337  phys-gen scenes through the same chain, then
#                   moe-rollout --physics scores (pipelines/record-physics.mk)
#   make bench-tok  tok-train/tok-encode against sentencepiece on GCIDE
#   make bench-train-cpu  moe-train's CPU rate against this machine's sgemm
#   make bench-train-cuda moe-train's GPU rate and MFU against PyTorch (GPU machine)
#   make parity-cuda  moe-train's val loss against PyTorch's, within seed noise (GPU machine)
#   make bench-rollout moe-rollout's generation rate on 2 threads against the sgemv bound,
#                   and on the GPU (with --physics --batch) when there is one
#   make bench-pack artifact size and quantization tax on the record's model
#   make fuzz FUZZ_SECONDS=N  build the libFuzzer harness of every reader with
#                   clang (build/fuzz/bin/) and run each for N seconds (default
#                   60), FUZZ_JOBS at a time, one summary line each
#                   (pipelines/fuzz-all.sh); make fuzz-build only builds them
#
# Objects go to build/rel (bin/), build/asan (build/asan/bin, the tests) and
# build/cuda (kernels/*.cu, linked into bin/check-cuda).

CC      ?= cc
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
GK_VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
ALLCFLAGS := -std=gnu11 $(WARN) -pthread -fopenmp -I/usr/include/x86_64-linux-gnu/openblas-openmp -Ilib -DGK_VERSION='"$(GK_VERSION)"' $(CFLAGS)
ASANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# OpenBLAS's OpenMP build, named by path: it shares our OpenMP threads (the
# pthread build runs a second pool that spins against ours) and runs
# single-threaded inside our parallel regions.
BLAS    := /usr/lib/x86_64-linux-gnu/openblas-openmp
# Chipmunk2D (lib/physgen.c) is linked by every binary, as every lib object is:
# it is a Debian dependency anyway (DEB_PKGS), and one global flag keeps the
# rules uniform instead of splitting lib/ by what each tool pulls in.
LDLIBS  := -L$(BLAS) -Wl,-rpath,$(BLAS) -lopenblas -lxxhash -ljq -lzstd -llzma -lchipmunk -lm \
           -pthread -fopenmp

TOOLS   := tok-train tok-encode shard moe-train moe-avg moe-quant moe-pack moe-eval phys-gen moe-rollout
LIB_SRC := $(filter-out %_test.c lib/gpu_none.c,$(wildcard lib/*.c))
LIB_HDR := $(wildcard lib/*.h)
UNIT    := $(patsubst lib/%_test.c,%,$(wildcard lib/*_test.c))

REL_OBJ  := $(patsubst lib/%.c,build/rel/%.o,$(LIB_SRC))
ASAN_OBJ := $(patsubst lib/%.c,build/asan/%.o,$(LIB_SRC))
BINS      := $(addprefix bin/,$(TOOLS))
ASAN_BINS := $(addprefix build/asan/bin/,$(TOOLS))
UNIT_BINS := $(addprefix build/asan/test/,$(UNIT))

# Debian packages: the build, the tests, the benchmark and the default corpus.
DEB_PKGS := build-essential libzstd-dev libxxhash-dev libopenblas-openmp-dev libjq-dev jq zstd \
            sentencepiece dict-gcide python3 python3-venv perl time liblzma-dev xz-utils gnuplot-nox \
            libchipmunk-dev
# What each package leaves behind that we can test for, in the same order.
DEB_PROBES := /usr/bin/cc /usr/include/zstd.h /usr/include/xxhash.h \
              /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h /usr/include/jv.h \
              /usr/bin/jq /usr/bin/zstd /usr/bin/spm_train /usr/share/dictd/gcide.dict.dz \
              /usr/bin/python3 /usr/share/doc/python3-venv \
              /usr/bin/prove /usr/bin/time /usr/include/lzma.h /usr/bin/xz /usr/bin/gnuplot \
              /usr/include/chipmunk/chipmunk.h

VENV := build/venv
PY_PKGS := tokenizers==0.23.3 numpy xxhash safetensors

.PHONY: all test deps deps-check bench-tok bench-train-cpu bench-train-cuda parity-cuda bench-rollout bench-pack record \
        clean lint check-cuda cuda-skip
# Keep the objects: they are intermediates of pattern rules, which make would delete.
.SECONDARY:
all: $(BINS)

build/rel/%.o: lib/%.c $(LIB_HDR) | build/rel
	$(CC) $(ALLCFLAGS) -c -o $@ $<
build/asan/%.o: lib/%.c $(LIB_HDR) | build/asan
	$(CC) $(ALLCFLAGS) $(ASANFLAGS) -c -o $@ $<

bin/%: cmd/%.c $(REL_OBJ) $(LIB_HDR) | bin
	$(CC) $(ALLCFLAGS) -o $@ $< $(REL_OBJ) $(LDLIBS)
build/asan/bin/%: cmd/%.c $(ASAN_OBJ) build/asan/gpu_none.o $(LIB_HDR) | build/asan/bin
	$(CC) $(ALLCFLAGS) $(ASANFLAGS) -o $@ $< $(ASAN_OBJ) build/asan/gpu_none.o $(LDLIBS)
build/asan/test/%: lib/%_test.c $(ASAN_OBJ) $(LIB_HDR) | build/asan/test
	$(CC) $(ALLCFLAGS) $(ASANFLAGS) -o $@ $< $(ASAN_OBJ) $(LDLIBS)

bin build/rel build/asan build/asan/bin build/asan/test build/cuda:
	mkdir -p $@

# The CUDA backend (kernels/), built whenever nvcc is found, on PATH or in
# /usr/local/cuda: the CI machine has it and no GPU, so the CUDA code is
# compiled on every push, and bin/check-cuda prints a TAP skip there. sm_90 is
# the H100/H200; the compute_90 PTX beside it lets newer GPUs JIT-compile it.
ifeq ($(origin NVCC),undefined)
NVCC := $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
endif
ifneq ($(NVCC),)
NVCCFLAGS := -O2 -g -std=c++17 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90 -Werror all-warnings \
             -Xcompiler -Wall,-Wextra,-Werror -Ilib -Ikernels
# Linked by the host C++ compiler, so the lib objects keep their LDLIBS as is;
# the CUDA libraries come from nvcc's own toolkit, found again at run time by rpath.
CUDA_LIB := $(abspath $(dir $(realpath $(NVCC)))../lib64)
CUDA_LDLIBS := -L$(CUDA_LIB) -Wl,-rpath,$(CUDA_LIB) -lcublasLt -lcudart
CUDA_HDR := $(wildcard kernels/*.h)
# kernels/bench_*.cu are programs of their own (a main each), not kernels.
CUDA_OBJ := $(patsubst kernels/%.cu,build/cuda/%.o,$(filter-out kernels/bench_%.cu,$(wildcard kernels/*.cu)))
CUDA_TESTS := bin/check-cuda
GPU_OBJ := $(filter-out build/cuda/check_%,$(CUDA_OBJ))
GPU_LINK := $(CXX)
GPU_LDLIBS := $(CUDA_LDLIBS)

all: bin/check-cuda bin/bench-gemm

build/cuda/%.o: kernels/%.cu $(CUDA_HDR) $(LIB_HDR) | build/cuda
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<
bin/check-cuda: $(CUDA_OBJ) $(REL_OBJ) | bin
	$(CXX) -o $@ $(CUDA_OBJ) $(REL_OBJ) $(CUDA_LDLIBS) $(LDLIBS)
# The bf16 GEMM rate that bench-train-cuda measures MFU against.
bin/bench-gemm: build/cuda/bench_gemm.o build/cuda/gemm.o | bin
	$(CXX) -o $@ $^ $(CUDA_LDLIBS)

# Every kernel against the CPU, then the whole model (50 steps, dense and MoE).
check-cuda: bin/check-cuda all
	bin/check-cuda
	sh pipelines/check-cuda-model.sh
else
GPU_OBJ := build/rel/gpu_none.o
GPU_LINK := $(CC)
all: cuda-skip
cuda-skip:
	@echo "nvcc not found: skipping the CUDA build (bin/check-cuda); NVCC=path/to/nvcc builds it"
check-cuda:
	@echo "nvcc not found: cannot build bin/check-cuda; NVCC=path/to/nvcc builds it" >&2; exit 1
endif

# The tools with a --device option link the GPU backend (lib/gpu.h): the CUDA
# objects when nvcc is found (above), else lib/gpu_none.c, which says so.
# The sanitizer build always takes gpu_none.
GPU_TOOLS := $(addprefix bin/,moe-train moe-eval moe-rollout)
$(GPU_TOOLS): bin/%: cmd/%.c $(REL_OBJ) $(GPU_OBJ) $(LIB_HDR) | bin
	$(CC) $(ALLCFLAGS) -c -o build/rel/main-$*.o $<
	$(GPU_LINK) -o $@ build/rel/main-$*.o $(REL_OBJ) $(GPU_OBJ) $(GPU_LDLIBS) $(LDLIBS)

# Missing packages: install them when we are root, else print the one line needed.
deps-check:
	@missing=; set -- $(DEB_PKGS); for f in $(DEB_PROBES); do \
	  [ -e "$$f" ] || missing="$$missing $$1"; shift; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory deps; \
	  else echo "missing packages; run: sudo apt-get install -y$$missing" >&2; exit 1; fi; fi

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS)

$(VENV)/ok:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q $(PY_PKGS)
	touch $@

# Every test is an executable that prints TAP: C unit tests and shell scripts.
SH_TESTS := $(wildcard cmd/*_test.sh testdata/*_test.sh)
test: deps-check
	$(MAKE) --no-print-directory all $(ASAN_BINS) $(UNIT_BINS) $(REPLAY_BINS) $(VENV)/ok
	GK_BIN=$(CURDIR)/build/asan/bin GK_VENV=$(CURDIR)/$(VENV) \
	ASAN_OPTIONS=detect_leaks=1 prove -j2 --exec '' $(UNIT_BINS) $(SH_TESTS) $(CUDA_TESTS)

bench-tok: deps-check all
	sh pipelines/bench-tok.sh

bench-train-cpu: deps-check all
	sh pipelines/bench-train-cpu.sh

# On the GPU machine: moe-train --device cuda against PyTorch, same GPU, same
# run. No deps-check: the GPU machine is offline; it needs jq, a CUDA GPU and a
# Python with torch (PY=, default python3).
bench-train-cuda: all
	sh pipelines/bench-train-cuda.sh

parity-cuda: all
	sh pipelines/parity-cuda.sh

# Generation on 2 CPU threads for the physics record's model and a golf
# model against the fp32 sgemv bound; with a GPU, the same on it and the
# --physics scoring at several --batch sizes.
bench-rollout: all
	sh pipelines/bench-rollout.sh

# The whole pipeline, text to verified record (pipelines/record.mk has the stages).
include pipelines/record.mk
# The physics track: phys-gen scenes through the same chain, then scored
# rollouts (pipelines/record-physics.mk).
include pipelines/record-physics.mk

# On the record's model: artifact size against zstd and xz on the same bytes,
# then the quantization tax of each scheme and method.
bench-pack: deps-check all $(QST) $(AVGED) $(SHARD_DONE)
	sh pipelines/bench-pack.sh $(QST) $(TOK)
	sh pipelines/bench-quant.sh $(AVGED) $(TOK) '$(VAL_GLOB)' '$(TRAIN_GLOB)' build/bench-quant
record: deps-check
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory record-files

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr -Ilib lib cmd

clean:
	rm -rf bin build

# ---- fuzzing --------------------------------------------------------------------
# One libFuzzer harness per reader, testdata/fuzz/NAME_fuzz.c, with its seed
# corpus in testdata/fuzz/NAME/ (testdata/fuzz/fuzz.h says how they work).
# Each is built twice: by clang with libFuzzer, ASan and UBSan into
# build/fuzz/bin/NAME (make fuzz, make fuzz-build), the lib objects
# instrumented for coverage in build/fuzz/obj; and by $(CC) with the test
# build's sanitizers around testdata/fuzz/replay.c into build/asan/fuzz/NAME,
# which make test runs on every corpus file (testdata/fuzz_replay_test.sh).
# The readers run on one thread, so the clang build leaves OpenMP out (its
# runtime would be one more library to carry); --as-needed keeps the
# binaries' libraries to those they call; compiler-rt's builtins (static)
# convert float16 for clang 14 (lib/quant.c says why).
FUZZ_NAMES   := $(patsubst testdata/fuzz/%_fuzz.c,%,$(wildcard testdata/fuzz/*_fuzz.c))
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= $(shell nproc)
FUZZ_CC      ?= clang
FUZZ_CFLAGS  := -std=gnu11 $(WARN) -pthread -I/usr/include/x86_64-linux-gnu/openblas-openmp -Ilib \
                -DGK_VERSION='"$(GK_VERSION)"' -O1 -gline-tables-only -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_OBJ     := $(patsubst lib/%.c,build/fuzz/obj/%.o,$(LIB_SRC))
FUZZ_BINS    := $(addprefix build/fuzz/bin/,$(FUZZ_NAMES))
FUZZ_COMMON  := testdata/fuzz/fuzz.c testdata/fuzz/fuzz.h
FUZZ_WRAP    := -Wl,--wrap=jv_parse_sized,--wrap=jv_parse
REPLAY_BINS  := $(addprefix build/asan/fuzz/,$(FUZZ_NAMES))
.PHONY: fuzz fuzz-build

build/fuzz/obj/%.o: lib/%.c $(LIB_HDR) | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
build/fuzz/libgolfkit.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^
build/fuzz/bin/%: testdata/fuzz/%_fuzz.c $(FUZZ_COMMON) build/fuzz/libgolfkit.a $(LIB_HDR) | build/fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itestdata/fuzz -o $@ $< testdata/fuzz/fuzz.c \
	  build/fuzz/libgolfkit.a $(FUZZ_WRAP) -Wl,--as-needed $(filter-out -fopenmp,$(LDLIBS)) \
	  $(shell $(FUZZ_CC) --rtlib=compiler-rt -print-libgcc-file-name 2>/dev/null)
build/asan/fuzz/%: testdata/fuzz/%_fuzz.c $(FUZZ_COMMON) testdata/fuzz/replay.c $(ASAN_OBJ) $(LIB_HDR) | build/asan/fuzz
	$(CC) $(ALLCFLAGS) $(ASANFLAGS) -Itestdata/fuzz -o $@ $< testdata/fuzz/fuzz.c \
	  testdata/fuzz/replay.c $(ASAN_OBJ) $(FUZZ_WRAP) $(LDLIBS)
build/fuzz/obj build/fuzz/bin build/asan/fuzz:
	mkdir -p $@

ifeq ($(shell command -v $(FUZZ_CC) 2>/dev/null),)
fuzz fuzz-build:
	@echo "make fuzz: $(FUZZ_CC) not found: the harnesses need clang and its libFuzzer" \
	  "(apt-get install clang, or FUZZ_CC=path/to/clang)" >&2; exit 1
else
fuzz-build: $(FUZZ_BINS)
fuzz: fuzz-build
	sh pipelines/fuzz-all.sh $(FUZZ_SECONDS) $(FUZZ_JOBS)
endif
