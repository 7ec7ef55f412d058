package bench

import (
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"
)

func TestTimelineBucketsBoundValues(t *testing.T) {
	for _, us := range []int64{0, 1, 15, 16, 17, 100, 1000, 12345, 1 << 20, 1<<40 + 7, math.MaxInt64 / 1000} {
		i := tlIndex(us)
		if i < 0 || i >= tlBuckets {
			t.Fatalf("index %d of %d out of range", i, us)
		}
		if up := tlUpper(i); up < us || (i > 0 && tlUpper(i-1) >= us) {
			t.Fatalf("%d µs in bucket %d, bounds (%d, %d]", us, i, tlUpper(i-1), up)
		}
		if us >= 1<<tlSubBits && float64(tlUpper(i)-us) > float64(us)/8 {
			t.Fatalf("%d µs reported as %d: more than 1/8 off", us, tlUpper(i))
		}
	}
}

func TestTimelineSlotsAndQuantiles(t *testing.T) {
	start := time.Now().UnixNano()
	tl := newTimeline(start, 3*time.Second)
	if len(tl.slots) != 3 || tl.width != int64(time.Second) {
		t.Fatalf("3 s run: %d slots of %v", len(tl.slots), time.Duration(tl.width))
	}
	// Second 0: 99 messages at 1 ms, one at 50 ms. Second 2: 10 at 5 ms.
	for i := range 100 {
		lat := time.Millisecond
		if i == 99 {
			lat = 50 * time.Millisecond
		}
		tl.record(start+int64(i)*int64(time.Millisecond), int64(lat))
	}
	for i := range 10 {
		tl.record(start+2*int64(time.Second)+int64(i), int64(5*time.Millisecond))
	}
	// Outside the run: left out.
	tl.record(start-1, int64(time.Hour))
	tl.record(start+3*int64(time.Second), int64(time.Hour))

	pts := tl.points()
	if len(pts) != 2 || pts[0].At != 0 || pts[1].At != 2 {
		t.Fatalf("points %+v, want seconds 0 and 2", pts)
	}
	near := func(got, want float64) bool { return got >= want && got <= want*1.13 }
	if p := pts[0]; p.Count != 100 || !near(p.P50Ms, 1) || !near(p.P99Ms, 1) || p.MaxMs != 50 {
		t.Fatalf("second 0: %+v", p)
	}
	if p := pts[1]; p.Count != 10 || !near(p.P50Ms, 5) || !near(p.P99Ms, 5) || p.MaxMs != 5 {
		t.Fatalf("second 2: %+v", p)
	}
	lo, med, hi, worst, ok := timelineSummary(pts)
	if !ok || lo != pts[0].P99Ms || hi != pts[1].P99Ms || med != hi || worst.At != 2 {
		t.Fatalf("summary %v %v %v %+v %v", lo, med, hi, worst, ok)
	}
	if _, _, _, _, ok := timelineSummary(pts[:1]); ok {
		t.Fatal("a summary of one slot")
	}
}

func TestTimelineLongRunsUseWiderSlots(t *testing.T) {
	tl := newTimeline(0, time.Hour)
	if len(tl.slots) > maxSlots || tl.width != int64(6*time.Second) {
		t.Fatalf("an hour: %d slots of %v", len(tl.slots), time.Duration(tl.width))
	}
	tl.record(int64(time.Hour)-1, int64(time.Millisecond))
	if pts := tl.points(); len(pts) != 1 || pts[0].At != 3594 {
		t.Fatalf("last moment of the hour: %+v", pts)
	}
	if got := len(newTimeline(0, 0).slots); got != 1 {
		t.Fatalf("empty run: %d slots", got)
	}
}

// Workers send snapshots as JSON; the parent's merge must add them up.
func TestTimelineSnapshotMerge(t *testing.T) {
	a, b := newTimeline(100, 2*time.Second), newTimeline(200, 2*time.Second)
	a.record(100, int64(2*time.Millisecond))
	b.record(200, int64(8*time.Millisecond))
	b.record(200+int64(time.Second), int64(time.Millisecond))
	total := newTimeline(0, 2*time.Second)
	for _, w := range []*timeline{a, b} {
		raw, err := json.Marshal(w.snapshot())
		if err != nil {
			t.Fatal(err)
		}
		var s TimelineSnapshot
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		total.merge(&s)
	}
	// A snapshot of another width, or slots out of range, change nothing.
	total.merge(&TimelineSnapshot{WidthNs: 1, Slots: []TimelineSlot{{I: 0, MaxNs: 1 << 40, Buckets: [][2]uint32{{3, 1}}}}})
	total.merge(&TimelineSnapshot{WidthNs: int64(time.Second), Slots: []TimelineSlot{{I: 9, MaxNs: 1, Buckets: [][2]uint32{{3, 1}}}, {I: 0, Buckets: [][2]uint32{{tlBuckets, 1}}}}})
	total.merge(nil)
	pts := total.points()
	if len(pts) != 2 || pts[0].Count != 2 || pts[0].MaxMs != 8 || pts[1].Count != 1 {
		t.Fatalf("merged: %+v", pts)
	}
	var none *timeline
	none.record(1, 1)
	none.merge(a.snapshot())
	if none.snapshot() != nil || none.points() != nil {
		t.Fatal("a nil timeline (idle runs) must do nothing")
	}
}

func TestTimelineConcurrentRecord(t *testing.T) {
	tl := newTimeline(0, time.Second)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				tl.record(int64(i), int64(g*1000+i)*1000)
			}
		})
	}
	wg.Wait()
	pts := tl.points()
	if len(pts) != 1 || pts[0].Count != 8000 || pts[0].MaxMs != 7.999 {
		t.Fatalf("%+v", pts)
	}
}
