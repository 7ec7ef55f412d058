package dispatch

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"jim/codec"
)

// countingMulticaster is a Multicaster over fakeConns that counts its calls,
// so tests can tell the group path used it.
type countingMulticaster struct{ calls atomic.Int64 }

func (m *countingMulticaster) SendMany(conns []Conn, o *codec.Outbound, failed []int) []int {
	m.calls.Add(1)
	for i, c := range conns {
		if !c.Send(o) {
			failed = append(failed, i)
		}
	}
	return failed
}

// A group message goes through the Multicaster once, reaches every device of
// every online member, follows logins and logouts of members' devices, and a
// member whose every connection refused it gets it in the offline queue.
func TestGroupFanoutSnapshotAndMulticast(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	mc := &countingMulticaster{}
	d.SetMulticaster(mc)
	const n = 12
	conns := map[string][]*fakeConn{}
	for i := range n {
		uid := "u" + strconv.Itoa(i)
		c := login(t, d, uid)
		do(d, c, codec.CmdJoinGroupReq, `{"group_id":"g"}`)
		conns[uid] = []*fakeConn{c}
	}
	drain := func() {
		for _, cs := range conns {
			for _, c := range cs {
				c.take()
			}
		}
	}
	drain()
	send := func(text string) {
		t.Helper()
		do(d, conns["u0"][0], codec.CmdChatReq, `{"chatType":1,"group_id":"g","msgType":0,"content":"`+text+`"}`)
	}
	got := func(c *fakeConn) []string {
		var out []string
		for _, r := range c.replies(t) {
			if r.Command == int(codec.CmdChatReq) {
				var b codec.ChatBody
				r.data(t, &b)
				out = append(out, b.Content)
			}
		}
		return out
	}

	send("one")
	if mc.calls.Load() == 0 {
		t.Fatal("group fan-out did not use the Multicaster")
	}
	for uid, cs := range conns {
		if g := got(cs[0]); !slices.Equal(g, []string{"one"}) {
			t.Fatalf("%s got %v", uid, g)
		}
	}

	// A second device of u3 logs in: the cached fan-out list must change.
	c2 := login(t, d, "u3")
	conns["u3"] = append(conns["u3"], c2)
	drain()
	send("two")
	for _, c := range conns["u3"] {
		if g := got(c); !slices.Equal(g, []string{"two"}) {
			t.Fatalf("u3 device %d got %v", c.id, g)
		}
	}
	drain()

	// u5 logs out: it must leave the list, and its message go offline.
	d.Closed(conns["u5"][0])
	settle(d)
	gone := conns["u5"][0]
	delete(conns, "u5")
	// u7's only connection refuses (over its cap): u7 is missed and queued.
	conns["u7"][0].refuse = true
	send("three")
	if g := got(gone); len(g) != 0 {
		t.Fatalf("closed u5 still got %v", g)
	}
	for uid, cs := range conns {
		want := []string{"three"}
		if uid == "u7" {
			want = nil
		}
		if g := got(cs[0]); !slices.Equal(g, want) {
			t.Fatalf("%s got %v, want %v", uid, g, want)
		}
	}
	conns["u7"][0].refuse = false
	for _, uid := range []string{"u5", "u7"} {
		c := login(t, d, uid)
		do(d, c, codec.CmdGetMessageReq, `{"userId":"`+uid+`","type":0}`)
		var texts []string
		for _, r := range c.replies(t) {
			if r.Command == int(codec.CmdGetMessageResp) {
				texts = append(texts, string(r.Data))
			}
		}
		if len(texts) != 1 || !strings.Contains(texts[0], `"three"`) {
			t.Fatalf("%s offline: %v", uid, texts)
		}
	}
}

// The refused indexes of a multicast map back to the users none of whose
// connections took the message, whatever their number of devices.
func TestDeliverManyMissed(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	mc := &countingMulticaster{}
	d.SetMulticaster(mc)
	f := &fanout{}
	refuse := map[string][]bool{ // per user, per device: refuses?
		"a": {false}, "b": {true}, "c": {true, false}, "d": {true, true, true},
		"e": {false, false}, "f": {true}, "g": {false}, "h": {true, true},
	}
	for _, u := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		f.users = append(f.users, u)
		f.first = append(f.first, len(f.conns))
		for _, r := range refuse[u] {
			c := newConn()
			c.refuse = r
			f.conns = append(f.conns, c)
		}
	}
	n, missed := d.deliver(f, codec.NewOutbound(codec.CmdChatReq, []byte(`{}`)))
	if mc.calls.Load() != 1 {
		t.Fatalf("multicaster calls %d", mc.calls.Load())
	}
	if want := 5; n != want {
		t.Fatalf("delivered %d, want %d", n, want)
	}
	if want := []string{"b", "d", "f", "h"}; !slices.Equal(missed, want) {
		t.Fatalf("missed %v, want %v", missed, want)
	}
}
