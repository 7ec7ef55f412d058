package storage

import (
	"encoding/binary"

	"github.com/dgraph-io/badger/v4"
)

// A conversation's messages are kept in seq order, but a history window
// filters on createTime, which the sender sets and seq does not order: a
// window far back in a long conversation, or one that matches nothing,
// scanned every message (a few hundred milliseconds at 1,000,000). The time
// index keeps, per block of timeBlock consecutive seqs, the smallest and the
// largest createTime in it, so a scan skips the blocks a window cannot
// match.
//
// The index costs the write path nothing: a block's span is recorded by the
// first filtered read that scans the whole block, once the block is full
// (no message is ever added to a full block, and retention only removes
// messages, which leaves a span a safe bound). Blocks nobody has scanned yet
// are scanned as before.
const (
	pfxTime       = "t/"
	timeBlockBits = 10
	timeBlock     = 1 << timeBlockBits
)

// timeKey is the index entry of conv's block blk (seqs blk*timeBlock up to
// the next block).
func timeKey(conv string, blk uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix1(pfxTime, conv), blk)
}

// timeSpan is the createTime range of a block's messages.
type timeSpan struct{ lo, hi int64 }

func (s timeSpan) value() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(s.lo)), uint64(s.hi))
}

// meets reports whether any createTime in s can fall in the window
// [begin, end], where 0 leaves a side open.
func (s timeSpan) meets(begin, end int64) bool {
	return (begin == 0 || s.hi >= begin) && (end == 0 || s.lo <= end)
}

// blockFull is how many messages block blk holds once full: seq 0 is never
// used.
func blockFull(blk uint64) int {
	if blk == 0 {
		return timeBlock - 1
	}
	return timeBlock
}

// blockScan follows a filtered history scan block by block: it skips the
// blocks the index rules out and measures the full blocks the scan reads
// whole, for the index.
type blockScan struct {
	conv       string
	begin, end int64
	spans      map[uint64]timeSpan // the index, loaded when the scan first leaves a block
	loaded     bool
	started    bool
	cur        uint64   // block being read
	n          int      // messages of cur read so far, consecutively
	span       timeSpan // their createTimes
	found      map[uint64]timeSpan
}

func newBlockScan(conv string, q Query) *blockScan {
	return &blockScan{conv: conv, begin: q.Begin, end: q.End}
}

// enter is called for each message the scan reaches, before reading it,
// with the direction of the scan. When the index says no message in the
// rest of seq's block meets the window, it reports skip, and the nearest
// block in that direction the index does not rule out: to, or with none
// left (going back past block 0), end.
// A nil scan (an unfiltered read) never skips.
func (s *blockScan) enter(txn *badger.Txn, seq uint64, reverse bool) (skip bool, to uint64, end bool, err error) {
	if s == nil {
		return false, 0, false, nil
	}
	blk := seq >> timeBlockBits
	if s.started && blk == s.cur {
		return false, 0, false, nil
	}
	if s.started {
		s.close()
		if !s.loaded {
			// Loaded only once the scan leaves its first block: most
			// windows are answered by the newest or oldest block alone.
			if err := s.load(txn); err != nil {
				return false, 0, false, err
			}
		}
	}
	s.started, s.cur, s.n = true, blk, 0
	if !s.ruledOut(blk) {
		return false, 0, false, nil
	}
	s.n = -1 // not read: nothing to record
	// The blocks past the newest indexed one are not in the index, so
	// going forward ends at one of them.
	for {
		if reverse {
			if blk == 0 {
				return true, 0, true, nil
			}
			blk--
		} else {
			blk++
		}
		if !s.ruledOut(blk) {
			return true, blk, false, nil
		}
	}
}

// ruledOut reports whether the index says no message of blk meets the
// window.
func (s *blockScan) ruledOut(blk uint64) bool {
	sp, ok := s.spans[blk]
	return ok && !sp.meets(s.begin, s.end)
}

// saw records the createTime of a message of the current block, read in
// seq order (either direction) with none left out.
func (s *blockScan) saw(t int64) {
	if s == nil || s.n < 0 {
		return
	}
	if s.n == 0 {
		s.span = timeSpan{t, t}
	} else {
		s.span.lo, s.span.hi = min(s.span.lo, t), max(s.span.hi, t)
	}
	s.n++
}

// close ends the current block: read whole and full, and not yet indexed,
// its span is kept for the index.
func (s *blockScan) close() {
	if s.n != blockFull(s.cur) {
		return
	}
	if _, ok := s.spans[s.cur]; ok {
		return
	}
	if s.found == nil {
		s.found = map[uint64]timeSpan{}
	}
	s.found[s.cur] = s.span
}

func (s *blockScan) load(txn *badger.Txn) error {
	s.loaded = true
	pfx := prefix1(pfxTime, s.conv)
	iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: true, PrefetchSize: 256})
	defer iter.Close()
	for iter.Seek(pfx); iter.ValidForPrefix(pfx); iter.Next() {
		k := iter.Item().Key()
		if len(k) != len(pfx)+8 {
			continue
		}
		if err := iter.Item().Value(func(v []byte) error {
			if len(v) != 16 {
				return nil // unknown: scanned as if absent
			}
			if s.spans == nil {
				s.spans = map[uint64]timeSpan{}
			}
			s.spans[seqOf(k)] = timeSpan{int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// record writes the spans of the blocks the scan measured. The index is a
// cache of what the messages say: a failed write only leaves those blocks
// to be scanned again, so it is not worth an error to the reader.
func (b *Badger) recordSpans(s *blockScan) {
	if s == nil {
		return
	}
	s.close() // the scan may have ended at the end of a full block
	if len(s.found) == 0 || b.failed() != nil {
		return
	}
	_ = b.db.Update(func(txn *badger.Txn) error {
		for blk, sp := range s.found {
			if err := txn.Set(timeKey(s.conv, blk), sp.value()); err != nil {
				return err
			}
		}
		return nil
	})
}

// deadSpans lists the index entries of conv's blocks that lie wholly below
// seq first, once retention has removed every message before it.
func deadSpans(txn *badger.Txn, conv string, first uint64) [][]byte {
	var dead [][]byte
	pfx := prefix1(pfxTime, conv)
	iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
	defer iter.Close()
	for iter.Seek(pfx); iter.ValidForPrefix(pfx); iter.Next() {
		k := iter.Item().Key()
		if len(k) != len(pfx)+8 || seqOf(k) >= first>>timeBlockBits {
			break
		}
		dead = append(dead, iter.Item().KeyCopy(nil))
	}
	return dead
}
