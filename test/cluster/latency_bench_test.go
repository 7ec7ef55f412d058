package cluster_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkCrossNodeLatency measures a private chat from a user on one node
// to a user on another: from the sender's Send to the receiver's delivery,
// one message at a time, and reports p50 and p99.
func BenchmarkCrossNodeLatency(b *testing.B) {
	nodes := startCluster(b)
	a := dial(b, nodes[0], "lat-a")
	r := dial(b, nodes[1], "lat-b")
	seen(b, nodes, nodes[1], "lat-b")
	const n = 1000
	for b.Loop() {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			go func() { _, _ = a.Send(ctx(b), "lat-b", fmt.Sprint(i)) }()
			recvChat(b, r)
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[n/2].Microseconds()), "p50_us")
		b.ReportMetric(float64(lat[n*99/100].Microseconds()), "p99_us")
	}
}
