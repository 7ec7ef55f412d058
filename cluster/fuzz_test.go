package cluster

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"jim/codec"
	"jim/dispatch"
)

// Every subject these decoders read is open to any NATS client, so each
// target treats the payload as written by an adversary.

// addPrefixSeeds seeds with s whole and cut at every position.
func addPrefixSeeds(s []byte, add func([]byte)) {
	for i := 0; i <= len(s); i++ {
		add(bytes.Clone(s[:i]))
	}
}

// addStreamSeeds seeds with the stream of msgs whole, cut after each
// message and cut in the middle of each.
func addStreamSeeds(msgs [][]byte, add func([]byte)) {
	var b []byte
	for _, m := range msgs {
		add(bytes.Clone(b))
		add(append(bytes.Clone(b), m[:len(m)/2]...))
		b = append(b, m...)
	}
	add(b)
}

// allocated is about how many bytes the process has allocated so far:
// large objects count at once, small ones when their span is used up, so
// the figure lags by at most the spans in use. It does not stop the world,
// as runtime.ReadMemStats would on every input.
func allocated() uint64 {
	s := [1]rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	rtmetrics.Read(s[:])
	return s[0].Value.Uint64()
}

// warmAlloc makes the one-time allocations of the first decode of a
// profile (sonic compiles its decoder then), which are not the input's.
func warmAlloc() {
	var u codec.User
	_ = codec.Unmarshal([]byte(`{"nick":"N","friends":[{}]}`), &u)
}

// checkAlloc fails when handling an input of n bytes allocated more than a
// fixed slack plus a small multiple of n: a count or length read from the
// wire must not size an allocation by itself.
func checkAlloc(t *testing.T, before uint64, n int) {
	t.Helper()
	const slack, perByte = 2 << 20, 64
	if got := allocated() - before; got > slack+perByte*uint64(n) {
		t.Fatalf("%d bytes allocated for a %d-byte input", got, n)
	}
}

func sameFrame(a, b dispatch.ClusterMsg) bool {
	return a.Kind == b.Kind && a.Cmd == b.Cmd && a.Target == b.Target && a.Except == b.Except && bytes.Equal(a.JSON, b.JSON)
}

// Routed frames arrive on jim.node.<id> and jim.group.*: their length
// prefixes are whatever the publisher wrote.
func FuzzParseFrame(f *testing.F) {
	msgs := []dispatch.ClusterMsg{
		{Kind: dispatch.ClusterUser, Cmd: codec.CmdChatReq, Target: "u1", JSON: []byte(`{"cmd":11,"content":"hi"}`)},
		{Kind: dispatch.ClusterGroup, Cmd: codec.CmdExitGroupNotify, Target: "g/1", Except: "üser", JSON: []byte(`{"command":10}`)},
		{Kind: dispatch.ClusterKick, Cmd: -1, Target: strings.Repeat("k", 130)},
	}
	for _, m := range msgs {
		addPrefixSeeds(appendFrame(nil, &m), func(b []byte) { f.Add(b, byte(m.Kind), int8(m.Cmd), m.Target, m.Except) })
	}
	// A length of 2^64-1, lengths in non-minimal varints, a varint too long.
	f.Add([]byte{1, 1, 11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'x'}, byte(9), int8(0), "", "")
	f.Add([]byte{1, 2, 11, 0x81, 0x00, 'g', 0x80, 0x00, '{', '}'}, byte(0), int8(127), "t", "")
	f.Add([]byte{1, 3, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, byte(3), int8(-128), "", "e")
	f.Fuzz(func(t *testing.T, data []byte, kind byte, cmd int8, target, except string) {
		// What a node sends comes back whole.
		in := dispatch.ClusterMsg{Kind: dispatch.ClusterKind(kind), Cmd: codec.Cmd(cmd), Target: target, Except: except, JSON: data}
		enc := appendFrame(nil, &in)
		if out, err := parseFrame(enc); err != nil || !sameFrame(out, in) {
			t.Fatalf("round trip of %+v: %+v, %v", in, out, err)
		}
		// The JSON runs to the end, so only a cut before it can be seen,
		// and every such cut is refused.
		for i := 0; i < len(enc)-len(data); i += 1 + i/32 {
			if m, err := parseFrame(enc[:i]); err == nil {
				t.Fatalf("frame cut at %d of %d accepted: %+v", i, len(enc), m)
			}
		}

		m, err := parseFrame(data)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(data, m.JSON) {
			t.Fatalf("JSON %q is not the end of the frame", m.JSON)
		}
		re := appendFrame(nil, &m)
		if len(re) > len(data) {
			t.Fatalf("re-encoded to %d bytes from %d", len(re), len(data))
		}
		back, err := parseFrame(re)
		if err != nil || !sameFrame(back, m) {
			t.Fatalf("re-encoded %+v: %+v, %v", m, back, err)
		}
		if again := appendFrame(nil, &back); !bytes.Equal(again, re) {
			t.Fatalf("encoding not stable: %x then %x", re, again)
		}
	})
}

// Presence headers arrive on jim.presence.* and on the sync inboxes; the
// node name, sequence numbers and chunk counts in them are unchecked input.
func FuzzParsePres(f *testing.F) {
	hdrs := []presHeader{
		{typ: presDelta, node: "n-1", epoch: 1 << 60, seq: 300},
		{typ: presBeat, node: "n", epoch: 7, seq: 9},
		{typ: presBye, node: "x", epoch: ^uint64(0)},
		{typ: presSnap, node: "node_2", epoch: 3, seq: 1 << 40, chunk: 2, chunks: 3},
		{typ: presSnap, node: "n", chunk: 0, chunks: 1},
		{typ: presHello, node: "h"},
	}
	recs := appendDel(appendAdd(nil, "u", "tcp", []byte(`{"nick":"A"}`)), "v")
	for _, h := range hdrs {
		addPrefixSeeds(append(appendPresHeader(nil, &h), recs...), func(b []byte) {
			f.Add(b, h.typ, h.node, h.epoch, h.seq, uint32(h.chunk), uint32(h.chunks))
		})
	}
	// Chunk counts past the limit, a chunk index equal to the count, an
	// unknown type, an empty node name.
	for _, h := range []presHeader{
		{typ: presSnap, node: "n", chunk: 0, chunks: 1<<20 + 1},
		{typ: presSnap, node: "n", chunk: 1<<20 - 1, chunks: 1 << 20},
		{typ: presSnap, node: "n", chunk: 4, chunks: 4},
		{typ: presHello + 1, node: "n"},
		{typ: presBeat},
	} {
		f.Add(appendPresHeader(nil, &h), h.typ, h.node, h.epoch, h.seq, uint32(h.chunk), uint32(h.chunks))
	}
	f.Fuzz(func(t *testing.T, data []byte, typ byte, node string, epoch, seq uint64, chunk, chunks uint32) {
		want := presHeader{typ: typ, node: node, epoch: epoch, seq: seq}
		if typ == presSnap {
			want.chunk, want.chunks = int(chunk), int(chunks)
		}
		valid := typ >= presDelta && typ <= presHello && node != "" &&
			(typ != presSnap || chunk < chunks && chunks <= 1<<20)
		enc := appendPresHeader(nil, &want)
		hdr := len(enc)
		enc = append(enc, data...)
		got, rest, err := parsePres(enc)
		if valid != (err == nil) || valid && (got != want || !bytes.Equal(rest, data)) {
			t.Fatalf("header %+v (valid %v): %+v, %q, %v", want, valid, got, rest, err)
		}
		if valid {
			for i := 0; i < hdr; i += 1 + i/32 {
				if h, _, err := parsePres(enc[:i]); err == nil {
					t.Fatalf("header cut at %d of %d accepted: %+v", i, hdr, h)
				}
			}
		}

		h, recs, err := parsePres(data)
		if err != nil {
			return
		}
		if h.typ < presDelta || h.typ > presHello || h.node == "" ||
			h.typ == presSnap && (h.chunk < 0 || h.chunk >= h.chunks || h.chunks > 1<<20) ||
			h.typ != presSnap && (h.chunk != 0 || h.chunks != 0) {
			t.Fatalf("accepted header %+v", h)
		}
		if !bytes.HasSuffix(data, recs) {
			t.Fatalf("records %q are not the end of the message", recs)
		}
		re := append(appendPresHeader(nil, &h), recs...)
		if len(re) > len(data) {
			t.Fatalf("re-encoded to %d bytes from %d", len(re), len(data))
		}
		h2, recs2, err := parsePres(re)
		if err != nil || h2 != h || !bytes.Equal(recs2, recs) {
			t.Fatalf("re-encoded %+v: %+v, %v", h, h2, err)
		}
	})
}

func appendRecord(dst []byte, r presRecord) []byte {
	if r.op == opDel {
		return appendDel(dst, string(r.uid))
	}
	return appendAdd(dst, string(r.uid), string(r.term), r.prof)
}

func sameRecord(a, b presRecord) bool {
	return a.op == b.op && bytes.Equal(a.uid, b.uid) && bytes.Equal(a.term, b.term) && bytes.Equal(a.prof, b.prof)
}

// checkView checks that the view's counts, side maps and node indexes agree
// with its entries, whatever sequence of records built it.
func checkView(t *testing.T, v *view) {
	t.Helper()
	counts := make([]int, len(v.byIdx))
	total, multis := 0, 0
	v.users.each(func(k uint64, s uint32) {
		slots := []uint32{s}
		if s == multiSlot {
			multis++
			if slots = v.multi[k]; len(slots) < 2 {
				t.Fatalf("user %x: multi entry with %d slots", k, len(slots))
			}
		}
		for i, x := range slots {
			idx := slotNode(x)
			if int(idx) >= len(v.byIdx) || v.byIdx[idx] == nil {
				t.Fatalf("user %x on node index %d, which is free", k, idx)
			}
			if int(slotTerm(x)) >= len(v.terms) {
				t.Fatalf("user %x: terminal %d of %d", k, slotTerm(x), len(v.terms))
			}
			for _, y := range slots[:i] {
				if slotNode(y) == idx {
					t.Fatalf("user %x twice on node %d", k, idx)
				}
			}
			counts[idx]++
			total++
		}
	})
	if multis != len(v.multi) || total != v.entries {
		t.Fatalf("%d multi entries for %d users on several nodes; %d entries counted %d", len(v.multi), multis, total, v.entries)
	}
	for i, r := range v.byIdx {
		if r == nil {
			continue
		}
		if r.count != counts[i] || v.nodes[r.id] != r {
			t.Fatalf("node %q: count %d, has %d entries", r.id, r.count, counts[i])
		}
	}
	if len(v.nodes)+len(v.free) != len(v.byIdx) {
		t.Fatalf("%d nodes, %d free indexes, %d indexes", len(v.nodes), len(v.free), len(v.byIdx))
	}
	for k := range v.rich {
		if _, ok := v.users.get(k); !ok {
			t.Fatalf("profile kept for user %x, on no node", k)
		}
	}
	// Interned terminals outlive the entries: what they keep must not grow
	// with what the wire said.
	for _, u := range v.terms[1:] {
		if len(u.Terminal) > maxTerm {
			t.Fatalf("terminal of %d bytes kept for good", len(u.Terminal))
		}
	}
}

// The records of deltas and snapshot chunks come from any publisher on
// jim.presence.* and the sync inboxes, and their profiles are JSON from the
// wire: they must decode to exactly what was encoded and leave the view
// consistent, whatever they say.
func FuzzPresRecords(f *testing.F) {
	streams := [][]byte{
		appendAdd(nil, "u1", "tcp", nil),
		appendDel(appendAdd(appendAdd(nil, "a", "ws", []byte(`{"nick":"A","avatar":"x","terminal":"ws"}`)), "b", "", nil), "a"),
		appendAdd(appendAdd(nil, "c", "tcp", []byte(`{"nick":"C"}`)), "c", "http", []byte(`{"sign":"S","terminal":"http"}`)),
		appendAdd(appendDel(appendAdd(nil, "d", "tcp", []byte(`{"nick":`)), "d"), "d", "", []byte(`null`)),
		appendAdd(nil, "e", "", []byte(`{"friends":[{},{}],"groups":[{"group_id":"1"}],"sign":"s"}`)),
	}
	for _, s := range streams {
		addPrefixSeeds(s, func(b []byte) { f.Add(b) })
	}
	f.Add([]byte{opAdd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'u'})
	f.Add([]byte{opAdd, 1, 'u', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{opDel, 0, opAdd, 1, 'u', 0, 0})
	f.Add([]byte{opDel + 1, 1, 'u'})
	// A terminal of any length was once interned, and kept after its user
	// and node had gone.
	f.Add(appendAdd(nil, "t", strings.Repeat("t", 300), nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		var recs []presRecord
		var canon []byte
		rest := data
		for len(rest) > 0 {
			r, next, err := nextRecord(rest)
			if err != nil {
				break
			}
			if len(next) >= len(rest) || !bytes.HasSuffix(rest, next) {
				t.Fatalf("record %+v: %d bytes left of %d", r, len(next), len(rest))
			}
			recs = append(recs, r)
			start := len(canon)
			canon = appendRecord(canon, r)
			one := canon[start:]
			for i := 0; i < len(one); i += 1 + i/32 {
				if r, _, err := nextRecord(one[:i]); err == nil {
					t.Fatalf("record cut at %d of %d accepted: %+v", i, len(one), r)
				}
			}
			rest = next
		}
		if len(canon) > len(data)-len(rest) {
			t.Fatalf("re-encoded to %d bytes from %d", len(canon), len(data)-len(rest))
		}
		i := 0
		for b := canon; len(b) > 0; i++ {
			r, next, err := nextRecord(b)
			if err != nil || i >= len(recs) || !sameRecord(r, recs[i]) {
				t.Fatalf("re-encoded record %d: %+v, %v", i, r, err)
			}
			b = next
		}
		if i != len(recs) {
			t.Fatalf("%d records re-encoded as %d", len(recs), i)
		}

		// A delta: the users it leaves on the node are those it added last,
		// with the profile they were added with.
		v := newView("me", time.Hour)
		v.heartbeat("a", time.Now())
		v.apply("a", recs)
		checkView(t, v)
		on := map[string]bool{}
		added := map[string]bool{}
		prof := map[string]*codec.User{}
		var adds []presRecord
		for _, r := range recs {
			uid := string(r.uid)
			on[uid] = r.op == opAdd
			if r.op == opDel {
				continue
			}
			adds = append(adds, r)
			added[uid] = true
			prof[uid] = nil
			var u codec.User
			if len(r.prof) > 0 && codec.Unmarshal(r.prof, &u) == nil && (u.Nick != "" || u.Avatar != "" || u.Sign != "") {
				prof[uid] = &u
			}
		}
		n := 0
		for uid, want := range on {
			u, ok := v.remote(uid)
			if ok != want {
				t.Fatalf("user %q online %v, want %v", uid, ok, want)
			}
			if !want {
				continue
			}
			n++
			if p := prof[uid]; p != nil && (u == nil || u.Nick != p.Nick || u.Avatar != p.Avatar || u.Sign != p.Sign || u.Terminal != p.Terminal) {
				t.Fatalf("user %q: profile %+v, want %+v", uid, u, p)
			}
			// The last add had no nick, avatar or sign: none of an earlier one's.
			if prof[uid] == nil && u != nil && (u.Nick != "" || u.Avatar != "" || u.Sign != "") {
				t.Fatalf("user %q: profile %+v kept from an earlier add", uid, u)
			}
		}
		if v.entryCount() != n {
			t.Fatalf("%d entries for %d users", v.entryCount(), n)
		}
		// A snapshot of the adds replaces them: every user added is there.
		v.replaceNode("a", adds)
		checkView(t, v)
		for uid := range on {
			if _, ok := v.remote(uid); ok != added[uid] {
				t.Fatalf("user %q online %v after a snapshot, want %v", uid, ok, added[uid])
			}
		}
		n = len(added)
		if v.entryCount() != n {
			t.Fatalf("%d entries after a snapshot of %d users", v.entryCount(), n)
		}
		if v.dropNode("a") != n || v.entryCount() != 0 || len(v.rich) != 0 {
			t.Fatalf("%d entries and %d profiles left after the node went", v.entryCount(), len(v.rich))
		}
		checkView(t, v)
	})
}

// splitMsgs reads a stream of length-prefixed messages; an undecodable tail
// is one last message.
func splitMsgs(b []byte, each func([]byte)) {
	for len(b) > 0 {
		m, rest, ok := readBytes(b)
		if !ok {
			each(b)
			return
		}
		each(m)
		b = rest
	}
}

func appendMsg(dst, m []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(m)))
	return append(dst, m...)
}

func snapChunk(node string, epoch, seq uint64, chunk, chunks int, recs []byte) []byte {
	h := presHeader{typ: presSnap, node: node, epoch: epoch, seq: seq, chunk: chunk, chunks: chunks}
	return append(appendPresHeader(nil, &h), recs...)
}

func testNode(m *metrics) *Node {
	// nc stays nil: publishing fails at once with ErrInvalidConnection.
	return &Node{id: "me", view: newView("me", time.Hour), m: m, ttl: time.Hour,
		peers: map[string]*peer{}, log: slog.New(slog.DiscardHandler)}
}

// Snapshot chunks come to a sync inbox whose name any subscriber of
// jim.presence.sync.* sees, so anyone can answer a request first with
// chunk counts, indexes and records of their choosing. The snapshot that
// completes must be exactly the chunks' users, and an incomplete one must
// cost no more than the chunks that came.
func FuzzSnapshotChunks(f *testing.F) {
	const epoch = 7
	stream := func(chunks ...[]byte) [][]byte {
		var msgs [][]byte
		for _, c := range chunks {
			msgs = append(msgs, appendMsg(nil, c))
		}
		return msgs
	}
	a := appendAdd(appendAdd(nil, "u1", "tcp", nil), "u2", "ws", []byte(`{"nick":"N"}`))
	b := appendAdd(appendDel(nil, "u1"), "old", "", nil)
	seeds := [][][]byte{
		stream(snapChunk("n", epoch, 3, 0, 1, a)),
		stream(snapChunk("n", epoch, 3, 2, 3, b), snapChunk("n", epoch, 3, 0, 3, a), snapChunk("n", epoch, 3, 0, 3, b),
			snapChunk("n", epoch, 3, 1, 3, nil)),
		stream(snapChunk("n", epoch, 3, 0, 2, a), snapChunk("n", epoch, 4, 1, 2, b), snapChunk("n", epoch, 3, 1, 3, b),
			snapChunk("n", epoch+1, 3, 1, 2, b), snapChunk("m", epoch, 3, 1, 2, b), snapChunk("n", epoch, 3, 1, 2, []byte{opAdd, 9})),
		stream(snapChunk("n", epoch, 0, 0, 1, nil), snapChunk("n", epoch, 0, 0, 1, a)),
		stream(appendPresHeader(nil, &presHeader{typ: presDelta, node: "n", epoch: epoch, seq: 1}), snapChunk("n", epoch, 1, 0, 1, b)),
	}
	for _, s := range seeds {
		addStreamSeeds(s, func(b []byte) { f.Add(b) })
	}
	// One small chunk announcing the largest snapshot allowed: it once
	// cost a slot for each of the million chunks announced.
	f.Add(appendMsg(nil, snapChunk("n", epoch, 0, 0, 1<<20, a)))
	f.Add(appendMsg(nil, snapChunk("n", epoch, 0, 1<<20-1, 1<<20, a)))
	m := newMetrics()
	warmAlloc()
	f.Fuzz(func(t *testing.T, data []byte) {
		before := allocated()
		n := testNode(m)
		p := &peer{epoch: epoch, reqID: 1}
		n.peers["n"] = p
		n.view.heartbeat("n", time.Now())
		n.view.set("old", "n", nil)

		// Independently of handleSnapChunk: the first chunk of the right
		// node and epoch fixes the count and sequence number, and the
		// snapshot is complete when every index of it came once.
		total, seq, done := -1, uint64(0), false
		got := map[int][]byte{}
		splitMsgs(data, func(msg []byte) {
			n.handleSnapChunk(&nats.Msg{Subject: syncInbox + "me.1", Data: msg})
			h, recs, err := parsePres(msg)
			if done || err != nil || h.typ != presSnap || h.node != "n" || h.epoch != epoch {
				return
			}
			if total < 0 {
				total, seq = h.chunks, h.seq
			}
			if _, dup := got[h.chunk]; dup || h.chunks != total || h.seq != seq {
				return
			}
			got[h.chunk] = recs
			done = len(got) == total
		})
		checkAlloc(t, before, len(data))
		checkView(t, n.view)
		if p.synced != done {
			t.Fatalf("synced %v, snapshot complete %v", p.synced, done)
		}
		want := map[string]bool{}
		if !done {
			want["old"] = true
		} else {
			if p.seq != seq || p.reqID != 0 || p.chunks != nil {
				t.Fatalf("after the snapshot: %+v", p)
			}
			for i := range total {
				for c := got[i]; len(c) > 0; {
					r, rest, err := nextRecord(c)
					if err != nil {
						break
					}
					if r.op == opAdd {
						want[string(r.uid)] = true
					}
					c = rest
				}
			}
		}
		for uid := range want {
			if _, ok := n.view.remote(uid); !ok {
				t.Fatalf("user %q missing", uid)
			}
		}
		if _, ok := n.view.remote("old"); ok != want["old"] {
			t.Fatalf("user old online %v", ok)
		}
		if n.view.entryCount() != len(want) {
			t.Fatalf("%d entries, want %d", n.view.entryCount(), len(want))
		}
	})
}

// Message selectors in FuzzPresenceIn's streams.
const (
	selPresence = 0    // on jim.presence.<x>
	selRetry    = 0x3f // a presence tick once a snapshot request is due again
	selForget   = 0x3e // a presence tick once every node is long silent
	sel503      = 0x40 // with an inbox selector: the server's no-responders reply
)

// Presence arrives from every node, or from anything claiming to be one:
// hostile sequences of deltas, heartbeats, goodbyes and snapshot chunks
// (some answering real requests) must keep every peer's state and the view
// consistent, bounded by what was received, and fully released once the
// nodes are forgotten.
func FuzzPresenceIn(f *testing.F) {
	msg := func(sel byte, data []byte) []byte { return appendMsg([]byte{sel}, data) }
	pres := func(typ byte, node string, epoch, seq uint64, recs []byte) []byte {
		return msg(selPresence, append(appendPresHeader(nil, &presHeader{typ: typ, node: node, epoch: epoch, seq: seq}), recs...))
	}
	snap := func(id byte, node string, epoch, seq uint64, chunk, chunks int, recs []byte) []byte {
		return msg(id, snapChunk(node, epoch, seq, chunk, chunks, recs))
	}
	cat := func(ms ...[]byte) [][]byte { return ms }
	add := func(uids ...string) []byte {
		var b []byte
		for _, u := range uids {
			b = appendAdd(b, u, "tcp", nil)
		}
		return b
	}
	seeds := [][][]byte{
		// A node's life: hello, a delta before its snapshot, the snapshot
		// in two chunks, deltas, a gap, a new snapshot, goodbye.
		cat(pres(presHello, "a", 5, 0, nil), pres(presDelta, "a", 5, 1, add("u1")),
			snap(1, "a", 5, 0, 1, 2, appendDel(add("u2"), "u0")), snap(1, "a", 5, 0, 0, 2, add("u0")),
			pres(presDelta, "a", 5, 2, appendDel(nil, "u0")), pres(presBeat, "a", 5, 5, nil),
			snap(2, "a", 5, 5, 0, 1, add("u1", "u3")), pres(presDelta, "a", 5, 6, add("u4")), pres(presBye, "a", 5, 6, nil)),
		// Two nodes sharing a user, a restart, a no-responders reply, a
		// retry, the node's own echo and a long silence.
		cat(pres(presBeat, "a", 1, 0, nil), pres(presBeat, "b", 2, 0, nil),
			snap(1, "a", 1, 0, 0, 1, appendAdd(nil, "u", "ws", []byte(`{"nick":"U"}`))), snap(2, "b", 2, 0, 0, 1, add("u", "v")),
			pres(presDelta, "b", 2, 1, appendDel(nil, "u")), pres(presBeat, "a", 9, 0, nil), msg(3|sel503, nil),
			msg(selRetry, nil), snap(4, "a", 9, 0, 0, 1, add("u")), pres(presBeat, "me", 0, 0, nil), msg(selForget, nil)),
		// Out-of-order and repeated deltas, a duplicate chunk, a chunk for
		// a stale request, a goodbye from an unknown node.
		cat(pres(presBeat, "a", 1, 0, nil), pres(presDelta, "a", 1, 2, add("x")), pres(presDelta, "a", 1, 1, add("y")),
			snap(1, "a", 1, 0, 0, 2, add("z")), snap(1, "a", 1, 0, 0, 2, add("w")), snap(9, "a", 1, 0, 1, 2, nil),
			snap(1, "a", 1, 0, 1, 2, nil), pres(presDelta, "a", 1, 2, add("x")), pres(presBye, "c", 3, 0, nil), msg(selForget, nil)),
		// A request answered with the largest chunk count allowed, which
		// once cost a slot for each chunk announced.
		cat(pres(presBeat, "a", 1, 0, nil), snap(1, "a", 1, 0, 0, 1<<20, add("u"))),
	}
	for _, s := range seeds {
		addStreamSeeds(s, func(b []byte) { f.Add(b) })
	}
	m := newMetrics()
	warmAlloc()
	f.Fuzz(func(t *testing.T, data []byte) {
		before, size := allocated(), len(data)
		n := testNode(m)
		now := time.Now()
		for len(data) > 0 {
			sel := data[0]
			body, rest, ok := readBytes(data[1:])
			if !ok {
				body, rest = data[1:], nil
			}
			data = rest
			switch id := sel &^ sel503; {
			case id == selRetry:
				n.presenceTick(now.Add(syncRetry + time.Second))
			case id == selForget:
				n.presenceTick(now.Add(n.view.deadAfter + (forgetAfter+1)*n.ttl))
			case id == selPresence:
				n.handlePresence(&nats.Msg{Subject: presenceSubject + "x", Data: body})
			default:
				msg := &nats.Msg{Subject: syncInbox + "me." + strconv.Itoa(int(id)), Data: body}
				if sel&sel503 != 0 {
					msg.Header = nats.Header{"Status": []string{"503"}}
				}
				n.handlePresence(msg)
			}
		}
		checkAlloc(t, before, size)
		checkView(t, n.view)
		for node, p := range n.peers {
			if n.view.nodes[node] == nil {
				t.Fatalf("peer %q not in the view", node)
			}
			if p.synced && (p.reqID != 0 || p.chunks != nil) || len(p.buf) > maxBuffered {
				t.Fatalf("peer %q: synced %v, request %d, %d buffered", node, p.synced, p.reqID, len(p.buf))
			}
		}
		if len(n.view.nodes) != len(n.peers) {
			t.Fatalf("%d nodes in the view, %d peers", len(n.view.nodes), len(n.peers))
		}
		for node := range n.peers {
			n.forgetPeer(node, "test")
		}
		checkView(t, n.view)
		if n.view.entries != 0 || n.view.users.len() != 0 || len(n.view.multi) != 0 || len(n.view.rich) != 0 {
			t.Fatalf("after every node went: %d entries, %d users, %d multi, %d profiles",
				n.view.entries, n.view.users.len(), len(n.view.multi), len(n.view.rich))
		}
	})
}

// recorder is a ClusterHandler that keeps what it is handed.
type recorder struct{ delivered, undelivered []dispatch.ClusterMsg }

func (r *recorder) ClusterDeliver(m dispatch.ClusterMsg) {
	r.delivered = append(r.delivered, m)
}

func (r *recorder) ClusterUndelivered(m dispatch.ClusterMsg) {
	r.undelivered = append(r.undelivered, m)
}

func (r *recorder) LocalUser(string) *codec.User { return nil }
func (r *recorder) LocalUsers() []string         { return nil }

// The routing subscriptions take any subject under jim.node.<id>,
// jim.group.* and this node's miss inbox, where a forged "no responders"
// could send a chat that did arrive to the offline queue as well: a
// subject must name a chat still pending to take it back, and only once.
func FuzzReceive(f *testing.F) {
	frame := appendFrame(nil, &dispatch.ClusterMsg{Kind: dispatch.ClusterUser, Cmd: codec.CmdChatReq, Target: "u", JSON: []byte(`{}`)})
	for _, s := range []struct {
		subj string
		no   bool
		data []byte
	}{
		{nodeSubject + "me", false, frame},
		{groupSubject + "other", false, frame},
		{groupSubject + "me", false, frame},
		{nodeSubject + "me", false, frame[:4]},
		{"_jim.miss.me.1", true, nil},
		{"_jim.miss.me.2", true, frame},
		{"_jim.miss.me.3", true, nil},
		{"_jim.miss.me.1", false, nil},
		{"_jim.miss.me.01", true, nil},
		{"_jim.miss.me.18446744073709551617", true, nil},
		{"_jim.miss.you.1", true, nil},
		{"_jim.miss.", true, nil},
	} {
		f.Add(s.subj, s.no, s.data)
	}
	m := newMetrics()
	f.Fuzz(func(t *testing.T, subj string, noResponders bool, data []byte) {
		n := testNode(m)
		pending := map[uint64]dispatch.ClusterMsg{
			1: {Kind: dispatch.ClusterUser, Cmd: codec.CmdChatReq, Target: "a"},
			2: {Kind: dispatch.ClusterUser, Cmd: codec.CmdChatReq, Target: "b"},
		}
		n.miss = map[uint64]missed{}
		for seq, c := range pending {
			n.miss[seq] = missed{m: c, at: time.Now()}
		}
		rec := &recorder{}
		n.h.Store(&handlerBox{rec})
		msg := &nats.Msg{Subject: subj, Data: data}
		if noResponders {
			msg.Header = nats.Header{"Status": []string{"503"}}
		}
		n.receive(msg)
		n.receive(msg)

		fromMiss := strings.HasPrefix(subj, "_jim.miss.")
		if len(rec.undelivered) > 1 || len(rec.undelivered) > 0 && (!fromMiss || !noResponders) {
			t.Fatalf("%d chats taken back for %q (503: %v)", len(rec.undelivered), subj, noResponders)
		}
		for _, u := range rec.undelivered {
			found := false
			for seq, c := range pending {
				if sameFrame(u, c) {
					found = true
					if _, still := n.miss[seq]; still {
						t.Fatalf("chat %d taken back and still pending", seq)
					}
				}
			}
			if !found {
				t.Fatalf("took back %+v, never sent", u)
			}
		}
		if len(n.miss)+len(rec.undelivered) != len(pending) {
			t.Fatalf("%d pending and %d taken back of %d", len(n.miss), len(rec.undelivered), len(pending))
		}
		want, err := parseFrame(data)
		deliver := !fromMiss && subj != groupSubject+"me" && err == nil
		if deliver != (len(rec.delivered) == 2) || !deliver && len(rec.delivered) != 0 {
			t.Fatalf("%q: %d delivered, want %v", subj, len(rec.delivered), deliver)
		}
		for _, d := range rec.delivered {
			if !sameFrame(d, want) {
				t.Fatalf("delivered %+v, decoded %+v", d, want)
			}
		}
	})
}
