# jim — build, run and test. `make run` and `make test` are all a fresh
# machine needs: Go is the only prerequisite and test tools install themselves.
GO        ?= go
ADDR      ?= :8888
DATA      ?= ./data
# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" when a duration runs out (go.dev/issue/75804,
# fixed in 1.27). 150,000 inputs take 5-25 s per target here.
FUZZTIME  ?= 150000x
LONGFUZZ  ?= 10m
PKGS      := ./...
# Every fuzz target, as package:Target pairs.
FUZZ_TARGETS := \
	./codec:FuzzDecodeTCP ./codec:FuzzSniff ./codec:FuzzParseRequest \
	./codec:FuzzWSDecode ./codec:FuzzPeekCmd ./codec:FuzzChatBody

.PHONY: all build run test test-short test-deps lint fuzz fuzz-short bench tools soak

all: build

build:
	$(GO) build -o bin/jimd ./cmd/jimd
	$(GO) build -o bin/jimbench ./cmd/jimbench

run: build
	mkdir -p $(DATA)
	./bin/jimd -addr $(ADDR)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# The whole suite: lint, unit and loopback integration tests, race detector on
# the concurrent packages, and every fuzz target for $(FUZZTIME) on top of its
# seed corpus.
test: test-deps lint
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -timeout 15m ./dispatch ./storage ./gateway ./cluster ./test/cluster
	$(MAKE) fuzz-short

# Headless Chromium for the browser tests in ./web and curl for the
# docs/api.md examples in ./test/apidocs (Debian's packages).
test-deps:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	@command -v curl >/dev/null || (apt-get update && apt-get install -y --no-install-recommends curl ca-certificates)

fuzz-short:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(LONGFUZZ) $$pkg; \
	done

# Go micro-benchmarks into bench.txt, then a bounded series of jimbench runs
# (idle, group, chat), each against a jimd started on a free port and killed
# afterwards: JSON under bench-out/, charts in docs/img/ (scripts/bench.sh;
# about 4 minutes; BENCH_* variables shorten it).
bench: bench-go
	$(MAKE) bench-charts

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./codec ./gateway | tee bench.txt

bench-charts:
	GO=$(GO) bash scripts/bench.sh

.PHONY: bench-go bench-charts

# The crash test at length: 20 SIGKILL/restart trials of a real jimd under
# chat load, printing acked, found, lost and duplicated counts.
soak:
	JIM_SOAK=1 $(GO) test -count=1 -v -timeout 30m -run TestCrashRecovery ./test/crash

# A million logged-in idle connections on this machine: a NATS server, as many
# jimd as the 20,000-file limit per process needs (one port via SO_REUSEPORT,
# one cluster), jimbench workers over many loopback source addresses, held
# SCALE_HOLD with heartbeats. Results in /tmp/jim-scale/<time>/; see
# docs/BENCHMARKS.md, "A million connections". SCALE_ARGS adds orchestrator
# flags (go run ./bench/scale -h).
SCALE_CONNS ?= 1000000
SCALE_HOLD  ?= 5m
SCALE_ARGS  ?=
.PHONY: bench-scale
bench-scale: build
	$(GO) build -o bin/jimscale ./bench/scale
	./bin/jimscale -bin ./bin -conns $(SCALE_CONNS) -hold $(SCALE_HOLD) $(SCALE_ARGS)
