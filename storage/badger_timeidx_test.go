package storage

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// loadTimes stores one message per entry of times in conv, seq i+1 with
// createTime times[i], as bulkLoad does.
func loadTimes(tb testing.TB, s *Badger, conv string, times []int64) {
	tb.Helper()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	var buf []byte
	for i, t := range times {
		s.gseq++
		m := &Message{ID: makeID(s.idPrefix, s.gseq), Conv: conv, ChatType: ChatGroup, GroupID: "tg", From: "u",
			Content: fmt.Sprint("m", i+1), CreateTime: t}
		buf = encodeMsgNum(buf[:0], m, s.gseq)
		if err := wb.Set(msgKey(conv, uint64(i+1)), append([]byte(nil), buf...)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := wb.Set(seqKey(conv), binaryBE(uint64(len(times)))); err != nil {
		tb.Fatal(err)
	}
	if err := wb.Set(keyGSeq, binaryBE(s.gseq)); err != nil {
		tb.Fatal(err)
	}
	if err := wb.Flush(); err != nil {
		tb.Fatal(err)
	}
	delete(s.seqs, conv)
}

// expectHistory is what History must return for q over messages with seqs
// first..len(times) and createTimes times[seq-1], by brute force.
func expectHistory(times []int64, first uint64, q Query) []uint64 {
	var match []uint64
	for i, t := range times {
		seq := uint64(i + 1)
		if seq < first || seq <= q.AfterSeq || q.Begin != 0 && t < q.Begin || q.End != 0 && t > q.End {
			continue
		}
		match = append(match, seq)
	}
	limit := q.Limit()
	if q.Latest && q.Offset <= 0 {
		return match[max(len(match)-limit, 0):]
	}
	match = match[min(max(q.Offset, 0), len(match)):]
	return match[:min(limit, len(match))]
}

func timeIndexEntries(t *testing.T, s *Badger, conv string) []uint64 {
	t.Helper()
	var blks []uint64
	pfx := prefix1(pfxTime, conv)
	if err := s.view(func(txn *badger.Txn) error {
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer iter.Close()
		for iter.Seek(pfx); iter.ValidForPrefix(pfx); iter.Next() {
			blks = append(blks, seqOf(iter.Item().Key()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return blks
}

// Time windows give the same pages whether the time index has the blocks
// or not yet, in both directions, with offsets and afterSeq, over
// createTimes that mostly rise but jump back and ahead now and then (the
// sender's clock); the index holds only full blocks; retention drops the
// entries of the blocks it empties and the pages stay right.
func TestHistoryTimeIndex(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{GCInterval: -1})
	const conv = "g:tg"
	r := rand.New(rand.NewPCG(1, 2))
	times := make([]int64, 5500)
	base := int64(1_700_000_000_000)
	for i := range times {
		times[i] = base + int64(i)*10 + r.Int64N(30)
		if r.IntN(400) == 0 {
			times[i] += r.Int64N(200_000) - 100_000 // a sender's clock far off
		}
	}
	loadTimes(t, s, conv, times)
	span := int64(len(times)) * 10
	query := func() Query {
		q := Query{Count: 1 + r.IntN(150), Latest: r.IntN(2) == 0}
		switch r.IntN(4) {
		case 0: // a narrow window anywhere, often matching nothing
			q.Begin = base + r.Int64N(span)
			q.End = q.Begin + r.Int64N(40)
		case 1:
			q.Begin = base + r.Int64N(span)
			q.End = q.Begin + r.Int64N(span/4)
		case 2:
			q.Begin = base + r.Int64N(span)
		default:
			q.End = base + r.Int64N(span)
		}
		if r.IntN(4) == 0 {
			q.Offset = r.IntN(40)
		}
		if r.IntN(4) == 0 {
			q.AfterSeq = uint64(r.IntN(len(times)))
		}
		return q
	}
	// Windows that touch a block's smallest or largest createTime exactly.
	edges := func(first uint64) []Query {
		var qs []Query
		for blk := uint64(0); blk<<timeBlockBits < uint64(len(times)); blk++ {
			lo, hi := int64(1<<62), int64(0)
			for seq := max(blk<<timeBlockBits, first); seq < (blk+1)<<timeBlockBits && seq <= uint64(len(times)); seq++ {
				lo, hi = min(lo, times[seq-1]), max(hi, times[seq-1])
			}
			qs = append(qs, Query{Begin: lo, End: lo}, Query{Begin: hi, End: hi}, Query{Begin: hi},
				Query{End: lo, Latest: true}, Query{Begin: lo - 1, End: lo, Latest: true})
		}
		return qs
	}
	check := func(first uint64, rounds int) {
		t.Helper()
		fixed := edges(first)
		for i := range rounds + len(fixed) {
			q := query()
			if i < len(fixed) {
				q = fixed[i]
			}
			want := expectHistory(times, first, q)
			for pass := range 2 { // the second may use what the first indexed
				got, err := s.History(ctx, conv, q)
				if err != nil {
					t.Fatal(err)
				}
				seqs := make([]uint64, len(got))
				for i, m := range got {
					seqs[i] = m.Seq
					if m.CreateTime != times[m.Seq-1] {
						t.Fatalf("seq %d: createTime %d, stored %d", m.Seq, m.CreateTime, times[m.Seq-1])
					}
				}
				if !slices.Equal(seqs, want) {
					t.Fatalf("%+v, pass %d: got %d messages %v\nwant %d %v", q, pass, len(seqs), seqs, len(want), want)
				}
			}
		}
	}
	if n := len(timeIndexEntries(t, s, conv)); n != 0 {
		t.Fatalf("%d index entries before any read", n)
	}
	// A window that matches nothing reads every block: the full ones are
	// indexed (blocks 0-4 hold 1,023 + 4 × 1,024 = 5,119 seqs; block 5,
	// partial, is not).
	if h, err := s.History(ctx, conv, Query{Begin: 1, End: 2}); err != nil || len(h) != 0 {
		t.Fatalf("%d messages, %v", len(h), err)
	}
	if got := timeIndexEntries(t, s, conv); !slices.Equal(got, []uint64{0, 1, 2, 3, 4}) {
		t.Fatalf("index entries for blocks %v, want 0-4", got)
	}
	check(1, 400)

	// Fill block 5 and add block 6: reads index block 5 once it is full.
	more := make([]int64, 1000)
	for i := range more {
		more[i] = base + span + int64(i)*10
	}
	wb := s.db.NewWriteBatch()
	var buf []byte
	for i, tm := range more {
		seq := uint64(len(times) + i + 1)
		s.gseq++
		buf = encodeMsgNum(buf[:0], &Message{ID: makeID(s.idPrefix, s.gseq), Conv: conv, ChatType: ChatGroup,
			GroupID: "tg", From: "u", Content: "more", CreateTime: tm}, s.gseq)
		if err := wb.Set(msgKey(conv, seq), append([]byte(nil), buf...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	times = append(times, more...)
	span = int64(len(times)) * 10
	if h, err := s.History(ctx, conv, Query{Begin: 1, End: 2, Latest: true}); err != nil || len(h) != 0 {
		t.Fatalf("%d messages, %v", len(h), err)
	}
	if got := timeIndexEntries(t, s, conv); !slices.Equal(got, []uint64{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("index entries for blocks %v, want 0-5", got)
	}
	check(1, 300)

	// Retention keeps the newest 3,000 of 6,500: blocks 0-2 are emptied
	// and their entries go; block 3 keeps part of its messages and its
	// (now loose) span.
	s.opts.RetentionMaxMessages = 3000
	if n, err := s.enforceRetention(time.Now()); err != nil || n != 3500 {
		t.Fatalf("retention removed %d, %v; want 3500", n, err)
	}
	if got := timeIndexEntries(t, s, conv); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("after retention, index entries for blocks %v, want 3-5", got)
	}
	check(3501, 300)
}
