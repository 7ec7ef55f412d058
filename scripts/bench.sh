#!/usr/bin/env bash
# A bounded series of jimbench runs, each against a freshly started jimd on a
# free loopback port, then the PNG charts drawn from their -json results.
# `make bench-charts` runs it; `make bench` runs it after the Go benchmarks.
#
# Every run has a -duration, and every jimd started here is killed when its
# run ends, and again on exit (SIGKILL if SIGTERM is not enough), so the
# script ends by itself. The defaults take about 4 minutes; the environment
# shortens them for development, e.g.
#   BENCH_DURATION=3s BENCH_IDLE_CONNS="1000 3000" BENCH_GROUP_SIZES="500 1000" \
#   BENCH_CHAT_RATES="500 1000" BENCH_CHAT_CONNS=1000 BENCH_IMG=/tmp/img scripts/bench.sh
# (an empty list, e.g. BENCH_CHAT_RATES="", skips that series).
set -euo pipefail

GO=${GO:-go}
OUT=${BENCH_OUT:-bench-out}             # JSON, tables and jimd logs
IMG=${BENCH_IMG:-docs/img}              # the PNGs
DUR=${BENCH_DURATION:-10s}              # measured time of each run
STORE=${BENCH_STORE:-memory}            # memory, or badger in a temp dir
SRC_IPS=${BENCH_SRC_IPS:-127.0.0.2-127.0.0.5}
IDLE_CONNS=${BENCH_IDLE_CONNS-1000 5000 10000 15000 19000}
GROUP_SIZES=${BENCH_GROUP_SIZES-1000 2000 5000 10000}
GROUP_RATE=${BENCH_GROUP_RATE:-10}
CHAT_CONNS=${BENCH_CHAT_CONNS:-4000}
CHAT_RATES=${BENCH_CHAT_RATES-1000 5000 10000}

cd "$(dirname "$0")/.."
mkdir -p "$OUT/bin" "$IMG"
# The output is never committed.
printf '*\n' >"$OUT/.gitignore"
rm -f "$OUT"/*.json

echo "bench: building jimd, jimbench and jimplot into $OUT/bin"
"$GO" build -o "$OUT/bin/jimd" ./cmd/jimd
"$GO" build -o "$OUT/bin/jimbench" ./cmd/jimbench
"$GO" build -o "$OUT/bin/jimplot" ./cmd/jimplot

JIMD_PID=
BENCH_PID=
DATA_DIR=
PORT=

stop_bench() { # jimbench ends early, with its results so far, on SIGTERM
	if [ -n "$BENCH_PID" ]; then
		kill -TERM "$BENCH_PID" 2>/dev/null || true
		wait "$BENCH_PID" 2>/dev/null || true
		BENCH_PID=
	fi
}

stop_jimd() {
	if [ -n "$JIMD_PID" ]; then
		kill -TERM "$JIMD_PID" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$JIMD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$JIMD_PID" 2>/dev/null || true
		wait "$JIMD_PID" 2>/dev/null || true
		JIMD_PID=
	fi
	if [ -n "$DATA_DIR" ]; then
		rm -rf "$DATA_DIR"
		DATA_DIR=
	fi
}
trap 'stop_bench; stop_jimd' EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

listening() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

# A port below the ephemeral range (so no client socket holds it) that
# nothing listens on: jimd binds with SO_REUSEPORT, so a stale listener on
# the same port would silently share the connections.
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 12000))
		if ! listening "$p"; then
			echo "$p"
			return 0
		fi
	done
	echo "bench: no free port found" >&2
	return 1
}

start_jimd() { # name
	local name=$1 store_args
	PORT=$(free_port)
	if [ "$STORE" = badger ]; then
		DATA_DIR=$(mktemp -d /tmp/jim-bench-data.XXXXXX)
		store_args=(-store badger -data "$DATA_DIR")
	else
		store_args=(-store memory)
	fi
	JIM_CONFIG= "$OUT/bin/jimd" -addr "127.0.0.1:$PORT" "${store_args[@]}" -log-level warn \
		>"$OUT/jimd-$name.log" 2>&1 &
	JIMD_PID=$!
	for _ in $(seq 100); do
		listening "$PORT" && break
		kill -0 "$JIMD_PID" 2>/dev/null || { echo "bench: jimd exited, see $OUT/jimd-$name.log" >&2; JIMD_PID=; return 1; }
		sleep 0.1
	done
	# Exactly one listener, and it is ours.
	local owners
	owners=$(ss -Htlnp "sport = :$PORT" | grep -o 'pid=[0-9]*' | sort -u)
	if [ "$owners" != "pid=$JIMD_PID" ]; then
		echo "bench: port $PORT is held by ${owners:-nobody}, not jimd $JIMD_PID" >&2
		return 1
	fi
}

FAILED=()
run() { # name scenario jimbench-flags...
	local name=$1 scenario=$2
	shift 2
	echo "bench: $name: jimbench $scenario $*"
	if ! start_jimd "$name"; then
		FAILED+=("$name")
		stop_jimd
		return 0
	fi
	# jimbench bounds itself; timeout is only a backstop. It runs in the
	# background so that a signal to this script is handled at once.
	timeout -k 10 600 "$OUT/bin/jimbench" "$scenario" -addr "127.0.0.1:$PORT" -server-pid "$JIMD_PID" \
		-src-ips "$SRC_IPS" -duration "$DUR" -quiet -json "$OUT/$name.json" "$@" \
		>"$OUT/$name.txt" 2>&1 &
	BENCH_PID=$!
	local rc=0
	wait "$BENCH_PID" || rc=$?
	BENCH_PID=
	if [ "$rc" -ne 0 ]; then
		FAILED+=("$name")
		rm -f "$OUT/$name.json"
	fi
	sed 's/^/    /' "$OUT/$name.txt"
	stop_jimd
}

for n in $IDLE_CONNS; do
	run "idle-$n" idle -conns "$n"
done
for g in $GROUP_SIZES; do
	run "group-$g" group -conns "$g" -group-size "$g" -rate "$GROUP_RATE"
done
for r in $CHAT_RATES; do
	run "chat-$r" chat -conns "$CHAT_CONNS" -rate "$r"
done

shopt -s nullglob
results=("$OUT"/*.json)
if [ ${#results[@]} -gt 0 ]; then
	"$OUT/bin/jimplot" -out "$IMG" \
		-subtitle "jimd -store $STORE, one $DUR run each, $(nproc)-core machine shared with jimbench, $(date -u +%Y-%m-%d)" \
		"${results[@]}"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
	echo "bench: failed runs: ${FAILED[*]} (see $OUT/)" >&2
	exit 1
fi
echo "bench: results in $OUT/, charts in $IMG/"
