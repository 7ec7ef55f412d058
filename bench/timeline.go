package bench

import (
	"slices"
	"sync/atomic"
	"time"
)

// A run's single histogram says how long the tail is, not when it
// happened: a p99 made of one stalled second and a p99 spread evenly over
// the run point at different causes (a storage flush, a collector, a busy
// neighbour). The timeline keeps a coarse histogram per slot of the run,
// by the time each message was sent.
//
// Its buckets are microseconds, log-linear with 8 buckets per power of two
// (a value is reported within 1/8 of itself), so a slot costs 2 KB and is
// allocated with its first value; a run has at most maxSlots slots, wider
// than a second when the run is longer than that.
const (
	tlSubBits = 4 // 16 buckets of one µs, then 8 per power of two
	tlBuckets = 1<<tlSubBits + (64-tlSubBits)<<(tlSubBits-1)
	maxSlots  = 600
)

func tlIndex(us int64) int { return logLinIndex(max(us, 0), tlSubBits) }

// tlUpper is the largest value, in microseconds, of bucket i.
func tlUpper(i int) int64 { return logLinUpper(i, tlSubBits) }

type tlSlot struct {
	counts atomic.Pointer[[tlBuckets]atomic.Uint32]
	max    atomic.Int64 // ns
}

// timeline is safe for concurrent use: deliveries arrive on many netpoll
// goroutines at once.
type timeline struct {
	start int64 // unix ns of the first slot
	width int64 // ns per slot
	slots []tlSlot
}

// newTimeline covers d from start (unix ns) with slots of a second, or
// wider when d needs more than maxSlots of them.
func newTimeline(start int64, d time.Duration) *timeline {
	width := int64(time.Second)
	if n := (int64(d) + width - 1) / width; n > maxSlots {
		width = (int64(d) + maxSlots - 1) / maxSlots
	}
	return &timeline{start: start, width: width, slots: make([]tlSlot, max((int64(d)+width-1)/width, 1))}
}

// record adds the latency lat (ns) of a message sent at sent (unix ns).
// A message sent before measuring began is left out, as the run's
// counters leave it out; so is one stamped after the end (senders stop
// there, so only a clock step between processes makes one).
func (t *timeline) record(sent, lat int64) {
	if t == nil || sent < t.start {
		return
	}
	i := (sent - t.start) / t.width
	if i >= int64(len(t.slots)) {
		return
	}
	s := &t.slots[i]
	c := s.counts.Load()
	if c == nil {
		c = new([tlBuckets]atomic.Uint32)
		if !s.counts.CompareAndSwap(nil, c) {
			c = s.counts.Load()
		}
	}
	c[tlIndex(lat/1000)].Add(1)
	for m := s.max.Load(); lat > m && !s.max.CompareAndSwap(m, lat); m = s.max.Load() {
	}
}

// TimelineSnapshot is the sparse form of a timeline that worker processes
// send to their parent.
type TimelineSnapshot struct {
	WidthNs int64          `json:"width_ns"`
	Slots   []TimelineSlot `json:"slots,omitempty"`
}

// TimelineSlot is one non-empty slot of a TimelineSnapshot: its index, its
// exact maximum (ns) and its non-empty buckets as [index, count] pairs.
type TimelineSlot struct {
	I       int         `json:"i"`
	MaxNs   int64       `json:"max_ns"`
	Buckets [][2]uint32 `json:"b"`
}

func (t *timeline) snapshot() *TimelineSnapshot {
	if t == nil {
		return nil
	}
	s := &TimelineSnapshot{WidthNs: t.width}
	for i := range t.slots {
		c := t.slots[i].counts.Load()
		if c == nil {
			continue
		}
		sl := TimelineSlot{I: i, MaxNs: t.slots[i].max.Load()}
		for b := range c {
			if n := c[b].Load(); n > 0 {
				sl.Buckets = append(sl.Buckets, [2]uint32{uint32(b), n})
			}
		}
		s.Slots = append(s.Slots, sl)
	}
	return s
}

// merge adds a worker's snapshot; slot i of every worker is the same part
// of the run, since all workers start measuring together. Slots or buckets
// out of range (a worker with other flags or another build) are ignored.
func (t *timeline) merge(s *TimelineSnapshot) {
	if t == nil || s == nil || s.WidthNs != t.width {
		return
	}
	for _, sl := range s.Slots {
		if sl.I < 0 || sl.I >= len(t.slots) {
			continue
		}
		dst := &t.slots[sl.I]
		c := dst.counts.Load()
		if c == nil {
			c = new([tlBuckets]atomic.Uint32)
			dst.counts.Store(c)
		}
		for _, b := range sl.Buckets {
			if int(b[0]) < tlBuckets {
				c[b[0]].Add(b[1])
			}
		}
		if sl.MaxNs > dst.max.Load() {
			dst.max.Store(sl.MaxNs)
		}
	}
}

// TimelinePoint is the latency of the messages sent in one slot of the run.
type TimelinePoint struct {
	// At is the slot's start in seconds after measuring began.
	At    float64 `json:"t_s"`
	Count uint64  `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// points returns the non-empty slots in order.
func (t *timeline) points() []TimelinePoint {
	if t == nil {
		return nil
	}
	var out []TimelinePoint
	for i := range t.slots {
		c := t.slots[i].counts.Load()
		if c == nil {
			continue
		}
		var n uint64
		for b := range c {
			n += uint64(c[b].Load())
		}
		if n == 0 {
			continue
		}
		mx := t.slots[i].max.Load()
		q := func(f float64) float64 {
			b := bucketOfRank(tlBuckets, func(i int) uint64 { return uint64(c[i].Load()) }, quantileRank(f, n))
			if b < 0 {
				return float64(mx) / 1e6
			}
			return float64(min(tlUpper(b)*1000, mx)) / 1e6
		}
		out = append(out, TimelinePoint{At: float64(int64(i)*t.width) / 1e9, Count: n,
			P50Ms: q(0.50), P99Ms: q(0.99), MaxMs: float64(mx) / 1e6})
	}
	return out
}

// timelineSummary returns the slots' p99 at the minimum, median and
// maximum, and the slot with the largest p99; ok is false with fewer than
// two slots.
func timelineSummary(pts []TimelinePoint) (lo, med, hi float64, worst TimelinePoint, ok bool) {
	if len(pts) < 2 {
		return 0, 0, 0, TimelinePoint{}, false
	}
	p99 := make([]float64, len(pts))
	for i, p := range pts {
		p99[i] = p.P99Ms
		if p.P99Ms > worst.P99Ms || i == 0 {
			worst = p
		}
	}
	slices.Sort(p99)
	return p99[0], p99[len(p99)/2], p99[len(p99)-1], worst, true
}
