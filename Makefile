# Thin wrapper over CMake; see README.md.
#   make run    install what is missing, build, start petrel on examples/quickstart.yaml
#   make test   build and run the whole suite, then again under ASan+UBSan, then fuzz briefly
#   make fuzz   run every fuzz target for FUZZ_SECONDS (default 300) each
#   make fault  failure injection under ASan+UBSan for FAULT_SECONDS (default 600)
#   make bench  side-by-side benchmarks against HAProxy and nginx (bench/README.md)

JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 300
FAULT_SECONDS ?= 600
CTEST_FLAGS ?= --output-on-failure -j $(JOBS)
CC_FUZZ ?= clang
CXX_FUZZ ?= clang++

.PHONY: all run test build test-plain test-asan test-fuzz fuzz fault bench deps deps-bench clean format

all: build

deps:
	@scripts/install-deps.sh test

deps-bench:
	@scripts/install-deps.sh bench

build: deps
	cmake -S . -B build -DPT_WERROR=ON >/dev/null
	cmake --build build -j $(JOBS)

run: build
	build/petrel -c examples/quickstart.yaml

test: deps test-plain test-asan test-fuzz

test-plain:
	cmake -S . -B build -DPT_WERROR=ON >/dev/null
	cmake --build build -j $(JOBS)
	cd build && ctest $(CTEST_FLAGS)

test-asan:
	cmake -S . -B build-asan -DPT_WERROR=ON -DPT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 ctest $(CTEST_FLAGS)

# libFuzzer needs clang; each target runs for PT_FUZZ_SECONDS under ctest.
test-fuzz:
	CC=$(CC_FUZZ) CXX=$(CXX_FUZZ) cmake -S . -B build-fuzz -DPT_FUZZ=ON -DPT_FUZZ_SECONDS=20 >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	cd build-fuzz && ctest $(CTEST_FLAGS) -L fuzz

fuzz: deps
	CC=$(CC_FUZZ) CXX=$(CXX_FUZZ) cmake -S . -B build-fuzz -DPT_FUZZ=ON -DPT_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	cd build-fuzz && ctest --output-on-failure -L fuzz

# The failure-injection test for FAULT_SECONDS, in rounds of at most 60 s, each with a new
# seed and rate profile (docs/testing.md); every round prints the variables that replay it.
fault: deps
	cmake -S . -B build-asan -DPT_WERROR=ON -DPT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-asan -j $(JOBS)
	PETREL_BIN=$(CURDIR)/build-asan/petrel PT_SANITIZE=1 PT_FAULT_SECONDS=$(FAULT_SECONDS) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  /usr/bin/python3 tests/integration/test_failure_injection.py -v

bench: deps-bench build
	bench/run.sh

format:
	clang-format -i proxy/*.[ch] proxy/*.cc filters/*.[ch] discovery/*.[ch] tls/*.[ch] 2>/dev/null || true

clean:
	rm -rf build build-asan build-fuzz
