package bench

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
)

// TestStaleAttemptKeepsPollersAlive sends bytes to connections whose
// attempt has been superseded and then checks that fresh connections on
// every poller still read. A handler that leaves input unread makes
// netpoll call it again for ever on its poller goroutine, and all the
// connections on that poller stop reading; a chat run then saw exactly
// half of its logins time out.
func TestStaleAttemptKeepsPollersAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server writes "x" on every connection it accepts.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("x"))
				var b [64]byte
				_, _ = c.Read(b[:]) // until the client closes
			}()
		}
	}()
	n := 2 * runtime.GOMAXPROCS(0) // every poller gets some (round robin)
	dial := func() netpoll.Connection {
		t.Helper()
		conn, err := dialConn(context.Background(), netip.Addr{}, ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	for range n {
		c := &client{}
		c.gen.Store(2) // attempt 1 was superseded
		_ = dial().SetOnRequest(c.handlerFor(1))
	}
	time.Sleep(100 * time.Millisecond) // the stale handlers run
	var got atomic.Int64
	for range n {
		_ = dial().SetOnRequest(func(_ context.Context, conn netpoll.Connection) error {
			discard(conn)
			got.Add(1)
			return nil
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := got.Load(); g != int64(n) {
		t.Fatalf("%d of %d fresh connections read their byte: a poller is stuck", g, n)
	}
}
