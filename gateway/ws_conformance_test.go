package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

// RFC 6455 over real sockets: the echo endpoint with coder/websocket, and
// hand-made frames for what a conforming client library never sends. The
// decoder's own tests (codec/ws_test.go) cover the rules frame by frame;
// these check that the gateway turns each violation into the right close
// frame and a closed socket, on the echo endpoint and on J-IM's.

const echoPath = "/echo"

func startEchoServer(t *testing.T, mod func(*gateway.Options)) *jimtest.Server {
	return startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.WSEchoPath = echoPath
		if mod != nil {
			mod(o)
		}
	})
}

func dialEcho(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+echoPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(4 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func TestWSEchoMessages(t *testing.T) {
	ts := startEchoServer(t, func(o *gateway.Options) { o.MaxWSMessage = 1 << 20 })
	c := dialEcho(t, ts.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	roundTrip := func(typ websocket.MessageType, p []byte) {
		t.Helper()
		if err := c.Write(ctx, typ, p); err != nil {
			t.Fatal(err)
		}
		gt, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if gt != typ || !bytes.Equal(got, p) {
			t.Fatalf("echo of %v (%d bytes): got %v (%d bytes)", typ, len(p), gt, len(got))
		}
	}
	roundTrip(websocket.MessageText, []byte("hello, 世界"))
	roundTrip(websocket.MessageText, nil)
	roundTrip(websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe})
	roundTrip(websocket.MessageBinary, bytes.Repeat([]byte{0xa5}, 70000)) // 64-bit length
	roundTrip(websocket.MessageText, []byte(strings.Repeat("é", 200)))    // 16-bit length

	// Fragmented: every Write of a message writer is one frame.
	for _, typ := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
		w, err := c.Writer(ctx, typ)
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for i := 0; i < 5; i++ {
			part := []byte(fmt.Sprintf("part %d € ", i))
			want = append(want, part...)
			if _, err := w.Write(part); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		gt, got, err := c.Read(ctx)
		if err != nil || gt != typ || !bytes.Equal(got, want) {
			t.Fatalf("fragmented %v: %v %q %v", typ, gt, got, err)
		}
	}

	// Ping: the library needs a reader running to see the pong.
	readErr := make(chan error, 1)
	rctx, rcancel := context.WithCancel(ctx)
	go func() { _, _, err := c.Read(rctx); readErr <- err }()
	for i := 0; i < 3; i++ {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	rcancel()
	<-readErr

	// The close code comes back.
	c2 := dialEcho(t, ts.Addr)
	if err := c2.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
}

// The echo endpoint does not log in, so the login deadline does not apply.
func TestWSEchoNoLoginDeadline(t *testing.T) {
	ts := startEchoServer(t, func(o *gateway.Options) { o.AuthTimeout = time.Second })
	c := dialEcho(t, ts.Addr)
	time.Sleep(2500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "still here" {
		t.Fatalf("%q %v", got, err)
	}
	// Off by default: the path is an ordinary J-IM WebSocket, which
	// answers JSON rather than echoing.
	plain := startServer(t, nil)
	pc := dialEcho(t, plain.Addr)
	if err := pc.Write(ctx, websocket.MessageText, []byte(`{"cmd":13,"hbbyte":"-127"}`)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := pc.Read(ctx); err != nil || !strings.Contains(string(got), `"command"`) {
		t.Fatalf("without the option: %q %v", got, err)
	}
}

// rawWS is a WebSocket client that writes whatever frames it is told to.
type rawWS struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRawWS(t *testing.T, addr, target string) *rawWS {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", target, addr)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("upgrade: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	return &rawWS{t: t, c: c, br: br}
}

var rawMask = [4]byte{0x12, 0x34, 0x56, 0x78}

// frame builds one client frame. b0 is the first byte as sent (FIN, RSV
// bits and opcode); the payload is masked unless unmasked is set.
func frame(b0 byte, payload []byte, unmasked bool) []byte {
	mbit := byte(0x80)
	if unmasked {
		mbit = 0
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, mbit|byte(n))
	case n <= 0xffff:
		f = append(f, mbit|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mbit|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if unmasked {
		return append(f, payload...)
	}
	f = append(f, rawMask[:]...)
	for i, b := range payload {
		f = append(f, b^rawMask[i%4])
	}
	return f
}

const (
	finBit = 0x80
	opCont = 0x0
	opText = 0x1
	opBin  = 0x2
	opClos = 0x8
	opPing = 0x9
	opPong = 0xa
)

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func (w *rawWS) send(frames ...[]byte) {
	w.t.Helper()
	if _, err := w.c.Write(bytes.Join(frames, nil)); err != nil {
		w.t.Fatal(err)
	}
}

// next reads one server frame, which must be unmasked and final.
func (w *rawWS) next() (op byte, payload []byte, err error) {
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x70 != 0 || h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("bad server frame header %x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(w.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(w.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(w.br, payload)
	return h[0] & 0x0f, payload, err
}

// expect reads the next frame other than J-IM's own text frames (login
// replies) and checks its opcode and payload.
func (w *rawWS) expect(op byte, payload []byte) {
	w.t.Helper()
	for {
		gop, got, err := w.next()
		if err != nil {
			w.t.Fatalf("waiting for opcode %d: %v", op, err)
		}
		if gop == op && bytes.Equal(got, payload) {
			return
		}
		if gop == opText && op != opText {
			continue
		}
		w.t.Fatalf("got opcode %d %q, want %d %q", gop, got, op, payload)
	}
}

// expectClose reads up to the server's close frame, checks its code (1005
// stands for an empty payload) and that the server then closes the socket.
func (w *rawWS) expectClose(code uint16) {
	w.t.Helper()
	for {
		op, p, err := w.next()
		if err != nil {
			w.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if op != opClos {
			continue
		}
		got := uint16(1005)
		if len(p) >= 2 {
			got = binary.BigEndian.Uint16(p)
		} else if len(p) == 1 {
			w.t.Fatalf("close payload of one byte")
		}
		if got != code {
			w.t.Fatalf("close code %d (%q), want %d", got, p, code)
		}
		break
	}
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, w.br); err != nil || n != 0 {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			w.t.Fatal("socket left open after the close frame")
		}
		if n != 0 {
			w.t.Fatalf("%d bytes after the close frame", n)
		}
	}
}

type wsCase struct {
	name   string
	frames [][]byte
	close  uint16 // expected close code; 0: expect echo instead
	echo   []byte // the text echoed (echo endpoint) before anything else
}

func wsCases() []wsCase {
	euro := []byte("€") // e2 82 ac
	bad := []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64}
	cases := []wsCase{
		{name: "close 1000 echoed", frames: [][]byte{frame(finBit|opClos, closePayload(1000, "bye"), false)}, close: 1000},
		{name: "close 1001 echoed", frames: [][]byte{frame(finBit|opClos, closePayload(1001, ""), false)}, close: 1001},
		{name: "close 3000 echoed", frames: [][]byte{frame(finBit|opClos, closePayload(3000, "app"), false)}, close: 3000},
		{name: "close 4999 echoed", frames: [][]byte{frame(finBit|opClos, closePayload(4999, ""), false)}, close: 4999},
		{name: "empty close", frames: [][]byte{frame(finBit|opClos, nil, false)}, close: 1005},
		{name: "close of one byte", frames: [][]byte{frame(finBit|opClos, []byte{0x03}, false)}, close: 1002},
		{name: "close reason not UTF-8", frames: [][]byte{frame(finBit|opClos, append(closePayload(1000, ""), 0xff, 0xfe), false)}, close: 1007},
		{name: "ping too long", frames: [][]byte{frame(finBit|opPing, make([]byte, 126), false)}, close: 1002},
		{name: "close too long", frames: [][]byte{frame(finBit|opClos, closePayload(1000, strings.Repeat("x", 124)), false)}, close: 1002},
		{name: "fragmented ping", frames: [][]byte{frame(opPing, []byte("a"), false), frame(finBit|opCont, []byte("b"), false)}, close: 1002},
		{name: "fragmented close", frames: [][]byte{frame(opClos, closePayload(1000, ""), false)}, close: 1002},
		{name: "continuation without start", frames: [][]byte{frame(finBit|opCont, []byte("x"), false)}, close: 1002},
		{name: "text inside fragmented text", frames: [][]byte{frame(opText, []byte("a"), false), frame(finBit|opText, []byte("b"), false)}, close: 1002},
		{name: "rsv1", frames: [][]byte{frame(finBit|0x40|opText, []byte("x"), false)}, close: 1002},
		{name: "rsv2", frames: [][]byte{frame(finBit|0x20|opText, []byte("x"), false)}, close: 1002},
		{name: "rsv3 on ping", frames: [][]byte{frame(finBit|0x10|opPing, nil, false)}, close: 1002},
		{name: "invalid UTF-8 text", frames: [][]byte{frame(finBit|opText, bad, false)}, close: 1007},
		{name: "invalid UTF-8 across fragments", frames: [][]byte{frame(opText, bad[:11], false), frame(finBit|opCont, bad[11:], false)}, close: 1007},
		{name: "truncated UTF-8 at the end", frames: [][]byte{frame(opText, []byte("ok"), false), frame(finBit|opCont, euro[:2], false)}, close: 1007},
		// Valid: a multi-byte character split between fragments, with a
		// control frame in between.
		{name: "UTF-8 split across fragments", frames: [][]byte{
			frame(opText, append([]byte("a"), euro[:1]...), false),
			frame(finBit|opPing, []byte("p"), false),
			frame(opCont, euro[1:2], false),
			frame(finBit|opCont, append(euro[2:], 'z'), false),
		}, echo: []byte("a€z")},
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, wsCase{name: fmt.Sprintf("close %d refused", code),
			frames: [][]byte{frame(finBit|opClos, closePayload(code, ""), false)}, close: 1002})
	}
	for _, op := range []byte{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, wsCase{name: fmt.Sprintf("reserved opcode %d", op),
			frames: [][]byte{frame(finBit|op, nil, false)}, close: 1002})
	}
	return cases
}

func TestWSEchoConformance(t *testing.T) {
	ts := startEchoServer(t, func(o *gateway.Options) { o.MaxWSMessage = 4096 })
	for _, tc := range wsCases() {
		t.Run(tc.name, func(t *testing.T) {
			w := dialRawWS(t, ts.Addr, echoPath)
			w.send(tc.frames...)
			if tc.echo != nil {
				w.expect(opPong, []byte("p"))
				w.expect(opText, tc.echo)
				w.send(frame(finBit|opClos, closePayload(1000, ""), false))
				w.expectClose(1000)
				return
			}
			w.expectClose(tc.close)
		})
	}
	t.Run("unmasked frame", func(t *testing.T) {
		w := dialRawWS(t, ts.Addr, echoPath)
		w.send(frame(finBit|opText, []byte("hi"), true))
		w.expectClose(1002)
	})
	t.Run("unmasked ping", func(t *testing.T) {
		w := dialRawWS(t, ts.Addr, echoPath)
		w.send(frame(finBit|opPing, nil, true))
		w.expectClose(1002)
	})
	t.Run("ping, pong, binary", func(t *testing.T) {
		w := dialRawWS(t, ts.Addr, echoPath)
		w.send(frame(finBit|opPing, []byte("ping payload"), false))
		w.expect(opPong, []byte("ping payload"))
		w.send(frame(finBit|opPing, nil, false))
		w.expect(opPong, []byte{})
		// An unsolicited pong is ignored.
		w.send(frame(finBit|opPong, []byte("unasked"), false))
		w.send(frame(opBin, []byte{0xff}, false), frame(finBit|opCont, []byte{0x00}, false))
		w.expect(opBin, []byte{0xff, 0x00})
		// Byte by byte, as a slow network delivers it.
		f := frame(finBit|opText, []byte("trickle"), false)
		for i := range f {
			w.send(f[i : i+1])
			time.Sleep(time.Millisecond)
		}
		w.expect(opText, []byte("trickle"))
	})
	t.Run("too big", func(t *testing.T) {
		w := dialRawWS(t, ts.Addr, echoPath)
		w.send(frame(opBin, make([]byte, 3000), false), frame(finBit|opCont, make([]byte, 3000), false))
		w.expectClose(1009)
	})
}

// The same rules hold on J-IM's WebSocket endpoint, after a login.
func TestWSConformanceJIM(t *testing.T) {
	ts := startServer(t, nil)
	for i, tc := range wsCases() {
		t.Run(tc.name, func(t *testing.T) {
			w := dialRawWS(t, ts.Addr, fmt.Sprintf("/?username=conf%d", i))
			if tc.echo != nil {
				// A heartbeat whose JSON has a character split across
				// fragments is answered, not refused.
				hb := []byte(`{"cmd":13,"hbbyte":"€"}`)
				cut := bytes.IndexByte(hb, 0xe2) + 1
				w.send(frame(opText, hb[:cut], false), frame(finBit|opPing, []byte("p"), false),
					frame(finBit|opCont, hb[cut:], false))
				w.expect(opPong, []byte("p"))
				for {
					op, p, err := w.next()
					if err != nil {
						t.Fatal(err)
					}
					if op == opText && bytes.Contains(p, []byte(`"command":13`)) {
						break
					}
				}
				w.send(frame(finBit|opClos, nil, false))
				w.expectClose(1005)
				return
			}
			w.send(tc.frames...)
			w.expectClose(tc.close)
		})
	}
	// J-IM accepts unmasked frames unless told otherwise.
	t.Run("unmasked accepted by default", func(t *testing.T) {
		w := dialRawWS(t, ts.Addr, "/?username=unmasked")
		w.send(frame(finBit|opText, []byte(`{"cmd":13,"hbbyte":"-127"}`), true))
		for {
			op, p, err := w.next()
			if err != nil {
				t.Fatal(err)
			}
			if op == opText && bytes.Contains(p, []byte(`"command":13`)) {
				break
			}
		}
	})
	strict := startServer(t, func(o *gateway.Options, _ *dispatch.Options) { o.WSRequireMask = true })
	t.Run("unmasked refused when required", func(t *testing.T) {
		w := dialRawWS(t, strict.Addr, "/?username=strict")
		w.send(frame(finBit|opText, []byte(`{"cmd":13,"hbbyte":"-127"}`), true))
		w.expectClose(1002)
	})
}
