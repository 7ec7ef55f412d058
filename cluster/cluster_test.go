package cluster

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"jim/codec"
	"jim/dispatch"
)

func TestFrameRoundTrip(t *testing.T) {
	in := dispatch.ClusterMsg{Kind: dispatch.ClusterGroup, Cmd: codec.CmdExitGroupNotify, Target: "g/1",
		Except: "üser", JSON: []byte(`{"command":10}`)}
	out, err := parseFrame(appendFrame(nil, &in))
	if err != nil || out.Kind != in.Kind || out.Cmd != in.Cmd || out.Target != in.Target ||
		out.Except != in.Except || string(out.JSON) != string(in.JSON) {
		t.Fatalf("got %+v, %v", out, err)
	}
	neg := dispatch.ClusterMsg{Kind: dispatch.ClusterUser, Cmd: -1, Target: "u"}
	if out, err := parseFrame(appendFrame(nil, &neg)); err != nil || out.Cmd != -1 || len(out.JSON) != 0 {
		t.Fatalf("negative cmd: %+v, %v", out, err)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 1, 11, 0, 0}, {1, 1, 11, 5, 'a'}, {1, 1, 11, 0, 9}} {
		if _, err := parseFrame(bad); err == nil {
			t.Fatalf("frame %v accepted", bad)
		}
	}
}

func TestPresenceMessages(t *testing.T) {
	h := presHeader{typ: presSnap, node: "n-1", epoch: 1 << 60, seq: 300, chunk: 2, chunks: 3}
	b := appendPresHeader(nil, &h)
	b = appendAdd(b, "a.b c/ü*>", "tcp", []byte(`{"nick":"A"}`))
	b = appendDel(b, "100")
	b = appendAdd(b, "x", "", nil)
	got, recs, err := parsePres(b)
	if err != nil || got != h {
		t.Fatalf("header %+v, %v; want %+v", got, err, h)
	}
	var out []presRecord
	for len(recs) > 0 {
		r, rest, err := nextRecord(recs)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
		recs = rest
	}
	if len(out) != 3 || out[0].op != opAdd || string(out[0].uid) != "a.b c/ü*>" || string(out[0].term) != "tcp" ||
		string(out[0].prof) != `{"nick":"A"}` || out[1].op != opDel || string(out[1].uid) != "100" ||
		out[2].op != opAdd || string(out[2].uid) != "x" || len(out[2].term) != 0 || len(out[2].prof) != 0 {
		t.Fatalf("records %+v", out)
	}
	beat := appendPresHeader(nil, &presHeader{typ: presBeat, node: "n", epoch: 7, seq: 9})
	if got, recs, err := parsePres(beat); err != nil || got.typ != presBeat || got.node != "n" || got.epoch != 7 || got.seq != 9 || len(recs) != 0 {
		t.Fatalf("beat: %+v %v", got, err)
	}
	snap0 := appendPresHeader(nil, &presHeader{typ: presSnap, node: "n", chunk: 0, chunks: 1})
	for _, bad := range [][]byte{nil, {1}, {2, 1, 1, 'n'}, {1, 9, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {1, 1, 1, 'n', 0, 0, 0, 0}, append(snap0[:len(snap0)-2:len(snap0)-2], 1, 1)} {
		if _, _, err := parsePres(bad); err == nil {
			t.Fatalf("message %v accepted", bad)
		}
	}
	for _, bad := range [][]byte{{3}, {1, 5, 'a'}, {1, 0}, {2, 0}, {1, 1, 'a', 1}, {1, 1, 'a', 0, 2}} {
		if _, _, err := nextRecord(bad); err == nil {
			t.Fatalf("record %v accepted", bad)
		}
	}
	if validID("a.b") || validID("") || !validID(generateID()) {
		t.Fatal("node id validation")
	}
}

func TestViewLiveness(t *testing.T) {
	v := newView("me", time.Second)
	now := time.Now()
	v.heartbeat("b", now)
	v.heartbeat("a", now.Add(-2*time.Second))
	v.set("u", "a", nil)
	v.set("u", "b", &codec.User{Nick: "U"})
	v.set("w", "me", nil)
	if u, ok := v.remote("u"); !ok || u == nil || u.Nick != "U" {
		t.Fatalf("remote u: %+v %v", u, ok)
	}
	if _, ok := v.remote("w"); ok {
		t.Fatal("own entry counted as remote")
	}
	if dead := v.sweep(now); len(dead) != 1 || dead[0].node != "a" {
		t.Fatalf("sweep: %v", dead)
	}
	if users := v.dropNode("a"); users != 1 || v.entryCount() != 2 {
		t.Fatalf("drop: %v, %d entries", users, v.entryCount())
	}
	if v.firstLive() != "b" || v.liveNodes() != 2 {
		t.Fatalf("first live %q, %d live", v.firstLive(), v.liveNodes())
	}
}

// A node that hears its own heartbeat late is the one behind: it does not
// take the others' silence for death until its echo is current again.
func TestPresenceSweepWaitsWhileLagging(t *testing.T) {
	now := time.Now()
	n := &Node{id: "me", view: newView("me", time.Second), m: newMetrics(), ttl: time.Second,
		peers: map[string]*peer{"a": {synced: true}}, log: slog.New(slog.DiscardHandler)}
	n.view.heartbeat("a", now.Add(-(time.Second + forgetAfter*time.Second + time.Millisecond)))
	n.view.set("u", "a", nil)
	n.selfHeard = now.Add(-900 * time.Millisecond)
	n.presenceTick(now)
	if n.peers["a"] == nil || n.view.entryCount() != 1 {
		t.Fatal("a dropped while this node's own heartbeat was late")
	}
	n.selfHeard = now.Add(-100 * time.Millisecond)
	n.presenceTick(now)
	if n.peers["a"] != nil || n.view.entryCount() != 0 {
		t.Fatal("a kept although this node is current")
	}
}

// A node silent past 3/4 TTL looks offline at once but keeps its entries
// and sequence number: when it speaks again with the same epoch and
// nothing missed, its users are back without a snapshot (nc is nil here,
// so asking for one would panic). Silent for 4 TTLs more, it is forgotten.
func TestPresenceSilentNodeComesBack(t *testing.T) {
	now := time.Now()
	n := &Node{id: "me", view: newView("me", 750*time.Millisecond), m: newMetrics(), ttl: time.Second,
		peers: map[string]*peer{"a": {epoch: 7, seq: 3, synced: true}}, log: slog.New(slog.DiscardHandler)}
	n.view.heartbeat("a", now.Add(-time.Second))
	n.view.set("u", "a", nil)
	n.presenceTick(now)
	p := n.peers["a"]
	if p == nil || p.silentAt.IsZero() || n.view.entryCount() != 1 {
		t.Fatalf("after a second of silence: peer %+v, %d entries", p, n.view.entryCount())
	}
	if _, ok := n.view.remote("u"); ok {
		t.Fatal("a silent node's user still looks online")
	}
	beat := appendPresHeader(nil, &presHeader{typ: presBeat, node: "a", epoch: 7, seq: 3})
	n.handlePresence(&nats.Msg{Subject: presenceSubject + "a", Data: beat})
	if !p.silentAt.IsZero() || !p.synced || p.reqID != 0 {
		t.Fatalf("after its heartbeat: %+v", p)
	}
	if _, ok := n.view.remote("u"); !ok {
		t.Fatal("the node's user did not come back with its heartbeat")
	}

	later := time.Now().Add(750*time.Millisecond + forgetAfter*time.Second + time.Second)
	n.presenceTick(later)
	if n.peers["a"] != nil || n.view.entryCount() != 0 {
		t.Fatalf("silent for %d TTLs and more: still known (%d entries)", forgetAfter, n.view.entryCount())
	}
}

// Past the last node index, a newcomer (only forged presence carries so
// many names) is ignored rather than given another node's index, which
// would credit its users to that node.
func TestViewFullIgnoresNewNodes(t *testing.T) {
	v := newView("me", time.Hour)
	now := time.Now()
	for i := 0; len(v.byIdx) < maxNodes; i++ {
		v.heartbeat("n"+strconv.Itoa(i), now)
	}
	last := v.byIdx[len(v.byIdx)-1].id
	v.set("u", last, nil)
	v.heartbeat("extra", now)
	v.set("forged", "extra", nil)
	v.apply("extra", []presRecord{{op: opAdd, uid: []byte("forged2")}})
	if _, ok := v.remote("forged"); ok {
		t.Fatal("a user of a node past the index space is credited to another node")
	}
	if _, ok := v.remote("forged2"); ok {
		t.Fatal("a delta of a node past the index space was applied")
	}
	if _, ok := v.remote("u"); !ok {
		t.Fatal("the last node's own user is gone")
	}
	if v.nodes["extra"] != nil || len(v.byIdx) != maxNodes {
		t.Fatalf("extra node registered: %d indexes", len(v.byIdx))
	}
}

// A profile is the user's latest announcement: an add without a nick,
// avatar or sign (the user logged in again without them) must not leave
// the previous one visible on other nodes, whether it came in a delta, a
// snapshot or a local set.
func TestViewProfileFollowsLatestAdd(t *testing.T) {
	v := newView("me", time.Hour)
	v.heartbeat("a", time.Now())
	rich, _ := codec.Marshal(&codec.User{Nick: "Ann", Terminal: "ws"})
	v.apply("a", []presRecord{{op: opAdd, uid: []byte("u"), term: []byte("ws"), prof: rich}})
	if u, ok := v.remote("u"); !ok || u.Nick != "Ann" {
		t.Fatalf("rich profile not seen: %+v %v", u, ok)
	}
	v.apply("a", []presRecord{{op: opAdd, uid: []byte("u"), term: []byte("tcp")}})
	if u, ok := v.remote("u"); !ok || u.Nick != "" || u.Terminal != "tcp" {
		t.Fatalf("after an add without a profile: %+v %v", u, ok)
	}
	v.replaceNode("a", []presRecord{{op: opAdd, uid: []byte("u"), term: []byte("ws"), prof: rich}})
	v.replaceNode("a", []presRecord{{op: opAdd, uid: []byte("u"), term: []byte("ws"), prof: []byte("{not json")}})
	if u, ok := v.remote("u"); !ok || u.Nick != "" || u.Terminal != "ws" {
		t.Fatalf("after a snapshot with a broken profile: %+v %v", u, ok)
	}
	v.set("w", "a", &codec.User{Sign: "hi", Terminal: "ws"})
	v.set("w", "a", &codec.User{Terminal: "ws"})
	if u, ok := v.remote("w"); !ok || u.Sign != "" {
		t.Fatalf("after a local set without a profile: %+v %v", u, ok)
	}
}
