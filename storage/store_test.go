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

// storeMakers are the Store implementations every shared test runs against.
var storeMakers = []struct {
	name string
	open func(t *testing.T) Store
}{
	{"memory", func(t *testing.T) Store { return NewMemory() }},
	{"badger", func(t *testing.T) Store { return openTestBadger(t, t.TempDir(), BadgerOptions{}) }},
	{"jetstream", func(t *testing.T) Store { return openTestJetStream(t, JetStreamOptions{}) }},
}

func openTestBadger(t testing.TB, dir string, o BadgerOptions) *Badger {
	t.Helper()
	b, err := OpenBadger(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// forEachStore runs fn as a subtest against a fresh store of every kind.
func forEachStore(t *testing.T, fn func(t *testing.T, s Store)) {
	for _, mk := range storeMakers {
		t.Run(mk.name, func(t *testing.T) {
			s := mk.open(t)
			defer s.Close()
			fn(t, s)
		})
	}
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
	forEachStore(t, func(t *testing.T, s Store) {
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
		// Another conversation starts at 1, also one whose key starts with
		// the same bytes.
		a, _ = s.Append(ctx, priv("a", "c", "x", "", 4), nil)
		if a.Seq != 1 {
			t.Fatalf("new conversation seq = %d", a.Seq)
		}
		a, _ = s.Append(ctx, priv("a", "bb", "x", "", 4), nil)
		if a.Seq != 1 {
			t.Fatalf("prefix conversation seq = %d", a.Seq)
		}
		if h, _ := s.History(ctx, PrivateConv("a", "b"), Query{}); len(h) != 4 {
			t.Fatalf("history of a-b has %d messages, want 4", len(h))
		}
	})
}

func TestDedup(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
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
		if len(h) != 1 || h[0].ClientID != "c1" || h[0].Content != "hi" {
			t.Fatalf("history = %v, want the first message only", h)
		}
		off, _ := s.Offline(ctx, "b", OfflineFilter{})
		if len(off) != 1 {
			t.Fatalf("offline has %d, want 1", len(off))
		}
	})
}

func TestConcurrentDedup(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		var wg sync.WaitGroup
		acks := make([]Ack, 16)
		for i := range acks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := s.Append(ctx, priv("a", "b", "x", "same", 1), nil)
				if err != nil {
					t.Error(err)
				}
				acks[i] = a
			}()
		}
		wg.Wait()
		dups := 0
		for _, a := range acks {
			if a.Seq != 1 || a.ID != acks[0].ID {
				t.Fatalf("acks differ: %+v", acks)
			}
			if a.Duplicate {
				dups++
			}
		}
		if dups != len(acks)-1 {
			t.Fatalf("%d duplicates, want %d", dups, len(acks)-1)
		}
	})
}

func TestHistoryWindows(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
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
			{Query{Latest: true}, "1,2,3,4,5,6,7,8,9,10,"},
			{Query{Count: 3, Latest: true, AfterSeq: 8}, "9,10,"},
			{Query{Count: 2, Latest: true, Begin: 3000, End: 6000}, "5,6,"},
			{Query{Offset: 2, Count: 3}, "3,4,5,"},
			{Query{Offset: 9, Count: 3}, "10,"},
			{Query{Offset: 20, Count: 3}, ""},
			{Query{Offset: 2, Count: 3, Latest: true}, "3,4,5,"},
			{Query{Begin: 3000, End: 5000}, "3,4,5,"},
			{Query{Begin: 9000}, "9,10,"},
			{Query{End: 2000}, "1,2,"},
			{Query{Begin: 3000, End: 8000, Offset: 1, Count: 2}, "4,5,"},
			{Query{AfterSeq: 7}, "8,9,10,"},
			{Query{AfterSeq: 2, Count: 2}, "3,4,"},
			{Query{AfterSeq: 2, Count: 2, Offset: 1}, "4,5,"},
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
	})
}

func TestMessageRoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		in := &Message{Conv: GroupConv("g"), ChatType: ChatGroup, From: "a", GroupID: "g", MsgType: 3,
			Content: "héllo\x00wörld", CreateTime: -5, Extras: []byte(`{"k":1}`), ClientID: "cid"}
		if _, err := s.Append(ctx, in, nil); err != nil {
			t.Fatal(err)
		}
		h, _ := s.History(ctx, GroupConv("g"), Query{})
		if len(h) != 1 {
			t.Fatalf("history %v", h)
		}
		if fmt.Sprintf("%+v", *h[0]) != fmt.Sprintf("%+v", *in) {
			t.Fatalf("stored %+v\n    got %+v", *in, *h[0])
		}
	})
}

func TestQueryLimit(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, DefaultHistoryCount}, {-1, DefaultHistoryCount}, {5, 5}, {MaxHistoryCount + 1, MaxHistoryCount}} {
		if got := (Query{Count: c.in}).Limit(); got != c.want {
			t.Errorf("Limit(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestOfflineFilterAndAck(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
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
	})
}

func TestQueueOffline(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		m := priv("a", "u", "late", "", 1)
		if _, err := s.Append(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
		if off, _ := s.Offline(ctx, "u", OfflineFilter{}); len(off) != 0 {
			t.Fatalf("queued before QueueOffline: %v", off)
		}
		for i := 0; i < 2; i++ { // the second call must not queue it twice
			if err := s.QueueOffline(ctx, "u", []*Message{m}); err != nil {
				t.Fatal(err)
			}
		}
		off, _ := s.Offline(ctx, "u", OfflineFilter{From: "a"})
		if len(off) != 1 || off[0].ID != m.ID || off[0].Seq != 1 || off[0].Content != "late" {
			t.Fatalf("offline = %v", off)
		}
		if err := s.AckOffline(ctx, "u", off); err != nil {
			t.Fatal(err)
		}
		if off, _ := s.Offline(ctx, "u", OfflineFilter{}); len(off) != 0 {
			t.Fatalf("after ack: %v", off)
		}
	})
}

func TestGroups(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		s.JoinGroup(ctx, "g", "a")
		s.JoinGroup(ctx, "g", "b")
		s.JoinGroup(ctx, "g", "b")
		s.JoinGroup(ctx, "h", "a")
		s.JoinGroup(ctx, "gg", "z") // a group id with g as a prefix
		m, _ := s.GroupMembers(ctx, "g")
		sort.Strings(m)
		if fmt.Sprint(m) != "[a b]" {
			t.Fatalf("members = %v", m)
		}
		m[0] = "mutated" // callers may sort or change what they get
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
		s.JoinGroup(ctx, "g", "c")
		m, _ = s.GroupMembers(ctx, "g")
		sort.Strings(m)
		if fmt.Sprint(m) != "[b c]" {
			t.Fatalf("after join members = %v", m)
		}
		if e, _ := s.GroupMembers(ctx, "none"); e == nil {
			t.Fatal("nil members slice")
		}
	})
}

func TestClosed(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		s.Close()
		if _, err := s.Append(ctx, priv("a", "b", "", "", 1), nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Append after Close: %v", err)
		}
		if _, err := s.GroupMembers(ctx, "g"); !errors.Is(err, ErrClosed) {
			t.Fatalf("GroupMembers after Close: %v", err)
		}
		if _, err := s.History(ctx, "g:x", Query{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("History after Close: %v", err)
		}
		if err := s.JoinGroup(ctx, "g", "a"); !errors.Is(err, ErrClosed) {
			t.Fatalf("JoinGroup after Close: %v", err)
		}
	})
}

func TestConcurrentAppendSeqUnique(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[uint64]bool{}
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 100; i++ {
					a, err := s.Append(ctx, &Message{Conv: GroupConv("g"), ChatType: ChatGroup, GroupID: "g",
						From: fmt.Sprint("w", w), ClientID: fmt.Sprint(i)}, nil)
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
		for i := uint64(1); i <= 800; i++ {
			if !seen[i] {
				t.Fatalf("seq %d missing", i)
			}
		}
	})
}
