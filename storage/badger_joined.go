package storage

import (
	"encoding/binary"

	"github.com/dgraph-io/badger/v4"
)

// The joined filter answers "is this user in no group?" without a database
// read. Every login asks the store for the user's groups (to rejoin them), and
// most users of a big deployment are in none; a Badger iterator for each of
// them cost CPU and, in a login storm, enough short-lived garbage to fragment
// the heap the connections live in. A Bloom filter of the users that have a
// membership record answers "none" for the others; a "maybe" (a member, a
// former member, or a false positive) reads the database as before, so the
// answer is never wrong.

// joinedKey is the filter key of uid: its byUser prefix.
func joinedKey(uid string) []byte { return prefix1(pfxByUser, uid) }

// markJoined records that uid has (or is about to have) a membership record.
// It runs before the record is written, so a reader never misses it.
func (b *Badger) markJoined(uid string) {
	b.joinedF.add(0, b.joinedF.hash(joinedKey(uid)))
}

// inNoGroup reports whether uid surely has no membership record.
func (b *Badger) inNoGroup(uid string) bool {
	return b.joinedF.ready.Load() && !b.joinedF.mayContain(b.joinedF.hash(joinedKey(uid)))
}

// rebuildJoinedFilter adds every user with a membership record to the filter
// and then marks it ready. It runs in the background at open; JoinGroup adds
// users meanwhile, so once the scan is done the filter covers everyone.
func (b *Badger) rebuildJoinedFilter() {
	defer b.bg.Done()
	pfx := []byte(pfxByUser)
	var hs []uint64
	var last []byte
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < len(pfx)+2 {
				continue
			}
			n := len(pfx) + 2 + int(binary.BigEndian.Uint16(k[len(pfx):]))
			if n > len(k) {
				continue
			}
			if string(k[:n]) == string(last) {
				continue // the same user's next group
			}
			last = append(last[:0], k[:n]...)
			hs = append(hs, b.joinedF.hash(k[:n]))
			if len(hs) == 256 {
				b.joinedF.add(0, hs...)
				hs = hs[:0]
				select {
				case <-b.quit:
					return badger.ErrDBClosed
				default:
				}
			}
		}
		return nil
	})
	b.joinedF.add(0, hs...)
	if err != nil {
		b.log.Warn("storage: membership filter not built; every login reads the database", "err", err)
		return
	}
	b.joinedF.ready.Store(true)
}
