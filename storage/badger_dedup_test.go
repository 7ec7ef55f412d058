package storage

import (
	"fmt"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestBadgerDedupSpillAndRestart keeps the in-memory dedup index tiny, so
// most records are spilled to per-message keys, and checks that every
// resend is recognised: right away, concurrently, and after restarts with
// a tiny and a default index.
func TestBadgerDedupSpillAndRestart(t *testing.T) {
	dir := t.TempDir()
	o := BadgerOptions{DedupIndexMax: 10}
	s, err := OpenBadger(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	msg := func(i int) *Message {
		from, to := fmt.Sprint("u", i%7), fmt.Sprint("v", i%5)
		return priv(from, to, fmt.Sprint("m", i), fmt.Sprint("c", i), int64(i))
	}
	acks := make([]Ack, n)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				a, err := s.Append(ctx, msg(i), nil)
				if err != nil || a.Duplicate {
					t.Errorf("append %d: %+v %v", i, a, err)
				}
				acks[i] = a
			}
		}()
	}
	wg.Wait()
	check := func(s *Badger, when string) {
		t.Helper()
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 4 {
					a, err := s.Append(ctx, msg(i), nil)
					if err != nil || !a.Duplicate || a.ID != acks[i].ID || a.Seq != acks[i].Seq {
						t.Errorf("%s: resend %d: %+v %v, original %+v", when, i, a, err, acks[i])
					}
				}
			}()
		}
		wg.Wait()
		total := 0
		for f := 0; f < 7; f++ {
			for g := 0; g < 5; g++ {
				h, err := s.History(ctx, PrivateConv(fmt.Sprint("u", f), fmt.Sprint("v", g)), Query{Count: MaxHistoryCount})
				if err != nil {
					t.Fatal(err)
				}
				total += len(h)
			}
		}
		if total != n {
			t.Errorf("%s: %d messages stored, want %d", when, total, n)
		}
	}
	check(s, "same run")
	if s.didx.n > 10+n/4 {
		t.Errorf("index holds %d records, bound 10", s.didx.n)
	}
	spilled := 0
	s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pfxDedup)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			spilled++
		}
		return nil
	})
	if spilled < n/2 {
		t.Errorf("%d records spilled, want most of %d", spilled, n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenBadger(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	check(s, "after restart")
	s.Close()
	s = openTestBadger(t, dir, BadgerOptions{})
	check(s, "after restart with a large index")
}
