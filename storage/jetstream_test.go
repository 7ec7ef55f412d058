package storage

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// An embedded NATS server with JetStream, shared by the package's tests:
// every store gets its own Prefix, so tests do not see each other's data.
// SyncAlways is what the shipped configs set (sync_interval: always).
var (
	jsOnce   sync.Once
	jsURL    string
	jsErr    error
	jsPrefix atomic.Int64
)

func testNATSURL(t testing.TB) string {
	t.Helper()
	jsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "jim-js-test-")
		if err != nil {
			jsErr = err
			return
		}
		ns, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
			// JIM_TEST_JS_NOSYNC=1 measures what the per-message fsync costs.
			SyncAlways: os.Getenv("JIM_TEST_JS_NOSYNC") == "", NoLog: true, NoSigs: true,
		})
		if err != nil {
			jsErr = err
			return
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			jsErr = fmt.Errorf("embedded nats-server did not start")
			return
		}
		jsURL = ns.ClientURL()
	})
	if jsErr != nil {
		t.Fatal(jsErr)
	}
	return jsURL
}

func openTestJetStream(t testing.TB, o JetStreamOptions) *JetStream {
	t.Helper()
	nc, err := nats.Connect(testNATSURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if o.Prefix == "" {
		o.Prefix = fmt.Sprintf("T%d", jsPrefix.Add(1))
	}
	s, err := OpenJetStream(nc, o)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); nc.Close() })
	return s
}

// Two stores on one prefix are two cluster nodes sharing state.
func TestJetStreamTwoNodes(t *testing.T) {
	p := fmt.Sprintf("T%d", jsPrefix.Add(1))
	n1 := openTestJetStream(t, JetStreamOptions{Prefix: p})
	n2 := openTestJetStream(t, JetStreamOptions{Prefix: p})
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint64]int{}
	for i, s := range []*JetStream{n1, n2, n1, n2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 50; k++ {
				a, err := s.Append(ctx, &Message{Conv: GroupConv("g"), ChatType: ChatGroup, GroupID: "g",
					From: fmt.Sprint("w", i), ClientID: fmt.Sprint(k)}, []string{"off"})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[a.Seq]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := uint64(1); i <= 200; i++ {
		if seen[i] != 1 {
			t.Fatalf("seq %d assigned %d times", i, seen[i])
		}
	}
	// Same client message through both nodes: stored once.
	a1, err := n1.Append(ctx, priv("x", "y", "once", "cid", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := n2.Append(ctx, priv("x", "y", "twice", "cid", 2), nil)
	if err != nil || !a2.Duplicate || a2.ID != a1.ID || a2.Seq != a1.Seq {
		t.Fatalf("cross-node dup = %+v, %v; original %+v", a2, err, a1)
	}
	// History and offline through the other node.
	h, err := n2.History(ctx, GroupConv("g"), Query{Count: 1000})
	if err != nil || len(h) != 200 {
		t.Fatalf("history through node 2: %d messages, %v", len(h), err)
	}
	off, err := n2.Offline(ctx, "off", OfflineFilter{GroupID: "g"})
	if err != nil || len(off) != 200 {
		t.Fatalf("offline through node 2: %d, %v", len(off), err)
	}
	// Membership: node 2's cache follows node 1's writes.
	if m, _ := n2.GroupMembers(ctx, "room"); len(m) != 0 {
		t.Fatalf("members %v", m)
	}
	n1.JoinGroup(ctx, "room", "u1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, _ := n2.GroupMembers(ctx, "room")
		if len(m) == 1 && m[0] == "u1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 2 never saw the join: %v", m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	n1.LeaveGroup(ctx, "room", "u1")
	for {
		m, _ := n2.GroupMembers(ctx, "room")
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 2 never saw the leave: %v", m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Ids with dots, wildcards, spaces and NUL are subject-safe.
func TestJetStreamOddIDs(t *testing.T) {
	s := openTestJetStream(t, JetStreamOptions{})
	for _, u := range []string{"a.b", "*", ">", "a b", "x\x00y", "", "é"} {
		if _, err := s.Append(ctx, priv(u, "z", u, "", 1), []string{u}); err != nil {
			t.Fatalf("%q: %v", u, err)
		}
		h, err := s.History(ctx, PrivateConv(u, "z"), Query{})
		if err != nil || len(h) != 1 || h[0].From != u {
			t.Fatalf("%q: history %v %v", u, h, err)
		}
		off, err := s.Offline(ctx, u, OfflineFilter{})
		if err != nil || len(off) != 1 {
			t.Fatalf("%q: offline %v %v", u, off, err)
		}
		s.JoinGroup(ctx, u, u)
		if g, _ := s.UserGroups(ctx, u); len(g) != 1 || g[0] != u {
			t.Fatalf("%q: groups %v", u, g)
		}
	}
}

// The longest ids jimd accepts (256 bytes: dispatch.MaxIDLen, which this
// package cannot import) make subjects and keys NATS takes (its control
// line is limited to 4 KiB by default) within the store's own bounds, and the store
// keeps working after them.
func TestJetStreamLongestIDs(t *testing.T) {
	s := openTestJetStream(t, JetStreamOptions{})
	a, b := strings.Repeat("a", 256), strings.Repeat("b", 256)
	cid := strings.Repeat("c", 256)
	ack, err := s.Append(ctx, priv(a, b, "hi", cid, 1), []string{b})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.Append(ctx, priv(a, b, "hi", cid, 1), []string{b}); err != nil || !again.Duplicate || again.ID != ack.ID {
		t.Fatalf("resend: %+v %v", again, err)
	}
	if h, err := s.History(ctx, PrivateConv(a, b), Query{}); err != nil || len(h) != 1 {
		t.Fatalf("history: %v %v", h, err)
	}
	if off, err := s.Offline(ctx, b, OfflineFilter{From: a}); err != nil || len(off) != 1 {
		t.Fatalf("offline: %v %v", off, err)
	}
	g := strings.Repeat("g", 256)
	if err := s.JoinGroup(ctx, g, a); err != nil {
		t.Fatal(err)
	}
	if m, err := s.GroupMembers(ctx, g); err != nil || len(m) != 1 || m[0] != a {
		t.Fatalf("members: %v %v", m, err)
	}
	// A client id over the store's bound for a key part is refused on its
	// own (it is part of the dedup record's key).
	if _, err := s.Append(ctx, priv("x", "y", "long id", strings.Repeat("c", 5000), 2), nil); err == nil {
		t.Fatal("a 5,000-byte client id was accepted")
	}
	if _, err := s.Append(ctx, priv("x", "y", "after", "", 2), nil); err != nil {
		t.Fatalf("the store after the longest ids: %v", err)
	}
}

// BenchmarkJetStreamAppend measures AppendAsync throughput with many
// conversations in flight (one append in flight per conversation).
//
//	go test -run '^$' -bench JetStreamAppend -benchtime 20000x ./storage
func BenchmarkJetStreamAppend(b *testing.B) {
	for _, convs := range []int{1, 64, 1024} {
		b.Run(fmt.Sprint("convs=", convs), func(b *testing.B) {
			s := openTestJetStream(b, JetStreamOptions{})
			var wg sync.WaitGroup
			wg.Add(b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := fmt.Sprint(i % convs)
				s.AppendAsync(ctx, &Message{Conv: GroupConv(c), ChatType: ChatGroup, GroupID: c, From: "u",
					Content: "benchmark message of about sixty bytes, typical chat text"}, nil,
					func(_ Ack, err error) {
						if err != nil {
							b.Error(err)
						}
						wg.Done()
					})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// The offline stream carries the offline TTL and cap: by default the
// retention age and 10000.
func TestJetStreamOfflineLimits(t *testing.T) {
	for _, c := range []struct {
		o      JetStreamOptions
		age    time.Duration
		perSub int64
	}{
		{JetStreamOptions{}, 0, 10000},
		{JetStreamOptions{RetentionAge: time.Hour}, time.Hour, 10000},
		{JetStreamOptions{RetentionAge: time.Hour, OfflineTTL: time.Minute, OfflineCap: 7}, time.Minute, 7},
		{JetStreamOptions{OfflineCap: -1}, 0, -1},
		// Shorter than the duplicate window (2 minutes), which
		// JetStream refuses unless the window is cut to fit.
		{JetStreamOptions{RetentionAge: time.Minute}, time.Minute, 10000},
	} {
		s := openTestJetStream(t, c.o)
		cfg := s.off.CachedInfo().Config
		if cfg.MaxAge != c.age || cfg.MaxMsgsPerSubject != c.perSub {
			t.Errorf("%+v: offline stream MaxAge %v, MaxMsgsPerSubject %d; want %v, %d",
				c.o, cfg.MaxAge, cfg.MaxMsgsPerSubject, c.age, c.perSub)
		}
	}
}
