package storage

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
)

var ctx = context.Background()

func priv(from, to, content, clientID string, ts int64) *Message {
	return &Message{Conv: PrivateConv(from, to), ChatType: ChatPrivate, From: from, To: to,
		Content: content, ClientID: clientID, CreateTime: ts}
}

func TestPrivateConvSymmetric(t *testing.T) {
	if PrivateConv("a", "b") != PrivateConv("b", "a") {
		t.Fatal("private conversation key depends on direction")
	}
	if PrivateConv("a-b", "c") == PrivateConv("a", "b-c") {
		t.Fatal("distinct pairs collide")
	}
	if GroupConv("100") != "g:100" {
		t.Fatalf("GroupConv = %q", GroupConv("100"))
	}
}

func TestAppendAssignsSeqAndID(t *testing.T) {
	s := NewMemory()
	defer s.Close()
	var ids = map[string]bool{}
	for i := 1; i <= 3; i++ {
		m := priv("a", "b", fmt.Sprint(i), "", int64(i))
		a, err := s.Append(ctx, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.Seq != uint64(i) || m.Seq != a.Seq || m.ID != a.ID || len(a.ID) != 32 || a.Duplicate {
			t.Fatalf("ack %d = %+v, msg %+v", i, a, m)
		}
		ids[a.ID] = true
	}
	if len(ids) != 3 {
		t.Fatal("ids not unique")
	}
	// The other direction is the same conversation.
	a, _ := s.Append(ctx, priv("b", "a", "x", "", 4), nil)
	if a.Seq != 4 {
		t.Fatalf("reverse direction seq = %d, want 4", a.Seq)
	}
	// Another conversation starts at 1.
	a, _ = s.Append(ctx, priv("a", "c", "x", "", 4), nil)
	if a.Seq != 1 {
		t.Fatalf("new conversation seq = %d", a.Seq)
	}
}

func TestDedup(t *testing.T) {
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

func TestHistoryWindows(t *testing.T) {
	s := NewMemory()
	conv := PrivateConv("a", "b")
	for i := 1; i <= 10; i++ {
		s.Append(ctx, priv("a", "b", fmt.Sprint(i), "", int64(i*1000)), nil)
	}
	contents := func(q Query) string {
		h, err := s.History(ctx, conv, q)
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, m := range h {
			out += m.Content + ","
		}
		return out
	}
	cases := []struct {
		q    Query
		want string
	}{
		{Query{}, "1,2,3,4,5,6,7,8,9,10,"},
		{Query{Count: 3}, "1,2,3,"},
		{Query{Count: 3, Latest: true}, "8,9,10,"},
		{Query{Offset: 2, Count: 3}, "3,4,5,"},
		{Query{Offset: 20, Count: 3}, ""},
		{Query{Begin: 3000, End: 5000}, "3,4,5,"},
		{Query{Begin: 3000, End: 8000, Offset: 1, Count: 2}, "4,5,"},
		{Query{AfterSeq: 7}, "8,9,10,"},
		{Query{AfterSeq: 2, Count: 2}, "3,4,"},
		{Query{AfterSeq: 10}, ""},
	}
	for _, c := range cases {
		if got := contents(c.q); got != c.want {
			t.Errorf("History(%+v) = %q, want %q", c.q, got, c.want)
		}
	}
	if h, _ := s.History(ctx, "p:none", Query{}); h == nil || len(h) != 0 {
		t.Fatal("unknown conversation must give an empty, non-nil slice")
	}
	// Results are copies.
	h, _ := s.History(ctx, conv, Query{Count: 1})
	h[0].Content = "mutated"
	if contents(Query{Count: 1}) != "1," {
		t.Fatal("caller mutated stored message")
	}
}

func TestQueryLimit(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, DefaultHistoryCount}, {-1, DefaultHistoryCount}, {5, 5}, {MaxHistoryCount + 1, MaxHistoryCount}} {
		if got := (Query{Count: c.in}).Limit(); got != c.want {
			t.Errorf("Limit(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestOfflineFilterAndAck(t *testing.T) {
	s := NewMemory()
	s.Append(ctx, priv("a", "u", "p1", "", 1), []string{"u"})
	s.Append(ctx, priv("b", "u", "p2", "", 2), []string{"u"})
	g := &Message{Conv: GroupConv("g1"), ChatType: ChatGroup, From: "a", GroupID: "g1", Content: "g", CreateTime: 3}
	s.Append(ctx, g, []string{"u", "v"})

	all, _ := s.Offline(ctx, "u", OfflineFilter{})
	if len(all) != 3 || all[0].Content != "p1" || all[2].Content != "g" {
		t.Fatalf("all offline = %v", all)
	}
	fromA, _ := s.Offline(ctx, "u", OfflineFilter{From: "a"})
	if len(fromA) != 1 || fromA[0].Content != "p1" {
		t.Fatalf("from a = %v", fromA)
	}
	grp, _ := s.Offline(ctx, "u", OfflineFilter{GroupID: "g1"})
	if len(grp) != 1 || grp[0].Content != "g" {
		t.Fatalf("group = %v", grp)
	}
	lim, _ := s.Offline(ctx, "u", OfflineFilter{Limit: 2})
	if len(lim) != 2 {
		t.Fatalf("limit 2 gave %d", len(lim))
	}
	if err := s.AckOffline(ctx, "u", fromA); err != nil {
		t.Fatal(err)
	}
	rest, _ := s.Offline(ctx, "u", OfflineFilter{})
	if len(rest) != 2 || rest[0].Content != "p2" {
		t.Fatalf("after ack = %v", rest)
	}
	s.AckOffline(ctx, "u", rest)
	if rest, _ = s.Offline(ctx, "u", OfflineFilter{}); len(rest) != 0 {
		t.Fatalf("after full ack = %v", rest)
	}
	// v's copy of the group message is independent.
	if v, _ := s.Offline(ctx, "v", OfflineFilter{}); len(v) != 1 {
		t.Fatalf("v offline = %v", v)
	}
}

func TestCaps(t *testing.T) {
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

func TestGroups(t *testing.T) {
	s := NewMemory()
	s.JoinGroup(ctx, "g", "a")
	s.JoinGroup(ctx, "g", "b")
	s.JoinGroup(ctx, "g", "b")
	s.JoinGroup(ctx, "h", "a")
	m, _ := s.GroupMembers(ctx, "g")
	sort.Strings(m)
	if fmt.Sprint(m) != "[a b]" {
		t.Fatalf("members = %v", m)
	}
	g, _ := s.UserGroups(ctx, "a")
	sort.Strings(g)
	if fmt.Sprint(g) != "[g h]" {
		t.Fatalf("groups = %v", g)
	}
	s.LeaveGroup(ctx, "g", "a")
	s.LeaveGroup(ctx, "g", "a")
	m, _ = s.GroupMembers(ctx, "g")
	g, _ = s.UserGroups(ctx, "a")
	if fmt.Sprint(m) != "[b]" || fmt.Sprint(g) != "[h]" {
		t.Fatalf("after leave members %v groups %v", m, g)
	}
	if e, _ := s.GroupMembers(ctx, "none"); e == nil {
		t.Fatal("nil members slice")
	}
}

func TestClosed(t *testing.T) {
	s := NewMemory()
	s.Close()
	if _, err := s.Append(ctx, priv("a", "b", "", "", 1), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := s.GroupMembers(ctx, "g"); !errors.Is(err, ErrClosed) {
		t.Fatalf("GroupMembers after Close: %v", err)
	}
}

func TestConcurrentAppendSeqUnique(t *testing.T) {
	s := NewMemory()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint64]bool{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				a, err := s.Append(ctx, &Message{Conv: GroupConv("g"), ChatType: ChatGroup, GroupID: "g"}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[a.Seq] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 800 {
		t.Fatalf("%d distinct seqs, want 800", len(seen))
	}
}
