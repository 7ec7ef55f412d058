package storage

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// dedupFilter is an in-memory Bloom filter of the de-duplication records
// in the database: when it says a (from, client id) was never stored, the
// sender's pre-check needs no database read, which is the common case (a
// new client id). A "maybe" is answered by the database as before, so a
// false positive costs one read and is never wrong.
//
// Records expire (DedupTTL), so the filter is cut into slices by expiry
// time, each slice a list of split-block Bloom filters that grows (by
// doubling) as keys arrive; a slice whose records have all expired is
// dropped. Memory is bounded by dedupFilterMaxWords: once all slices
// together hold that much, new keys go into the newest part that exists,
// whose false-positive rate then rises (more database reads, still
// correct). At open the filter is rebuilt in the background from the
// stored records' keys; until that scan has finished every pre-check reads
// the database.
type dedupFilter struct {
	seed maphash.Seed
	span int64 // seconds of expiry time covered by one slice

	mu    sync.Mutex // serialises add and prune; readers use set
	set   atomic.Pointer[[]*bloomSlice]
	words int // total words allocated, under mu
	ready atomic.Bool
}

const (
	dedupFilterSlices   = 4       // slices per DedupTTL (plus the one being filled)
	dedupFilterBits     = 12      // bits per key in a part before the next one is added
	dedupFilterMinWords = 1 << 15 // first part of a slice: 256 KiB
	dedupFilterMaxPart  = 1 << 21 // largest part: 16 MiB
	dedupFilterMaxWords = 1 << 22 // all parts together: 32 MiB
)

type bloomSlice struct {
	bucket int64 // holds keys expiring in [bucket*span, (bucket+1)*span)
	parts  []*bloomPart
}

// bloomPart is a split-block Bloom filter: a key sets one bit in each of the
// 8 words of one 64-byte block, so a lookup touches one cache line.
type bloomPart struct {
	words []uint64 // len is a multiple of 8
	n     int      // keys added, under dedupFilter.mu
}

var bloomSalt = [8]uint32{0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d,
	0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31}

func (p *bloomPart) block(h uint64) []uint64 {
	nb := uint64(len(p.words) / 8)
	i := ((h >> 32) * nb) >> 32
	return p.words[i*8 : i*8+8 : i*8+8]
}

func (p *bloomPart) add(h uint64) {
	b := p.block(h)
	for i, s := range bloomSalt {
		atomic.OrUint64(&b[i], 1<<((uint32(h)*s)>>26))
	}
	p.n++
}

func (p *bloomPart) has(h uint64) bool {
	b := p.block(h)
	for i, s := range bloomSalt {
		if atomic.LoadUint64(&b[i])&(1<<((uint32(h)*s)>>26)) == 0 {
			return false
		}
	}
	return true
}

func newDedupFilter(ttl time.Duration) *dedupFilter {
	f := &dedupFilter{seed: maphash.MakeSeed()}
	f.span = max(int64(ttl/time.Second)/dedupFilterSlices, 1)
	f.set.Store(new([]*bloomSlice))
	return f
}

func (f *dedupFilter) hash(key []byte) uint64 { return maphash.Bytes(f.seed, key) }

// mayContain reports whether the record with key hash h may be stored. It
// is only meaningful once the filter is ready.
func (f *dedupFilter) mayContain(h uint64) bool {
	for _, s := range *f.set.Load() {
		for _, p := range s.parts {
			if p.has(h) {
				return true
			}
		}
	}
	return false
}

// add records hashes of keys that expire at expiresAt (Unix seconds; 0 is
// never). It must return before the records can be read as committed.
func (f *dedupFilter) add(expiresAt uint64, hs ...uint64) {
	if len(hs) == 0 {
		return
	}
	bucket := int64(math.MaxInt64)
	if expiresAt != 0 && expiresAt < math.MaxInt64 {
		bucket = int64(expiresAt) / f.span
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	set := *f.set.Load()
	var s *bloomSlice
	for _, x := range set {
		if x.bucket == bucket {
			s = x
			break
		}
	}
	changed := false
	if s == nil {
		s = &bloomSlice{bucket: bucket}
		set = append(append([]*bloomSlice(nil), set...), s)
		changed = true
	}
	for _, h := range hs {
		p := f.part(s, &changed)
		p.add(h)
	}
	if changed {
		f.set.Store(&set)
	}
}

// part returns the part of s that the next key goes into, adding one when
// the last is full and the memory budget allows. Parts are never mutated
// in place except for their bits, so readers can walk a published set.
func (f *dedupFilter) part(s *bloomSlice, changed *bool) *bloomPart {
	var last *bloomPart
	if len(s.parts) > 0 {
		last = s.parts[len(s.parts)-1]
		if last.n < len(last.words)*64/dedupFilterBits {
			return last
		}
	}
	size := dedupFilterMinWords
	if last != nil {
		size = min(len(last.words)*2, dedupFilterMaxPart)
	}
	if f.words+size > dedupFilterMaxWords {
		if last != nil {
			return last
		}
		size = 8 // budget spent: a slice still needs somewhere to go
	}
	p := &bloomPart{words: make([]uint64, size)}
	f.words += size
	// A new parts slice, so a reader holding the old one never sees a
	// half-published element.
	s.parts = append(s.parts[:len(s.parts):len(s.parts)], p)
	*changed = true
	return p
}

// prune drops the slices whose records have all expired by now.
func (f *dedupFilter) prune(now time.Time) {
	// A minute of slack for clock steps between the record's expiry and
	// this check.
	cut := now.Add(-time.Minute).Unix() / f.span
	if !f.anyBefore(*f.set.Load(), cut) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var keep []*bloomSlice
	for _, s := range *f.set.Load() {
		if s.bucket >= cut {
			keep = append(keep, s)
			continue
		}
		for _, p := range s.parts {
			f.words -= len(p.words)
		}
	}
	f.set.Store(&keep)
}

func (f *dedupFilter) anyBefore(set []*bloomSlice, cut int64) bool {
	for _, s := range set {
		if s.bucket < cut {
			return true
		}
	}
	return false
}

// rebuild adds every stored dedup record to f and then marks it ready. It
// runs in the background at open; the writer adds new records meanwhile,
// so once the scan is done the filter covers every record.
func (b *Badger) rebuildDedupFilter() {
	defer b.bg.Done()
	pfx := []byte(pfxDedup)
	var hs []uint64
	var exp uint64
	flush := func() {
		b.dedupF.add(exp, hs...)
		hs = hs[:0]
	}
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if e := item.ExpiresAt(); e != exp || len(hs) == 256 {
				flush()
				exp = e
			}
			hs = append(hs, b.dedupF.hash(item.Key()))
			if len(hs) == 1 {
				select {
				case <-b.quit:
					return badger.ErrDBClosed
				default:
				}
			}
		}
		return nil
	})
	flush()
	if err != nil {
		b.log.Warn("storage: de-duplication filter not built; duplicates are checked in the database", "err", err)
		return
	}
	b.dedupF.ready.Store(true)
}
