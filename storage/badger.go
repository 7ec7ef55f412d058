package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// FormatVersion is the on-disk format of the Badger store. It is written to
// FormatFile in the data directory and to the "v" key. A directory of an
// older version this build still reads (from minFormatVersion) is upgraded
// at open, before anything new is written; any other is refused at open
// without being touched.
//
// Version 2 stores a message's id as its number (msgFormatNum); the
// messages of version 1 keep their text ids and are read as before. A build
// that reads version 1 only refuses an upgraded directory with a clear error
// instead of failing on its new messages.
const FormatVersion = 2

// minFormatVersion is the oldest format this build opens (and upgrades).
const minFormatVersion = 1

// FormatFile is the name of the format marker in the data directory.
const FormatFile = "JIM_FORMAT"

const formatMagic = "jim-badger"

// BadgerOptions tune OpenBadger. The zero value is a working setup.
type BadgerOptions struct {
	// RetentionAge deletes messages whose CreateTime is older than this;
	// 0 keeps them forever.
	RetentionAge time.Duration
	// RetentionMaxMessages keeps at most this many messages per
	// conversation, dropping the oldest; 0 keeps all.
	RetentionMaxMessages int
	// RetentionInterval is how often retention runs (default 1 minute).
	RetentionInterval time.Duration
	// OfflineTTL drops an offline reference this long after it was
	// queued, unread (a Badger TTL: no pass over the data). 0 means
	// RetentionAge, as a reference is useless once its message is gone;
	// with that 0 too, references are kept until read or capped.
	OfflineTTL time.Duration
	// OfflineCap is the number of offline references kept per user
	// (default 10000, as in the JetStream store); older ones are dropped
	// first, by a background pass at most every OfflineCapInterval, and
	// only after references were queued. Negative: no cap.
	OfflineCap int
	// OfflineCapInterval is how often the cap pass may run (default 10
	// minutes): it reads every offline key.
	OfflineCapInterval time.Duration
	// GCInterval is how often the value log is garbage-collected (default
	// 5 minutes; negative disables).
	GCInterval time.Duration
	// DedupTTL is how long a sender's client message id is remembered for
	// de-duplication (default 24 hours).
	DedupTTL time.Duration
	// DedupIndexMax bounds the in-memory index of de-duplication records
	// (default 1<<20 entries, 30–50 bytes each); older records are
	// moved to per-message keys (see badger_dedupidx.go).
	DedupIndexMax int
	// MaxBatch caps the requests of one group commit (default 4096).
	MaxBatch int
	// QueueLen is the length of the write queue (default 16384); a full
	// queue makes writers wait.
	QueueLen int
	// Logger receives Badger's warnings and errors (default slog.Default()).
	Logger *slog.Logger
	// MemTableSize and BlockCacheSize pass through to Badger (0 = its
	// defaults: 64 MiB and 256 MiB).
	MemTableSize   int64
	BlockCacheSize int64
	// CloseTimeout bounds how long Close waits for Badger to flush and
	// close (default 1 minute); see Close.
	CloseTimeout time.Duration
}

func (o *BadgerOptions) defaults() {
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = time.Minute
	}
	if o.RetentionInterval <= 0 {
		o.RetentionInterval = time.Minute
	}
	if o.OfflineTTL <= 0 {
		o.OfflineTTL = max(o.RetentionAge, 0)
	}
	if o.OfflineCap == 0 {
		o.OfflineCap = 10000
	}
	if o.OfflineCapInterval <= 0 {
		o.OfflineCapInterval = 10 * time.Minute
	}
	if o.GCInterval == 0 {
		o.GCInterval = 5 * time.Minute
	}
	if o.DedupTTL <= 0 {
		o.DedupTTL = 24 * time.Hour
	}
	if o.DedupIndexMax <= 0 {
		o.DedupIndexMax = 1 << 20
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 16384
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// memberCacheMax bounds the group member cache, in members of all cached
// groups together (a string header and the id each: about 100 MiB at
// 24-byte ids). A deployment with millions of groups would otherwise keep
// every group ever read in memory. A group loaded past the bound evicts
// others, never itself.
var memberCacheMax = 1 << 22

// Caches of the write path, both bounded.
const (
	seqCacheMax = 1 << 20 // conversations whose last seq is cached
	// Recent client ids with their acks (at least 2 × MaxBatch, so that a
	// resend within one batch is always among them).
	dedupCacheMax = 1 << 15
)

// Badger is the durable Store on an embedded Badger database.
//
// Every mutation goes through one writer goroutine: it takes everything
// queued (up to MaxBatch), assigns ids and sequence numbers and prepares the
// batch's keys and values; a committer goroutine commits prepared batches in
// order, one transaction each, which Badger syncs before the commit returns
// (SyncWrites), and hands them to the syncer, which wakes the waiting
// callers (after a DB.Sync when a value went to the value log). While
// batch N commits and syncs, N+1 is prepared. A batch is committed only
// after the one before it committed. An error in a commit or a sync fails every
// waiter of the batch and puts the store in a failed state (every later
// write fails too, nothing later is committed): after a failed fsync
// nothing can be promised about what is on disk.
type Badger struct {
	db   *badger.DB
	opts BadgerOptions
	log  *slog.Logger
	dir  string

	closeMu  sync.RWMutex
	closed   bool
	reqs     chan *wreq
	prepared chan *wbatch
	commits  chan *wbatch
	handled  chan struct{} // a token after each batch the committer is done with
	wdone    chan struct{}
	sdone    chan struct{}
	quit     chan struct{}
	// offQueued is set by the writer when it queues offline references,
	// and cleared by the cap pass that then looks at them.
	offQueued atomic.Bool
	bg        sync.WaitGroup

	broken     atomic.Pointer[error]
	commitGen  atomic.Uint64 // last batch committed
	handledGen atomic.Uint64 // last batch the committer is done with

	idPrefix [8]byte

	// Writer-owned state.
	nextGen      uint64  // last batch prepared
	pend         *wbatch // prepared, not yet taken by the committer (see writer)
	gseq         uint64
	seqs         map[string]uint64
	seqsCleared  uint64 // last batch prepared before seqs was cleared
	recent       *recentDedup
	dedupEvicted uint64 // highest batch whose spilled dedup records left didx
	didx         *dedupIndex

	dedupF *dedupFilter // every stored dedup record, probabilistically
	// joinedF holds every user with a membership record, probabilistically
	// (see badger_joined.go).
	joinedF *dedupFilter

	// Group member cache: gid -> members, copy-on-write slices; memberN
	// counts the members of all cached groups (bounded by
	// memberCacheMax).
	gmu     sync.RWMutex
	members map[string][]string
	memberN int

	vthresh int64 // Badger's ValueThreshold: longer values go to the value log

	// Fault injection for tests.
	commitFn func(*badger.Txn) error
	syncFn   func() error
}

type wkind uint8

const (
	wAppend wkind = iota
	wDup          // pre-checked duplicate: waits for the next sync only
	wQueue        // QueueOffline
	wAckOff       // AckOffline
	wJoin
	wLeave
)

// wreq is one write request and, once done is signalled, its result.
type wreq struct {
	kind  wkind
	msg   *Message
	users []string   // wAppend, wQueue: offline users; wAckOff: the user
	msgs  []*Message // wQueue, wAckOff
	gid   string
	uid   string
	gen0  uint64 // commit generation seen before the caller's dedup pre-check
	dk    []byte // wAppend with a client id: its dedup key
	dh    uint64 // and the key's dedupFilter hash
	ack   Ack
	err   error
	done  chan struct{}
	cb    func(Ack, error) // AppendAsync's continuation, called instead of closing done
	orig  *Message         // AppendAsync's caller's message, to set ID and Seq on
}

// finish reports r's outcome to whoever waits for it.
func (r *wreq) finish() {
	if r.cb == nil {
		close(r.done)
		return
	}
	if r.err == nil && !r.ack.Duplicate {
		r.orig.ID, r.orig.Seq = r.ack.ID, r.ack.Seq
	}
	r.cb(r.ack, r.err)
}

// OpenBadger opens (creating if needed) the store in dir.
func OpenBadger(dir string, opts BadgerOptions) (*Badger, error) {
	opts.defaults()
	fresh, version, err := checkFormat(dir)
	if err != nil {
		return nil, err
	}
	// SyncWrites: Badger syncs its memtable log at the end of each commit,
	// on its own write goroutine, and the commit returns after it. That is
	// the same group commit (one transaction, so one sync, per batch) as a
	// DB.Sync on a goroutine of ours after the commit, but 1,000 writers
	// get 103k messages/s instead of 80k (docs/BENCHMARKS.md, Storage):
	// the log is a shared memory map, and a sync running beside the next
	// commit made that commit's writes into the map wait for the sync's
	// I/O (commits took twice as long while syncs ran).
	bo := badgerOptions(dir, &opts)
	if fresh {
		// The marker goes first: a crash right after leaves a directory
		// that opens as an empty store of this version.
		if err := writeFormatFile(dir); err != nil {
			return nil, err
		}
	}
	db, err := badger.Open(bo)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("storage: data directory %s is in use by another process: %w", dir, err)
		}
		return nil, fmt.Errorf("storage: opening data directory %s: %w", dir, err)
	}
	b := &Badger{
		db:       db,
		opts:     opts,
		log:      opts.Logger,
		dir:      dir,
		reqs:     make(chan *wreq, opts.QueueLen),
		prepared: make(chan *wbatch), // unbuffered: the writer merges while it waits
		commits:  make(chan *wbatch, 4),
		handled:  make(chan struct{}, 1),
		wdone:    make(chan struct{}),
		sdone:    make(chan struct{}),
		quit:     make(chan struct{}),
		seqs:     make(map[string]uint64),
		recent:   newRecentDedup(max(dedupCacheMax, 2*opts.MaxBatch)),
		members:  make(map[string][]string),
		dedupF:   newDedupFilter(opts.DedupTTL),
		joinedF:  newDedupFilter(0),
	}
	b.commitFn = func(t *badger.Txn) error { return t.Commit() }
	b.vthresh = bo.ValueThreshold
	b.syncFn = db.Sync
	if err := b.loadMeta(); err != nil {
		db.Close()
		return nil, err
	}
	if !fresh && version < FormatVersion {
		// loadMeta has written the new version into the database; the
		// marker follows, so an older build refuses the directory from
		// now on (a crash in between leaves a marker this build accepts
		// and rewrites).
		if err := writeFormatFile(dir); err != nil {
			db.Close()
			return nil, err
		}
		b.log.Info("storage: data directory upgraded", "dir", dir, "from", version, "to", FormatVersion)
	}
	b.didx = newDedupIndex()
	if err := b.loadDedupIndex(); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: loading de-duplication records: %w", err)
	}
	go b.writer()
	go b.committer()
	go b.syncer()
	b.bg.Add(4)
	go b.rebuildDedupFilter()
	go b.rebuildJoinedFilter()
	go b.retentionLoop()
	go b.gcLoop()
	return b, nil
}

// badgerOptions are the Badger settings of a store in dir (see OpenBadger
// for why SyncWrites).
func badgerOptions(dir string, opts *BadgerOptions) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithDetectConflicts(false).
		WithLogger(badgerLogger{opts.Logger}).
		WithMetricsEnabled(false).
		WithNumCompactors(2)
	if opts.MemTableSize > 0 {
		bo = bo.WithMemTableSize(opts.MemTableSize)
	}
	if opts.BlockCacheSize > 0 {
		bo = bo.WithBlockCacheSize(opts.BlockCacheSize)
	}
	return bo
}

// checkFormat reads dir's format marker. It reports whether dir is a new
// (missing or empty) directory, and otherwise its format version; a
// directory of a format this build does not read, or a non-empty one without
// the marker, is an error and is left as it is.
func checkFormat(dir string) (fresh bool, version int, err error) {
	data, err := os.ReadFile(filepath.Join(dir, FormatFile))
	if err == nil {
		f := strings.Fields(string(data))
		if len(f) != 2 || f[0] != formatMagic {
			return false, 0, fmt.Errorf("storage: %s: unrecognised format marker %q", filepath.Join(dir, FormatFile), strings.TrimSpace(string(data)))
		}
		v, err := strconv.Atoi(f[1])
		if err != nil || v < minFormatVersion || v > FormatVersion {
			return false, 0, fmt.Errorf("storage: data directory %s has format version %s; this jimd reads versions %d to %d", dir, f[1], minFormatVersion, FormatVersion)
		}
		return false, v, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return false, 0, fmt.Errorf("storage: reading %s: %w", filepath.Join(dir, FormatFile), err)
	}
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, 0, fmt.Errorf("storage: creating data directory: %w", err)
		}
		return true, FormatVersion, nil
	case err != nil:
		return false, 0, fmt.Errorf("storage: reading data directory: %w", err)
	case len(ents) > 0:
		return false, 0, fmt.Errorf("storage: %s is not empty and is not a jim data directory (no %s)", dir, FormatFile)
	}
	return true, FormatVersion, nil
}

func writeFormatFile(dir string) error {
	tmp := filepath.Join(dir, FormatFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("storage: writing format marker: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %d\n", formatMagic, FormatVersion)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, FormatFile))
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("storage: writing format marker: %w", err)
	}
	return nil
}

// loadMeta checks the version key and loads the id prefix and the global
// message counter, initialising them in a new store.
func (b *Badger) loadMeta() error {
	var haveVersion, havePrefix bool
	err := b.db.View(func(txn *badger.Txn) error {
		if it, err := txn.Get(keyVersion); err == nil {
			v, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 4 || binary.BigEndian.Uint32(v) < minFormatVersion || binary.BigEndian.Uint32(v) > FormatVersion {
				return fmt.Errorf("storage: data directory %s: stored format version %x; this jimd reads versions %d to %d", b.dir, v, minFormatVersion, FormatVersion)
			}
			// An older version is rewritten below: the upgrade.
			haveVersion = binary.BigEndian.Uint32(v) == FormatVersion
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if it, err := txn.Get(keyIDPref); err == nil {
			v, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 8 {
				return errCorrupt
			}
			copy(b.idPrefix[:], v)
			havePrefix = true
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if it, err := txn.Get(keyGSeq); err == nil {
			v, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 8 {
				return errCorrupt
			}
			b.gseq = binary.BigEndian.Uint64(v)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: reading store metadata: %w", err)
	}
	if haveVersion && havePrefix {
		return nil
	}
	if !havePrefix {
		if _, err := rand.Read(b.idPrefix[:]); err != nil {
			return err
		}
	}
	err = b.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(keyVersion, binary.BigEndian.AppendUint32(nil, FormatVersion)); err != nil {
			return err
		}
		return txn.Set(keyIDPref, b.idPrefix[:])
	})
	if err == nil {
		err = b.db.Sync()
	}
	if err != nil {
		return fmt.Errorf("storage: initialising store: %w", err)
	}
	return nil
}

// submit queues r and waits for its result.
func (b *Badger) submit(ctx context.Context, r *wreq) error {
	r.done = make(chan struct{})
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		b.closeMu.RUnlock()
		return ctx.Err()
	}
	b.closeMu.RUnlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		// The write may still complete; the caller only learns it did not
		// hear back, which is never a false success.
		return ctx.Err()
	}
}

// Err reports the failure that made the store refuse all writes until it
// is restarted (a failed commit or sync), or nil while it works.
func (b *Badger) Err() error { return b.failed() }

func (b *Badger) failed() error {
	if p := b.broken.Load(); p != nil {
		return *p
	}
	return nil
}

func (b *Badger) fail(err error) error {
	err = fmt.Errorf("storage: write failed, store is read-only until restarted: %w", err)
	b.broken.CompareAndSwap(nil, &err)
	b.log.Error("storage: write failed", "err", err)
	return *b.broken.Load()
}

// appendReq validates msg and builds its write request, with the dedup
// pre-check done on the caller's goroutine.
func (b *Badger) appendReq(msg *Message, offline []string) (*wreq, error) {
	if err := partsOK(msg.Conv, msg.From, msg.ClientID); err != nil {
		return nil, err
	}
	if err := partsOK(offline...); err != nil {
		return nil, err
	}
	r := &wreq{kind: wAppend, msg: msg.Clone(), users: offline}
	if msg.ClientID != "" {
		// The per-message d/ records (spilled or from older versions) are
		// looked up here, in the caller's goroutine, to keep those reads
		// off the single writer; dedupFilter makes the common case (a new
		// client id) a memory lookup. The writer checks the batched
		// records (recent, didx) and, if a spill left didx since gen0, the
		// d/ record again.
		r.gen0 = b.commitGen.Load()
		r.dk = dedupKey(msg.From, msg.ClientID)
		r.dh = b.dedupF.hash(r.dk)
		a, ok, err := b.lookupDedup(r.dk, r.dh)
		if err != nil {
			return nil, err
		}
		if ok {
			r.kind, r.ack = wDup, a
		}
	}
	return r, nil
}

// AppendAsync implements Store: done is called by the syncer once the batch
// holding msg is synced, in batch order.
func (b *Badger) AppendAsync(ctx context.Context, msg *Message, offline []string, done func(Ack, error)) {
	r, err := b.appendReq(msg, offline)
	if err != nil {
		done(Ack{}, err)
		return
	}
	r.cb, r.orig = done, msg
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		done(Ack{}, ErrClosed)
		return
	}
	select {
	case b.reqs <- r:
		b.closeMu.RUnlock()
	case <-ctx.Done():
		b.closeMu.RUnlock()
		done(Ack{}, ctx.Err())
	}
}

// Append implements Store.
func (b *Badger) Append(ctx context.Context, msg *Message, offline []string) (Ack, error) {
	r, err := b.appendReq(msg, offline)
	if err != nil {
		return Ack{}, err
	}
	if err := b.submit(ctx, r); err != nil {
		return Ack{}, err
	}
	if !r.ack.Duplicate {
		msg.ID, msg.Seq = r.ack.ID, r.ack.Seq
	}
	return r.ack, nil
}

// lookupDedup reads the dedup record with key dk (dedupFilter hash dh),
// unless the filter knows there is none.
func (b *Badger) lookupDedup(dk []byte, dh uint64) (Ack, bool, error) {
	if b.dedupF.ready.Load() && !b.dedupF.mayContain(dh) {
		return Ack{}, false, nil
	}
	var a Ack
	var found bool
	err := b.db.View(func(txn *badger.Txn) error {
		var err error
		a, found, err = getDedup(txn, dk)
		return err
	})
	if errors.Is(err, badger.ErrDBClosed) {
		err = ErrClosed
	}
	return a, found, err
}

func getDedup(txn *badger.Txn, dk []byte) (Ack, bool, error) {
	it, err := txn.Get(dk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Ack{}, false, nil
	}
	if err != nil {
		return Ack{}, false, err
	}
	var a Ack
	err = it.Value(func(v []byte) error {
		var err error
		a, err = decodeAck(v)
		return err
	})
	a.Duplicate = true
	return a, err == nil, err
}

// QueueOffline adds already stored msgs to user's offline queue: for a
// recipient whose connections all went away between the online check and
// the delivery. Messages already queued for user are not queued twice.
func (b *Badger) QueueOffline(ctx context.Context, user string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := partsOK(user); err != nil {
		return err
	}
	return b.submit(ctx, &wreq{kind: wQueue, users: []string{user}, msgs: cloneAll(msgs)})
}

// AckOffline implements Store.
func (b *Badger) AckOffline(ctx context.Context, user string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	return b.submit(ctx, &wreq{kind: wAckOff, users: []string{user}, msgs: msgs})
}

// JoinGroup implements Store.
func (b *Badger) JoinGroup(ctx context.Context, gid, uid string) error {
	if err := partsOK(gid, uid); err != nil {
		return err
	}
	b.markJoined(uid)
	return b.submit(ctx, &wreq{kind: wJoin, gid: gid, uid: uid})
}

// LeaveGroup implements Store.
func (b *Badger) LeaveGroup(ctx context.Context, gid, uid string) error {
	if err := partsOK(gid, uid); err != nil {
		return err
	}
	return b.submit(ctx, &wreq{kind: wLeave, gid: gid, uid: uid})
}

// Close implements Store. It waits for queued writes to be committed and
// synced, stops the background work and closes the database.
func (b *Badger) Close() error {
	b.closeMu.Lock()
	if b.closed {
		b.closeMu.Unlock()
		return nil
	}
	b.closed = true
	close(b.reqs)
	b.closeMu.Unlock()
	<-b.wdone
	<-b.sdone
	close(b.quit)
	b.bg.Wait()
	// Badger retries a memtable flush that fails for ever (its directory
	// deleted, the disk gone), and its Close waits for that flush. Every
	// acknowledged message is in the synced log already and is replayed
	// at the next open, so giving up on the flush loses nothing: Close
	// returns, and the stuck goroutines stay behind in a process that is
	// about to exit.
	done := make(chan error, 1)
	go func() { done <- b.db.Close() }()
	t := time.NewTimer(b.opts.CloseTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("storage: badger did not close within %v (a memtable flush keeps failing?); what was acknowledged is in its log", b.opts.CloseTimeout)
	}
}

// writer is the single write point: it takes everything queued (up to
// MaxBatch), assigns ids and seqs and prepares the batch's keys and values,
// then offers the batch to the committer. Until the committer takes it, the
// writer prepares whatever else arrives and merges it into the same batch.
//
// Why merge: with 1,000 writers each waiting for its ack, the callers of a
// committed batch come back over a millisecond or so, and the first few of
// them used to make a batch of their own, which cost a whole commit and sync
// for a handful of messages. Merging cut the commits of a 1,000,000-message
// run by a third and raised the rate of 300,000-message runs by 14%
// (docs/BENCHMARKS.md, Storage).
func (b *Badger) writer() {
	defer close(b.wdone)
	defer close(b.prepared)
	for {
		r, ok := <-b.reqs
		if !ok {
			return
		}
		p := b.prepare(b.take(r, b.opts.MaxBatch))
		for p != nil {
			if len(p.reqs) >= b.opts.MaxBatch {
				b.prepared <- p
				break
			}
			select {
			case b.prepared <- p:
				p = nil
			case r, ok := <-b.reqs:
				if !ok {
					b.prepared <- p
					return
				}
				batch := b.take(r, b.opts.MaxBatch-len(p.reqs))
				// A read in prepare that needs p committed first sends
				// it and clears b.pend (see readAfter in prepare).
				b.pend = p
				q := b.prepare(batch)
				if b.pend != nil {
					b.pend = nil
					q = p.merge(q)
				}
				p = q
			}
		}
	}
}

// take returns r and up to max-1 more requests already queued.
func (b *Badger) take(r *wreq, max int) []*wreq {
	batch := make([]*wreq, 1, min(max, 64))
	batch[0] = r
	for len(batch) < max {
		select {
		case r, ok := <-b.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// merge appends q, prepared right after p, to p and returns p, which then
// stands for every batch generation from p.first to q.gen: the committer
// marks them all committed at once.
func (p *wbatch) merge(q *wbatch) *wbatch {
	p.reqs = append(p.reqs, q.reqs...)
	p.ops = append(p.ops, q.ops...)
	p.cache = append(p.cache, q.cache...)
	p.gen, p.gseq = q.gen, q.gseq
	if p.err == nil {
		p.err = q.err
	}
	return p
}

// committer commits prepared batches in order, one at a time, and hands
// them to the syncer. A batch is committed only after every earlier one
// was; after a failed commit nothing more is committed.
func (b *Badger) committer() {
	defer close(b.commits)
	for p := range b.prepared {
		b.commitBatch(p)
		b.handledGen.Store(p.gen)
		select {
		case b.handled <- struct{}{}:
		default:
		}
		b.commits <- p
	}
}

// waitHandled waits until the committer is done with every batch up to
// generation gen, so that a read sees everything the writer assigned.
func (b *Badger) waitHandled(gen uint64) {
	for b.handledGen.Load() < gen {
		<-b.handled
	}
}

// syncer wakes the waiters of committed batches, in order. A commit
// returns once Badger has synced its memtable log (SyncWrites), which holds
// every value shorter than ValueThreshold; a batch with a longer value also
// waits for a DB.Sync here, because Badger only logs a failed sync of its
// value log, and the error must reach the sender. After a failure nothing
// is acknowledged.
func (b *Badger) syncer() {
	defer close(b.sdone)
	var pending []*wbatch
	for p := range b.commits {
		pending = append(pending[:0], p)
	more:
		for {
			select {
			case np, ok := <-b.commits:
				if !ok {
					break more
				}
				pending = append(pending, np)
			default:
				break more
			}
		}
		serr := b.failed()
		if serr == nil && slices.ContainsFunc(pending, func(p *wbatch) bool { return p.vlog }) {
			if err := b.syncFn(); err != nil {
				serr = b.fail(fmt.Errorf("sync: %w", err))
			}
		}
		for _, p := range pending {
			for _, r := range p.reqs {
				if r.err == nil && serr != nil {
					r.err = serr
				}
				r.finish()
			}
		}
	}
}

// wop is one prepared write: a set (with an expiry, 0 for none) or a
// delete.
type wop struct {
	key, val []byte
	exp      uint64
	del      bool
}

// wbatch is a batch as the writer prepared it for the committer.
type wbatch struct {
	gen   uint64 // its commit generation (the last one, once merged)
	first uint64 // the first generation merged into it
	reqs  []*wreq
	ops   []wop
	gseq  uint64 // the global message counter after the batch
	cache []cacheOp
	err   error // set when nothing is to be committed
	vlog  bool  // a value went to Badger's value log
}

// txnWriter commits one batch, splitting it into several transactions when
// it outgrows one; all of them commit before the batch's sync, so no waiter
// is acked for a partly written batch. A message's own key comes before its
// offline references and its dedup record, so a crash between two parts
// can cause a later retry to be stored again, never an ack without the
// message. A conversation's last seq is its last message key, so the
// message and its seq are one entry; the global message counter (the
// batch's final value, never less than any id in the transaction) is
// written with every transaction.
type txnWriter struct {
	b    *Badger
	txn  *badger.Txn
	gseq uint64
	err  error
}

func (w *txnWriter) do(op *wop) {
	if w.err != nil {
		return
	}
	try := func() error {
		if op.del {
			return w.txn.Delete(op.key)
		}
		e := badger.NewEntry(op.key, op.val)
		e.ExpiresAt = op.exp
		return w.txn.SetEntry(e)
	}
	err := try()
	if errors.Is(err, badger.ErrTxnTooBig) {
		if w.commit(); w.err != nil {
			return
		}
		err = try()
	}
	if err != nil {
		w.err = err
	}
}

// commit commits the current transaction (with the counter) and starts a
// new one.
func (w *txnWriter) commit() {
	if w.err != nil {
		return
	}
	if err := w.txn.Set(keyGSeq, binary.BigEndian.AppendUint64(nil, w.gseq)); err != nil {
		w.err = err
		return
	}
	if err := w.b.commitFn(w.txn); err != nil {
		w.err = err
		return
	}
	w.txn = w.b.db.NewTransaction(true)
}

type cacheOp struct {
	join     bool
	gid, uid string
}

// commitBatch commits p; on failure every request of p gets the error.
func (b *Badger) commitBatch(p *wbatch) {
	err := p.err
	if err == nil {
		err = b.failed()
	}
	if err == nil {
		// Even a batch without writes commits (the counter): a batch of
		// duplicates still waits for a sync, which must not run on a
		// database that can no longer commit.
		w := &txnWriter{b: b, txn: b.db.NewTransaction(true), gseq: p.gseq}
		for i := range p.ops {
			w.do(&p.ops[i])
			p.vlog = p.vlog || int64(len(p.ops[i].val)) >= b.vthresh
		}
		w.commit()
		w.txn.Discard()
		if w.err != nil {
			err = b.fail(fmt.Errorf("commit: %w", w.err))
		}
	}
	if err != nil {
		for _, r := range p.reqs {
			if r.err == nil {
				r.err = err
			}
		}
		return
	}
	b.commitGen.Store(p.gen)
	b.applyCache(p.cache)
}

// prepare assigns ids and seqs to batch and builds its writes, setting
// each request's ack or error. Reads of the database (a conversation's
// last seq, an old dedup record) first wait for the committer to catch up.
func (b *Badger) prepare(batch []*wreq) *wbatch {
	b.nextGen++
	p := &wbatch{reqs: batch, gen: b.nextGen, first: b.nextGen}
	if err := b.failed(); err != nil {
		p.err = err
		return p
	}
	// Lazy reads of counters and old dedup entries. A dedup read waits
	// until every earlier batch is committed. A conversation's last seq
	// can only be in an uncommitted batch if the seq cache was cleared
	// since that batch was prepared, so its read waits for less.
	var rtxn *badger.Txn
	var rgen uint64 // batches the read transaction sees
	readAfter := func(gen uint64) *badger.Txn {
		if rtxn == nil || rgen < gen {
			if b.pend != nil && b.pend.first <= gen {
				// The batch waiting for the committer holds a
				// generation this read must see: it goes first.
				b.prepared <- b.pend
				b.pend = nil
			}
			b.waitHandled(gen)
			if rtxn != nil {
				rtxn.Discard()
			}
			rtxn, rgen = b.db.NewTransaction(false), gen
		}
		return rtxn
	}
	read := func() *badger.Txn { return readAfter(p.gen - 1) }
	readSeq := func() *badger.Txn { return readAfter(b.seqsCleared) }
	now := time.Now()
	dedupExp := uint64(now.Add(b.opts.DedupTTL).Unix())
	var offExp uint64
	if b.opts.OfflineTTL > 0 {
		offExp = uint64(now.Add(b.opts.OfflineTTL).Unix())
	}
	// The batch's dedup records: one entry, and one index record.
	var drec dedupRec
	var dval []byte
	var dgseqs []uint64
	ops := make([]wop, 0, len(batch)+2)
	// Message keys and values are cut from one buffer per batch: they
	// are only read (by the commit) after this.
	arena := make([]byte, 0, 256*len(batch))
	cut := func(start int) []byte { return arena[start:len(arena):len(arena)] }
	for _, r := range batch {
		switch r.kind {
		case wDup:
		case wAppend:
			m := r.msg
			dk := r.dk
			if dk != nil {
				if a, ok := b.recent.get(r.dh, dk); ok {
					r.ack = a
					r.ack.Duplicate = true
					continue
				}
				if a, ok, err := b.indexedDedup(read, r.dh, dk); err != nil || ok {
					r.ack, r.err = a, err
					continue
				}
				if r.gen0 < b.dedupEvicted {
					a, ok, err := getDedup(read(), dk)
					if err != nil {
						r.err = err
						continue
					}
					if ok {
						r.ack = a
						continue
					}
				}
			}
			seq, err := b.lastSeq(readSeq, m.Conv)
			if err != nil {
				r.err = err
				continue
			}
			seq++
			b.seqs[m.Conv] = seq
			b.gseq++
			m.ID, m.Seq = makeID(b.idPrefix, b.gseq), seq
			k0 := len(arena)
			arena = binary.BigEndian.AppendUint64(appendPart(append(arena, pfxMsg...), m.Conv), seq)
			key := cut(k0)
			v0 := len(arena)
			arena = encodeMsgNum(arena, m, b.gseq)
			ops = append(ops, wop{key: key, val: cut(v0)})
			if len(r.users) > 0 {
				ref := encodeOffRef(nil, m)
				for _, u := range r.users {
					ops = append(ops, wop{key: offKey(u, b.gseq), val: ref, exp: offExp})
				}
				b.offQueued.Store(true)
			}
			r.ack = Ack{ID: m.ID, Seq: seq}
			if dk != nil {
				if dval == nil {
					drec.gseq0 = b.gseq
				}
				dval = appendDedupItem(dval, drec.gseq0, dedupItem{m.From, m.ClientID, seq, b.gseq})
				drec.hs = append(drec.hs, r.dh)
				dgseqs = append(dgseqs, b.gseq)
				b.recent.put(r.dh, dk, r.ack)
			}
		case wQueue:
			for _, m := range r.msgs {
				g, ok := gseqOfID(b.idPrefix, m.ID)
				if !ok {
					continue
				}
				ops = append(ops, wop{key: offKey(r.users[0], g), val: encodeOffRef(nil, m), exp: offExp})
				b.offQueued.Store(true)
			}
		case wAckOff:
			for _, m := range r.msgs {
				if g, ok := gseqOfID(b.idPrefix, m.ID); ok {
					ops = append(ops, wop{key: offKey(r.users[0], g), del: true})
				}
			}
		case wJoin:
			ops = append(ops, wop{key: groupKey(r.gid, r.uid)}, wop{key: byUserKey(r.uid, r.gid)})
			p.cache = append(p.cache, cacheOp{true, r.gid, r.uid})
		case wLeave:
			ops = append(ops, wop{key: groupKey(r.gid, r.uid), del: true}, wop{key: byUserKey(r.uid, r.gid), del: true})
			p.cache = append(p.cache, cacheOp{false, r.gid, r.uid})
		}
	}
	if rtxn != nil {
		rtxn.Discard()
	}
	if dval != nil {
		// After the messages: a crash between two transactions of the
		// batch can lose the records, never keep a record without its
		// message.
		ops = append(ops, wop{key: dedupBatchKey(drec.gseq0), val: dval, exp: dedupExp})
		drec.end, drec.exp, drec.gen = b.gseq+1, dedupExp, p.gen
		b.didx.addRec(drec, dgseqs)
	}
	b.dedupF.prune(now)
	ops = b.dedupMaintain(p, now, ops)
	if len(b.seqs) > seqCacheMax {
		// Everything in it is assigned; reloaded on demand, after the
		// committer caught up.
		clear(b.seqs)
		b.seqsCleared = p.gen
	}
	p.ops, p.gseq = ops, b.gseq
	return p
}

// indexedDedup looks dk (hash dh) up in didx and confirms a hit in the
// database.
func (b *Badger) indexedDedup(read func() *badger.Txn, dh uint64, dk []byte) (Ack, bool, error) {
	g, more, ok := b.didx.find(dh)
	if !ok {
		return Ack{}, false, nil
	}
	for _, g := range append([]uint64{g}, more...) {
		a, ok, err := b.readDedupBatch(read(), g, dk)
		if err != nil || ok {
			return a, ok, err
		}
	}
	return Ack{}, false, nil
}

// lastSeq returns conv's last assigned seq, from the writer's cache or the
// database.
func (b *Badger) lastSeq(read func() *badger.Txn, conv string) (uint64, error) {
	if s, ok := b.seqs[conv]; ok {
		return s, nil
	}
	return storedLastSeq(read(), conv)
}

// storedLastSeq is conv's last seq in the database: the larger of its last
// message key and the counter retention leaves behind.
func storedLastSeq(txn *badger.Txn, conv string) (uint64, error) {
	var s uint64
	it, err := txn.Get(seqKey(conv))
	switch {
	case err == nil:
		err = it.Value(func(v []byte) error {
			if len(v) != 8 {
				return errCorrupt
			}
			s = binary.BigEndian.Uint64(v)
			return nil
		})
		if err != nil {
			return 0, err
		}
	case !errors.Is(err, badger.ErrKeyNotFound):
		return 0, err
	}
	pfx := prefix1(pfxMsg, conv)
	iter := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: pfx})
	defer iter.Close()
	iter.Seek(append(bytes.Clone(pfx), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))
	if iter.ValidForPrefix(pfx) {
		if k := iter.Item().Key(); len(k) == len(pfx)+8 {
			s = max(s, seqOf(k))
		}
	}
	return s, nil
}

func (b *Badger) applyCache(ops []cacheOp) {
	if len(ops) == 0 {
		return
	}
	b.gmu.Lock()
	defer b.gmu.Unlock()
	for _, op := range ops {
		cur, ok := b.members[op.gid]
		if !ok {
			continue // not cached: loaded from the database on first use
		}
		i := indexOf(cur, op.uid)
		switch {
		case op.join && i < 0:
			n := make([]string, len(cur), len(cur)+1)
			copy(n, cur)
			b.members[op.gid] = append(n, op.uid)
			b.memberN++
		case !op.join && i >= 0:
			n := make([]string, 0, len(cur)-1)
			n = append(n, cur[:i]...)
			b.members[op.gid] = append(n, cur[i+1:]...)
			b.memberN--
		}
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// badgerLogger sends Badger's log to slog; its chatty info lines go to
// debug.
type badgerLogger struct{ l *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.l.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}

var _ Store = (*Badger)(nil)
