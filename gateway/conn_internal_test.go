package gateway

import (
	"math/rand/v2"
	"testing"
	"unsafe"
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
