package memtrim

import (
	"context"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"time"
)

// The collector's headroom is GOGC percent of the live heap. Badger
// allocates its memtable arena (64 MiB by default) and caches on the Go heap
// at open; they are large, long-lived and mostly pointer-free, so they cost
// the collector almost nothing to mark, yet with GOGC=100 they double the
// garbage allowed to pile up between collections. In a login storm that
// garbage is interleaved with the connections' long-lived objects, and the
// half-empty spans it leaves stay resident. TuneGC gives the collector the
// headroom the rest of the heap would have on its own.

// Percent returns the GOGC value that gives a heap of live bytes, of which
// base are the long-lived buffers present at start, the headroom of
// gogc percent applied to the rest, but at least floor bytes and never more
// than gogc percent of the whole.
func Percent(live, base, floor uint64, gogc int) int {
	if live == 0 || gogc <= 0 {
		return gogc
	}
	rest := uint64(0)
	if live > base {
		rest = live - base
	}
	headroom := max(rest*uint64(gogc)/100, floor)
	p := int(math.Ceil(float64(headroom) * 100 / float64(live)))
	return min(max(p, 1), gogc)
}

// TuneGC measures the live heap now as the base and then, every second until
// ctx ends, sets the GC percent so that the headroom follows the heap beyond
// that base (see Percent), with at least floor bytes of headroom. It does
// nothing when GOGC is set in the environment: an operator's choice wins.
func TuneGC(ctx context.Context, floor uint64) {
	if os.Getenv("GOGC") != "" {
		return
	}
	gogc := debug.SetGCPercent(100)
	debug.SetGCPercent(gogc)
	if gogc <= 0 {
		return
	}
	runtime.GC()
	live := newReader("/gc/heap/live:bytes")
	read := func() uint64 { return live.read()[0] }
	base := read()
	cur := gogc
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer debug.SetGCPercent(gogc)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p := Percent(read(), base, floor, gogc)
		// Small moves are not worth a call that takes the heap lock.
		if p != cur && (p*10 < cur*9 || p*10 > cur*11 || p == gogc) {
			debug.SetGCPercent(p)
			cur = p
		}
	}
}
