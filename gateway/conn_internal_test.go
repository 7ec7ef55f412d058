package gateway

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unsafe"

	"jim/codec"
)

// TestConnSize keeps conn in the 144-byte allocation size class: every idle
// connection pays for it, and the next class is 160 bytes.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 144 {
		t.Fatalf("conn is %d bytes; keep it at most 144 (its size class)", n)
	}
}

// TestLoopRegistry checks the loop's connection list through random opens
// and closes: every open connection listed once, at its slot, and a close of
// a connection never added (or closed twice) changes nothing.
func TestLoopRegistry(t *testing.T) {
	l := &loopState{}
	open := map[*conn]bool{}
	var all []*conn
	r := rand.New(rand.NewPCG(1, 2))
	for step := range 20000 {
		switch {
		case len(all) == 0 || r.IntN(3) > 0 && step < 15000:
			c := &conn{}
			l.add(c)
			open[c] = true
			all = append(all, c)
		default:
			c := all[r.IntN(len(all))]
			l.remove(c)
			l.remove(c) // twice: a no-op
			delete(open, c)
		}
	}
	l.remove(&conn{slot: 0}) // never added
	if len(l.conns) != len(open) {
		t.Fatalf("%d listed, %d open", len(l.conns), len(open))
	}
	for i, c := range l.conns {
		if !open[c] {
			t.Fatalf("slot %d holds a closed connection", i)
		}
		if int(c.slot) != i {
			t.Fatalf("connection at %d says slot %d", i, c.slot)
		}
	}
}

// TestJoinFrames checks the segments a fan-out shares among a group's
// connections: together they are every frame in order, none holds more than
// flushEarly bytes unless it is one frame, and a lone frame is the frame
// itself rather than a copy.
func TestJoinFrames(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, ws := range []bool{false, true} {
		for range 200 {
			jobs := make([]multicastJob, 1+r.IntN(40))
			var want []byte
			for i := range jobs {
				body := make([]byte, r.IntN(3*flushEarly/2))
				for k := range body {
					body[k] = 'a' + byte(r.IntN(26))
				}
				m := codec.NewOutbound(codec.CmdChatReq, body)
				jobs[i].m = m
				if ws {
					want = append(want, m.WS()...)
				} else {
					want = append(want, m.TCP()...)
				}
			}
			segs := joinFrames(jobs, ws)
			var got []byte
			for _, seg := range segs {
				got = append(got, seg...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("ws=%v: joined segments differ from the frames", ws)
			}
			for i, seg := range segs {
				if len(seg) > flushEarly && !isFrameOf(seg, jobs, ws) {
					t.Fatalf("ws=%v: segment %d holds %d bytes of several frames", ws, i, len(seg))
				}
			}
			if len(jobs) == 1 && unsafe.SliceData(segs[0]) != unsafe.SliceData(jobs[0].frame(ws)) {
				t.Fatalf("ws=%v: a lone frame was copied", ws)
			}
		}
	}
}

// isFrameOf reports whether seg is exactly one of jobs' frames.
func isFrameOf(seg []byte, jobs []multicastJob, ws bool) bool {
	for _, j := range jobs {
		if bytes.Equal(seg, j.frame(ws)) {
			return true
		}
	}
	return false
}
