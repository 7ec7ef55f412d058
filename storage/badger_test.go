package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func TestBadgerSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := s.Append(ctx, priv("a", "b", "one", "c1", 1), []string{"b"})
	s.Append(ctx, priv("b", "a", "two", "c2", 2), nil)
	g := &Message{Conv: GroupConv("g"), ChatType: ChatGroup, From: "a", GroupID: "g", Content: "grp", CreateTime: 3}
	s.Append(ctx, g, []string{"c"})
	s.JoinGroup(ctx, "g", "a")
	s.JoinGroup(ctx, "g", "c")
	s.JoinGroup(ctx, "h", "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestBadger(t, dir, BadgerOptions{})
	h, _ := s.History(ctx, PrivateConv("a", "b"), Query{})
	if len(h) != 2 || h[0].Content != "one" || h[1].Seq != 2 || h[0].ID != a1.ID {
		t.Fatalf("history after restart: %v", h)
	}
	// Sequence numbers continue, ids stay unique.
	a3, _ := s.Append(ctx, priv("a", "b", "three", "c3", 4), nil)
	if a3.Seq != 3 || a3.ID == a1.ID {
		t.Fatalf("seq after restart: %+v", a3)
	}
	// De-duplication remembers across the restart.
	if d, _ := s.Append(ctx, priv("a", "b", "one again", "c1", 5), nil); !d.Duplicate || d.ID != a1.ID || d.Seq != 1 {
		t.Fatalf("dedup after restart: %+v", d)
	}
	if off, _ := s.Offline(ctx, "b", OfflineFilter{}); len(off) != 1 || off[0].Content != "one" {
		t.Fatalf("offline after restart: %v", off)
	}
	if off, _ := s.Offline(ctx, "c", OfflineFilter{GroupID: "g"}); len(off) != 1 || off[0].Content != "grp" {
		t.Fatalf("group offline after restart: %v", off)
	}
	m, _ := s.GroupMembers(ctx, "g")
	gs, _ := s.UserGroups(ctx, "a")
	sort.Strings(m)
	sort.Strings(gs)
	if fmt.Sprint(m) != "[a c]" || fmt.Sprint(gs) != "[g h]" {
		t.Fatalf("membership after restart: %v %v", m, gs)
	}
}

// dirState lists every file in dir with its size and modification time.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %d\n", p, fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestBadgerRefusesUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Append(ctx, priv("a", "b", "x", "", 1), nil)
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, FormatFile), []byte("jim-badger 99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)
	_, err = OpenBadger(dir, BadgerOptions{})
	if err == nil || !strings.Contains(err.Error(), "format version 99") {
		t.Fatalf("open of a version-99 directory: %v", err)
	}
	if after := dirState(t, dir); after != before {
		t.Fatalf("refused directory was modified:\n%s\n---\n%s", before, after)
	}

	// A non-empty directory that is not a jim store is refused too.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "MANIFEST"), []byte("something"), 0o644)
	before = dirState(t, other)
	if _, err := OpenBadger(other, BadgerOptions{}); err == nil || !strings.Contains(err.Error(), "not a jim data directory") {
		t.Fatalf("open of a foreign directory: %v", err)
	}
	if after := dirState(t, other); after != before {
		t.Fatal("foreign directory was modified")
	}
}

func TestBadgerRefusesLockedDir(t *testing.T) {
	dir := t.TempDir()
	s := openTestBadger(t, dir, BadgerOptions{})
	s.Append(ctx, priv("a", "b", "x", "", 1), nil)
	// Badger's lock is a flock on the directory, which a second open in
	// the same process contends for exactly as another process would.
	_, err := OpenBadger(dir, BadgerOptions{})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second open: %v", err)
	}
	// The first store is unharmed.
	if a, err := s.Append(ctx, priv("a", "b", "y", "", 2), nil); err != nil || a.Seq != 2 {
		t.Fatalf("append after refused open: %+v %v", a, err)
	}
}

func TestBadgerFailedSyncNeverAcks(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	if _, err := s.Append(ctx, priv("a", "b", "ok", "", 1), nil); err != nil {
		t.Fatal(err)
	}
	// The hook runs on the syncer goroutine; it is set before any append
	// of this phase is queued. The syncer syncs batches holding a value
	// for Badger's value log (the commit synced the rest), so the first
	// message is that long.
	s.syncFn = func() error { return errors.New("injected: no space left on device") }
	big := strings.Repeat("x", int(s.vthresh))
	if _, err := s.Append(ctx, priv("a", "b", big, "big", 2), nil); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("append of a value-log message with failing sync: %v", err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.Append(ctx, priv("a", "b", "lost", fmt.Sprint("c", i), 2), nil)
			if err == nil || !strings.Contains(err.Error(), "no space left") {
				t.Errorf("append with failing sync: ack %+v, err %v", a, err)
			}
		}()
	}
	wg.Wait()
	// The store stays failed: no later write is acknowledged either.
	if _, err := s.Append(ctx, priv("a", "b", "later", "", 3), nil); err == nil {
		t.Fatal("append after a failed sync succeeded")
	}
	if err := s.JoinGroup(ctx, "g", "a"); err == nil {
		t.Fatal("join after a failed sync succeeded")
	}
}

func TestBadgerFailedCommitNeverAcks(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	if s.Err() != nil {
		t.Fatalf("a new store reports %v", s.Err())
	}
	s.commitFn = func(txn *badger.Txn) error { txn.Discard(); return errors.New("injected: I/O error") }
	if a, err := s.Append(ctx, priv("a", "b", "x", "c", 1), []string{"b"}); err == nil || !strings.Contains(err.Error(), "I/O error") {
		t.Fatalf("append with failing commit: %+v %v", a, err)
	}
	// What /healthz reports (jimd's gateway Health check).
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "I/O error") {
		t.Fatalf("Err after a failed commit: %v", err)
	}
	h, err := s.History(ctx, PrivateConv("a", "b"), Query{})
	if err != nil || len(h) != 0 {
		t.Fatalf("history after failed commit: %v %v", h, err)
	}
}

// Badger refuses a key over 65,000 bytes and fails the whole commit that
// holds it, which would stop the store: an id that could make such a key is
// refused on its own, and the longest ids that are accepted make keys Badger
// takes.
func TestBadgerLongIDsNeverFailTheStore(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	long := strings.Repeat("t", 64995)
	if a, err := s.Append(ctx, priv("k1", long, "x", "", 1), []string{long}); !errors.Is(err, errKeyTooLong) {
		t.Fatalf("append to a 64,995-byte user: %+v %v", a, err)
	}
	if a, err := s.Append(ctx, priv("k1", "k2", "x", strings.Repeat("c", 64990), 1), nil); !errors.Is(err, errKeyTooLong) {
		t.Fatalf("append with a 64,990-byte client id: %+v %v", a, err)
	}
	// Two parts at the bound: the dedup key and the memberships.
	most := strings.Repeat("u", maxKeyPart)
	gm := &Message{Conv: GroupConv("g1"), ChatType: ChatGroup, From: most, GroupID: "g1", Content: "x",
		ClientID: strings.Repeat("c", maxKeyPart), CreateTime: 1}
	if _, err := s.Append(ctx, gm, []string{"k2"}); err != nil {
		t.Fatalf("append from a %d-byte user with a %d-byte client id: %v", maxKeyPart, maxKeyPart, err)
	}
	if err := s.JoinGroup(ctx, strings.Repeat("g", maxKeyPart), most); err != nil {
		t.Fatalf("join with a %d-byte group and user: %v", maxKeyPart, err)
	}
	if a, err := s.Append(ctx, priv("k1", "k2", "still", "c-1", 2), nil); err != nil || a.Seq != 1 {
		t.Fatalf("the store after long ids: %+v %v", a, err)
	}
}

func TestBadgerClosedDB(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	// The filters' scans at open iterate the database, and Badger panics
	// on an iterator of a closed database; Close waits for them, but this
	// test pulls the database away behind the store's back.
	waitFiltersBuilt(t, s)
	s.db.Close() // the database goes away under the store
	if a, err := s.Append(ctx, priv("a", "b", "x", "", 1), nil); err == nil {
		t.Fatalf("append on a closed database acked %+v", a)
	}
}

func TestBadgerRetention(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{RetentionMaxMessages: 5, RetentionAge: time.Hour})
	now := time.Now()
	conv := PrivateConv("a", "b")
	for i := 1; i <= 12; i++ {
		ts := now.UnixMilli()
		if i <= 3 {
			ts = now.Add(-2 * time.Hour).UnixMilli()
		}
		s.Append(ctx, priv("a", "b", fmt.Sprint(i), "", ts), []string{"b"})
	}
	old := &Message{Conv: GroupConv("g"), ChatType: ChatGroup, GroupID: "g", From: "a", CreateTime: now.Add(-3 * time.Hour).UnixMilli()}
	s.Append(ctx, old, nil)
	n, err := s.enforceRetention(now)
	if err != nil || n != 8 {
		t.Fatalf("retention removed %d (%v), want 8", n, err)
	}
	h, _ := s.History(ctx, conv, Query{})
	if len(h) != 5 || h[0].Seq != 8 || h[4].Seq != 12 {
		t.Fatalf("kept %v", h)
	}
	if p, _ := s.History(ctx, conv, Query{Offset: 1, Count: 2}); len(p) != 2 || p[0].Seq != 9 {
		t.Fatalf("offset page after retention: %v", p)
	}
	if g, _ := s.History(ctx, GroupConv("g"), Query{}); len(g) != 0 {
		t.Fatalf("old group message kept: %v", g)
	}
	// Numbering continues, also in the emptied conversation.
	if a, _ := s.Append(ctx, priv("a", "b", "13", "", now.UnixMilli()), nil); a.Seq != 13 {
		t.Fatalf("seq after retention %d", a.Seq)
	}
	if a, _ := s.Append(ctx, &Message{Conv: GroupConv("g"), ChatType: ChatGroup, GroupID: "g", From: "a"}, nil); a.Seq != 2 {
		t.Fatalf("group seq after retention %d", a.Seq)
	}
	// Offline entries of removed messages disappear with them.
	off, _ := s.Offline(ctx, "b", OfflineFilter{})
	if len(off) != 5 || off[0].Seq != 8 {
		t.Fatalf("offline after retention: %v", off)
	}
}

func TestBadgerHistoryLargeOffset(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	conv := GroupConv("big")
	bulkLoad(t, s, conv, 5000)
	h, err := s.History(ctx, conv, Query{Offset: 4000, Count: 3})
	if err != nil || len(h) != 3 || h[0].Seq != 4001 {
		t.Fatalf("offset page: %v %v", h, err)
	}
	h, _ = s.History(ctx, conv, Query{Latest: true, Count: 2})
	if len(h) != 2 || h[1].Seq != 5000 {
		t.Fatalf("latest page: %v", h)
	}
	if a, _ := s.Append(ctx, &Message{Conv: conv, ChatType: ChatGroup, GroupID: "big", From: "x"}, nil); a.Seq != 5001 {
		t.Fatalf("seq after bulk load %d", a.Seq)
	}
}

// bulkLoad writes n messages to conv directly, bypassing the writer: the
// fast way to build a large conversation for tests and benchmarks. The
// store must not be written to concurrently.
func bulkLoad(tb testing.TB, s *Badger, conv string, n int) {
	tb.Helper()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	gid := strings.TrimPrefix(conv, "g:")
	var buf []byte
	base := time.Now().UnixMilli() - int64(n)
	for i := 1; i <= n; i++ {
		s.gseq++
		m := &Message{ID: makeID(s.idPrefix, s.gseq), Conv: conv, ChatType: ChatGroup, GroupID: gid, From: "bulk",
			Content: fmt.Sprintf("message number %d with some text in it", i), CreateTime: base + int64(i)}
		buf = encodeMsgNum(buf[:0], m, s.gseq)
		if err := wb.Set(msgKey(conv, uint64(i)), append([]byte(nil), buf...)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := wb.Set(seqKey(conv), binaryBE(uint64(n))); err != nil {
		tb.Fatal(err)
	}
	if err := wb.Set(keyGSeq, binaryBE(s.gseq)); err != nil {
		tb.Fatal(err)
	}
	if err := wb.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := s.db.Sync(); err != nil {
		tb.Fatal(err)
	}
	delete(s.seqs, conv)
}

// TestUserGroupsFilter checks that the membership filter never hides a group:
// before and after a restart, for members, former members and users in none.
func TestUserGroupsFilter(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitJoinedReady(t, b)
	for i := range 50 {
		if err := b.JoinGroup(ctx, fmt.Sprintf("g%d", i%3), fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.LeaveGroup(ctx, "g0", "m0"); err != nil {
		t.Fatal(err)
	}
	check := func(b *Badger) {
		t.Helper()
		for i := range 50 {
			gs, err := b.UserGroups(ctx, fmt.Sprintf("m%d", i))
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if i == 0 {
				want = 0
			}
			if len(gs) != want {
				t.Fatalf("m%d: groups %v, want %d", i, gs, want)
			}
		}
		for i := range 1000 {
			gs, err := b.UserGroups(ctx, fmt.Sprintf("nobody%d", i))
			if err != nil || gs == nil || len(gs) != 0 {
				t.Fatalf("nobody%d: %v, %v; want an empty list", i, gs, err)
			}
		}
	}
	check(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitJoinedReady(t, b)
	check(b)
	// A user the rebuilt filter has never seen joins after the restart.
	if err := b.JoinGroup(ctx, "g9", "late"); err != nil {
		t.Fatal(err)
	}
	if gs, _ := b.UserGroups(ctx, "late"); len(gs) != 1 || gs[0] != "g9" {
		t.Fatalf("late joiner: %v", gs)
	}
}

func waitJoinedReady(t *testing.T, b *Badger) {
	t.Helper()
	for i := 0; !b.joinedF.ready.Load(); i++ {
		if i > 500 {
			t.Fatal("membership filter not ready after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBadgerMergedBatchesWithReads runs many writers whose new messages and
// resends of each other's messages interleave, so that batches are merged
// while the committer is busy and the writer's reads (a resend found in the
// dedup index is confirmed from the database) need a merged batch committed
// first. Every resend must get its original ack, and every conversation
// gap-free seqs holding each message once.
func TestBadgerMergedBatchesWithReads(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{GCInterval: -1, MaxBatch: 64})
	// A recent-record cache of its smallest safe size (two batches), so
	// that most resends miss it and are read back.
	s.recent = newRecentDedup(128)
	const writers, per, convs = 32, 60, 8
	type sent struct {
		m   func() *Message
		ack Ack
	}
	var mu sync.Mutex
	var done []sent
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				mk := func() *Message {
					return priv(fmt.Sprint("w", w), fmt.Sprint("c", (w+i)%convs), fmt.Sprint("m", w, "-", i), fmt.Sprint("id", w, "-", i), int64(i))
				}
				a, err := s.Append(ctx, mk(), nil)
				if err != nil || a.Duplicate {
					t.Errorf("append: %+v %v", a, err)
					return
				}
				mu.Lock()
				done = append(done, sent{mk, a})
				old := done[(w*7+i*13)%len(done)]
				mu.Unlock()
				if i%3 == 0 {
					r, err := s.Append(ctx, old.m(), nil)
					if err != nil || !r.Duplicate || r.ID != old.ack.ID || r.Seq != old.ack.Seq {
						t.Errorf("resend: %+v %v, original %+v", r, err, old.ack)
					}
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for w := 0; w < writers; w++ {
		for c := 0; c < convs; c++ {
			h, err := s.History(ctx, PrivateConv(fmt.Sprint("w", w), fmt.Sprint("c", c)), Query{Count: MaxHistoryCount})
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range h {
				if m.Seq != uint64(i+1) {
					t.Fatalf("w%d/c%d: seq %d at %d", w, c, m.Seq, i)
				}
			}
			total += len(h)
		}
	}
	if total != writers*per {
		t.Fatalf("%d messages stored, want %d", total, writers*per)
	}
}

// waitFiltersBuilt waits for the de-duplication and joined-user filters that
// OpenBadger builds in the background.
func waitFiltersBuilt(t *testing.T, s *Badger) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.dedupF.ready.Load() || !s.joinedF.ready.Load() {
		if time.Now().After(deadline) {
			t.Fatal("filters not built after 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A version-1 directory (message ids stored as text) opens, is marked
// version 2 before anything is written, keeps its messages readable with
// their ids, and takes new messages after them.
func TestOpenUpgradesFormat1(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conv := PrivateConv("a", "b")
	var ids []string
	err = s.db.Update(func(txn *badger.Txn) error {
		for i := uint64(1); i <= 3; i++ {
			s.gseq++
			m := priv("a", "b", fmt.Sprint("old ", i), "", int64(i))
			m.ID = makeID(s.idPrefix, s.gseq)
			ids = append(ids, m.ID)
			if err := txn.Set(msgKey(conv, i), encodeMsg(nil, m)); err != nil {
				return err
			}
		}
		if err := txn.Set(keyGSeq, binaryBE(s.gseq)); err != nil {
			return err
		}
		return txn.Set(keyVersion, binary.BigEndian.AppendUint32(nil, 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, FormatFile), []byte("jim-badger 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	s, err = OpenBadger(dir, BadgerOptions{})
	if err != nil {
		t.Fatalf("open of a version-1 directory: %v", err)
	}
	defer s.Close()
	if data, _ := os.ReadFile(filepath.Join(dir, FormatFile)); string(data) != fmt.Sprintf("jim-badger %d\n", FormatVersion) {
		t.Fatalf("marker after the upgrade: %q", data)
	}
	var stored []byte
	_ = s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(keyVersion)
		if err == nil {
			stored, err = it.ValueCopy(nil)
		}
		return err
	})
	if len(stored) != 4 || binary.BigEndian.Uint32(stored) != FormatVersion {
		t.Fatalf("stored version after the upgrade: %x", stored)
	}
	a, err := s.Append(ctx, priv("b", "a", "new", "c1", 9), nil)
	if err != nil || a.Seq != 4 {
		t.Fatalf("append after the upgrade: %+v %v", a, err)
	}
	ids = append(ids, a.ID)
	ms, err := s.History(ctx, conv, Query{})
	if err != nil || len(ms) != 4 {
		t.Fatalf("history after the upgrade: %d messages, %v", len(ms), err)
	}
	for i, m := range ms {
		if m.ID != ids[i] || m.Seq != uint64(i+1) {
			t.Fatalf("message %d: id %s seq %d, want %s %d", i, m.ID, m.Seq, ids[i], i+1)
		}
	}
	if ms[0].Content != "old 1" || ms[3].Content != "new" || ms[3].ClientID != "c1" {
		t.Fatalf("contents after the upgrade: %+v / %+v", ms[0], ms[3])
	}
}

// A store whose directory is deleted under it cannot flush its memtable, and
// Badger retries that flush for ever: Close gives up after CloseTimeout
// instead of hanging its caller (jimd's shutdown, a test's cleanup).
func TestBadgerCloseWithDirectoryGone(t *testing.T) {
	dir := t.TempDir()
	// Badger logs each retry, for as long as the test binary runs.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := OpenBadger(dir, BadgerOptions{CloseTimeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, priv("a", "b", "x", "", 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Close()
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Close took %v", took)
	}
	if err == nil || !strings.Contains(err.Error(), "did not close") {
		t.Fatalf("Close with the directory gone: %v", err)
	}
}

// Unread offline references expire OfflineTTL after they were queued (the
// messages stay in the history), and the cap pass keeps the newest
// OfflineCap of each queue.
func TestBadgerOfflineTTLAndCap(t *testing.T) {
	t.Run("ttl", func(t *testing.T) {
		s := openTestBadger(t, t.TempDir(), BadgerOptions{OfflineTTL: time.Second, OfflineCap: -1})
		now := time.Now().UnixMilli()
		if _, err := s.Append(ctx, priv("a", "b", "1", "", now), []string{"b"}); err != nil {
			t.Fatal(err)
		}
		if off, _ := s.Offline(ctx, "b", OfflineFilter{}); len(off) != 1 {
			t.Fatalf("queued: %d offline messages, want 1", len(off))
		}
		time.Sleep(2100 * time.Millisecond) // Badger's expiry has whole seconds
		if off, _ := s.Offline(ctx, "b", OfflineFilter{}); len(off) != 0 {
			t.Fatalf("after the TTL: %d offline messages, want 0", len(off))
		}
		if h, _ := s.History(ctx, PrivateConv("a", "b"), Query{}); len(h) != 1 {
			t.Fatalf("history after the offline TTL: %d messages, want 1", len(h))
		}
	})
	t.Run("ttl follows retention", func(t *testing.T) {
		o := BadgerOptions{RetentionAge: time.Hour}
		o.defaults()
		if o.OfflineTTL != time.Hour || o.OfflineCap != 10000 {
			t.Fatalf("defaults: OfflineTTL %v, OfflineCap %d", o.OfflineTTL, o.OfflineCap)
		}
	})
	t.Run("cap", func(t *testing.T) {
		s := openTestBadger(t, t.TempDir(), BadgerOptions{OfflineCap: 5,
			RetentionInterval: 20 * time.Millisecond, OfflineCapInterval: 20 * time.Millisecond})
		now := time.Now().UnixMilli()
		for i := 1; i <= 12; i++ {
			s.Append(ctx, priv("a", "b", fmt.Sprint(i), "", now), []string{"b"})
		}
		for i := 1; i <= 3; i++ {
			s.Append(ctx, priv("a", "c", fmt.Sprint("c", i), "", now), []string{"c"})
		}
		deadline := time.Now().Add(5 * time.Second)
		var off []*Message
		for time.Now().Before(deadline) {
			if off, _ = s.Offline(ctx, "b", OfflineFilter{}); len(off) == 5 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(off) != 5 || off[0].Seq != 8 || off[4].Seq != 12 {
			t.Fatalf("capped queue: %v, want seqs 8-12", off)
		}
		if c, _ := s.Offline(ctx, "c", OfflineFilter{}); len(c) != 3 {
			t.Fatalf("a queue under the cap lost messages: %d left of 3", len(c))
		}
		// Queued again: the pass runs again.
		for i := 13; i <= 15; i++ {
			s.Append(ctx, priv("a", "b", fmt.Sprint(i), "", now), []string{"b"})
		}
		deadline = time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if off, _ = s.Offline(ctx, "b", OfflineFilter{}); len(off) == 5 && off[0].Seq == 11 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("after three more: %v, want seqs 11-15", off)
	})
}

// The member cache stays within memberCacheMax members, evicting other
// groups; an evicted group is read again, with the joins and leaves made
// while it was out.
func TestBadgerMemberCacheBounded(t *testing.T) {
	defer func(n int) { memberCacheMax = n }(memberCacheMax)
	memberCacheMax = 7
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	for g := range 5 {
		for u := range 3 {
			if err := s.JoinGroup(ctx, fmt.Sprint("g", g), fmt.Sprint("u", u)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := range 3 {
		for g := range 5 {
			gid := fmt.Sprint("g", g)
			if round == 1 && g == 2 {
				s.JoinGroup(ctx, gid, "late")
				s.LeaveGroup(ctx, gid, "u0")
			}
			m, err := s.GroupMembers(ctx, gid)
			slices.Sort(m)
			want := []string{"u0", "u1", "u2"}
			if round >= 1 && g == 2 {
				want = []string{"late", "u1", "u2"}
			}
			if err != nil || !slices.Equal(m, want) {
				t.Fatalf("round %d %s: %v %v, want %v", round, gid, m, err, want)
			}
			s.gmu.RLock()
			n, groups := s.memberN, len(s.members)
			sum := 0
			for _, m := range s.members {
				sum += len(m)
			}
			s.gmu.RUnlock()
			if n != sum || n > memberCacheMax || groups > 2 {
				t.Fatalf("cache: %d members counted, %d held in %d groups; bound %d", n, sum, groups, memberCacheMax)
			}
		}
	}
	// Joins and leaves of a cached group keep the count.
	s.JoinGroup(ctx, "g4", "x")
	s.JoinGroup(ctx, "g4", "y")
	s.LeaveGroup(ctx, "g4", "u1")
	m, _ := s.GroupMembers(ctx, "g4")
	s.gmu.RLock()
	n, cached, groups := s.memberN, len(s.members["g4"]), len(s.members)
	s.gmu.RUnlock()
	if len(m) != 4 || cached != 4 || n != 4+groups*3-3 {
		t.Fatalf("g4 has %d members (%d cached), %d counted in %d groups", len(m), cached, n, groups)
	}
}
