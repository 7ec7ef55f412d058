package dispatch

import (
	"errors"
	"path/filepath"
	"testing"

	"jim/codec"
	"jim/storage"
)

// A recipient found online whose every connection refuses the delivery
// (closed in between) gets the message queued offline after the fact.
func TestMissedDeliveryQueuedOffline(t *testing.T) {
	d, st := newDispatcher(t, Options{})
	a := login(t, d, "a")
	b := login(t, d, "b")
	b.refuse = true
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"b","content":"lost?","id":"k1"}`)
	if r := a.one(t); r.Code != int(codec.StatusOffline) || chatAck(t, r).Seq != 1 {
		t.Fatalf("sender reply %s", r.o.JSON)
	}
	off, _ := st.Offline(t.Context(), "b", storage.OfflineFilter{From: "a"})
	if len(off) != 1 || off[0].Content != "lost?" || off[0].Seq != 1 {
		t.Fatalf("offline queue %v", off)
	}

	// The same for a group member.
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g"}`)
	do(d, b, codec.CmdJoinGroupReq, `{"groupId":"g"}`)
	a.take()
	do(d, a, codec.CmdChatReq, `{"chatType":1,"groupId":"g","content":"grp"}`)
	if rs := a.replies(t); len(rs) == 0 || rs[len(rs)-1].Code != int(codec.StatusOK) {
		t.Fatalf("group replies %v", rs)
	}
	off, _ = st.Offline(t.Context(), "b", storage.OfflineFilter{GroupID: "g"})
	if len(off) != 1 || off[0].Content != "grp" {
		t.Fatalf("group offline queue %v", off)
	}
	if off, _ := st.Offline(t.Context(), "a", storage.OfflineFilter{}); len(off) != 0 {
		t.Fatalf("the sender, who got it, has it queued: %v", off)
	}
}

// With the Badger store, users, groups and memberships survive a restart and
// a user's groups are rejoined at login.
func TestBadgerMembershipAcrossRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st, err := storage.OpenBadger(dir, storage.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := New(Options{Store: st, Workers: 2})
	a := login(t, d, "a")
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g1"}`)
	do(d, a, codec.CmdChatReq, `{"chatType":1,"groupId":"g1","content":"before"}`)
	if r := a.replies(t); len(r) < 2 || r[len(r)-1].Code != int(codec.StatusOK) {
		t.Fatalf("replies %v", r)
	}
	d.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = storage.OpenBadger(dir, storage.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = newDispatcher(t, Options{Store: st})
	a = newConn()
	do(d, a, codec.CmdLoginReq, `{"cmd":5,"userId":"a"}`)
	rs := a.replies(t)
	last := rs[len(rs)-1]
	if last.Code != int(codec.StatusLoginOK) || len(last.User.Groups) != 1 || last.User.Groups[0].GroupID != "g1" {
		t.Fatalf("login after restart: %s", last.o.JSON)
	}
	// Rejoined: a may post to the group without joining again, and the
	// history from before the restart is there with seqs continuing.
	do(d, a, codec.CmdChatReq, `{"chatType":1,"groupId":"g1","content":"after"}`)
	if rs := a.replies(t); len(rs) == 0 || rs[len(rs)-1].Code != int(codec.StatusOK) || chatAck(t, rs[len(rs)-1]).Seq != 2 {
		t.Fatalf("chat after restart %v", rs)
	}
	do(d, a, codec.CmdGetMessageReq, `{"cmd":19,"type":1,"userId":"a","groupId":"g1"}`)
	var md codec.MessageData
	r := a.one(t)
	r.data(t, &md)
	if g := md.Groups["g1"]; len(g) != 2 || g[0].Content != "before" || g[1].Seq != 2 {
		t.Fatalf("history after restart %s", r.o.JSON)
	}
}

// A Badger store whose write fails answers the sender with the store
// failure status, never an ack, and delivers nothing.
func TestBadgerWriteFailureIsStoreFailed(t *testing.T) {
	st, err := storage.OpenBadger(t.TempDir(), storage.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := newDispatcher(t, Options{Store: st})
	a := login(t, d, "a")
	b := login(t, d, "b")
	st.Close() // every later write fails
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"b","content":"x"}`)
	if r := a.one(t); r.Code != int(codec.StatusStoreFailed) || r.Command != 12 {
		t.Fatalf("store failure reply %s", r.o.JSON)
	}
	if len(b.take()) != 0 {
		t.Fatal("delivered without being stored")
	}
	if _, err := st.Append(t.Context(), &storage.Message{Conv: "g:x"}, nil); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("append on closed store: %v", err)
	}
}
