package codec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
)

var errTrailing = errors.New("trailing bytes")

const loginBody = `{"cmd":5,"password":"123","userId":"hello_client"}`

func TestTCPJIMExample(t *testing.T) {
	want, _ := hex.DecodeString("01510500000032")
	want = append(want, loginBody...)
	if len(loginBody) != 50 {
		t.Fatalf("body is %d bytes", len(loginBody))
	}
	got := AppendTCP(nil, CmdLoginReq, 0, false, []byte(loginBody))
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendTCP = % x\nwant % x", got, want)
	}
	f, n, err := DecodeTCP(want, 0)
	if err != nil || n != len(want) {
		t.Fatalf("DecodeTCP n=%d err=%v", n, err)
	}
	if f.Cmd != CmdLoginReq || f.HasSeq || f.Seq != 0 || string(f.Body) != loginBody {
		t.Fatalf("frame = %+v", f)
	}
}

func TestTCPRoundTrip(t *testing.T) {
	cases := []TCPFrame{
		{Cmd: CmdChatReq, Body: []byte(`{"cmd":11}`)},
		{Cmd: CmdChatReq, Seq: 7, HasSeq: true, Body: []byte(`{"cmd":11}`)},
		{Cmd: CmdHeartbeatReq, Body: []byte{0x80}},
		{Cmd: CmdHeartbeatReq},
		{Cmd: -5, Seq: -1, HasSeq: true},
		{Cmd: 127, Seq: 1 << 30, HasSeq: true, Body: bytes.Repeat([]byte("x"), 70000)},
	}
	for _, c := range cases {
		b := AppendTCP([]byte("junk"), c.Cmd, c.Seq, c.HasSeq, c.Body)[4:]
		if c.HasSeq && b[1] != MaskOutSeq || !c.HasSeq && b[1] != MaskOut {
			t.Fatalf("mask %#x for %+v", b[1], c)
		}
		f, n, err := DecodeTCP(b, 1<<17)
		if err != nil || n != len(b) {
			t.Fatalf("n=%d err=%v", n, err)
		}
		if !reflect.DeepEqual(f, c) {
			t.Fatalf("got %+v want %+v", f, c)
		}
	}
}

func TestTCPSeqBytes(t *testing.T) {
	got := AppendTCP(nil, CmdChatReq, 0x01020304, true, []byte("{}"))
	want := []byte{0x01, 0xF1, 1, 2, 3, 4, 11, 0, 0, 0, 2, '{', '}'}
	if !bytes.Equal(got, want) {
		t.Fatalf("% x", got)
	}
}

// feedTCP decodes stream as a reactor would: bytes arrive in the given chunk
// sizes, consumed bytes are discarded, the rest is kept.
func feedTCP(t testing.TB, stream []byte, cuts []int, maxBody int) ([]TCPFrame, error) {
	var (
		pending []byte
		out     []TCPFrame
		pos     int
	)
	cuts = append(cuts, len(stream))
	for _, c := range cuts {
		pending = append(pending, stream[pos:c]...)
		pos = c
		for {
			f, n, err := DecodeTCP(pending, maxBody)
			if err != nil {
				return out, err
			}
			if n > len(pending) {
				t.Fatalf("n=%d > len=%d", n, len(pending))
			}
			if n == 0 {
				break
			}
			out = append(out, f)
			pending = pending[n:]
		}
	}
	if len(pending) != 0 {
		return out, errTrailing
	}
	return out, nil
}

func TestTCPStickyEverySplit(t *testing.T) {
	stream := AppendTCP(nil, CmdLoginReq, 0, false, []byte(loginBody))
	stream = AppendTCP(stream, CmdChatReq, 42, true, []byte(`{"cmd":11,"content":"hi"}`))
	want, err := feedTCP(t, stream, nil, 0)
	if err != nil || len(want) != 2 {
		t.Fatalf("whole: %v %d", err, len(want))
	}
	for i := 0; i <= len(stream); i++ {
		for _, j := range []int{i, i + 1, i + 7, len(stream)} {
			if j > len(stream) {
				continue
			}
			got, err := feedTCP(t, stream, []int{i, j}, 0)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("split %d,%d: %v %+v", i, j, err, got)
			}
		}
	}
	// One byte at a time.
	cuts := make([]int, len(stream))
	for i := range cuts {
		cuts[i] = i
	}
	if got, err := feedTCP(t, stream, cuts, 0); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("bytewise: %v", err)
	}
}

func TestTCPErrors(t *testing.T) {
	if _, _, err := DecodeTCP([]byte{0x02}, 0); err != ErrVersion {
		t.Fatalf("version: %v", err)
	}
	if _, _, err := DecodeTCP([]byte("GET / HTTP/1.1"), 0); err != ErrVersion {
		t.Fatalf("version: %v", err)
	}
	neg := []byte{0x01, 0x51, 11, 0xff, 0xff, 0xff, 0xfe}
	if _, n, err := DecodeTCP(neg, 0); err != ErrBadLength || n != 0 {
		t.Fatalf("negative: %v", err)
	}
	// Only the 7-byte header: the body length alone must be refused.
	big := []byte{0x01, 0x51, 11, 0x00, 0x10, 0x00, 0x01}
	if _, _, err := DecodeTCP(big, 0); err != ErrBodyTooLarge {
		t.Fatalf("oversize default: %v", err)
	}
	small := []byte{0x01, 0x51, 11, 0, 0, 0, 101}
	if _, _, err := DecodeTCP(small, 100); err != ErrBodyTooLarge {
		t.Fatalf("oversize 100: %v", err)
	}
	if _, n, err := DecodeTCP(small, 101); err != nil || n != 0 {
		t.Fatalf("at limit: n=%d %v", n, err)
	}
	seqBig := []byte{0x01, 0xF1, 0, 0, 0, 1, 11, 0x7f, 0xff, 0xff, 0xff}
	if _, _, err := DecodeTCP(seqBig, 0); err != ErrBodyTooLarge {
		t.Fatalf("oversize seq: %v", err)
	}
	// Partial headers are not errors.
	for i := 0; i < 7; i++ {
		if _, n, err := DecodeTCP(big[:i], 0); err != nil || n != 0 {
			t.Fatalf("prefix %d: n=%d %v", i, n, err)
		}
	}
}

func TestTCPAnyMask(t *testing.T) {
	for m := 0; m < 256; m++ {
		var b []byte
		if byte(m)&MaskHasSeq != 0 {
			b = []byte{0x01, byte(m), 0, 0, 0, 9, 13, 0, 0, 0, 1, 0x80}
		} else {
			b = []byte{0x01, byte(m), 13, 0, 0, 0, 1, 0x80}
		}
		f, n, err := DecodeTCP(b, 0)
		if err != nil || n != len(b) || f.Cmd != CmdHeartbeatReq || !bytes.Equal(f.Body, []byte{0x80}) {
			t.Fatalf("mask %#x: %+v n=%d %v", m, f, n, err)
		}
		if f.HasSeq != (byte(m)&MaskHasSeq != 0) || (f.HasSeq && f.Seq != 9) {
			t.Fatalf("mask %#x: seq %+v", m, f)
		}
	}
}

func TestTCPBodyIsCopy(t *testing.T) {
	b := AppendTCP(nil, CmdChatReq, 0, false, []byte("abc"))
	f, _, _ := DecodeTCP(b, 0)
	b[7] = 'z'
	if string(f.Body) != "abc" {
		t.Fatal("body aliases the input")
	}
	if a := testing.AllocsPerRun(100, func() { DecodeTCP(b, 0) }); a != 1 {
		t.Fatalf("allocs = %v", a)
	}
}

func TestOutbound(t *testing.T) {
	body := []byte(`{"command":11,"data":{"content":"hi"}}`)
	o := NewOutbound(CmdChatReq, body)
	o.Seq, o.HasSeq = 3, true
	done := make(chan [2][]byte)
	for range 8 {
		go func() { done <- [2][]byte{o.TCP(), o.WS()} }()
	}
	var first [2][]byte
	for i := range 8 {
		got := <-done
		if i == 0 {
			first = got
		} else if &got[0][0] != &first[0][0] || &got[1][0] != &first[1][0] {
			t.Fatal("frames built more than once were both handed out")
		}
	}
	if !bytes.Equal(first[0], AppendTCP(nil, CmdChatReq, 3, true, body)) {
		t.Fatalf("TCP % x", first[0])
	}
	if !bytes.Equal(first[1], AppendWSFrame(nil, WSText, body)) {
		t.Fatalf("WS % x", first[1])
	}
}

func TestPeekCmd(t *testing.T) {
	cases := []struct {
		in   string
		cmd  Cmd
		isOK bool
	}{
		{`{"cmd":11,"content":"x"}`, 11, true},
		{`{"from":"a","cmd":"13","hbbyte":"-127"}`, 13, true},
		{`{"cmd":5.0}`, 5, true},
		{`{"cmd":-1}`, -1, true},
		{`{"cmd":128}`, 0, false},
		{`{"cmd":null}`, 0, false},
		{`{"content":"x"}`, 0, false},
		{`{"cmd":"x"}`, 0, false},
		{`{"cmd":11`, 0, false},
		{`[11]`, 0, false},
		{`null`, 0, false},
		{"\x80", 0, false},
		{``, 0, false},
	}
	for _, c := range cases {
		cmd, ok := PeekCmd([]byte(c.in))
		if cmd != c.cmd || ok != c.isOK {
			t.Errorf("PeekCmd(%q) = %d, %v", c.in, cmd, ok)
		}
	}
}

// TestTCPDropBody checks that the dropped command comes back without its body
// and without allocating, everything else as DecodeTCP decodes it.
func TestTCPDropBody(t *testing.T) {
	hb := AppendTCP(nil, CmdHeartbeatReq, 3, true, []byte(`{"cmd":13,"hbbyte":"-127"}`))
	chat := AppendTCP(nil, CmdChatReq, 0, false, []byte(`{"cmd":11}`))
	for _, b := range [][]byte{hb, chat, append(append([]byte(nil), hb...), chat...)} {
		want, wn, werr := DecodeTCP(b, 1<<10)
		got, n, err := DecodeTCPDropBody(b, 1<<10, CmdHeartbeatReq)
		if n != wn || err != werr {
			t.Fatalf("n=%d err=%v, DecodeTCP n=%d err=%v", n, err, wn, werr)
		}
		if want.Cmd == CmdHeartbeatReq {
			want.Body = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v want %+v", got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _, _, _ = DecodeTCPDropBody(hb, 1<<10, CmdHeartbeatReq) }); a != 0 {
		t.Fatalf("%v allocations per dropped heartbeat", a)
	}
	// Limits still apply to a dropped body.
	big := AppendTCP(nil, CmdHeartbeatReq, 0, false, bytes.Repeat([]byte("x"), 2000))
	if _, _, err := DecodeTCPDropBody(big, 1<<10, CmdHeartbeatReq); err != ErrBodyTooLarge {
		t.Fatalf("oversized heartbeat: %v", err)
	}
}
