# Makefile: builds the three programs (train_gpt, quantize, eval), the CPU test tools, and
# runs the test suite. Works on a machine without a GPU: nvcc only needs the CUDA toolkit.
#
#   make train_gpt quantize eval      the programs (GPU_ARCH=90a by default; GPU_ARCH=80/86/89 too)
#   make test                         build everything, run the CPU suite (+ GPU checks if a GPU is there)
#   make clean
#
# Optional pieces are probed and reported with a check mark; NO_NVCC=1 forces the CPU-only
# build with the host compiler, NO_NCCL=1 leaves NCCL out.

SHELL := /bin/bash
CXX ?= g++
PYTHON ?= /usr/bin/python3
GPU_ARCH ?= 90a
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || ( [ -x $(CUDA_HOME)/bin/nvcc ] && echo $(CUDA_HOME)/bin/nvcc ))

COMMON_HEADERS := $(wildcard common/*.h common/*.cuh)
HOST_FLAGS := -O2 -std=c++17 -Wall -Wextra -Wno-unused-parameter -fopenmp
LDLIBS :=

# --- zstd (required by the programs: artifacts are zstd-compressed) ---------------------------
# Every probe must be able to fail: this one compiles and links a tiny program against zstd.h and
# -lzstd (printf's \043 is '#': a `\#` here would reach the compiler with its backslash and the
# probe would always pass). ZSTD_PROBE_HEADER exists for the test that checks the failure path.
ZSTD_PROBE_HEADER ?= zstd.h
ZSTD_H := $(shell d=$$(mktemp -d) && printf '\043include <$(ZSTD_PROBE_HEADER)>\nint main() { return ZSTD_versionNumber() == 0; }\n' \
            > $$d/p.cpp && $(CXX) $$d/p.cpp -o $$d/p -lzstd >/dev/null 2>&1 && echo yes; rm -rf $$d)
ZSTD_HINT := install libzstd-dev (Debian/Ubuntu: sudo apt-get install libzstd-dev; see README.md, Prerequisites), then make again
ifeq ($(ZSTD_H),yes)
  $(info ✓ zstd found (libzstd-dev))
  HOST_FLAGS += -DUSE_ZSTD
  LDLIBS += -lzstd
else
  $(info ✗ zstd not found: train_gpt, quantize and eval need it. HINT: $(ZSTD_HINT))
endif
# in a recipe: stop with the hint when zstd is missing
NEED_ZSTD = $(if $(ZSTD_H),,$(error zstd.h or libzstd not found, $@ cannot be built. HINT: $(ZSTD_HINT)))

# --- nvcc -----------------------------------------------------------------------------------
ifeq ($(NO_NVCC),1)
  NVCC :=
endif
ifneq ($(NVCC),)
  $(info ✓ nvcc found: $(NVCC), building for GPU_ARCH=$(GPU_ARCH))
  ifeq ($(GPU_ARCH),90a)
    GENCODE := -gencode arch=compute_90a,code=sm_90a
  else
    GENCODE := -gencode arch=compute_$(GPU_ARCH),code=sm_$(GPU_ARCH) -gencode arch=compute_$(GPU_ARCH),code=compute_$(GPU_ARCH)
  endif
  PROG_CC := $(NVCC) -x cu -O3 -std=c++17 $(GENCODE) -Xcompiler "-fopenmp -Wall -Wno-unused-parameter" $(filter -DUSE_%,$(HOST_FLAGS)) -lineinfo
  PROG_LIBS := $(LDLIBS) -lcublasLt -lcublas -lgomp
else
  $(info ✗ nvcc not found: building the CPU-only programs with $(CXX). HINT: install the CUDA toolkit for the GPU path)
  PROG_CC := $(CXX) -x c++ $(HOST_FLAGS) -DNO_CUDA
  PROG_LIBS := $(LDLIBS)
endif

# --- NCCL (several GPUs: common/dist.h; the GPU build only) ------------------------------------
NCCL_H := $(shell [ -f $(CUDA_HOME)/include/nccl.h ] || [ -f /usr/include/nccl.h ] && echo yes)
ifeq ($(NO_NCCL),1)
  NCCL_H :=
endif
ifeq ($(NVCC),)
  NCCL_H :=
endif
ifeq ($(NCCL_H),yes)
  $(info ✓ NCCL found: train_gpt trains on every GPU of a node, or several nodes)
  PROG_CC += -DUSE_NCCL
  PROG_LIBS += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib -lnccl
else
  $(info ✗ NCCL not found (or NO_NCCL=1): train_gpt trains on one GPU; the CPU path still runs several ranks)
endif

# the commit the programs are built from, for --version and train_gpt's log (common/config.h)
BUILD_REV := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
PROG_CC += -DBUILD_REV='"$(BUILD_REV)"'

PROGRAMS := train_gpt quantize eval
BUILD_DIR ?= build
TEST_TOOLS := $(patsubst test/%.cpp,build/%,$(wildcard test/*.cpp))
# GPU checks: every dev/<family>.cu is a standalone check + benchmark (built only with nvcc)
# (BUILD_DIR=build80 GPU_ARCH=80 make dev-checks builds the portable path beside the default one)
DEV_CHECKS := $(if $(NVCC),$(patsubst dev/%.cu,$(BUILD_DIR)/dev_%,$(wildcard dev/*.cu)))

.PHONY: all test clean dev-checks
all: $(PROGRAMS) $(TEST_TOOLS) $(DEV_CHECKS)

train_gpt: train_gpt.cu $(COMMON_HEADERS)
	$(NEED_ZSTD)$(PROG_CC) $< -o $@ $(PROG_LIBS)
quantize: quantize.cu $(COMMON_HEADERS)
	$(NEED_ZSTD)$(PROG_CC) $< -o $@ $(PROG_LIBS)
eval: eval.cu $(COMMON_HEADERS)
	$(NEED_ZSTD)$(PROG_CC) $< -o $@ $(PROG_LIBS)

# CPU test tools: plain C++ over the same common/ headers
build/%: test/%.cpp $(COMMON_HEADERS)
	@mkdir -p build
	$(CXX) $(HOST_FLAGS) $< -o $@ $(LDLIBS)

dev-checks: $(DEV_CHECKS)
$(BUILD_DIR)/dev_%: dev/%.cu $(COMMON_HEADERS) dev/check.cuh
	@mkdir -p $(BUILD_DIR)
	$(PROG_CC) $< -o $@ $(PROG_LIBS)

test: all
	PYTHON=$(PYTHON) bash test/run_tests.sh

clean:
	rm -rf $(PROGRAMS) build build80

# `make data`: FineWeb when Hugging Face answers, else the offline stand-in (dev/data/README.md)
include dev/data/data.mk

# `make submission NAME=... AUTHOR=... GITHUB=... [LOGS="logs/a.txt ..."] [OUT=dir]`: the records
# folder from a seeds run's logs (default: dev/seeds.py run's logs/seeds_seed*.txt)
.PHONY: submission
submission:
	$(PYTHON) dev/submission.py --name "$(NAME)" --author "$(AUTHOR)" --github "$(GITHUB)" $(if $(OUT),--out "$(OUT)") \
	    $(if $(BLURB),--blurb "$(BLURB)") $(or $(LOGS),$(wildcard logs/seeds_seed*.txt))
