package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// addCutSeeds seeds f with b whole and cut at the cutPoints: every seed
// costs a round trip to a fuzz worker before fuzzing starts.
func addCutSeeds(b []byte, add func([]byte)) {
	add(b)
	for _, i := range cutPoints(len(b)) {
		add(b[:i])
	}
}

// cutPoints are the lengths of the proper prefixes of an n-byte encoding
// that a property is checked on: all of them near the start, sparser later,
// so a long input stays cheap.
func cutPoints(n int) []int {
	var out []int
	for i := 0; i < n; i += 1 + i/16 {
		out = append(out, i)
	}
	return out
}

var fuzzPrefix = [8]byte{0x9e, 1, 2, 3, 4, 5, 6, 0xff}

var fuzzMsgs = []*Message{
	{ID: makeID(fuzzPrefix, 42), Conv: PrivateConv("alice", "bob"), Seq: 7, ChatType: ChatPrivate, From: "alice", To: "bob",
		MsgType: 1, Content: "hi", CreateTime: 1700000000000, ClientID: "c-1"},
	{ID: makeID(fuzzPrefix, 1<<40), Conv: GroupConv("100"), Seq: 1 << 63, ChatType: ChatGroup, From: "ü", GroupID: "100",
		MsgType: -3, CreateTime: -1, Extras: []byte(`{"k":[1,2]}`)},
	{Seq: 300, ChatType: 300, Content: strings.Repeat("x", 130), Extras: []byte{}},
	{},
}

// sameMsg compares messages; the store does not tell an empty Extras from a
// nil one (Clone does not either).
func sameMsg(a, b *Message) bool {
	x, y := *a, *b
	if len(x.Extras) == 0 {
		x.Extras = nil
	}
	if len(y.Extras) == 0 {
		y.Extras = nil
	}
	return reflect.DeepEqual(x, y)
}

func msgSize(m *Message) int {
	return len(m.ID) + len(m.From) + len(m.To) + len(m.GroupID) + len(m.Content) + len(m.ClientID) + len(m.Extras)
}

// A message value is read back from disk, where it may be damaged, and on
// the JetStream store from a stream any node (of any version) publishes to.
// Both formats are covered: the id as text, and (Badger only, given its
// prefix) as the message's number.
func FuzzDecodeMsg(f *testing.F) {
	for _, m := range fuzzMsgs {
		addCutSeeds(encodeMsg(nil, m), func(b []byte) { f.Add(b, m.Conv, m.Seq) })
		if g, ok := gseqOfID(fuzzPrefix, m.ID); ok {
			addCutSeeds(encodeMsgNum(nil, m, g), func(b []byte) { f.Add(b, m.Conv, m.Seq) })
		}
	}
	f.Add([]byte{msgFormatNum + 1}, "", uint64(0))
	f.Add([]byte{msgFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "c", uint64(1))       // length 2^64-1
	f.Add([]byte{msgFormat, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, "c", uint64(1)) // varint overflow
	f.Add([]byte{msgFormatNum, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, "c", uint64(1))
	f.Add(append(encodeMsg(nil, fuzzMsgs[0]), "trailing"...), "c", uint64(2))
	f.Fuzz(func(t *testing.T, data []byte, conv string, seq uint64) {
		buf := bytes.Clone(data)
		m, err := decodeMsgIn(conv, seq, buf, &fuzzPrefix)
		if len(data) > 0 && data[0] == msgFormatNum {
			// Without the prefix the number cannot become an id.
			if _, err := decodeMsg(conv, seq, data); err == nil {
				t.Fatal("a numbered id decoded without the store's prefix")
			}
		}
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a message", err)
			}
		} else {
			if m.Conv != conv || m.Seq != seq {
				t.Fatalf("conv/seq %q/%d, want %q/%d", m.Conv, m.Seq, conv, seq)
			}
			// The time filter's shortcut reads the same createTime.
			if ct, err := msgCreateTime(data); err != nil || ct != m.CreateTime {
				t.Fatalf("msgCreateTime %d, %v; the message says %d", ct, err, m.CreateTime)
			}
			// Every field is a copy of input bytes: nothing is sized by a
			// length the input claims but does not hold (a numbered id is
			// made, 32 digits from at most 10 bytes).
			n := msgSize(m)
			num := data[0] == msgFormatNum
			if num {
				n -= len(m.ID)
			}
			if n > len(data) {
				t.Fatalf("%d bytes decoded from %d", n, len(data))
			}
			// Badger's value buffer is reused after the read: the message
			// must not point into it.
			clear(buf)
			if again, _ := decodeMsgIn(conv, seq, data, &fuzzPrefix); !sameMsg(m, again) {
				t.Fatalf("message changed with its buffer: %+v vs %+v", m, again)
			}
			re := encodeMsg(nil, m)
			if num {
				g, ok := gseqOfID(fuzzPrefix, m.ID)
				if !ok {
					t.Fatalf("numbered id %q is not the store's", m.ID)
				}
				re = encodeMsgNum(nil, m, g)
			}
			if len(re) > len(data) {
				t.Fatalf("re-encoding %d bytes from %d", len(re), len(data))
			}
			back, err := decodeMsgIn(conv, seq, re, &fuzzPrefix)
			if err != nil || !sameMsg(back, m) {
				t.Fatalf("re-decode: %+v vs %+v (%v)", back, m, err)
			}
			// No field is optional: a cut value is never a shorter message.
			for _, i := range cutPoints(len(re)) {
				if _, err := decodeMsgIn(conv, seq, re[:i], &fuzzPrefix); err == nil {
					t.Fatalf("prefix %d of %x decoded", i, re)
				}
			}
		}
		x := &Message{ID: conv, Conv: conv, Seq: seq, ChatType: int(int64(seq)), From: string(data), To: conv,
			MsgType: int(int32(seq)), Content: string(data), CreateTime: int64(^seq), ClientID: conv}
		if seq&1 == 0 {
			x.Extras = data
		}
		enc := encodeMsg([]byte("x"), x)
		if got, err := decodeMsg(conv, seq, enc[1:]); err != nil || !sameMsg(got, x) {
			t.Fatalf("round trip: %+v vs %+v (%v)", got, x, err)
		}
		x.ID = makeID(fuzzPrefix, ^seq)
		enc = encodeMsgNum([]byte("x"), x, ^seq)
		if got, err := decodeMsgIn(conv, seq, enc[1:], &fuzzPrefix); err != nil || !sameMsg(got, x) {
			t.Fatalf("numbered round trip: %+v vs %+v (%v)", got, x, err)
		}
	})
}

// An offline reference in the Badger store is read back from disk.
func FuzzDecodeOffRef(f *testing.F) {
	for _, m := range fuzzMsgs {
		addCutSeeds(encodeOffRef(nil, m), func(b []byte) { f.Add(b, m.From, m.Seq) })
	}
	f.Add([]byte{ChatGroup, 0xff, 0xff, 0xff, 0xff, 0x0f}, "", uint64(0))
	f.Add(append(encodeOffRef(nil, fuzzMsgs[1]), 0), "g", uint64(5))
	f.Fuzz(func(t *testing.T, data []byte, s string, seq uint64) {
		o, err := decodeOffRef(data)
		if err == nil {
			if n := len(o.from) + len(o.groupID) + len(o.conv); n > len(data) {
				t.Fatalf("%d bytes decoded from %d", n, len(data))
			}
			re := encodeOffRef(nil, &Message{ChatType: o.chatType, From: o.from, GroupID: o.groupID, Conv: o.conv, Seq: o.seq})
			if len(re) > len(data) {
				t.Fatalf("re-encoding %d bytes from %d", len(re), len(data))
			}
			if back, err := decodeOffRef(re); err != nil || back != o {
				t.Fatalf("re-decode: %+v vs %+v (%v)", back, o, err)
			}
			for _, i := range cutPoints(len(re)) {
				if _, err := decodeOffRef(re[:i]); err == nil {
					t.Fatalf("prefix %d of %x decoded", i, re)
				}
			}
		} else if o != (offRef{}) {
			t.Fatalf("error %v with %+v", err, o)
		}
		ct := 0
		if len(data) > 0 {
			ct = int(data[0]) // the chat type is one byte on disk
		}
		x := offRef{chatType: ct, from: s, groupID: string(data), conv: s + "/" + s, seq: seq}
		enc := encodeOffRef(nil, &Message{ChatType: x.chatType, From: x.from, GroupID: x.groupID, Conv: x.conv, Seq: x.seq})
		if got, err := decodeOffRef(enc); err != nil || got != x {
			t.Fatalf("round trip: %+v vs %+v (%v)", got, x, err)
		}
	})
}

// A de-duplication record (d/ key) is read back from disk and answered to
// the client as the original ack.
func FuzzDecodeAck(f *testing.F) {
	addCutSeeds(encodeAck(Ack{ID: makeID(fuzzPrefix, 9), Seq: 3}), func(b []byte) { f.Add(b, uint64(0)) })
	f.Add([]byte{}, uint64(1<<63))
	f.Fuzz(func(t *testing.T, data []byte, seq uint64) {
		a, err := decodeAck(data)
		switch {
		case len(data) < 8:
			if err == nil {
				t.Fatalf("%d bytes decoded", len(data))
			}
		case err != nil:
			t.Fatalf("%x: %v", data, err)
		case a.Duplicate || !bytes.Equal(encodeAck(a), data):
			t.Fatalf("%x decoded as %+v", data, a)
		}
		x := Ack{ID: string(data), Seq: seq}
		if got, err := decodeAck(encodeAck(x)); err != nil || got != x {
			t.Fatalf("round trip: %+v vs %+v (%v)", got, x, err)
		}
	})
}

// Keys are parsed when iterating the database, whose contents may be
// damaged or come from another version; a component's length is read from
// the key itself.
func FuzzKeyParts(f *testing.F) {
	for _, k := range [][]byte{
		msgKey(PrivateConv("a", "b"), 7), offKey("user", 1<<40), seqKey("c"), dedupKey("from", "cid"),
		groupKey("g", "u"), byUserKey("u", "g"), dedupBatchKey(5), {'m', '/', 0xff, 0xff},
	} {
		addCutSeeds(k, func(b []byte) { f.Add(b, uint8(2), uint64(len(b))) })
	}
	f.Fuzz(func(t *testing.T, key []byte, pfx uint8, seq uint64) {
		n := int(pfx % 4)
		part, ok1 := keyPart(key, n)
		tail, ok2 := keyTail(key, n)
		if ok1 != ok2 {
			t.Fatalf("keyPart %v, keyTail %v", ok1, ok2)
		}
		if ok1 {
			// The parts are the key: nothing invented, nothing skipped.
			if got := append(prefix1(string(key[:n]), part), tail...); !bytes.Equal(got, key) {
				t.Fatalf("parts %q %q of %x", part, tail, key)
			}
		} else if part != "" || tail != nil {
			t.Fatalf("failed with %q %q", part, tail)
		}
		s := seqOf(key)
		if len(key) < 8 && s != 0 || len(key) >= 8 && !bytes.Equal(binaryBE(s), key[len(key)-8:]) {
			t.Fatalf("seqOf(%x) = %d", key, s)
		}
		id := string(key)
		if partsOK(id) != nil {
			return
		}
		for _, k := range [][]byte{msgKey(id, seq), offKey(id, seq)} {
			p, ok := keyPart(k, 2)
			tl, _ := keyTail(k, 2)
			if !ok || p != id || !bytes.Equal(tl, binaryBE(seq)) || seqOf(k) != seq {
				t.Fatalf("%x: %q %x %d", k, p, tl, seqOf(k))
			}
			// A key cut inside its component is never read as a shorter id.
			for _, i := range cutPoints(4 + len(id)) {
				if _, ok := keyPart(k[:i], 2); ok {
					t.Fatalf("prefix %d of %x parsed", i, k)
				}
			}
		}
		for _, k := range [][]byte{dedupKey(id, id), groupKey(id, id), byUserKey(id, id)} {
			p, ok := keyPart(k, 2)
			tl, _ := keyTail(k, 2)
			if !ok || p != id || string(tl) != id {
				t.Fatalf("%x: %q %q", k, p, tl)
			}
		}
		if p, ok := keyPart(seqKey(id), 2); !ok || p != id {
			t.Fatalf("seqKey: %q %v", p, ok)
		}
	})
}

// A message id comes from clients (an ack or a resend names it) and must
// only be taken for one of this store's messages when it is one.
func FuzzGseqOfID(f *testing.F) {
	id := makeID(fuzzPrefix, 77)
	for _, s := range []string{id, strings.ToUpper(id), id[:31], id + "0", "zz" + id[2:], makeID([8]byte{}, 77)} {
		f.Add(s, binary.BigEndian.Uint64(fuzzPrefix[:]), uint64(77))
	}
	f.Fuzz(func(t *testing.T, id string, prefix, gseq uint64) {
		var p [8]byte
		binary.BigEndian.PutUint64(p[:], prefix)
		g, ok := gseqOfID(p, id)
		if ok && makeID(p, g) != strings.ToLower(id) || !ok && g != 0 {
			t.Fatalf("%q: %d %v", id, g, ok)
		}
		own := makeID(p, gseq)
		if g, ok := gseqOfID(p, own); !ok || g != gseq {
			t.Fatalf("round trip %d: %d %v", gseq, g, ok)
		}
		other := p
		other[int(gseq%8)] ^= 1
		if _, ok := gseqOfID(other, own); ok {
			t.Fatalf("%s taken for prefix %x", own, other)
		}
	})
}

// dedupItems decodes a D/ batch entry, stopping after limit records when
// limit > 0.
func dedupItems(gseq0 uint64, v []byte, limit int) ([]dedupItem, error) {
	var out []dedupItem
	err := eachDedupItem(gseq0, v, func(from, cid []byte, seq, g uint64) bool {
		out = append(out, dedupItem{from: string(from), clientID: string(cid), seq: seq, gseq: g})
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// encodeDedupItems is the writer's encoding of a batch entry; ends[k] is the
// length of the first k records.
func encodeDedupItems(gseq0 uint64, items []dedupItem) (b []byte, ends []int) {
	ends = []int{1}
	for _, it := range items {
		b = appendDedupItem(b, gseq0, it)
		ends = append(ends, len(b))
	}
	if len(items) == 0 {
		b = []byte{dedupBatchFormat}
	}
	return b, ends
}

// A D/ batch entry is read back from disk at open (to rebuild the index)
// and when a duplicate is confirmed or spilled; a damaged one must be
// reported, not loaded as records that were never written.
func FuzzDedupBatch(f *testing.F) {
	items := []dedupItem{{"alice", "c-1", 7, 100}, {"", "", 0, 100}, {"ü", strings.Repeat("k", 130), 1 << 40, 1<<20 + 100}}
	good, _ := encodeDedupItems(100, items)
	addCutSeeds(good, func(b []byte) { f.Add(b, uint64(100), uint8(1)) })
	f.Add([]byte{dedupBatchFormat}, uint64(0), uint8(0))
	f.Add([]byte{dedupBatchFormat + 1, 0, 0, 0, 0}, uint64(0), uint8(0))
	f.Add([]byte{dedupBatchFormat, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint64(1), uint8(0))
	f.Add([]byte{dedupBatchFormat, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, uint64(5), uint8(0))
	// An offset that carries the number past 2^64.
	f.Add([]byte{dedupBatchFormat, 0, 0, 0, 2}, uint64(math.MaxUint64-1), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, gseq0 uint64, stop uint8) {
		got, err := dedupItems(gseq0, data, 0)
		// Records are handed out as slices of the value, so the decoded
		// size is bounded by it, and every record costs input bytes.
		n := 0
		for _, it := range got {
			n += 4 + len(it.from) + len(it.clientID)
			if it.gseq < gseq0 {
				t.Fatalf("record %d decoded before its batch's first number %d", it.gseq, gseq0)
			}
		}
		if n > len(data) {
			t.Fatalf("%d records, %d bytes, from %d", len(got), n, len(data))
		}
		if err == nil {
			re, ends := encodeDedupItems(gseq0, got)
			if len(re) > len(data) {
				t.Fatalf("re-encoding %d bytes from %d", len(re), len(data))
			}
			if back, err := dedupItems(gseq0, re, 0); err != nil || !slices.Equal(back, got) {
				t.Fatalf("re-decode: %+v vs %+v (%v)", back, got, err)
			}
			// The entry has no record count, so a cut at a record boundary
			// is a shorter valid batch; a cut anywhere else is an error,
			// after the whole records before it.
			for _, i := range cutPoints(len(re)) {
				k, _ := slices.BinarySearch(ends, i+1)
				k-- // records wholly in re[:i]
				at, err := dedupItems(gseq0, re[:i], 0)
				boundary := k >= 0 && ends[k] == i
				if boundary != (err == nil) || k >= 0 && !slices.Equal(at, got[:k]) || k < 0 && len(at) != 0 {
					t.Fatalf("prefix %d of %x: %+v %v", i, re, at, err)
				}
			}
			if len(got) > 0 {
				lim := 1 + int(stop)%len(got)
				if at, err := dedupItems(gseq0, data, lim); err != nil || !slices.Equal(at, got[:lim]) {
					t.Fatalf("stopping after %d: %+v %v", lim, at, err)
				}
			}
		}
		// What the writer encodes reads back the same.
		var x []dedupItem
		for i := 0; i < len(data) && len(x) < 8; i += 3 {
			off := uint64(data[i]) << (i % 57)
			if off > math.MaxUint64-gseq0 {
				break // the writer never numbers past 2^64
			}
			x = append(x, dedupItem{from: string(data[i:]), clientID: string(data[:i]), seq: uint64(i) * gseq0, gseq: gseq0 + off})
		}
		enc, _ := encodeDedupItems(gseq0, x)
		if back, err := dedupItems(gseq0, enc, 0); err != nil || !slices.Equal(back, x) {
			t.Fatalf("round trip: %+v vs %+v (%v)", back, x, err)
		}
	})
}

// An offline reference on the JetStream store is published by any node, of
// any version, to a stream other clients may publish to as well.
func FuzzDecodeJSRef(f *testing.F) {
	for _, m := range fuzzMsgs {
		addCutSeeds(encodeJSRef(m), func(b []byte) { f.Add(b, m.ID, m.Seq) })
	}
	f.Add([]byte{offRefFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, "", uint64(0))
	f.Add(append(encodeJSRef(fuzzMsgs[0]), 1, 2, 3), "x", uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, s string, seq uint64) {
		x, err := decodeJSRef(data)
		if err == nil {
			if n := len(x.id) + len(x.conv) + len(x.from) + len(x.gid); n > len(data) {
				t.Fatalf("%d bytes decoded from %d", n, len(data))
			}
			re := encodeJSRef(&Message{ID: x.id, Conv: x.conv, Seq: x.seq, ChatType: x.chatType, From: x.from, GroupID: x.gid})
			if len(re) > len(data) {
				t.Fatalf("re-encoding %d bytes from %d", len(re), len(data))
			}
			if back, err := decodeJSRef(re); err != nil || back != x {
				t.Fatalf("re-decode: %+v vs %+v (%v)", back, x, err)
			}
			for _, i := range cutPoints(len(re)) {
				if _, err := decodeJSRef(re[:i]); err == nil {
					t.Fatalf("prefix %d of %x decoded", i, re)
				}
			}
		}
		want := jsRef{id: s, conv: string(data), from: s, gid: s + s, seq: seq, chatType: int(int64(^seq))}
		got, err := decodeJSRef(encodeJSRef(&Message{ID: want.id, Conv: want.conv, Seq: want.seq, ChatType: want.chatType, From: want.from, GroupID: want.gid}))
		if err != nil || got != want {
			t.Fatalf("round trip: %+v vs %+v (%v)", got, want, err)
		}
	})
}

// A stored JetStream message is decoded from its subject and body; both
// come from the stream, which any node (of any version) publishes to.
func FuzzJetStreamDecode(f *testing.F) {
	s := &JetStream{subjM: "jim.m."}
	for _, m := range fuzzMsgs {
		addCutSeeds([]byte(s.msgSubj(m.Conv, m.Seq)), func(b []byte) { f.Add(string(b), encodeMsg(nil, m)) })
	}
	f.Add("jim.m.-.18446744073709551616", encodeMsg(nil, fuzzMsgs[3]))
	f.Add("jim.m.a.b.1", encodeMsg(nil, fuzzMsgs[3]))
	f.Add("jim.m.YQ.+1", []byte{msgFormat})
	f.Fuzz(func(t *testing.T, subj string, data []byte) {
		m, err := s.decode(rawMsg{subj: subj, data: data, seq: 1})
		if err != nil {
			return
		}
		if n, err := seqOfSubj(subj); err != nil || n != m.Seq {
			t.Fatalf("seqOfSubj(%q) = %d %v, message seq %d", subj, n, err, m.Seq)
		}
		if msgSize(m) > len(data) || len(m.Conv) > len(subj) {
			t.Fatalf("%q %d bytes: %+v", subj, len(data), m)
		}
		// The subject the store would publish it under names the same
		// conversation and seq.
		back, err := s.decode(rawMsg{subj: s.msgSubj(m.Conv, m.Seq), data: encodeMsg(nil, m)})
		if err != nil || !sameMsg(back, m) {
			t.Fatalf("re-decode: %+v vs %+v (%v)", back, m, err)
		}
		want := &Message{ID: m.ID, Conv: string(data), Seq: m.Seq, Content: subj}
		got, err := s.decode(rawMsg{subj: s.msgSubj(want.Conv, want.Seq), data: encodeMsg(nil, want)})
		if err != nil || !sameMsg(got, want) {
			t.Fatalf("round trip: %+v vs %+v (%v)", got, want, err)
		}
	})
}

// directReply is the header block of a direct-get reply as nats-server
// builds it for a stored message: the message's own headers, which its
// publisher chose, then the server's (genHeader appends them).
func directReply(stored []byte, subj string, seq uint64) []byte {
	server := fmt.Sprintf("Nats-Stream: S\r\nNats-Subject: %s\r\nNats-Sequence: %d\r\nNats-Time-Stamp: 2026-01-02T03:04:05Z\r\n"+
		"Nats-Num-Pending: 0\r\nNats-Last-Sequence: 0\r\n\r\n", subj, seq)
	if len(stored) == 0 {
		return []byte("NATS/1.0\r\n" + server)
	}
	return append(stored[:len(stored)-2:len(stored)-2], server...)
}

// A direct-get reply carries a stored message's own headers in front of
// the server's, and a client publishing to the stream chooses those: the
// stream sequence and subject the store pages and decodes by must be the
// server's. A Nats-Sequence of the publisher's once made scan start over
// forever.
func FuzzDirectReply(f *testing.F) {
	for _, h := range []string{"", "Nats-Msg-Id: abc", "Nats-Sequence: 0", "Nats-Sequence: x", "Nats-Subject: forged\r\nNats-Sequence: 18446744073709551615",
		"Nats-Stream: T\r\nNats-Subject: jim.o.eA", "Nats-Expected-Last-Subject-Sequence: 0",
		"Status: 404", "Status: 503\r\nDescription: No Responders"} {
		f.Add([]byte(h), "jim.o.dQ", uint64(1000), []byte{offRefFormat})
	}
	f.Fuzz(func(t *testing.T, hdr []byte, subj string, seq uint64, data []byte) {
		if subj == "" || strings.ContainsFunc(subj, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			subj = "jim.m.x.1" // what the server sends is a subject
		}
		var stored []byte
		if len(hdr) > 0 {
			stored = append(append([]byte("NATS/1.0\r\n"), hdr...), "\r\n\r\n"...)
			alone, err := nats.DecodeHeadersMsg(stored)
			if err != nil {
				return
			}
			// A blank line inside its own headers hides the server's from
			// the client's parser altogether; scan does not rely on them
			// to make progress.
			const probe = "X-Jim-Probe"
			more, err := nats.DecodeHeadersMsg(append(stored[:len(stored)-2:len(stored)-2], probe+": 1\r\n\r\n"...))
			if err != nil || len(more.Values(probe)) != len(alone.Values(probe))+1 {
				return
			}
		}
		h, err := nats.DecodeHeadersMsg(directReply(stored, subj, seq))
		if err != nil {
			t.Fatalf("reply to %q: %v", stored, err)
		}
		m := &nats.Msg{Header: h, Data: data}
		r := toRaw(m)
		if r.subj != subj || r.seq != seq || !bytes.Equal(r.data, data) {
			t.Fatalf("stored headers %q: subject %q seq %d, server sent %q %d", stored, r.subj, r.seq, subj, seq)
		}
		// A stored message is never taken for the server's status reply,
		// whatever headers its publisher gave it.
		if st := replyStatus(m); len(data) > 0 && st != "" {
			t.Fatalf("stored headers %q read as status %q", stored, st)
		}
	})
}

// A backup file is read back by jimd -restore: whatever it holds, the
// trailer check passes only for a stream followed by its own trailer, and
// what the reader hands on is then exactly that stream, however the file
// arrives in reads.
func FuzzBackupTrailer(f *testing.F) {
	whole := func(stream []byte) []byte {
		var b bytes.Buffer
		cw := &crcWriter{w: &b}
		cw.Write(stream)
		t := append([]byte(trailerMagic), make([]byte, 12)...)
		binary.BigEndian.PutUint64(t[len(trailerMagic):], uint64(cw.n))
		binary.BigEndian.PutUint32(t[len(trailerMagic)+8:], cw.crc)
		return append(b.Bytes(), t...)
	}
	f.Add(whole([]byte("some badger stream")), uint64(1))
	f.Add(whole(nil), uint64(2))
	f.Add([]byte(trailerMagic), uint64(3))
	f.Add(whole([]byte("x"))[:10], uint64(4))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		tr := &trailerReader{r: &cutReader{b: data, cuts: cutPoints(len(data)), seed: seed}}
		got, rerr := io.ReadAll(tr)
		err := tr.check()
		if rerr != nil {
			t.Fatalf("read: %v", rerr)
		}
		if err != nil {
			return
		}
		if len(data) < trailerLen || !bytes.Equal(got, data[:len(data)-trailerLen]) || !bytes.Equal(whole(got), data) {
			t.Fatalf("accepted %x: passed on %x", data, got)
		}
	})
}

// cutReader hands out b in reads that end at some of cuts (chosen by seed).
type cutReader struct {
	b    []byte
	cuts []int
	seed uint64
	off  int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.off >= len(c.b) {
		return 0, io.EOF
	}
	end := len(c.b)
	for i, k := range c.cuts {
		if k > c.off && c.seed>>(uint(i)%64)&1 == 1 {
			end = k
			break
		}
	}
	n := copy(p, c.b[c.off:end])
	c.off += n
	return n, nil
}
