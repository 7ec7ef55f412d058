package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// clientFrame builds a client frame; a nil mask sends it unmasked.
func clientFrame(fin bool, op WSOp, mask []byte, payload []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	mbit := byte(0)
	if mask != nil {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mbit|byte(n))
	case n <= 0xffff:
		b = append(b, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if mask != nil {
		b = append(b, mask...)
		ws.Cipher(p, [4]byte(mask), 0)
	}
	return append(b, p...)
}

var testMask = []byte{0x37, 0xfa, 0x21, 0x3d}

type wsResult struct {
	msgs []WSMessage
	err  error
}

// feedWS runs a decoder over stream delivered in chunks split at cuts,
// discarding consumed bytes like a reactor.
func feedWS(t testing.TB, d *WSDecoder, stream []byte, cuts []int) wsResult {
	var (
		res     wsResult
		pending []byte
		pos     int
	)
	cuts = append(cuts, len(stream))
	for _, c := range cuts {
		pending = append(pending, stream[pos:c]...)
		pos = c
		for {
			msg, ok, n, err := d.Decode(pending)
			if err != nil {
				res.err = err
				return res
			}
			if n > len(pending) || (ok && n == 0) {
				t.Fatalf("n=%d len=%d ok=%v", n, len(pending), ok)
			}
			if n == 0 {
				break
			}
			if ok {
				res.msgs = append(res.msgs, msg)
			}
			pending = pending[n:]
		}
	}
	return res
}

func wsCode(err error) uint16 {
	var e *WSError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestWSAcceptKey(t *testing.T) {
	if got := WSAcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatal(got)
	}
	got := string(AppendWSUpgrade(nil, "dGhlIHNhbXBsZSBub25jZQ=="))
	want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	if got != want {
		t.Fatalf("%q", got)
	}
	for key, ok := range map[string]bool{
		"dGhlIHNhbXBsZSBub25jZQ==": true,
		"dGhlIHNhbXBsZSBub25jZQ=":  false,
		"dGhlIHNhbXBsZSBub25jZQ":   false,
		"dGhlIHNhbXBsZSBub25jZSE=": false, // 17 bytes
		"":                         false,
		"!!!!!!!!!!!!!!!!!!!!!!==": false,
	} {
		if ValidWSKey(key) != ok {
			t.Fatalf("ValidWSKey(%q) != %v", key, ok)
		}
	}
}

func TestWSMaskedText(t *testing.T) {
	var d WSDecoder
	body := `{"cmd":11,"content":"你好"}`
	frame := clientFrame(true, WSText, testMask, []byte(body))
	msg, ok, n, err := d.Decode(frame)
	if err != nil || !ok || n != len(frame) || msg.Op != WSText || string(msg.Payload) != body {
		t.Fatalf("%+v ok=%v n=%d err=%v", msg, ok, n, err)
	}
	if !bytes.Equal(frame[6:], clientFrame(true, WSText, testMask, []byte(body))[6:]) {
		t.Fatal("decoder modified its input")
	}
	// Unmasked client frames are accepted by default, as J-IM does.
	frame = clientFrame(true, WSBinary, nil, []byte{0, 1, 2})
	if msg, ok, _, err = d.Decode(frame); err != nil || !ok || msg.Op != WSBinary || !bytes.Equal(msg.Payload, []byte{0, 1, 2}) {
		t.Fatalf("%+v %v", msg, err)
	}
	d.RequireMask = true
	if _, _, _, err = d.Decode(frame); wsCode(err) != 1002 {
		t.Fatalf("RequireMask: %v", err)
	}
	// 16- and 64-bit lengths.
	for _, size := range []int{125, 126, 65535, 65536, 200000} {
		p := bytes.Repeat([]byte("a"), size)
		frame = clientFrame(true, WSText, testMask, p)
		if msg, ok, n, err = d.Decode(frame); err != nil || !ok || n != len(frame) || !bytes.Equal(msg.Payload, p) {
			t.Fatalf("size %d: n=%d err=%v", size, n, err)
		}
	}
}

func fragmentedStream() []byte {
	text := []byte("héllo wörld ✓") // multi-byte runes split across fragments
	var s []byte
	s = append(s, clientFrame(false, WSText, testMask, text[:2])...) // cuts 'é'
	s = append(s, clientFrame(true, WSPing, testMask, []byte("ping"))...)
	s = append(s, clientFrame(false, WSContinuation, []byte{1, 2, 3, 4}, text[2:14])...)
	s = append(s, clientFrame(false, WSContinuation, nil, nil)...)
	s = append(s, clientFrame(true, WSContinuation, testMask, text[14:])...)
	s = append(s, clientFrame(true, WSClose, testMask, append([]byte{0x03, 0xe8}, "bye"...))...)
	return s
}

func TestWSFragmentedWithPing(t *testing.T) {
	var d WSDecoder
	stream := fragmentedStream()
	res := feedWS(t, &d, stream, nil)
	if res.err != nil || len(res.msgs) != 3 {
		t.Fatalf("%v %+v", res.err, res.msgs)
	}
	if m := res.msgs[0]; m.Op != WSPing || string(m.Payload) != "ping" {
		t.Fatalf("%+v", m)
	}
	if m := res.msgs[1]; m.Op != WSText || string(m.Payload) != "héllo wörld ✓" {
		t.Fatalf("%+v %q", m, m.Payload)
	}
	if m := res.msgs[2]; m.Op != WSClose || m.CloseCode != 1000 || m.CloseReason != "bye" {
		t.Fatalf("%+v", m)
	}
	if d.frag != nil || d.inFrag {
		t.Fatal("fragment state kept after the message")
	}
}

func TestWSEverySplit(t *testing.T) {
	stream := fragmentedStream()
	var d0 WSDecoder
	want := feedWS(t, &d0, stream, nil)
	for i := 0; i <= len(stream); i++ {
		for _, j := range []int{i, i + 1, i + 5, len(stream)} {
			if j > len(stream) {
				continue
			}
			var d WSDecoder
			if got := feedWS(t, &d, stream, []int{i, j}); !reflect.DeepEqual(got, want) {
				t.Fatalf("split %d,%d: %+v", i, j, got)
			}
		}
	}
}

func TestWSInvalidUTF8(t *testing.T) {
	var d WSDecoder
	bad := clientFrame(true, WSText, testMask, []byte{'a', 0xff})
	if _, _, _, err := d.Decode(bad); wsCode(err) != 1007 {
		t.Fatalf("err=%v", err)
	}
	d = WSDecoder{}
	s := clientFrame(false, WSText, testMask, []byte{0xe2, 0x9c}) // first 2 bytes of ✓
	s = append(s, clientFrame(true, WSContinuation, testMask, []byte{'x'})...)
	if res := feedWS(t, &d, s, nil); wsCode(res.err) != 1007 {
		t.Fatalf("err=%v", res.err)
	}
	// Binary is not validated.
	d = WSDecoder{}
	if _, ok, _, err := d.Decode(clientFrame(true, WSBinary, testMask, []byte{0xff})); err != nil || !ok {
		t.Fatalf("binary: %v", err)
	}
}

func TestWSTooBigFromHeader(t *testing.T) {
	d := WSDecoder{MaxMessage: 1000}
	hdr := clientFrame(true, WSText, testMask, make([]byte, 1001))[:4] // 2 + 16-bit length only
	if _, _, _, err := d.Decode(hdr); wsCode(err) != 1009 {
		t.Fatalf("err=%v", err)
	}
	var def WSDecoder
	hdr = clientFrame(true, WSBinary, nil, make([]byte, DefaultWSMaxMessage+1))[:10]
	if _, _, _, err := def.Decode(hdr); wsCode(err) != 1009 {
		t.Fatalf("default: err=%v", err)
	}
	// The whole reassembled message counts.
	d = WSDecoder{MaxMessage: 10}
	s := clientFrame(false, WSText, testMask, []byte("123456"))
	s = append(s, clientFrame(true, WSContinuation, testMask, []byte("12345"))[:2]...)
	if res := feedWS(t, &d, s, nil); wsCode(res.err) != 1009 {
		t.Fatalf("fragments: err=%v", res.err)
	}
	d = WSDecoder{MaxMessage: 10}
	if _, ok, _, err := d.Decode(clientFrame(true, WSText, nil, []byte("0123456789"))); err != nil || !ok {
		t.Fatalf("at limit: %v", err)
	}
}

func TestWSProtocolErrors(t *testing.T) {
	big := clientFrame(true, WSBinary, nil, nil)[:1]
	big = append(big, 127, 0x80, 0, 0, 0, 0, 0, 0, 1)
	cases := map[string][]byte{
		"rsv1":             {0xc1, 0x80},
		"rsv3":             {0x91, 0x00},
		"opcode 3":         {0x83, 0x00},
		"opcode 11":        {0x8b, 0x00},
		"ping 126":         clientFrame(true, WSPing, testMask, make([]byte, 126))[:2],
		"fragmented close": clientFrame(false, WSClose, testMask, nil),
		"lone continue":    clientFrame(true, WSContinuation, testMask, []byte("x")),
		"64-bit msb":       big,
		"close 1 byte":     clientFrame(true, WSClose, testMask, []byte{3}),
		"close 1005":       clientFrame(true, WSClose, testMask, []byte{0x03, 0xed}),
		"close 999":        clientFrame(true, WSClose, testMask, []byte{0x03, 0xe7}),
		"close 1004":       clientFrame(true, WSClose, testMask, []byte{0x03, 0xec}),
		"close 2000":       clientFrame(true, WSClose, testMask, []byte{0x07, 0xd0}),
		"close 5000":       clientFrame(true, WSClose, testMask, []byte{0x13, 0x88}),
	}
	for name, frame := range cases {
		var d WSDecoder
		if _, _, _, err := d.Decode(frame); wsCode(err) != 1002 {
			t.Errorf("%s: err=%v", name, err)
		}
	}
	var d WSDecoder
	s := clientFrame(false, WSText, testMask, []byte("a"))
	s = append(s, clientFrame(true, WSText, testMask, []byte("b"))...)
	if res := feedWS(t, &d, s, nil); wsCode(res.err) != 1002 {
		t.Fatalf("new message in flight: %v", res.err)
	}
	d = WSDecoder{}
	if _, _, _, err := d.Decode(clientFrame(true, WSClose, nil, []byte{0x03, 0xe8, 0xff})); wsCode(err) != 1007 {
		t.Fatalf("close reason utf8: %v", err)
	}
	if e := (&WSError{Code: 1002, Reason: "x"}); !strings.Contains(e.Error(), "1002") {
		t.Fatal(e.Error())
	}
}

func TestWSCloseCodes(t *testing.T) {
	var d WSDecoder
	m, ok, _, err := d.Decode(clientFrame(true, WSClose, testMask, nil))
	if err != nil || !ok || m.CloseCode != 1005 || m.CloseReason != "" {
		t.Fatalf("%+v %v", m, err)
	}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 3000, 4999} {
		p := binary.BigEndian.AppendUint16(nil, code)
		m, ok, _, err := d.Decode(clientFrame(true, WSClose, testMask, append(p, "why"...)))
		if err != nil || !ok || m.CloseCode != code || m.CloseReason != "why" {
			t.Fatalf("%d: %+v %v", code, m, err)
		}
	}
	// Pong with an empty payload.
	if m, ok, _, err := d.Decode(clientFrame(true, WSPong, testMask, nil)); err != nil || !ok || m.Op != WSPong || m.Payload != nil {
		t.Fatalf("%+v %v", m, err)
	}
}

func TestAppendWSFrame(t *testing.T) {
	for _, size := range []int{0, 5, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte("z"), size)
		f := AppendWSFrame(nil, WSText, p)
		if f[0] != 0x81 {
			t.Fatalf("first byte %#x", f[0])
		}
		var d WSDecoder
		m, ok, n, err := d.Decode(f)
		if err != nil || !ok || n != len(f) || !bytes.Equal(m.Payload, p) {
			t.Fatalf("size %d: %v", size, err)
		}
	}
	if got := AppendWSFrame(nil, WSText, []byte("hi")); !bytes.Equal(got, []byte{0x81, 2, 'h', 'i'}) {
		t.Fatalf("% x", got)
	}
}

func TestAppendWSClose(t *testing.T) {
	if got := AppendWSClose(nil, 1000, "ok"); !bytes.Equal(got, []byte{0x88, 4, 0x03, 0xe8, 'o', 'k'}) {
		t.Fatalf("% x", got)
	}
	if got := AppendWSClose(nil, 1005, "x"); !bytes.Equal(got, []byte{0x88, 0}) {
		t.Fatalf("% x", got)
	}
	long := strings.Repeat("✓", 100) // 300 bytes
	f := AppendWSClose(nil, 1009, long)
	var d WSDecoder
	m, ok, _, err := d.Decode(f)
	if err != nil || !ok || m.CloseCode != 1009 || len(m.Payload) > 125 || !strings.HasPrefix(long, m.CloseReason) || len(m.CloseReason) != 123 {
		t.Fatalf("%v %d %q", err, len(m.Payload), m.CloseReason)
	}
}

func TestWSDecoderSize(t *testing.T) {
	if s := reflect.TypeOf(WSDecoder{}).Size(); s > 64 {
		t.Fatalf("WSDecoder is %d bytes", s)
	}
}
