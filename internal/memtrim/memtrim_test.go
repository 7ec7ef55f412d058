package memtrim

import (
	"context"
	"testing"
	"time"
)

func TestTrimAfterBurstSettles(t *testing.T) {
	p := Policy{MinChurn: 1000, Quiet: 3 * time.Second, QuietRate: 10, MinInterval: time.Minute, IdleActivity: 100, IdlePerConn: 0.05}
	tr := New(p)
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	churn := uint64(0)
	if tr.Observe(at(0), Stats{Churn: churn}) {
		t.Fatal("trim on the first observation")
	}
	// A burst: 500 events/s for 4 s.
	for s := 1; s <= 4; s++ {
		churn += 500
		if tr.Observe(at(s), Stats{Churn: churn}) {
			t.Fatalf("trim during the burst at %d s", s)
		}
	}
	// Quiet, but not for long enough yet (quiet from 5 s, Quiet is 3 s).
	for s := 5; s <= 7; s++ {
		churn += 5
		if tr.Observe(at(s), Stats{Churn: churn}) {
			t.Fatalf("trim after only %d s of quiet", s-5)
		}
	}
	churn += 5
	if !tr.Observe(at(8), Stats{Churn: churn}) {
		t.Fatal("no trim after 3 s of quiet following a burst of 2,000")
	}
	tr.Trimmed(at(8), churn)
	// No new burst: no new trim, however long it stays quiet.
	for s := 9; s < 200; s++ {
		if tr.Observe(at(s), Stats{Churn: churn}) {
			t.Fatalf("second trim at %d s without a burst", s)
		}
	}
}

func TestTrimNeedsABurstAndRespectsInterval(t *testing.T) {
	p := Policy{MinChurn: 1000, Quiet: 2 * time.Second, QuietRate: 50, MinInterval: time.Minute, IdleActivity: 100}
	tr := New(p)
	t0 := time.Unix(0, 0)
	churn := uint64(0)
	tr.Observe(t0, Stats{Churn: churn})
	// Steady trickle under QuietRate that adds up past MinChurn: it is
	// churn since the last trim that counts, so after 1,000 events a trim
	// is due once (a slow leak of garbage is worth returning too).
	trims := 0
	for s := 1; s <= 300; s++ {
		churn += 20
		now := t0.Add(time.Duration(s) * time.Second)
		if tr.Observe(now, Stats{Churn: churn}) {
			trims++
			tr.Trimmed(now, churn)
		}
	}
	// 6,000 events over 300 s: at most one trim per minute, and each needs
	// 1,000 new events (50 s of trickle).
	if trims < 4 || trims > 5 {
		t.Fatalf("%d trims over 300 s of trickle, want 4-5", trims)
	}
	// A burst right after a trim must wait for MinInterval.
	tr = New(p)
	tr.Observe(t0, Stats{})
	tr.Trimmed(t0, 0)
	churn = 5000
	if tr.Observe(t0.Add(time.Second), Stats{Churn: churn}) {
		t.Fatal("trim during a burst")
	}
	for s := 2; s < 60; s++ {
		if tr.Observe(t0.Add(time.Duration(s)*time.Second), Stats{Churn: churn}) {
			t.Fatalf("trim at %d s, within MinInterval of the last", s)
		}
	}
	if !tr.Observe(t0.Add(60*time.Second), Stats{Churn: churn}) {
		t.Fatal("no trim once MinInterval passed")
	}
}

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		live, base, floor uint64
		gogc, want        int
	}{
		// No base: GOGC as set.
		{100 * mib, 0, 4 * mib, 100, 100},
		// 80 MiB of arena, 20 MiB of the rest: 20 MiB of headroom is 20%.
		{100 * mib, 80 * mib, 4 * mib, 100, 20},
		// Nothing beyond the base yet: the floor.
		{80 * mib, 80 * mib, 8 * mib, 100, 10},
		// The heap shrank below the base (memtables flushed): the floor.
		{40 * mib, 80 * mib, 8 * mib, 100, 20},
		// Never above the configured percent.
		{10 * mib, 0, 64 * mib, 50, 50},
		// GOGC=50 applies to the rest.
		{100 * mib, 60 * mib, 0, 50, 20},
		// Off stays off.
		{100 * mib, 60 * mib, 0, -1, -1},
	}
	for _, c := range cases {
		if got := Percent(c.live, c.base, c.floor, c.gogc); got != c.want {
			t.Errorf("Percent(%d MiB live, %d MiB base, %d MiB floor, %d) = %d, want %d",
				c.live/mib, c.base/mib, c.floor/mib, c.gogc, got, c.want)
		}
	}
}

func TestReclaimable(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		heap, live uint64
		want       bool
	}{
		{100 * mib, 100 * mib, false}, // nothing beyond live
		{110 * mib, 100 * mib, false}, // under 16 MiB
		{120 * mib, 100 * mib, false}, // 20 MiB but under a quarter
		{130 * mib, 100 * mib, true},  // 30 MiB and 30%
		{30 * mib, 10 * mib, true},    // 20 MiB, 200%
		{20 * mib, 10 * mib, false},   // 10 MiB: under the minimum
		{5 * mib, 10 * mib, false},    // heap under live (racy reads)
	}
	for _, c := range cases {
		if got := Reclaimable(c.heap, c.live, 16*mib, 0.25); got != c.want {
			t.Errorf("Reclaimable(%d MiB, %d MiB) = %v, want %v", c.heap/mib, c.live/mib, got, c.want)
		}
	}
}

// TestRunTrims checks Run end to end on this process's heap: after garbage
// well over the thresholds it returns the memory within a few seconds.
func TestRunTrims(t *testing.T) {
	trims := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, 1<<20)) // 64 MiB of garbage once dropped
	}
	for _, b := range keep {
		b[0] = 1
	}
	keep = nil
	go Run(ctx, Policy{MinChurn: 1 << 62, Quiet: time.Second, QuietRate: 1, MinInterval: time.Second, IdleActivity: 1, ReclaimMin: 4 << 20, ReclaimFrac: 1.0 / 32},
		func() Stats { return Stats{} }, func() {
			select {
			case trims <- struct{}{}:
			default:
			}
		})
	select {
	case <-trims:
	case <-time.After(10 * time.Second):
		t.Fatal("no trim with 64 MiB of garbage on the heap")
	}
}

// TestTrimWaitsForIdleTraffic checks that a burst followed by heavy message
// traffic (a benchmark starting right after its logins) gets no trim until
// the traffic calms down.
func TestTrimWaitsForIdleTraffic(t *testing.T) {
	tr := New(Defaults)
	t0 := time.Unix(0, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	st := Stats{}
	tr.Observe(at(0), st)
	st.Churn, st.Open = 4000, 4000
	tr.Observe(at(1), st) // the logins
	for s := 2; s < 60; s++ {
		st.Activity += 20000 // 20,000 reads/s: busy
		if tr.Observe(at(s), st) {
			t.Fatalf("trim at %d s while busy", s)
		}
	}
	trimmed := false
	for s := 60; s < 70 && !trimmed; s++ {
		st.Activity += 150 // under 100 + 0.05*4000 = 300
		trimmed = tr.Observe(at(s), st)
	}
	if !trimmed {
		t.Fatal("no trim once traffic went idle after the burst")
	}
}
