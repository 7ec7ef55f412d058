package bench

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestWriteStall checks the write-stall guard: a server that stops reading
// gets the connection closed as stalled, a server that reads does not, and
// the kernel's count of unsent bytes (what tells the two apart when
// jimbench's own goroutine was merely late) reads 0 on an idle connection.
func TestWriteStall(t *testing.T) {
	old := writeStall
	writeStall = 300 * time.Millisecond
	t.Cleanup(func() { writeStall = old })

	run := func(t *testing.T, read bool) (*runner, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { s.Close() })
			if read {
				_, _ = io.Copy(io.Discard, s)
			}
		}()
		r, c := dialStallClient(t, ln.Addr().String())
		if n, ok := c.unsent(); !ok || n != 0 {
			t.Fatalf("idle connection: %d bytes unsent (ok %v), want 0", n, ok)
		}
		return r, c.write(make([]byte, 16<<20))
	}

	t.Run("server stops reading", func(t *testing.T) {
		r, err := run(t, false)
		if err == nil {
			t.Fatal("16 MiB written to a server that reads nothing")
		}
		r.errMu.Lock()
		defer r.errMu.Unlock()
		if r.errKinds["write stalled"] != 1 {
			t.Fatalf("errors %v, want one write stalled", r.errKinds)
		}
	})
	t.Run("check outlives the write", func(t *testing.T) {
		// A check already running when Flush returns re-arms the timer;
		// the checks after it must let the finished write be.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		r, c := dialStallClient(t, ln.Addr().String())
		g := c.guardWrite()
		g.check() // late: runs while the write is still in Flush
		g.stop()
		for range maxStallRearms + 2 {
			g.check()
		}
		r.errMu.Lock()
		defer r.errMu.Unlock()
		if len(r.errKinds) != 0 || c.dead.Load() {
			t.Fatalf("finished write: errors %v, closed %v", r.errKinds, c.dead.Load())
		}
	})
	t.Run("server reads", func(t *testing.T) {
		r, err := run(t, true)
		r.errMu.Lock()
		defer r.errMu.Unlock()
		if err != nil || len(r.errKinds) != 0 {
			t.Fatalf("write: %v, errors %v", err, r.errKinds)
		}
	})
}

// dialStallClient connects a bare client, with its own runner, to addr.
func dialStallClient(t *testing.T, addr string) (*runner, *client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dialConn(ctx, netip.Addr{}, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{errKinds: map[string]int64{}}
	c := &client{r: r, conn: conn}
	t.Cleanup(c.close)
	return r, c
}
