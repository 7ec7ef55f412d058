package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

// TestRefusalReachesAClientStillSending sends frames and requests far over
// their limits in one write each, as a client that writes everything before
// it reads does, and then reads: the write must succeed and the refusal
// arrive before the end of the stream. A server that closed at once, with
// the rest of the frame still arriving, made the kernel answer with a
// reset: the client's write failed, and a reset may discard what the client
// had not read yet, the refusal included.
func TestRefusalReachesAClientStillSending(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MaxTCPBody = 1000
		o.MaxHTTPBody = 1000
		o.MaxWSMessage = 1000
		o.TLSCertFile, o.TLSKeyFile = cert.CertFile, cert.KeyFile
	})
	const big = 4 << 20 // more than both sockets' buffers hold
	tcp := func(t *testing.T, c *tcpClient) {
		c.login("linger")
		frame := codec.AppendTCP(nil, codec.CmdChatReq, 77, true, make([]byte, big))
		if _, err := c.c.Write(frame); err != nil {
			t.Fatalf("writing the frame: %v", err)
		}
		cmd, seq, body := readSeqReply(t, c)
		if cmd != codec.CmdChatResp || seq != 77 || !strings.Contains(body, `"code":10103`) {
			t.Fatalf("reply cmd %d seq %d %s: want cmd 12 seq 77 code 10103", cmd, seq, body)
		}
		if !c.closedByServer() {
			t.Fatal("connection left open after an oversized frame")
		}
	}
	for range 3 {
		t.Run("tcp", func(t *testing.T) { tcp(t, dialTCP(t, ts.Addr)) })
		t.Run("tls", func(t *testing.T) {
			c, _ := dialTLS(t, ts.Addr, cert.ClientConfig())
			tcp(t, c)
		})
		t.Run("ws", func(t *testing.T) {
			w := dialRawWS(t, ts.Addr, "/?username=lingerws&password=1")
			if op, _, err := w.next(); err != nil || op != opText {
				t.Fatalf("login reply: op %d %v", op, err)
			}
			if _, err := w.c.Write(frame(opText|0x80, make([]byte, big), false)); err != nil {
				t.Fatalf("writing the message: %v", err)
			}
			w.expectClose(1009)
		})
		t.Run("http", func(t *testing.T) {
			nc, err := net.Dial("tcp", ts.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			req := "POST /api/message/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
				"Content-Length: " + strconv.Itoa(big) + "\r\n\r\n"
			if _, err := nc.Write(append([]byte(req), make([]byte, big)...)); err != nil {
				t.Fatalf("writing the request: %v", err)
			}
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatalf("no answer to an oversized body: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Fatalf("status %d, want 413", resp.StatusCode)
			}
		})
	}
}

// A lingering connection whose peer neither closes nor stops sending is
// closed within a few seconds all the same, and its bytes are dropped
// unread meanwhile.
func TestLingerEnds(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) { o.MaxTCPBody = 1000 })
	c := dialTCP(t, ts.Addr)
	c.login("lingerer")
	if _, err := c.c.Write(codec.AppendTCP(nil, codec.CmdChatReq, 5, true, make([]byte, 2000))); err != nil {
		t.Fatal(err)
	}
	if _, _, body := readSeqReply(t, c); !strings.Contains(body, `"code":10103`) {
		t.Fatalf("reply %s: want 10103", body)
	}
	// The end of the stream follows the answer at once.
	_ = c.c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := c.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the answer: %d bytes, %v; want the end of the stream", n, err)
	}
	// Keep sending: accepted and dropped until the linger ends, then
	// the connection is gone.
	start := time.Now()
	chunk := make([]byte, 32<<10)
	sent := 0
	for time.Since(start) < 10*time.Second {
		_ = c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, err := c.c.Write(chunk)
		sent += n
		if err != nil {
			if time.Since(start) > 4*time.Second {
				t.Fatalf("lingered %v", time.Since(start))
			}
			if sent < 1<<20 {
				t.Fatalf("only %d bytes drained before the close", sent)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("still open after 10 s")
}

// The linger is no part of a stop: a stopping server closes lingering
// connections at once.
func TestStopEndsLinger(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) { o.MaxTCPBody = 1000 })
	c := dialTCP(t, ts.Addr)
	c.login("lingerstop")
	if _, err := c.c.Write(codec.AppendTCP(nil, codec.CmdChatReq, 5, true, make([]byte, 2000))); err != nil {
		t.Fatal(err)
	}
	readSeqReply(t, c)
	start := time.Now()
	if err := ts.Srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("stop took %v with a lingering connection", d)
	}
}
