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
# The wire decoders, as package:Target pairs: fuzzed for $(FUZZTIME) in `make test`.
FUZZ_TARGETS := \
	./codec:FuzzDecodeTCP ./codec:FuzzSniff ./codec:FuzzParseRequest \
	./codec:FuzzWSDecode ./codec:FuzzPeekCmd ./codec:FuzzChatBody
# The other decoders of bytes from outside: stored records, the cluster bus,
# and what the client SDK and jimbench read from a server. Their test
# binaries link Badger, NATS and the rest, and the fuzz engine's own work per
# input grows with the instrumented code (0.2-0.5 ms here whatever the
# target does), so `make test` gives each $(FUZZTIME_WIDE); `make fuzz` gives
# every target $(LONGFUZZ).
FUZZTIME_WIDE ?= 10000x
FUZZ_TARGETS_WIDE := \
	./storage:FuzzDecodeMsg ./storage:FuzzDecodeOffRef ./storage:FuzzDecodeAck \
	./storage:FuzzKeyParts ./storage:FuzzGseqOfID ./storage:FuzzDedupBatch \
	./storage:FuzzDecodeJSRef ./storage:FuzzJetStreamDecode ./storage:FuzzDirectReply \
	./storage:FuzzBackupTrailer \
	./cluster:FuzzParseFrame ./cluster:FuzzParsePres ./cluster:FuzzPresRecords \
	./cluster:FuzzSnapshotChunks ./cluster:FuzzPresenceIn ./cluster:FuzzReceive \
	./client:FuzzTCPTransportRead ./client:FuzzConnHandle ./client:FuzzConnHandleEncoded \
	./bench:FuzzScanTCP ./bench:FuzzScanWS ./bench:FuzzParseInt ./bench:FuzzSendTime

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
# the concurrent packages, and every fuzz target for $(FUZZTIME) or $(FUZZTIME_WIDE) on top of its
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
	@set -e; for t in $(FUZZ_TARGETS:=:$(FUZZTIME)) $(FUZZ_TARGETS_WIDE:=:$(FUZZTIME_WIDE)); do \
		n=$${t%:*}; pkg=$${n%%:*}; name=$${n##*:}; count=$${t##*:}; \
		echo "fuzz $$pkg $$name ($$count)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$count $$pkg; \
	done

fuzz:
	@set -e; for t in $(FUZZ_TARGETS) $(FUZZ_TARGETS_WIDE); do \
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
