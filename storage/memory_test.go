package storage

import (
	"fmt"
	"testing"
)

func TestMemoryDedupWindow(t *testing.T) {
	s := NewMemory()
	a1, _ := s.Append(ctx, priv("a", "b", "hi", "c1", 1), []string{"b"})
	a2, err := s.Append(ctx, priv("a", "b", "hi again", "c1", 2), []string{"b"})
	if err != nil {
		t.Fatal(err)
	}
	if !a2.Duplicate || a2.ID != a1.ID || a2.Seq != a1.Seq {
		t.Fatalf("dup ack = %+v, original %+v", a2, a1)
	}
	// Another sender may reuse the client id.
	a3, _ := s.Append(ctx, priv("c", "b", "x", "c1", 3), nil)
	if a3.Duplicate {
		t.Fatal("client ids are per sender")
	}
	h, _ := s.History(ctx, PrivateConv("a", "b"), Query{})
	if len(h) != 1 {
		t.Fatalf("history has %d messages, want 1", len(h))
	}
	off, _ := s.Offline(ctx, "b", OfflineFilter{})
	if len(off) != 1 {
		t.Fatalf("offline has %d, want 1", len(off))
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
