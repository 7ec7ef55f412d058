package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A backup taken while the store runs restores into a new directory that
// opens with the same messages, offline queues, memberships, dedup records
// and counters, and goes on numbering after them.
func TestBadgerBackupRestore(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	var acks []Ack
	for i := 1; i <= 50; i++ {
		a, err := s.Append(ctx, priv("a", "b", fmt.Sprint("m", i), fmt.Sprint("c", i), int64(i)), []string{"b"})
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}
	if err := s.JoinGroup(ctx, "g", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, &Message{Conv: GroupConv("g"), ChatType: ChatGroup, From: "a", GroupID: "g", Content: "hello g", CreateTime: 99}, nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	// Written after the backup: not in it.
	if _, err := s.Append(ctx, priv("a", "b", "late", "", 100), nil); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if err := RestoreBadger(dir, bytes.NewReader(buf.Bytes()), BadgerOptions{}); err != nil {
		t.Fatal(err)
	}
	r := openTestBadger(t, dir, BadgerOptions{})
	h, err := r.History(ctx, PrivateConv("a", "b"), Query{Count: 1000})
	if err != nil || len(h) != 50 || h[0].Content != "m1" || h[49].Seq != 50 || h[49].ID != acks[49].ID {
		t.Fatalf("restored history: %d messages, %v", len(h), err)
	}
	if off, _ := r.Offline(ctx, "b", OfflineFilter{}); len(off) != 50 {
		t.Fatalf("restored offline queue: %d", len(off))
	}
	if m, _ := r.GroupMembers(ctx, "g"); !slices.Equal(m, []string{"a"}) {
		t.Fatalf("restored members: %v", m)
	}
	if gh, _ := r.History(ctx, GroupConv("g"), Query{}); len(gh) != 1 || gh[0].Content != "hello g" {
		t.Fatalf("restored group history: %v", gh)
	}
	// A resend is still recognised, and numbering goes on.
	if a, err := r.Append(ctx, priv("a", "b", "m7", "c7", 7), nil); err != nil || !a.Duplicate || a.ID != acks[6].ID {
		t.Fatalf("resend after restore: %+v %v", a, err)
	}
	if a, err := r.Append(ctx, priv("a", "b", "new", "", 101), nil); err != nil || a.Seq != 51 || a.ID == acks[49].ID {
		t.Fatalf("append after restore: %+v %v", a, err)
	}
}

func TestBadgerRestoreRefuses(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	var buf bytes.Buffer
	if err := s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	// Into a data directory that exists: nothing is touched.
	used := t.TempDir()
	openTestBadger(t, used, BadgerOptions{}).Close()
	before, _ := os.ReadDir(used)
	if err := RestoreBadger(used, bytes.NewReader(buf.Bytes()), BadgerOptions{}); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("restore into a data directory: %v", err)
	}
	if after, _ := os.ReadDir(used); len(after) != len(before) {
		t.Fatalf("restore touched the directory: %d entries, then %d", len(before), len(after))
	}
	// From something that is not a backup: refused before anything is written.
	dir := filepath.Join(t.TempDir(), "x")
	if err := RestoreBadger(dir, strings.NewReader("hello, this is not a backup"), BadgerOptions{}); err == nil || !strings.Contains(err.Error(), "not a jim backup") {
		t.Fatalf("restore from a text file: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("refused restore left %d files", len(ents))
	}
	// A backup cut short, even where Badger's own stream could end (just
	// before the trailer), or with a byte changed, fails, and leaves a
	// directory OpenBadger refuses.
	whole := buf.Bytes()
	flipped := bytes.Clone(whole)
	flipped[len(backupMagic)+len(whole[len(backupMagic):])/2] ^= 0x20
	for name, b := range map[string][]byte{
		"cut":          whole[:len(whole)-3],
		"no trailer":   whole[:len(whole)-trailerLen],
		"byte changed": flipped,
	} {
		dir := filepath.Join(t.TempDir(), "r")
		if err := RestoreBadger(dir, bytes.NewReader(b), BadgerOptions{}); err == nil {
			t.Fatalf("restore from a backup %s succeeded", name)
		}
		if _, err := OpenBadger(dir, BadgerOptions{}); err == nil {
			t.Fatalf("a directory restored from a backup %s opened", name)
		}
	}
}

// Closing the store ends a backup in progress (its writer fails) and waits
// for it, instead of closing the database under its iteration.
func TestBadgerCloseDuringBackup(t *testing.T) {
	s := openTestBadger(t, t.TempDir(), BadgerOptions{})
	bulkLoad(t, s, GroupConv("big"), 20_000)
	w := &slowWriter{started: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- s.Backup(w) }()
	<-w.started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("a backup cut by Close reported success")
	}
	if err := s.Backup(io.Discard); !errors.Is(err, ErrClosed) {
		t.Fatalf("backup of a closed store: %v", err)
	}
}

// slowWriter takes its time with every write, so that a backup is still
// running when the test closes the store.
type slowWriter struct {
	started chan struct{}
	once    sync.Once
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	time.Sleep(time.Millisecond)
	return len(p), nil
}
