package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPostConn checks postConn against net/http's server: bodies and
// headers arrive, the connection is kept alive, "Connection: close" and
// errors make the next post dial again, and a response without a
// Content-Length is refused.
func TestPostConn(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/stream":
			w.(http.Flusher).Flush() // chunked: no Content-Length
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"got":"` + string(b) + `","key":"` + r.Header.Get("X-API-Key") + `"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p := &postConn{addr: strings.TrimPrefix(srv.URL, "http://"), timeout: 5 * time.Second}
	defer p.close()
	for i := range 3 {
		code, body, err := p.post("/x", []byte("hello"), "X-API-Key", "k1")
		if err != nil || code != 200 || string(body) != `{"got":"hello","key":"k1"}` {
			t.Fatalf("post %d: %d %q %v", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three posts, want 1 (keep-alive)", n)
	}
	if code, _, err := p.post("/close", nil); err != nil || code != 200 {
		t.Fatalf("close: %d %v", code, err)
	}
	if _, _, err := p.post("/x", []byte("again")); err != nil || conns.Load() != 2 {
		t.Fatalf("after Connection: close: %v, %d connections", err, conns.Load())
	}
	if _, _, err := p.post("/stream", nil); err != errNoLength {
		t.Fatalf("chunked response: %v", err)
	}
	if code, body, err := p.post("/x", []byte("more")); err != nil || code != 200 || !strings.Contains(string(body), "more") {
		t.Fatalf("after an error: %d %q %v", code, body, err)
	}
}

// TestPushAgainstGateway runs the push scenario against the real server:
// every post must be acked and its message delivered once.
func TestPushAgainstGateway(t *testing.T) {
	addr, _ := startGateway(t)
	res, err := Run(context.Background(), Config{Scenario: ScenarioPush, Addrs: []string{addr}, Conns: 20,
		Rate: 400, Warmup: 500 * time.Millisecond, Duration: 2 * time.Second, ConnectTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d acked %d offline %d delivered %d expected %d errors %d %v",
		res.Sent, res.Acked, res.Offline, res.Delivered, res.ExpectedDelivered, res.Errors, res.ErrorKinds)
	if res.Errors != 0 {
		t.Errorf("errors %d: %v", res.Errors, res.ErrorKinds)
	}
	if res.Sent < 400 || res.Acked != res.Sent || res.Delivered != res.Sent || res.ExpectedDelivered != res.Delivered {
		t.Errorf("sent %d acked %d delivered %d expected %d", res.Sent, res.Acked, res.Delivered, res.ExpectedDelivered)
	}
}
