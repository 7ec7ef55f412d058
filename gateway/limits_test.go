package gateway_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
)

// metricValue is the sum of a counter's or a gauge's series (0 when it has
// none yet).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// A client that stops reading is disconnected once what is queued for it
// passes the outbound cap, and the others keep chatting.
func TestSlowConsumerIsDisconnected(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MaxOutbound = 256 << 10
		o.Registry = reg
	})
	// A tiny receive window, so the kernel cannot soak up the flood.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	raw, err := d.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write(codec.AppendTCP(nil, codec.CmdLoginReq, 0, false, []byte(`{"cmd":5,"userId":"slow"}`)))
	// Let the login land before the flood starts; the reply is left unread.
	deadline := time.Now().Add(5 * time.Second)
	for !ts.D.Online("slow") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	sender := dialTCP(t, ts.Addr)
	sender.login("sender")
	content := strings.Repeat("x", 60<<10)
	body := `{"cmd":11,"to":"slow","chatType":2,"content":"` + content + `"}`
	for i := 0; i < 300 && metricValue(t, reg, "jim_slow_consumer_disconnects_total") == 0; i++ {
		sender.send(codec.CmdChatReq, body)
		sender.expect(codec.CmdChatResp)
	}
	if v := metricValue(t, reg, "jim_slow_consumer_disconnects_total"); v != 1 {
		t.Fatalf("slow consumer disconnects = %v", v)
	}
	deadline = time.Now().Add(5 * time.Second)
	for ts.D.Online("slow") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ts.D.Online("slow") {
		t.Fatal("slow consumer still online")
	}
	sender.send(codec.CmdHeartbeatReq, `{}`)
	sender.expect(codec.CmdHeartbeatReq)
}

func TestWebSocketControlFrames(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) { o.MaxWSMessage = 1024 })
	w := dialWS(t, ts.Addr, "username=pinger")
	w.expect(6)

	// coder/websocket answers our pong to its ping.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _, _, _ = w.c.Read(ctx) }() // the reader drives ping handling
	if err := w.c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}

	// Invalid JSON gets J-IM's unknown-command reply, not a disconnect.
	big := dialWS(t, ts.Addr, "username=big")
	big.expect(6)
	big.send("not json")
	if m := big.expect(0); code(m) != 10017 {
		t.Fatalf("invalid JSON reply %v", m)
	}
	// Over the message limit: closed with 1009.
	if err := big.c.Write(ctx, websocket.MessageText, []byte(strings.Repeat("a", 2048))); err != nil {
		t.Fatal(err)
	}
	_, _, err := big.c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("oversize message: %v", err)
	}

	// A normal close handshake.
	c := dialWS(t, ts.Addr, "username=closer")
	c.expect(6)
	if err := c.c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
}

func TestGarbageAndTLSFirstBytes(t *testing.T) {
	ts := startServer(t, nil)
	for _, first := range [][]byte{
		{0x16, 0x03, 0x01, 0x00, 0x05}, // a TLS record before TLS is configured
		[]byte("GEX / HTTP/1.1\r\n"),   // looks like a method, is not
		{0xff},
	} {
		c := dialTCP(t, ts.Addr)
		// Sent a byte at a time: the sniffer must not decide early.
		for _, b := range first {
			c.c.Write([]byte{b})
			time.Sleep(time.Millisecond)
		}
		if !c.closedByServer() {
			t.Fatalf("first bytes %q: connection not closed", first)
		}
	}
	// An HTTP request split in the middle of its method still works.
	c := dialTCP(t, ts.Addr)
	c.c.Write([]byte("GE"))
	time.Sleep(20 * time.Millisecond)
	c.c.Write([]byte("T /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _ := c.br.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("split request got %q", buf[:n])
	}
}

func TestStopDrains(t *testing.T) {
	ts := startServer(t, nil)
	c := dialTCP(t, ts.Addr)
	c.login("leaver")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.Srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.closedByServer() {
		t.Fatal("client not disconnected by Stop")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("stop took %v", d)
	}
	if _, err := net.DialTimeout("tcp", ts.Addr, time.Second); err == nil {
		t.Fatal("still accepting after Stop")
	}
}

func TestConnectionLimits(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MaxConnsPerIP = 3
		o.MaxConns = 5
	})
	var cs []*tcpClient
	for i := 0; i < 3; i++ {
		c := dialTCP(t, ts.Addr)
		c.login(fmt.Sprintf("ip%d", i))
		cs = append(cs, c)
	}
	fourth := dialTCP(t, ts.Addr)
	if !fourth.closedByServer() {
		t.Fatal("fourth connection from one address accepted")
	}
	// Another loopback address has its own quota, under the total cap.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	other, err := d.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oc := &tcpClient{t: t, c: other, br: bufio.NewReader(other)}
	oc.login("elsewhere")
}

func TestMessageRateLimit(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MsgRate = 5
		o.MsgBurst = 5
	})
	c := dialTCP(t, ts.Addr)
	c.login("chatty") // one token
	var b []byte
	for i := 0; i < 8; i++ {
		b = codec.AppendTCP(b, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
	}
	c.c.Write(b)
	limited := 0
	for i := 0; i < 8; i++ {
		_, m := c.read()
		if code(m) == int(codec.StatusRateLimited) {
			limited++
		}
	}
	if limited < 3 || limited > 5 {
		t.Fatalf("%d of 8 heartbeats refused, want 4 (burst 5, login took one)", limited)
	}
	// Flooding far past the burst disconnects.
	b = b[:0]
	for i := 0; i < 50; i++ {
		b = codec.AppendTCP(b, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
	}
	c.c.Write(b)
	if !c.closedByServer() {
		t.Fatal("flooding connection not closed")
	}
}

func TestPreAuthBodyLimit(t *testing.T) {
	ts := startServer(t, nil)
	c := dialTCP(t, ts.Addr)
	c.send(codec.CmdLoginReq, `{"cmd":5,"userId":"`+strings.Repeat("x", 20<<10)+`"}`)
	if m := c.expect(codec.CmdLoginResp); code(m) != int(codec.StatusTooLarge) {
		t.Fatalf("20 KiB frame before login answered %v, want %d", m, codec.StatusTooLarge)
	}
	if !c.closedByServer() {
		t.Fatal("20 KiB frame before login accepted")
	}
}

// A frame over the body limit is refused from its header: the reply names
// the reason under the frame's own command and seq, then the connection
// closes (its body is never read).
func TestTCPBodyLimitAnswered(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) { o.MaxTCPBody = 1000 })
	c := dialTCP(t, ts.Addr)
	c.login("big")
	frame := codec.AppendTCP(nil, codec.CmdChatReq, 77, true, []byte(strings.Repeat("x", 1001)))
	if _, err := c.c.Write(frame[:11]); err != nil { // the header alone is enough
		t.Fatal(err)
	}
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 11)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		t.Fatalf("no reply to an oversized frame: %v", err)
	}
	if hdr[1]&codec.MaskHasSeq == 0 || binary.BigEndian.Uint32(hdr[2:]) != 77 || codec.Cmd(hdr[6]) != codec.CmdChatResp {
		t.Fatalf("reply header %x: want cmd 12 with seq 77", hdr)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[7:]))
	if _, err := io.ReadFull(c.br, body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `"code":10103`) {
		t.Fatalf("reply %s: want code 10103", body)
	}
	if !c.closedByServer() {
		t.Fatal("connection left open after an oversized frame")
	}
}

func TestLameDuck(t *testing.T) {
	ts := startServer(t, nil)
	var cs []*tcpClient
	for i := 0; i < 10; i++ {
		c := dialTCP(t, ts.Addr)
		c.login(fmt.Sprintf("duck%d", i))
		cs = append(cs, c)
	}
	start := time.Now()
	ts.Srv.LameDuck(time.Second)
	resp, err := http.Get("http://" + ts.Addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz while draining: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("healthz while draining: %d", resp.StatusCode)
	}
	late := dialTCP(t, ts.Addr)
	late.send(codec.CmdHeartbeatReq, `{}`)
	if !late.closedByServer() {
		t.Fatal("new TCP client accepted while draining")
	}
	// The server sheds in its own order, so every client watches for its
	// disconnect at the same time.
	closedAt := make([]time.Duration, len(cs))
	shed := make([]bool, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shed[i] = c.closedByServer()
			closedAt[i] = time.Since(start)
		}()
	}
	wg.Wait()
	first, last := closedAt[0], closedAt[0]
	for i, d := range closedAt {
		if !shed[i] {
			t.Fatalf("client %d not shed", i)
		}
		first, last = min(first, d), max(last, d)
	}
	if last-first < 300*time.Millisecond {
		t.Fatalf("disconnects not spread out: first %v, last %v", first, last)
	}
}

// A peer far over its byte rate is disconnected and counted.
func TestByteRateLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.ByteRate = 1000
		o.ByteBurst = 2000
		o.Registry = reg
	})
	polite := dialTCP(t, ts.Addr)
	polite.login("polite") // well under the burst
	greedy := dialTCP(t, ts.Addr)
	greedy.login("greedy")
	body := `{"cmd":13,"pad":"` + strings.Repeat("x", 1000) + `"}`
	var flood []byte
	for i := 0; i < 8; i++ {
		flood = codec.AppendTCP(flood, codec.CmdHeartbeatReq, 0, false, []byte(body))
	}
	// The server may cut the connection while this is still being written.
	_, _ = greedy.c.Write(flood)
	if !greedy.closedByServer() {
		t.Fatal("peer 4x over its byte burst not disconnected")
	}
	var v float64
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "jim_rate_limited_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "kind" && l.GetValue() == "bytes" {
						v += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	if v != 1 {
		t.Fatalf("jim_rate_limited_total{kind=bytes} = %v", v)
	}
	polite.send(codec.CmdHeartbeatReq, `{}`)
	polite.expect(codec.CmdHeartbeatReq)
}

// /healthz follows the Health check: a failed store makes it 503 with the
// error, so that whatever supervises jimd restarts it.
func TestHealthzReportsFailure(t *testing.T) {
	var broken atomic.Pointer[error]
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.Health = func() error {
			if p := broken.Load(); p != nil {
				return *p
			}
			return nil
		}
	})
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ts.Addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("healthy: %d %s", code, body)
	}
	err := errors.New(`storage: write failed: "disk" full`)
	broken.Store(&err)
	if code, body := get(); code != 503 || body != `{"status":"unhealthy","error":"storage: write failed: \"disk\" full"}` {
		t.Fatalf("with a failed store: %d %s", code, body)
	}
}
