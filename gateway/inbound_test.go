package gateway_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

// waitGauge polls a gauge until cond holds.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := metricValue(t, reg, name)
		if cond(v) || time.Now().After(deadline) {
			return v
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chatFrame is a cmd-11 frame to "nobody" whose body is exactly n bytes.
func chatFrame(seq int32, n int) []byte {
	head, tail := `{"cmd":11,"to":"nobody","chatType":2,"content":"`, `"}`
	body := head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	return codec.AppendTCP(nil, codec.CmdChatReq, seq, true, []byte(body))
}

// readSeqReply reads one frame carrying a seq and returns its cmd, seq and
// body.
func readSeqReply(t *testing.T, c *tcpClient) (codec.Cmd, uint32, string) {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 11)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		t.Fatalf("no reply: %v", err)
	}
	if hdr[1]&codec.MaskHasSeq == 0 {
		t.Fatalf("reply header %x has no seq", hdr)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[7:]))
	if _, err := io.ReadFull(c.br, body); err != nil {
		t.Fatal(err)
	}
	return codec.Cmd(int8(hdr[6])), binary.BigEndian.Uint32(hdr[2:]), string(body)
}

// Frames still arriving are bounded server-wide: two connections holding
// 400 KiB each fit a 1 MiB budget, a third that would take the total over
// it is answered busy under its frame's command and seq and closed, and the
// two finish their frames as if nothing happened. The budget is back to 0
// once they have.
// Over TLS the same, counted in decrypted bytes.
func TestInboundBudget(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		testInboundBudget(t, nil, func(addr string) *tcpClient { return dialTCP(t, addr) })
	})
	t.Run("tls", func(t *testing.T) {
		cert := jimtest.WriteCert(t, 1, "", "")
		testInboundBudget(t, cert, func(addr string) *tcpClient {
			c, _ := dialTLS(t, addr, cert.ClientConfig())
			return c
		})
	})
}

func testInboundBudget(t *testing.T, cert *jimtest.Cert, dial func(addr string) *tcpClient) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MaxInboundPending = 1 << 20
		o.Registry = reg
		if cert != nil {
			o.TLSCertFile, o.TLSKeyFile = cert.CertFile, cert.KeyFile
		}
	})
	const size, part = 600 << 10, 400 << 10
	var held []*tcpClient
	var frames [][]byte
	for i := range 3 {
		c := dial(ts.Addr)
		c.login(fmt.Sprintf("big%d", i))
		f := chatFrame(int32(100+i), size)
		if i == 2 {
			// Just under the budget, then one small write over it: the
			// server closes after its answer, and bytes still on their way
			// to a closed socket would reset the connection before the
			// answer is read.
			const under = 1<<20 - 2*part - 4<<10
			if _, err := c.c.Write(f[:under]); err != nil {
				t.Fatal(err)
			}
			want := float64(2*part + under)
			if v := waitGauge(t, reg, "jim_inbound_pending_bytes", func(v float64) bool { return v == want }); v != want {
				t.Fatalf("just under the budget: jim_inbound_pending_bytes = %v, want %v", v, want)
			}
			if _, err := c.c.Write(f[under : under+8<<10]); err != nil {
				t.Fatal(err)
			}
			cmd, seq, body := readSeqReply(t, c)
			if cmd != codec.CmdChatResp || seq != 102 || !strings.Contains(body, `"code":10101`) {
				t.Fatalf("over the budget: cmd %d seq %d %s, want cmd 12 seq 102 code 10101", cmd, seq, body)
			}
			if !c.closedByServer() {
				t.Fatal("connection over the budget left open")
			}
			break
		}
		if _, err := c.c.Write(f[:part]); err != nil {
			t.Fatal(err)
		}
		want := float64((i + 1) * part)
		if v := waitGauge(t, reg, "jim_inbound_pending_bytes", func(v float64) bool { return v == want }); v != want {
			t.Fatalf("after %d partial frames jim_inbound_pending_bytes = %v, want %v", i+1, v, want)
		}
		held = append(held, c)
		frames = append(frames, f)
	}
	for i, c := range held {
		if _, err := c.c.Write(frames[i][part:]); err != nil {
			t.Fatal(err)
		}
		cmd, seq, body := readSeqReply(t, c)
		if cmd != codec.CmdChatResp || seq != uint32(100+i) || !strings.Contains(body, `"code":10001`) {
			t.Fatalf("frame %d completed: cmd %d seq %d %.100s, want the chat reply (offline receiver)", i, cmd, seq, body)
		}
	}
	if v := waitGauge(t, reg, "jim_inbound_pending_bytes", func(v float64) bool { return v == 0 }); v != 0 {
		t.Fatalf("jim_inbound_pending_bytes = %v after the frames completed", v)
	}
	if v := metricValue(t, reg, "jim_inbound_refused_total"); v != 1 {
		t.Fatalf("jim_inbound_refused_total = %v", v)
	}
}

// A WebSocket message still arriving counts against the budget the same
// way; over it the connection gets close code 1013 (try again later).
func TestInboundBudgetWebSocket(t *testing.T) {
	ts, reg := budgetServer(t, 96<<10)
	w := dialRawWS(t, ts.Addr, "/?username=wsbig&password=1")
	if op, _, err := w.next(); err != nil || op != opText {
		t.Fatalf("login reply: op %d %v", op, err)
	}
	// Two fragments reassembled (60 KiB, charged as the capacity of the
	// buffer holding them), then part of a third in one write that takes
	// the total just over the budget: all of it is held. (A large last
	// write could be cut short by the close, and the bytes still on their
	// way would reset the connection before the close frame is read.)
	part := []byte(strings.Repeat(" ", 30<<10))
	w.send(frame(opText, part, false), frame(opCont, part, false))
	v := waitGauge(t, reg, "jim_inbound_pending_bytes", func(v float64) bool { return v >= 60<<10 })
	if v < 60<<10 || v > 96<<10 {
		t.Fatalf("two fragments held: jim_inbound_pending_bytes = %v", v)
	}
	last := frame(opCont, part, false)
	w.send(last[:96<<10-int(v)+4<<10])
	op, payload, err := w.next()
	if err != nil || op != opClos || len(payload) < 2 || binary.BigEndian.Uint16(payload) != 1013 {
		t.Fatalf("over the budget: op %d %q %v, want close 1013", op, payload, err)
	}
	if v := waitGauge(t, reg, "jim_inbound_pending_bytes", func(v float64) bool { return v == 0 }); v != 0 {
		t.Fatalf("jim_inbound_pending_bytes = %v after the refusal", v)
	}
}

// A large frame trickled in small pieces is charged to the byte rate once,
// when it is decoded, not once per read it is seen in; and the reads that
// cannot complete it are not decoded at all (gnet's Peek copies all that is
// held, so decoding each read cost a megabyte frame about 140 ms of the
// loop). Before, a 1 MiB frame sent in 4 KiB pieces under a 2 MiB/s byte
// rate was charged over a hundred megabytes and disconnected.
func TestTrickledFrame(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.ByteRate = 2 << 20
		o.ByteBurst = 2 << 20
		o.Registry = reg
	})
	c := dialTCP(t, ts.Addr)
	c.login("trickle")
	f := chatFrame(7, 1<<20-100)
	const piece = 4 << 10
	for off := 0; off < len(f); off += piece {
		if _, err := c.c.Write(f[off:min(off+piece, len(f))]); err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
		// Each piece its own read on the server.
		time.Sleep(200 * time.Microsecond)
	}
	cmd, seq, body := readSeqReply(t, c)
	if cmd != codec.CmdChatResp || seq != 7 || !strings.Contains(body, `"code":10001`) {
		t.Fatalf("trickled frame: cmd %d seq %d %.100s", cmd, seq, body)
	}
	if v := metricValue(t, reg, "jim_rate_limited_total"); v != 0 {
		t.Fatalf("jim_rate_limited_total = %v", v)
	}
	if w := gateway.InboundWaits(ts.Srv); w < 10 {
		t.Fatalf("%d reads skipped while the frame arrived; want most of its %d pieces", w, len(f)/piece)
	}
}

// The same over WebSocket: a message in two fragments, each trickled in
// small pieces, is decoded once whole and answered; the reads in between are
// skipped by the fragment's own length (a masked frame's header is 14 bytes).
func TestTrickledWebSocketMessage(t *testing.T) {
	ts := startServer(t, nil)
	w := dialRawWS(t, ts.Addr, "/?username=wstrickle&password=1")
	if op, _, err := w.next(); err != nil || op != opText {
		t.Fatalf("login reply: op %d %v", op, err)
	}
	head, tail := `{"cmd":11,"to":"nobody","chatType":2,"content":"`, `"}`
	body := head + strings.Repeat("y", 300<<10) + tail
	half := len(body) / 2
	stream := append(frame(opText, []byte(body[:half]), false), frame(finBit|opCont, []byte(body[half:]), false)...)
	before := gateway.InboundWaits(ts.Srv)
	const piece = 4 << 10
	for off := 0; off < len(stream); off += piece {
		if _, err := w.c.Write(stream[off:min(off+piece, len(stream))]); err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	for {
		op, payload, err := w.next()
		if err != nil {
			t.Fatalf("waiting for the chat reply: %v", err)
		}
		if op == opText && strings.Contains(string(payload), `"command":12`) {
			if !strings.Contains(string(payload), `"code":10001`) {
				t.Fatalf("reply %s", payload)
			}
			break
		}
	}
	if w := gateway.InboundWaits(ts.Srv) - before; w < 10 {
		t.Fatalf("%d reads skipped while the message arrived", w)
	}
}

// An HTTP request whose body is still arriving counts the same way: over the
// budget it is answered 503 and closed, while one within it completes.
func TestInboundBudgetHTTP(t *testing.T) {
	ts, reg := budgetServer(t, 64<<10)
	body := strings.Repeat(" ", 60<<10) + `{"from":"a","to":"b","chatType":2,"content":"hi"}`
	head := fmt.Sprintf("POST /api/message/send HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ts.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := dial()
	fmt.Fprint(first, head+body[:40<<10])
	second := dial()
	fmt.Fprint(second, head+body[:20<<10])
	// Both held (about 60 KiB), then one small write over the budget: the
	// reply must not be lost to a reset by bytes still arriving.
	if v := waitGauge(t, reg, "jim_inbound_pending_bytes", func(v float64) bool { return v >= 60<<10 }); v < 60<<10 {
		t.Fatalf("two partial requests held: jim_inbound_pending_bytes = %v", v)
	}
	fmt.Fprint(second, body[20<<10:28<<10])
	_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("over the budget: %v %v", resp, err)
	}
	fmt.Fprint(first, body[40<<10:])
	_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("within the budget: %v %v", resp, err)
	}
}

// budgetServer starts a server whose inbound budget is n bytes, with its
// own metrics registry.
func budgetServer(t *testing.T, n int64) (*jimtest.Server, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MaxInboundPending = n
		o.Registry = reg
	})
	return ts, reg
}
