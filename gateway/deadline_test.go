package gateway_test

import (
	"strings"
	"testing"
	"time"

	"jim/dispatch"
	"jim/gateway"
)

// Request headers that never end are cut at the login deadline, not left
// to the (much longer) idle timeout; a keep-alive client that finished a
// request is left to the idle timeout.
func TestHTTPHeaderDeadline(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.AuthTimeout = time.Second
		o.HeartbeatTimeout = time.Minute
	})
	slow := dialTCP(t, ts.Addr)
	slow.c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Never: "))
	served := dialTCP(t, ts.Addr)
	served.c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = served.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	if n, _ := served.br.Read(buf); !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("healthz: %q", buf[:n])
	}
	start := time.Now()
	if !slow.closedByServer() {
		t.Fatal("unfinished request headers not cut")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("cut after %v", d)
	}
	// The served keep-alive connection is still open after the deadline.
	served.c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	_ = served.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := served.br.Read(buf); !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("second request on a served connection: %q", buf[:n])
	}
}

// A WebSocket upgrade on a keep-alive connection that already served a
// request is under the login deadline again, even without an idle timeout.
func TestUpgradeAfterRequestNeedsLogin(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.AuthTimeout = time.Second
		o.HeartbeatTimeout = -1
	})
	c := dialTCP(t, ts.Addr)
	c.c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	if n, _ := c.br.Read(buf); !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("healthz: %q", buf[:n])
	}
	time.Sleep(1500 * time.Millisecond)
	c.c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	start := time.Now()
	if !c.closedByServer() {
		t.Fatal("WebSocket without login kept open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cut after %v", d)
	}
}
