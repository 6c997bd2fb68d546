# Keyward developer entry points. `make run` and `make test` work on a fresh Debian 12 machine:
# both install what is missing (scripts/setup, apt-get), build, then run.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup build run test test-unit test-asan test-interop fuzz fuzz-ci bench clean format

all: build

setup:
	@bash scripts/setup

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The main job. Today: the token guard facing the 2023 forgeries (see README).
run: build
	./$(BUILD)/src/cli/keyward demo

# Every test: unit and integration tests (ctest), the same unit tests under ASan+UBSan,
# the npm `jose` and `openid-client` interoperability tests, and a short fuzzing run of the
# parsers of untrusted input (`make fuzz` runs every fuzz target, longer).
test: build test-unit test-asan test-interop fuzz-ci
	@echo "make test: all suites passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: setup
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKEYWARD_SANITIZE=ON \
	  -DKEYWARD_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -LE interop

test-interop: build
	bash tests/interop/run.sh ./$(BUILD)/src/cli/keyward

fuzz: setup
	bash fuzz/run.sh $${FUZZ_SECONDS:-20}

fuzz-ci: setup
	bash fuzz/run.sh $${FUZZ_SECONDS:-10} token_parser_fuzz event_reader_fuzz audit_reader_fuzz \
	  rule_loader_fuzz

bench: setup
	bash bench/run.sh

format:
	clang-format -i $$(git ls-files 'src/*.cc' 'src/*.h' 'bench/*.cc' 'fuzz/*.cc')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-bench build-fuzz
