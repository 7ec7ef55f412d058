// Package memtrim keeps an idle gateway's memory near its live heap: it
// returns the heap a burst of connections left behind to the operating system
// once the burst has settled (Run), and keeps the collector's headroom
// proportional to the heap beyond large buffers allocated at start (TuneGC).
//
// A burst of logins (a restart, a reconnect storm) leaves the Go heap holding
// the burst's garbage, and the runtime keeps freed pages resident up to its
// heap goal, twice the live heap by default. For a gateway of idle
// connections that is hundreds of bytes per connection of memory that serves
// nothing until the next storm. Once the churn has been quiet for a while,
// one forced collection and scavenge (debug.FreeOSMemory) returns it. The
// cost is one garbage collection per burst, at a moment when the process has
// little else to do.
package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Policy decides when a trim is due. The zero value is not useful; see
// Defaults.
type Policy struct {
	// MinChurn is how many connection events (opens plus closes) since the
	// last trim make a burst worth trimming after.
	MinChurn uint64
	// Quiet is how long the churn must stay at or under QuietRate events
	// per second before the trim.
	Quiet time.Duration
	// QuietRate is the churn per second that still counts as quiet.
	QuietRate float64
	// MinInterval is the least time between two trims.
	MinInterval time.Duration
	// IdleActivity and IdlePerConn bound the inbound traffic (read events
	// per second) of an idle server: IdleActivity plus IdlePerConn per open
	// connection. A trim stalls allocations while it returns pages, so it
	// waits for traffic under that bound too: a server busy with messages
	// is using its memory anyway.
	IdleActivity float64
	IdlePerConn  float64
	// ReclaimMin and ReclaimFrac make an idle server without bursts trim
	// too, at most once per MinInterval: when the heap beyond the live heap
	// is at least ReclaimMin bytes and ReclaimFrac of the live heap.
	ReclaimMin  uint64
	ReclaimFrac float64
}

// Stats is what Run samples every second.
type Stats struct {
	Churn    uint64 // connection opens plus closes so far; only grows
	Activity uint64 // inbound read events so far; only grows
	Open     int    // connections open now
}

// Defaults suits a gateway: bursts of at least 2,000 connection events,
// trimmed after 3 s under 100 events/s, at most once a minute, while reads
// stay under 100/s plus one per 20 connections per second (a connection that
// heartbeats every 30 s makes one per 30).
// Idle, without a burst, it trims once 4 MiB and 1/32 of the live heap (Badger's
// arena included) could be given back.
var Defaults = Policy{MinChurn: 2000, Quiet: 3 * time.Second, QuietRate: 100, MinInterval: time.Minute,
	IdleActivity: 100, IdlePerConn: 0.05, ReclaimMin: 4 << 20, ReclaimFrac: 1.0 / 32}

// Trimmer watches a churn counter and trims when its Policy says so.
type Trimmer struct {
	p Policy

	lastTrimChurn uint64
	lastTrim      time.Time
	prevChurn     uint64
	prevActivity  uint64
	prevAt        time.Time
	quietSince    time.Time // zero while the churn is above QuietRate
	started       bool
	idle          bool // traffic was under the idle bound at the last Observe
}

// New returns a Trimmer for p.
func New(p Policy) *Trimmer { return &Trimmer{p: p} }

// Observe records st at now and reports whether a trim is due after a burst
// (the caller then trims and calls Trimmed).
func (t *Trimmer) Observe(now time.Time, st Stats) bool {
	churn := st.Churn
	if !t.started {
		t.started = true
		t.prevChurn, t.prevActivity, t.prevAt, t.lastTrimChurn = churn, st.Activity, now, churn
		return false
	}
	dt := now.Sub(t.prevAt).Seconds()
	if dt <= 0 {
		return false
	}
	rate := float64(churn-t.prevChurn) / dt
	act := float64(st.Activity-t.prevActivity) / dt
	t.prevChurn, t.prevActivity, t.prevAt = churn, st.Activity, now
	t.idle = act <= t.p.IdleActivity+t.p.IdlePerConn*float64(st.Open)
	if rate > t.p.QuietRate || !t.idle {
		t.quietSince = time.Time{}
		return false
	}
	if t.quietSince.IsZero() {
		t.quietSince = now
	}
	return churn-t.lastTrimChurn >= t.p.MinChurn &&
		now.Sub(t.quietSince) >= t.p.Quiet &&
		(t.lastTrim.IsZero() || now.Sub(t.lastTrim) >= t.p.MinInterval)
}

// Trimmed records a trim at now with the churn counter at churn.
func (t *Trimmer) Trimmed(now time.Time, churn uint64) {
	t.lastTrim, t.lastTrimChurn = now, churn
}

// Reclaimable reports whether a trim would give back enough: garbage and
// free pages still held (heap bytes beyond the live heap) of at least
// minBytes and at least frac of the live heap.
func Reclaimable(heap, live, minBytes uint64, frac float64) bool {
	if heap <= live {
		return false
	}
	extra := heap - live
	return extra >= minBytes && float64(extra) >= frac*float64(live)
}

// Run checks churn every second until ctx ends and calls debug.FreeOSMemory
// when p says so; trimmed, if not nil, is told after each trim.
//
// Without bursts, a trickle of garbage (heartbeats, the occasional login)
// still fills the collector's headroom in time, and the pages a collection
// frees stay resident up to the next heap goal. So, idle, once per
// p.MinInterval Run also trims when p.ReclaimMin and p.ReclaimFrac say so: a
// steady state of idle connections then stays near its live heap instead of
// twice it.
func Run(ctx context.Context, p Policy, stats func() Stats, trimmed func()) {
	t := New(p)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	heap := newReader("/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes",
		"/memory/classes/heap/free:bytes", "/gc/heap/live:bytes")
	lastCheck := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			due := t.Observe(now, stats())
			if !due && t.idle && now.Sub(lastCheck) >= p.MinInterval && now.Sub(t.lastTrim) >= p.MinInterval {
				lastCheck = now
				v := heap.read()
				due = Reclaimable(v[0]+v[1]+v[2], v[3], p.ReclaimMin, p.ReclaimFrac)
			}
			if due {
				debug.FreeOSMemory()
				t.Trimmed(time.Now(), stats().Churn)
				if trimmed != nil {
					trimmed()
				}
			}
		}
	}
}

// reader reads runtime/metrics values of kind uint64 (0 for any other).
type reader struct {
	samples []metrics.Sample
	vals    []uint64
}

func newReader(names ...string) *reader {
	r := &reader{samples: make([]metrics.Sample, len(names)), vals: make([]uint64, len(names))}
	for i, n := range names {
		r.samples[i].Name = n
	}
	return r
}

func (r *reader) read() []uint64 {
	metrics.Read(r.samples)
	for i, s := range r.samples {
		r.vals[i] = 0
		if s.Value.Kind() == metrics.KindUint64 {
			r.vals[i] = s.Value.Uint64()
		}
	}
	return r.vals
}
