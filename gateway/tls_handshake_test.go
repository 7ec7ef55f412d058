package gateway_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

// Handshakes run on workers by default and on the loops with a negative
// worker count; either way clients that finish their handshake are served,
// and clients that vanish in the middle of one (after their ClientHello,
// or after a few bytes of it) cost nothing lasting: a connection closed
// while a worker holds its handshake is dropped by the worker. Under the
// race detector this checks the hand-over of the engine between loop and
// worker.
func TestTLSHandshakeWorkers(t *testing.T) {
	for _, workers := range []int{0, -1} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			cert := jimtest.WriteCert(t, 1, "", "")
			reg := prometheus.NewRegistry()
			ts := startTLSServer(t, cert, func(o *gateway.Options, _ *dispatch.Options) {
				o.TLSHandshakeWorkers = workers
				o.Registry = reg
			})
			hello := clientHello(t, cert)
			var wg sync.WaitGroup
			for i := range 24 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					switch i % 3 {
					case 0: // a whole handshake and a login
						c, _ := dialTLS(t, ts.Addr, cert.ClientConfig())
						c.login(fmt.Sprintf("hs%d", i))
					case 1: // a ClientHello, then gone
						raw, err := net.Dial("tcp", ts.Addr)
						if err != nil {
							t.Error(err)
							return
						}
						_, _ = raw.Write(hello)
						raw.Close()
					case 2: // part of a ClientHello, then gone
						raw, err := net.Dial("tcp", ts.Addr)
						if err != nil {
							t.Error(err)
							return
						}
						_, _ = raw.Write(hello[:len(hello)/2])
						time.Sleep(time.Millisecond)
						raw.Close()
					}
				}()
			}
			wg.Wait()
			// All 24 gone but the 8 logged in, which are still served.
			if n := waitConnections(ts, 8, 5*time.Second); n != 8 {
				t.Fatalf("%d connections open, want the 8 logged in", n)
			}
			c, _ := dialTLS(t, ts.Addr, cert.ClientConfig())
			c.login("last")
			c.send(codec.CmdHeartbeatReq, `{}`)
			c.expect(codec.CmdHeartbeatReq)
			if ok := labeledCounter(t, reg, "jim_tls_handshakes_total", "result", "ok"); ok != 9 {
				t.Fatalf("%v handshakes ok, want 9", ok)
			}
			// Each whole handshake is at least two steps (ClientHello, then
			// the client's Finished), each vanished client at most one.
			steps := gateway.HandshakeSteps(ts.Srv)
			if workers < 0 && steps != 0 || workers >= 0 && steps < 18 {
				t.Fatalf("%d handshake steps on workers", steps)
			}
		})
	}
}

// clientHello is the first flight a Go client sends.
func clientHello(t *testing.T, cert *jimtest.Cert) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Client(a, cert.ClientConfig()).Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(b)
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// While a step of its handshake waits for a worker, a connection's further
// bytes wait in gnet's buffer; one that streams more than a handshake ever
// needs is closed instead of buffered.
func TestTLSHandshakeFloodWhileBusy(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	reg := prometheus.NewRegistry()
	ts := startTLSServer(t, cert, func(o *gateway.Options, _ *dispatch.Options) { o.Registry = reg })
	release := gateway.StallHandshakes()
	defer release()
	raw, err := net.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(clientHello(t, cert)); err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 64<<10)
	closed := false
	for range 64 { // 4 MiB at most
		_ = raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := raw.Write(junk); err != nil {
			closed = true
			break
		}
	}
	if !closed {
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := raw.Read(make([]byte, 1))
		closed = err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}
	if !closed {
		t.Fatal("a connection streaming 4 MiB into a stalled handshake is still open")
	}
	deadline := time.Now().Add(5 * time.Second)
	for labeledCounter(t, reg, "jim_disconnects_total", "reason", "tls_handshake") != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if v := labeledCounter(t, reg, "jim_disconnects_total", "reason", "tls_handshake"); v != 1 {
		t.Fatalf("disconnects for tls_handshake = %v", v)
	}
}
