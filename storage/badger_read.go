package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func (b *Badger) view(fn func(txn *badger.Txn) error) error {
	b.closeMu.RLock()
	closed := b.closed
	b.closeMu.RUnlock()
	if closed {
		return ErrClosed
	}
	err := b.db.View(fn)
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return err
}

// History implements Store. Messages are keyed by seq, so a page without
// time filters is one seek plus Count reads whatever the conversation's
// size: AfterSeq seeks directly, Offset seeks to first+Offset (seqs are
// contiguous; retention only removes from the oldest end), and Latest
// iterates backwards from the end. Begin/End filter CreateTime, which the
// sender sets and seq does not order, so filtered windows scan, skipping
// the blocks of seqs the time index rules out (badger_timeidx.go).
func (b *Badger) History(_ context.Context, conv string, q Query) ([]*Message, error) {
	if err := partsOK(conv); err != nil {
		return nil, err
	}
	out := []*Message{}
	limit := q.Limit()
	pfx := prefix1(pfxMsg, conv)
	filtered := q.Begin != 0 || q.End != 0
	// decode returns the item's message, or nil when the time filter
	// drops it, which it tells from the createTime alone, and the
	// createTime when filtered (for the time index).
	decode := func(it *badger.Item) (m *Message, t int64, err error) {
		err = it.Value(func(v []byte) error {
			if filtered {
				var err error
				if t, err = msgCreateTime(v); err != nil {
					return err
				}
				if q.Begin != 0 && t < q.Begin || q.End != 0 && t > q.End {
					return nil
				}
			}
			var err error
			m, err = decodeMsgIn(conv, seqOf(it.Key()), v, &b.idPrefix)
			return err
		})
		return m, t, err
	}
	var blocks *blockScan
	if filtered {
		blocks = newBlockScan(conv, q)
	}
	err := b.view(func(txn *badger.Txn) error {
		if q.Latest && q.Offset <= 0 {
			iter := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: pfx,
				PrefetchValues: !filtered, PrefetchSize: min(limit, 100)})
			defer iter.Close()
			for iter.Seek(append(bytes.Clone(pfx), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)); iter.ValidForPrefix(pfx) && len(out) < limit; {
				seq := seqOf(iter.Item().Key())
				if seq <= q.AfterSeq {
					break
				}
				if jump, to, end, err := blocks.enter(txn, seq, true); err != nil {
					return err
				} else if end {
					break
				} else if jump {
					iter.Seek(msgKey(conv, (to+1)<<timeBlockBits-1))
					continue
				}
				m, t, err := decode(iter.Item())
				if err != nil {
					return err
				}
				blocks.saw(t)
				if m != nil {
					out = append(out, m)
				}
				iter.Next()
			}
			slices.Reverse(out)
			return nil
		}
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx,
			PrefetchValues: !filtered && q.Offset <= 0, PrefetchSize: min(limit, 100)})
		defer iter.Close()
		start := q.AfterSeq + 1
		iter.Seek(binary.BigEndian.AppendUint64(bytes.Clone(pfx), start))
		offset := max(q.Offset, 0)
		if offset > 0 && !filtered && iter.ValidForPrefix(pfx) {
			// Jump over the offset: the first seq plus the offset is the
			// wanted one as long as no seq is missing, which is checked.
			target := seqOf(iter.Item().Key()) + uint64(offset)
			iter.Seek(binary.BigEndian.AppendUint64(bytes.Clone(pfx), target))
			if iter.ValidForPrefix(pfx) && seqOf(iter.Item().Key()) == target {
				offset = 0
			} else {
				iter.Seek(binary.BigEndian.AppendUint64(bytes.Clone(pfx), start))
			}
		}
		for iter.ValidForPrefix(pfx) && len(out) < limit {
			seq := seqOf(iter.Item().Key())
			if jump, to, _, err := blocks.enter(txn, seq, false); err != nil {
				return err
			} else if jump {
				iter.Seek(msgKey(conv, to<<timeBlockBits))
				continue
			}
			m, t, err := decode(iter.Item())
			if err != nil {
				return err
			}
			blocks.saw(t)
			iter.Next()
			if m == nil {
				continue
			}
			if offset > 0 {
				offset--
				continue
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.recordSpans(blocks)
	return out, nil
}

// Offline implements Store. Entries whose message retention has removed
// are skipped and dropped from the queue.
func (b *Badger) Offline(_ context.Context, user string, f OfflineFilter) ([]*Message, error) {
	if err := partsOK(user); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 || limit > MaxHistoryCount {
		limit = MaxHistoryCount
	}
	out := []*Message{}
	var dangling [][]byte
	pfx := prefix1(pfxOff, user)
	err := b.view(func(txn *badger.Txn) error {
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: true, PrefetchSize: 100})
		defer iter.Close()
		for iter.Seek(pfx); iter.ValidForPrefix(pfx) && len(out) < limit; iter.Next() {
			var ref offRef
			err := iter.Item().Value(func(v []byte) error {
				var err error
				ref, err = decodeOffRef(v)
				return err
			})
			if err != nil {
				return err
			}
			if f.From != "" && (ref.chatType != ChatPrivate || ref.from != f.From) {
				continue
			}
			if f.GroupID != "" && (ref.chatType != ChatGroup || ref.groupID != f.GroupID) {
				continue
			}
			it, err := txn.Get(msgKey(ref.conv, ref.seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				dangling = append(dangling, iter.Item().KeyCopy(nil))
				continue
			}
			if err != nil {
				return err
			}
			var m *Message
			err = it.Value(func(v []byte) error {
				var err error
				m, err = decodeMsgIn(ref.conv, ref.seq, v, &b.idPrefix)
				return err
			})
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(dangling) > 0 {
		b.deleteKeys(dangling)
	}
	return out, nil
}

// deleteKeys removes keys outside the writer: used for data that no ack
// depends on (expired messages, offline references to them or over the
// cap, time index entries of emptied blocks).
func (b *Badger) deleteKeys(keys [][]byte) error {
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			b.log.Warn("storage: delete", "err", err)
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		b.log.Warn("storage: delete", "err", err)
		return err
	}
	return nil
}

// GroupMembers implements Store. Members are cached in memory after the
// first read of a group, and the cache follows every join and leave, so
// fan-out does not read the database per message.
func (b *Badger) GroupMembers(_ context.Context, gid string) ([]string, error) {
	if err := partsOK(gid); err != nil {
		return nil, err
	}
	b.gmu.RLock()
	cur, ok := b.members[gid]
	b.gmu.RUnlock()
	if !ok {
		// Loading under the write lock orders the load against the
		// writer's cache updates: a join committed before the scan is in
		// it, one committed after is applied to it.
		b.gmu.Lock()
		if cur, ok = b.members[gid]; !ok {
			var err error
			cur, err = b.scanTails(prefix1(pfxGroup, gid))
			if err != nil {
				b.gmu.Unlock()
				return nil, err
			}
			// Map order is as good as any for eviction: a group read
			// again is loaded again.
			for g, m := range b.members {
				if b.memberN+len(cur) <= memberCacheMax {
					break
				}
				delete(b.members, g)
				b.memberN -= len(m)
			}
			b.members[gid] = cur
			b.memberN += len(cur)
		}
		b.gmu.Unlock()
	}
	return slices.Clone(cur), nil
}

// UserGroups implements Store.
func (b *Badger) UserGroups(_ context.Context, uid string) ([]string, error) {
	if err := partsOK(uid); err != nil {
		return nil, err
	}
	if b.inNoGroup(uid) {
		return []string{}, nil
	}
	return b.scanTails(prefix1(pfxByUser, uid))
}

// scanTails lists what follows pfx in every key under it.
func (b *Badger) scanTails(pfx []byte) ([]string, error) {
	out := []string{}
	err := b.view(func(txn *badger.Txn) error {
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer iter.Close()
		for iter.Seek(pfx); iter.ValidForPrefix(pfx); iter.Next() {
			out = append(out, string(iter.Item().Key()[len(pfx):]))
		}
		return nil
	})
	return out, err
}

// retentionLoop enforces RetentionAge and RetentionMaxMessages.
func (b *Badger) retentionLoop() {
	defer b.bg.Done()
	retain := b.opts.RetentionAge > 0 || b.opts.RetentionMaxMessages > 0
	if !retain && b.opts.OfflineCap <= 0 {
		return
	}
	t := time.NewTicker(b.opts.RetentionInterval)
	defer t.Stop()
	var capped time.Time // last cap pass
	for {
		select {
		case <-b.quit:
			return
		case now := <-t.C:
			if retain {
				if n, err := b.enforceRetention(now); err != nil {
					b.log.Warn("storage: retention", "err", err)
				} else if n > 0 {
					b.log.Debug("storage: retention removed messages", "count", n)
				}
			}
			if b.opts.OfflineCap > 0 && now.Sub(capped) >= b.opts.OfflineCapInterval && b.offQueued.Swap(false) {
				capped = now
				if n, err := b.enforceOfflineCap(b.opts.OfflineCap); err != nil {
					b.offQueued.Store(true) // try again next time
					b.log.Warn("storage: offline cap", "err", err)
				} else if n > 0 {
					b.log.Info("storage: offline cap dropped the oldest references", "count", n)
				}
			}
		}
	}
}

// enforceOfflineCap drops the oldest offline references of every user
// holding more than limit, and returns how many it dropped. Counting the
// queues on the write path would cost a read per queued reference; this
// pass reads the keys only, once for all users, then again for each user
// over the limit.
func (b *Badger) enforceOfflineCap(limit int) (int, error) {
	over := map[string]int{} // user -> references beyond the limit
	err := b.view(func(txn *badger.Txn) error {
		pfx := []byte(pfxOff)
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer iter.Close()
		cur, n := "", 0
		done := func() {
			if n > limit {
				over[cur] = n - limit
			}
		}
		for iter.Seek(pfx); iter.ValidForPrefix(pfx); iter.Next() {
			k := iter.Item().Key()
			tail, ok := keyTail(k, len(pfxOff))
			if !ok || len(tail) != 8 {
				continue
			}
			user := k[len(pfxOff)+2 : len(k)-8]
			if string(user) != cur {
				done()
				cur, n = string(user), 0
			}
			n++
		}
		done()
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for user, n := range over {
		select {
		case <-b.quit:
			return total, nil
		default:
		}
		for n > 0 {
			// In chunks: a user may be millions over.
			var dead [][]byte
			pfx := prefix1(pfxOff, user)
			err := b.view(func(txn *badger.Txn) error {
				iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
				defer iter.Close()
				for iter.Seek(pfx); iter.ValidForPrefix(pfx) && len(dead) < min(n, 10000); iter.Next() {
					dead = append(dead, iter.Item().KeyCopy(nil))
				}
				return nil
			})
			if err != nil {
				return total, err
			}
			if len(dead) == 0 {
				break
			}
			if err := b.deleteKeys(dead); err != nil {
				return total, err
			}
			total += len(dead)
			n -= len(dead)
		}
	}
	return total, nil
}

// enforceRetention deletes, in every conversation, the messages beyond
// RetentionMaxMessages and those older than RetentionAge, always from the
// oldest end so that what remains stays contiguous in seq. The seq counter
// stays, so numbering continues after an emptied conversation. It returns
// the number of messages deleted.
func (b *Badger) enforceRetention(now time.Time) (int, error) {
	var cutoff int64
	if b.opts.RetentionAge > 0 {
		cutoff = now.Add(-b.opts.RetentionAge).UnixMilli()
	}
	maxN := uint64(max(b.opts.RetentionMaxMessages, 0))
	type convLast struct {
		conv string
		last uint64
	}
	var convs []convLast
	err := b.view(func(txn *badger.Txn) error {
		// One seek per conversation: from a conversation's last key jump
		// past all of its keys to the next conversation.
		pfx := []byte(pfxMsg)
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer iter.Close()
		for iter.Seek(pfx); iter.ValidForPrefix(pfx); {
			conv, ok := keyPart(iter.Item().Key(), len(pfxMsg))
			if !ok {
				iter.Next()
				continue
			}
			last, err := storedLastSeq(txn, conv)
			if err != nil {
				return err
			}
			convs = append(convs, convLast{conv, last})
			iter.Seek(append(prefix1(pfxMsg, conv), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, c := range convs {
		select {
		case <-b.quit:
			return total, nil
		default:
		}
		var dead [][]byte
		pfx := prefix1(pfxMsg, c.conv)
		err := b.view(func(txn *badger.Txn) error {
			iter := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: cutoff != 0, PrefetchSize: 100})
			defer iter.Close()
			for iter.Seek(pfx); iter.ValidForPrefix(pfx); iter.Next() {
				k := iter.Item().Key()
				seq := seqOf(k)
				if maxN > 0 && c.last >= maxN && seq <= c.last-maxN {
					dead = append(dead, iter.Item().KeyCopy(nil))
					continue
				}
				if cutoff == 0 {
					break
				}
				old := false
				err := iter.Item().Value(func(v []byte) error {
					m, err := decodeMsgIn(c.conv, seq, v, &b.idPrefix)
					if err == nil {
						old = m.CreateTime < cutoff
					}
					return err
				})
				if err != nil || !old {
					break
				}
				dead = append(dead, iter.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		if n := len(dead); n > 0 {
			total += n
			first := seqOf(dead[n-1]) + 1
			_ = b.view(func(txn *badger.Txn) error {
				dead = append(dead, deadSpans(txn, c.conv, first)...)
				return nil
			})
			// The counter keeps numbering going once the newest message
			// of the conversation is gone too.
			if err := b.db.Update(func(txn *badger.Txn) error {
				return txn.Set(seqKey(c.conv), binaryBE(c.last))
			}); err != nil {
				return total, err
			}
			b.deleteKeys(dead)
		}
	}
	return total, nil
}

// gcLoop runs Badger's value-log garbage collection on a ticker.
func (b *Badger) gcLoop() {
	defer b.bg.Done()
	if b.opts.GCInterval < 0 {
		return
	}
	t := time.NewTicker(b.opts.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-b.quit:
			return
		case <-t.C:
			for i := 0; i < 16; i++ { // each call rewrites at most one file
				if err := b.db.RunValueLogGC(0.5); err != nil {
					break
				}
			}
		}
	}
}
