package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/dgraph-io/badger/v4"
)

// backupMagic starts every backup, so that a restore refuses any other
// file before it writes anything.
const backupMagic = "jim-badger-backup 1\n"

// backupTrailer ends a backup: its magic, the length and the CRC-32C of
// Badger's stream before it. Badger's stream is a run of length-prefixed
// blocks, so one cut at a block boundary would load as a smaller, valid
// backup; the trailer tells it from a whole one.
const (
	trailerMagic = "jimEND01"
	trailerLen   = len(trailerMagic) + 8 + 4
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Backup writes a full backup of the store to w while it keeps running: a
// consistent snapshot of every key (messages, offline queues, memberships,
// de-duplication records, counters), in Badger's backup format between a
// header line and a trailer. It holds everything committed when it starts,
// which includes every message acknowledged by then. RestoreBadger reads
// it back.
func (b *Badger) Backup(w io.Writer) error {
	// Close waits for a backup in progress (bg) and ends it (quit): an
	// iteration of a database closed under it would panic.
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return ErrClosed
	}
	b.bg.Add(1)
	b.closeMu.RUnlock()
	defer b.bg.Done()
	w = &quitWriter{w: w, quit: b.quit}
	if _, err := io.WriteString(w, backupMagic); err != nil {
		return err
	}
	cw := &crcWriter{w: w}
	if _, err := b.db.Backup(cw, 0); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	t := append([]byte(trailerMagic), make([]byte, 12)...)
	binary.BigEndian.PutUint64(t[len(trailerMagic):], uint64(cw.n))
	binary.BigEndian.PutUint32(t[len(trailerMagic)+8:], cw.crc)
	_, err := w.Write(t)
	return err
}

// quitWriter fails every write once quit is closed, which ends Badger's
// backup stream early when the store is closing.
type quitWriter struct {
	w    io.Writer
	quit chan struct{}
}

func (q *quitWriter) Write(p []byte) (int, error) {
	select {
	case <-q.quit:
		return 0, ErrClosed
	default:
	}
	return q.w.Write(p)
}

type crcWriter struct {
	w   io.Writer
	n   int64
	crc uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.crc = crc32.Update(c.crc, crcTable, p[:n])
	return n, err
}

// trailerReader passes on all but the last trailerLen bytes of r, counting
// and checksumming them; at the end check compares them with the trailer.
type trailerReader struct {
	r   io.Reader
	buf []byte // read from r and not yet passed on: buf[off:]
	off int
	n   int64
	crc uint32
	eof bool
}

func (t *trailerReader) Read(p []byte) (int, error) {
	for !t.eof && len(t.buf)-t.off <= trailerLen {
		if t.buf == nil {
			t.buf = make([]byte, 0, 256<<10)
		}
		// Move what is held back to the front, then fill the rest.
		t.buf = append(t.buf[:0], t.buf[t.off:]...)
		t.off = 0
		k, err := t.r.Read(t.buf[len(t.buf):cap(t.buf)])
		t.buf = t.buf[:len(t.buf)+k]
		if err == io.EOF {
			t.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	avail := len(t.buf) - t.off - trailerLen
	if avail <= 0 {
		return 0, io.EOF
	}
	k := copy(p, t.buf[t.off:t.off+avail])
	t.n += int64(k)
	t.crc = crc32.Update(t.crc, crcTable, p[:k])
	t.off += k
	return k, nil
}

func (t *trailerReader) check() error {
	if _, err := io.Copy(io.Discard, t); err != nil {
		return err
	}
	tr := t.buf[t.off:]
	if len(tr) != trailerLen || string(tr[:len(trailerMagic)]) != trailerMagic {
		return errors.New("storage: restore: the backup is incomplete (no trailer)")
	}
	n, crc := binary.BigEndian.Uint64(tr[len(trailerMagic):]), binary.BigEndian.Uint32(tr[len(trailerMagic)+8:])
	if int64(n) != t.n || crc != t.crc {
		return fmt.Errorf("storage: restore: the backup is damaged (%d bytes, checksum %08x; its trailer says %d, %08x)", t.n, t.crc, n, crc)
	}
	return nil
}

// RestoreBadger fills dir, which must be missing or empty, from a backup
// made by Backup, and marks it a data directory that OpenBadger opens. The
// marker is written last: a restore that fails part way leaves a directory
// that OpenBadger refuses (not empty, no marker) rather than one that opens
// with part of the data.
func RestoreBadger(dir string, r io.Reader, opts BadgerOptions) (err error) {
	opts.defaults()
	fresh, _, err := checkFormat(dir)
	if err != nil {
		return err
	}
	if !fresh {
		return fmt.Errorf("storage: restore: %s already holds a data directory; restore into a new one", dir)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	head := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, head); err != nil || string(head) != backupMagic {
		return errors.New("storage: restore: not a jim backup (its first line is not " + fmt.Sprintf("%q", backupMagic) + ")")
	}
	db, err := badger.Open(badgerOptions(dir, &opts).WithSyncWrites(false))
	if err != nil {
		return fmt.Errorf("storage: restore: opening %s: %w", dir, err)
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("storage: restore: closing %s: %w", dir, cerr)
		}
		if err == nil {
			err = writeFormatFile(dir)
		}
	}()
	tr := &trailerReader{r: br}
	if err := db.Load(tr, 256); err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	if err := tr.check(); err != nil {
		return err
	}
	// A backup of a newer format than this build reads would be refused
	// at open; say so now, before the directory is marked.
	err = db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(keyVersion)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // an empty store
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != 4 || int(v[3]) > FormatVersion || v[0]|v[1]|v[2] != 0 {
				return fmt.Errorf("storage: restore: the backup holds format version %x; this jimd reads up to %d", v, FormatVersion)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	// Badger's Close flushes the memtable to a synced table; the marker
	// follows in the deferred function.
	return nil
}
