package bench

import (
	"encoding/json"
	"testing"
)

func TestHistogramExport(t *testing.T) {
	var empty Histogram
	if empty.Export() != nil {
		t.Fatal("empty histogram should export nil")
	}
	var h Histogram
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000) // 1 µs .. 100 ms
	}
	l := h.Export()
	if l.Count != h.Count() || l.MinNs != h.Min() || l.MaxNs != h.Max() {
		t.Fatalf("summary %d/%d/%d, want %d/%d/%d", l.Count, l.MinNs, l.MaxNs, h.Count(), h.Min(), h.Max())
	}
	var sum uint64
	prev := int64(-1)
	for _, b := range l.Buckets {
		if b[0] <= prev || b[1] <= 0 {
			t.Fatalf("bucket %v after bound %d: want ascending bounds and positive counts", b, prev)
		}
		prev = b[0]
		sum += uint64(b[1])
		// The CDF at each bound agrees with Quantile: the value at the
		// rank reached here is this bound.
		if q := h.Quantile((float64(sum) - 0.5) / float64(l.Count)); q != b[0] {
			t.Fatalf("Quantile(%d/%d) = %d, bucket bound %d", sum, l.Count, q, b[0])
		}
	}
	if sum != l.Count || prev != l.MaxNs {
		t.Fatalf("counts sum to %d (want %d), last bound %d (want %d)", sum, l.Count, prev, l.MaxNs)
	}
	res := &Result{Scenario: ScenarioChat, hist: &h, DurationSeconds: 1}
	res.finish()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		P99Ms float64      `json:"p99_ms"`
		Hist  *LatencyHist `json:"latency_hist"`
	}
	if err := json.Unmarshal(b, &back); err != nil || back.Hist == nil || len(back.Hist.Buckets) != len(l.Buckets) {
		t.Fatalf("latency_hist did not round-trip: %v %+v", err, back.Hist)
	}
	idle := &Result{Scenario: ScenarioIdle, hist: new(Histogram)}
	idle.finish()
	var idleBack map[string]any
	if b, _ := json.Marshal(idle); json.Unmarshal(b, &idleBack) != nil || idleBack["latency_hist"] != nil {
		t.Fatal("idle result should have no latency_hist")
	}
}
