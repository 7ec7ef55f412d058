package storage

import (
	"fmt"
	"testing"
)

// TestDedup (store_test.go) covers de-duplication for every store; this is
// the memory store's own bound on it.
func TestMemoryDedupWindow(t *testing.T) {
	s := NewMemory()
	if a, _ := s.Append(ctx, priv("a", "b", "hi", "c1", 1), nil); a.Duplicate {
		t.Fatal("first append reported as duplicate")
	}
	// The window is bounded: the oldest id is forgotten after DedupWindow more.
	for i := 0; i < DedupWindow; i++ {
		s.Append(ctx, priv("a", "b", "", fmt.Sprint("k", i), 1), nil)
	}
	if r := s.dedup["a"]; len(r.acks) != DedupWindow || len(r.order) != DedupWindow {
		t.Fatalf("dedup ring size %d/%d", len(r.acks), len(r.order))
	}
	a4, _ := s.Append(ctx, priv("a", "b", "", "c1", 1), nil)
	if a4.Duplicate {
		t.Fatal("id outside the window still deduplicated")
	}
}

func TestMemoryCaps(t *testing.T) {
	s := NewMemory()
	for i := 0; i < MemoryOfflineCap+5; i++ {
		s.Append(ctx, priv("a", "u", fmt.Sprint(i), "", 1), []string{"u"})
	}
	if n := len(s.offline["u"]); n != MemoryOfflineCap {
		t.Fatalf("offline queue %d, cap %d", n, MemoryOfflineCap)
	}
	if n := len(s.convs[PrivateConv("a", "u")].msgs); n != MemoryHistoryCap {
		t.Fatalf("history %d, cap %d", n, MemoryHistoryCap)
	}
	h, _ := s.History(ctx, PrivateConv("a", "u"), Query{Count: 1})
	if h[0].Content != "5" || h[0].Seq != 6 {
		t.Fatalf("oldest kept = %+v", h[0])
	}
}
