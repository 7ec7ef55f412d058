package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear like HdrHistogram: values below 2^histSubBits
// get one bucket each, and every further power of two is split into
// 2^(histSubBits-1) equal buckets, so any recorded value is reported within
// 1/64 (about 1.6%) of itself while the whole int64 range fits in a few
// thousand counters.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits // 128
	histHalf    = histSub / 2      // 64
	histBuckets = histSub + (64-histSubBits)*histHalf
)

// Histogram records non-negative durations in nanoseconds. Record is safe
// for concurrent use, because deliveries arrive on many netpoll goroutines at
// once and a lock would serialise them.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	total  atomic.Uint64
	max    atomic.Int64
	min    atomic.Int64 // stored as value+1 so that zero means "empty"
}

func histIndex(v int64) int { return logLinIndex(v, histSubBits) }

// histUpper returns the largest value that falls into bucket i.
func histUpper(i int) int64 { return logLinUpper(i, histSubBits) }

// logLinIndex is the bucket of v >= 0 in a log-linear layout where values
// below 2^sub have a bucket each and every further power of two is split
// into 2^(sub-1) buckets.
func logLinIndex(v int64, sub uint) int {
	n, half := int64(1)<<sub, 1<<(sub-1)
	if v < n {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - int(sub)
	m := int(v >> uint(e))
	return int(n) + (e-1)*half + (m - half)
}

// logLinUpper is the largest value of bucket i in that layout.
func logLinUpper(i int, sub uint) int64 {
	n, half := 1<<sub, 1<<(sub-1)
	if i < n {
		return int64(i)
	}
	e := (i-n)/half + 1
	m := int64((i-n)%half + half)
	if e >= 64-int(sub) {
		return math.MaxInt64
	}
	return (m+1)<<uint(e) - 1
}

// Record adds one value; negative values, which only clock steps between
// processes can produce, count as zero.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max returns the largest recorded value, exactly.
func (h *Histogram) Max() int64 { return h.max.Load() }

// Min returns the smallest recorded value, exactly, or 0 when empty.
func (h *Histogram) Min() int64 {
	if m := h.min.Load(); m > 0 {
		return m - 1
	}
	return 0
}

// Quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding the ceil(q*count)-th smallest value, capped at the exact
// maximum so that p100 and sparse tails are not overstated.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	i := bucketOfRank(len(h.counts), func(i int) uint64 { return h.counts[i].Load() }, quantileRank(q, n))
	if i < 0 {
		return h.max.Load()
	}
	return min(max(histUpper(i), h.Min()), h.max.Load())
}

// quantileRank is the rank of quantile q among n values: ceil(q*n), at
// least 1.
func quantileRank(q float64, n uint64) uint64 {
	return max(uint64(math.Ceil(q*float64(n))), 1)
}

// bucketOfRank returns the bucket holding the rank-th smallest value, of
// buckets counted by count, or -1 when there are fewer values.
func bucketOfRank(buckets int, count func(int) uint64, rank uint64) int {
	var seen uint64
	for i := range buckets {
		if seen += count(i); seen >= rank {
			return i
		}
	}
	return -1
}

// QuantileMs is Quantile in milliseconds.
func (h *Histogram) QuantileMs(q float64) float64 {
	return float64(h.Quantile(q)) / float64(time.Millisecond)
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.mergeSummary(o.total.Load(), o.Min(), o.max.Load())
}

func (h *Histogram) mergeSummary(n uint64, mn, mx int64) {
	if n == 0 {
		return
	}
	h.total.Add(n)
	for {
		m := h.max.Load()
		if mx <= m || h.max.CompareAndSwap(m, mx) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && mn+1 >= m) || h.min.CompareAndSwap(m, mn+1) {
			break
		}
	}
}

// HistSnapshot is the sparse, JSON-friendly form of a Histogram that worker
// processes send to their parent.
type HistSnapshot struct {
	// Buckets holds [bucket index, count] pairs for non-empty buckets.
	Buckets [][2]uint64 `json:"buckets,omitempty"`
	// Min and Max are the exact extremes in nanoseconds.
	Min int64 `json:"min"`
	Max int64 `json:"max"`
}

// Snapshot returns the sparse form of h.
func (h *Histogram) Snapshot() HistSnapshot {
	s := HistSnapshot{Min: h.Min(), Max: h.Max()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return s
}

// MergeSnapshot adds the values described by s to h; out-of-range bucket
// indexes (from a mismatched worker binary) are ignored.
func (h *Histogram) MergeSnapshot(s HistSnapshot) {
	var n uint64
	for _, b := range s.Buckets {
		if b[0] < histBuckets {
			h.counts[b[0]].Add(b[1])
			n += b[1]
		}
	}
	h.mergeSummary(n, s.Min, s.Max)
}

// LatencyHist is the latency histogram in jimbench's -json output, in a form
// that needs no knowledge of the bucket layout: each non-empty bucket as
// [upper bound in ns, count], in ascending order. A bucket's count is the
// values above the bucket just below it in the full layout (not necessarily
// the previous listed one) and at most its bound; bounds are capped at the
// exact maximum. Running sums of the counts over Count give the CDF, exact
// at each bound.
type LatencyHist struct {
	Count   uint64     `json:"count"`
	MinNs   int64      `json:"min_ns"`
	MaxNs   int64      `json:"max_ns"`
	Buckets [][2]int64 `json:"buckets"`
}

// Export returns h as a LatencyHist, or nil when nothing was recorded.
func (h *Histogram) Export() *LatencyHist {
	if h.Count() == 0 {
		return nil
	}
	mx := h.Max()
	l := &LatencyHist{MinNs: h.Min(), MaxNs: mx}
	for i := range h.counts {
		c := h.counts[i].Load()
		if c == 0 {
			continue
		}
		l.Count += c
		l.Buckets = append(l.Buckets, [2]int64{min(histUpper(i), mx), int64(c)})
	}
	return l
}
