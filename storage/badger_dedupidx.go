package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// De-duplication records, batched.
//
// The writer stores the dedup records of one batch as one entry,
// D/<gseq:8> (gseq of the batch's first message with a client id), with the
// records' TTL: one sequential key per batch instead of one random key per
// message, which is what made the memtable inserts expensive. The records
// are found through an in-memory index, hash of the dedup key -> gseq, that
// the writer owns: a hit is confirmed by reading the batch entry (so a hash
// collision is never taken for a duplicate), a miss means "new" unless the
// record was spilled (below).
//
// The index is bounded (BadgerOptions.DedupIndexMax entries, 30–50 bytes
// each with the map's overhead). When it is full, the oldest batch entry is spilled: its records
// are rewritten as per-message d/<from>/<clientId> keys (the layout the
// store always had, found by the senders' pre-check through dedupFilter),
// the S key records the last spilled batch, and its hashes leave the index
// dedupSpillGrace batches later (so a pre-check done before the spill was
// committed still finds them in the index). Entries also leave the index
// when their TTL has passed. At open the index is loaded from the batch
// entries after S.

// dedupIndex is the writer's index of the unspilled batch entries.
type dedupIndex struct {
	idx  map[uint64]uint64   // hash -> gseq
	more map[uint64][]uint64 // further gseqs of a hash that collided (rare)
	recs []dedupRec          // unspilled batch entries, oldest first
	n    int                 // hashes in recs
	// Hashes of spilled entries, removed from idx once the writer is
	// dedupSpillGrace batches further.
	gone []dedupGone
}

type dedupRec struct {
	gseq0, end uint64 // gseqs of its records are in [gseq0, end)
	exp        uint64 // Badger expiry, Unix seconds
	gen        uint64 // batch that wrote it (0: loaded at open)
	hs         []uint64
}

type dedupGone struct {
	gen uint64
	rec dedupRec
}

const dedupSpillGrace = 16

var keySpilled = []byte("S")

const pfxDedupBatch = "D/"

func dedupBatchKey(gseq0 uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(pfxDedupBatch), gseq0)
}

func newDedupIndex() *dedupIndex {
	return &dedupIndex{idx: make(map[uint64]uint64), more: make(map[uint64][]uint64)}
}

// find returns the gseqs whose records hash to h.
func (d *dedupIndex) find(h uint64) (uint64, []uint64, bool) {
	g, ok := d.idx[h]
	return g, d.more[h], ok
}

func (d *dedupIndex) put(h, gseq uint64) {
	if _, ok := d.idx[h]; ok {
		d.more[h] = append(d.more[h], gseq)
		return
	}
	d.idx[h] = gseq
}

// drop removes rec's hashes (those that still point into rec).
func (d *dedupIndex) drop(rec *dedupRec) {
	in := func(g uint64) bool { return g >= rec.gseq0 && g < rec.end }
	for _, h := range rec.hs {
		if g, ok := d.idx[h]; ok && in(g) {
			if m := d.more[h]; len(m) > 0 {
				d.idx[h] = m[0]
				d.setMore(h, m[1:])
			} else {
				delete(d.idx, h)
			}
			continue
		}
		if m := d.more[h]; len(m) > 0 {
			k := m[:0]
			for _, g := range m {
				if !in(g) {
					k = append(k, g)
				}
			}
			d.setMore(h, k)
		}
	}
}

func (d *dedupIndex) setMore(h uint64, m []uint64) {
	if len(m) == 0 {
		delete(d.more, h)
	} else {
		d.more[h] = m
	}
}

func (d *dedupIndex) addRec(rec dedupRec, gseqs []uint64) {
	for i, h := range rec.hs {
		d.put(h, gseqs[i])
	}
	d.recs = append(d.recs, rec)
	d.n += len(rec.hs)
}

// popOldest removes the oldest unspilled entry from recs; its hashes stay
// in idx until drop.
func (d *dedupIndex) popOldest() dedupRec {
	r := d.recs[0]
	d.recs[0] = dedupRec{}
	d.recs = d.recs[1:]
	d.n -= len(r.hs)
	return r
}

// Batch entry value: format byte 1, then per record: from, clientId
// (uvarint length + bytes), seq, gseq - gseq0 (uvarints).
const dedupBatchFormat = 1

type dedupItem struct {
	from, clientID string
	seq, gseq      uint64
}

func appendDedupItem(b []byte, gseq0 uint64, it dedupItem) []byte {
	if len(b) == 0 {
		b = append(b, dedupBatchFormat)
	}
	b = appendStr(b, it.from)
	b = appendStr(b, it.clientID)
	b = binary.AppendUvarint(b, it.seq)
	return binary.AppendUvarint(b, it.gseq-gseq0)
}

// eachDedupItem calls fn for every record of a batch entry until fn
// returns false.
func eachDedupItem(gseq0 uint64, v []byte, fn func(from, clientID []byte, seq, gseq uint64) bool) error {
	if len(v) == 0 || v[0] != dedupBatchFormat {
		return fmt.Errorf("%w: dedup batch format", errCorrupt)
	}
	r := reader{b: v[1:]}
	for len(r.b) > 0 && r.err == nil {
		from := r.bytes(r.uvarint())
		cid := r.bytes(r.uvarint())
		seq := r.uvarint()
		g := r.uvarint()
		if r.err != nil {
			break
		}
		// The writer stores each record's offset from the entry's first
		// number; one that carries the number past 2^64 was never written
		// by it and would be indexed outside its batch.
		if g > math.MaxUint64-gseq0 {
			return fmt.Errorf("%w: dedup record offset past the number space", errCorrupt)
		}
		if !fn(from, cid, seq, gseq0+g) {
			return nil
		}
	}
	return r.err
}

// readDedupBatch reads the batch entry that holds gseq's record and looks
// for dk in it.
func (b *Badger) readDedupBatch(txn *badger.Txn, gseq uint64, dk []byte) (Ack, bool, error) {
	pfx := []byte(pfxDedupBatch)
	it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: pfx})
	defer it.Close()
	it.Seek(dedupBatchKey(gseq))
	if !it.ValidForPrefix(pfx) {
		return Ack{}, false, nil // expired
	}
	item := it.Item()
	gseq0 := seqOf(item.Key())
	var a Ack
	var found bool
	err := item.Value(func(v []byte) error {
		return eachDedupItem(gseq0, v, func(from, cid []byte, seq, g uint64) bool {
			if g != gseq {
				return true
			}
			if bytes.Equal(dedupKey(string(from), string(cid)), dk) {
				a, found = Ack{ID: makeID(b.idPrefix, g), Seq: seq, Duplicate: true}, true
			}
			return false
		})
	})
	return a, found, err
}

// loadDedupIndex fills the index from the unspilled batch entries; it runs
// at open, before the writer starts.
func (b *Badger) loadDedupIndex() error {
	var spilled uint64
	return b.db.View(func(txn *badger.Txn) error {
		if it, err := txn.Get(keySpilled); err == nil {
			if err := it.Value(func(v []byte) error {
				if len(v) != 8 {
					return errCorrupt
				}
				spilled = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		pfx := []byte(pfxDedupBatch)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		var gseqs []uint64
		for it.Seek(dedupBatchKey(spilled + 1)); it.ValidForPrefix(pfx); it.Next() {
			item := it.Item()
			rec := dedupRec{gseq0: seqOf(item.Key()), exp: item.ExpiresAt()}
			gseqs = gseqs[:0]
			err := item.Value(func(v []byte) error {
				return eachDedupItem(rec.gseq0, v, func(from, cid []byte, _, g uint64) bool {
					rec.hs = append(rec.hs, b.dedupF.hash(dedupKey(string(from), string(cid))))
					gseqs = append(gseqs, g)
					rec.end = max(rec.end, g+1)
					return true
				})
			})
			if err != nil {
				return fmt.Errorf("dedup batch %d: %w", rec.gseq0, err)
			}
			b.didx.addRec(rec, gseqs)
		}
		return nil
	})
}

// dedupMaintain runs in prepare after the batch's own records: it drops
// expired entries from the index, spills the oldest ones while the index is
// over its bound (appending their d/ records to ops), and removes spilled
// hashes whose grace has passed.
func (b *Badger) dedupMaintain(p *wbatch, now time.Time, ops []wop) []wop {
	d := b.didx
	for len(d.gone) > 0 && d.gone[0].gen+dedupSpillGrace <= p.gen {
		d.drop(&d.gone[0].rec)
		b.dedupEvicted = max(b.dedupEvicted, d.gone[0].gen)
		d.gone[0] = dedupGone{}
		d.gone = d.gone[1:]
	}
	cut := uint64(now.Add(-time.Minute).Unix())
	for len(d.recs) > 0 && d.recs[0].exp != 0 && d.recs[0].exp < cut {
		r := d.popOldest()
		d.drop(&r)
	}
	if d.n <= b.opts.DedupIndexMax {
		return ops
	}
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	var last uint64
	// Only committed entries can be read back and spilled.
	for d.n > b.opts.DedupIndexMax && len(d.recs) > 0 && d.recs[0].gen <= b.commitGen.Load() {
		r := d.popOldest()
		item, err := txn.Get(dedupBatchKey(r.gseq0))
		if err == nil {
			var hs []uint64
			err = item.Value(func(v []byte) error {
				return eachDedupItem(r.gseq0, v, func(from, cid []byte, seq, g uint64) bool {
					dk := dedupKey(string(from), string(cid))
					ops = append(ops, wop{key: dk, val: encodeAck(Ack{ID: makeID(b.idPrefix, g), Seq: seq}), exp: r.exp})
					hs = append(hs, b.dedupF.hash(dk))
					return true
				})
			})
			b.dedupF.add(r.exp, hs...)
		}
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			// Keep it in the index (memory over the bound) rather than
			// lose the records.
			b.log.Warn("storage: spilling de-duplication records", "err", err)
			d.recs = append([]dedupRec{r}, d.recs...)
			d.n += len(r.hs)
			break
		}
		d.gone = append(d.gone, dedupGone{gen: p.gen, rec: r})
		last = r.gseq0
	}
	if last != 0 {
		ops = append(ops, wop{key: keySpilled, val: binaryBE(last)})
	}
	return ops
}

// recentDedup holds the acks of the last size records the writer
// stored, by hash, so that a resend soon after the original, and one in
// the same or a not yet committed batch (which didx cannot confirm from the
// database yet), is answered without a read.
type recentDedup struct {
	byHash map[uint64]uint32 // hash -> newest ring slot with it
	ring   []recentEnt
	next   int
	size   int
}

type recentEnt struct {
	h   uint64
	dk  []byte
	ack Ack
}

func newRecentDedup(size int) *recentDedup {
	return &recentDedup{byHash: make(map[uint64]uint32), size: size}
}

func (r *recentDedup) get(h uint64, dk []byte) (Ack, bool) {
	i, ok := r.byHash[h]
	if !ok {
		return Ack{}, false
	}
	if e := &r.ring[i]; bytes.Equal(e.dk, dk) {
		return e.ack, true
	}
	// Another key with the same hash: look at every slot.
	for i := range r.ring {
		if e := &r.ring[i]; e.h == h && bytes.Equal(e.dk, dk) {
			return e.ack, true
		}
	}
	return Ack{}, false
}

func (r *recentDedup) put(h uint64, dk []byte, a Ack) {
	if len(r.ring) < r.size {
		r.ring = append(r.ring, recentEnt{h, dk, a})
		r.byHash[h] = uint32(len(r.ring) - 1)
		return
	}
	// The evicted record is still in didx.
	old := &r.ring[r.next]
	if i, ok := r.byHash[old.h]; ok && int(i) == r.next {
		delete(r.byHash, old.h)
	}
	*old = recentEnt{h, dk, a}
	r.byHash[h] = uint32(r.next)
	r.next = (r.next + 1) % r.size
}
