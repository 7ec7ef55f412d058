package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// randomCuts splits a stream of length n into random chunks, reproducibly.
func randomCuts(n int, seed uint64) []int {
	r := rand.New(rand.NewPCG(seed, 1))
	var cuts []int
	for pos := 0; pos < n; {
		pos += 1 + r.IntN(16)
		if pos < n {
			cuts = append(cuts, pos)
		}
	}
	return cuts
}

// addCutSeeds seeds f with s whole and cut at every position.
func addCutSeeds(f *testing.F, s []byte, add func([]byte)) {
	add(s)
	for i := 0; i < len(s); i++ {
		add(s[:i])
	}
}

func FuzzDecodeTCP(f *testing.F) {
	seeds := [][]byte{
		AppendTCP(nil, CmdLoginReq, 0, false, []byte(loginBody)),
		AppendTCP(AppendTCP(nil, CmdChatReq, 9, true, []byte(`{"cmd":11}`)), CmdHeartbeatReq, 0, false, []byte{0x80}),
		{0x01, 0x51, 11, 0xff, 0xff, 0xff, 0xff},
		{0x02},
	}
	for _, s := range seeds {
		addCutSeeds(f, s, func(b []byte) { f.Add(b, uint64(len(b))) })
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		const max = 4096
		whole, werr := feedTCP(t, data, nil, max)
		chunked, cerr := feedTCP(t, data, randomCuts(len(data), seed), max)
		if !reflect.DeepEqual(whole, chunked) || cerr != werr {
			t.Fatalf("whole %v %+v\nchunked %v %+v", werr, whole, cerr, chunked)
		}
		for _, fr := range whole {
			b := AppendTCP(nil, fr.Cmd, fr.Seq, fr.HasSeq, fr.Body)
			back, n, err := DecodeTCP(b, max)
			if err != nil || n != len(b) || !reflect.DeepEqual(back, fr) {
				t.Fatalf("re-encode %+v: %+v %v", fr, back, err)
			}
		}
		// The body-dropping decoder agrees on everything but the dropped
		// bodies.
		for off := 0; off < len(data); {
			f1, n1, e1 := DecodeTCP(data[off:], max)
			f2, n2, e2 := DecodeTCPDropBody(data[off:], max, CmdHeartbeatReq)
			if f1.Cmd == CmdHeartbeatReq {
				f1.Body = nil
			}
			if n1 != n2 || e1 != e2 || !reflect.DeepEqual(f1, f2) {
				t.Fatalf("at %d: DecodeTCP %+v %d %v, DecodeTCPDropBody %+v %d %v", off, f1, n1, e1, f2, n2, e2)
			}
			if e1 == ErrBodyTooLarge {
				// The refusal carries the header, to be answered.
				h := data[off:]
				p, seq, hasSeq := 2, int32(0), h[1]&MaskHasSeq != 0
				if hasSeq {
					p, seq = 6, int32(binary.BigEndian.Uint32(h[2:]))
				}
				if f1.Body != nil || f1.Cmd != Cmd(int8(h[p])) || f1.Seq != seq || f1.HasSeq != hasSeq {
					t.Fatalf("at %d: oversized frame %x decoded as %+v", off, h[:p+5], f1)
				}
			}
			if n1 > 0 || e1 == ErrBodyTooLarge {
				// Any prefix holding the whole header gives the same
				// command and seq before the body is there.
				hdr := tcpHeaderLen
				if data[off+1]&MaskHasSeq != 0 {
					hdr = tcpHeaderSeqLen
				}
				for _, k := range []int{hdr - 1, hdr, len(data) - off} {
					h, ok := PeekTCPHeader(data[off : off+k])
					want := TCPFrame{Cmd: f1.Cmd, Seq: f1.Seq, HasSeq: f1.HasSeq}
					if ok != (k >= hdr) || ok && !reflect.DeepEqual(h, want) {
						t.Fatalf("at %d: PeekTCPHeader of %d bytes: %+v %v, want %+v", off, k, h, ok, want)
					}
				}
				if fl, ok := TCPFrameLen(data[off:]); !ok || n1 > 0 && fl != int64(n1) {
					t.Fatalf("at %d: TCPFrameLen %d %v, decoded %d", off, fl, ok, n1)
				}
			}
			if e1 == nil && n1 == 0 {
				// Waiting for more: the frame's length, once known, is
				// more than what is there.
				if fl, ok := TCPFrameLen(data[off:]); ok && fl <= int64(len(data)-off) {
					t.Fatalf("at %d: incomplete, but TCPFrameLen %d of %d bytes", off, fl, len(data)-off)
				}
			}
			if e1 != nil || n1 == 0 {
				break
			}
			off += n1
		}
	})
}

func FuzzSniff(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", "OPTIONS * HTTP/1.1", "PATCH ", "\x01\x51", "\x16\x03\x01", "POS", "xyz"} {
		addCutSeeds(f, []byte(s), func(b []byte) { f.Add(b) })
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, more := Sniff(b)
		if more && p != ProtoUnknown {
			t.Fatalf("needMore with %v", p)
		}
		// A verdict reached on a prefix never changes as bytes arrive, and
		// asking for more is only allowed while every prefix asked too.
		for i := 0; i < len(b); i++ {
			pp, pm := Sniff(b[:i])
			if !pm && (pp != p || more) {
				t.Fatalf("prefix %d: %v, whole %v/%v", i, pp, p, more)
			}
			if more && !pm {
				t.Fatalf("prefix %d decided, whole wants more", i)
			}
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	seeds := []string{
		postReq, wsReq, postReq + postReq,
		"GET / HTTP/1.0\r\n\r\n",
		"\r\n\r\nGET /x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	}
	for _, s := range seeds {
		addCutSeeds(f, []byte(s), func(b []byte) { f.Add(b) })
	}
	// Garbage longer than MaxHeader: the bad byte must win over the size.
	f.Add(append([]byte("\x8d\x00ST /a"), bytes.Repeat([]byte{'z'}, 600)...))
	lim := HTTPLimits{MaxHeader: 512, MaxBody: 256}
	f.Fuzz(func(t *testing.T, buf []byte) {
		req, n, err := ParseRequest(buf, lim)
		if n < 0 || n > len(buf) || (err != nil && (n != 0 || req != nil)) || (err == nil && (n == 0) != (req == nil)) {
			t.Fatalf("req=%v n=%d err=%v", req, n, err)
		}
		// Bytes arriving one by one never change the outcome: before the
		// request completes every prefix asks for more or fails the same way.
		limit := len(buf)
		if err == nil && n > 0 {
			limit = n
		}
		for i := 0; i < limit; i += 1 + i/64 { // dense near the start, sparser later
			pr, pn, perr := ParseRequest(buf[:i], lim)
			if pn != 0 || pr != nil || (perr != nil && perr != err) {
				t.Fatalf("prefix %d: n=%d err=%v, whole n=%d err=%v", i, pn, perr, n, err)
			}
		}
		if req != nil {
			again, n2, err2 := ParseRequest(buf[:n], lim)
			if err2 != nil || n2 != n || !reflect.DeepEqual(again, req) {
				t.Fatalf("reparse: %v", err2)
			}
			if len(req.Body) > lim.MaxBody {
				t.Fatalf("body %d over limit", len(req.Body))
			}
			_ = req.Form()
			_ = req.Query("a")
		}
	})
}

func FuzzWSDecode(f *testing.F) {
	seeds := [][]byte{
		fragmentedStream(),
		clientFrame(true, WSText, testMask, []byte(`{"cmd":13,"hbbyte":"-127"}`)),
		clientFrame(true, WSBinary, nil, bytes.Repeat([]byte{7}, 300)),
		clientFrame(true, WSClose, testMask, []byte{0x03, 0xe8, 'o', 'k'}),
		{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1},
	}
	for _, s := range seeds {
		addCutSeeds(f, s, func(b []byte) { f.Add(b, uint64(len(b)), false) })
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, requireMask bool) {
		d1 := WSDecoder{MaxMessage: 1024, RequireMask: requireMask}
		d2 := d1
		whole := feedWS(t, &d1, data, nil)
		chunked := feedWS(t, &d2, data, randomCuts(len(data), seed))
		if !reflect.DeepEqual(whole, chunked) {
			t.Fatalf("whole %+v\nchunked %+v", whole, chunked)
		}
		if whole.err != nil {
			if c := wsCode(whole.err); c != 1002 && c != 1007 && c != 1009 {
				t.Fatalf("close code %d", c)
			}
		}
		for _, m := range whole.msgs {
			if m.Op < WSClose && len(m.Payload) > 1024 || m.Op >= WSClose && len(m.Payload) > 125 {
				t.Fatalf("payload %d for op %d", len(m.Payload), m.Op)
			}
		}
		// WSFrameLen gives the length of every frame taken, and more than
		// what is there for a frame still awaited.
		d3 := WSDecoder{MaxMessage: 1024, RequireMask: requireMask}
		for off := 0; off < len(data); {
			_, _, n, err := d3.Decode(data[off:])
			if err != nil {
				break
			}
			fl, ok := WSFrameLen(data[off:])
			if n > 0 && (!ok || fl != uint64(n)) || n == 0 && ok && fl <= uint64(len(data)-off) {
				t.Fatalf("at %d: decoded %d, WSFrameLen %d %v of %d bytes", off, n, fl, ok, len(data)-off)
			}
			if n == 0 {
				break
			}
			off += n
		}
	})
}

func FuzzPeekCmd(f *testing.F) {
	for _, s := range []string{`{"cmd":11,"content":"x"}`, `{"cmd":"13"}`, `{"cmd":1e2}`, `{"cmd":null}`, `[]`, "\x80"} {
		addCutSeeds(f, []byte(s), func(b []byte) { f.Add(b, int8(5)) })
	}
	f.Fuzz(func(t *testing.T, body []byte, c int8) {
		cmd, ok := PeekCmd(body)
		if ok && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if c2, ok2 := PeekCmd(body); c2 != cmd || ok2 != ok {
			t.Fatal("not deterministic")
		}
		for _, form := range []string{`{"a":[1,{}],"cmd":%d}`, `{"cmd":"%d","x":null}`} {
			got, ok := PeekCmd(fmt.Appendf(nil, form, c))
			if !ok || got != Cmd(c) {
				t.Fatalf("%s with %d: %d %v", form, c, got, ok)
			}
		}
	})
}

func FuzzChatBody(f *testing.F) {
	for _, s := range []string{
		`{"chatType":"2","cmd":11,"content":"hi","from":"a","msgType":0,"to":"b"}`,
		`{"chatType":1,"group_id":"100","extras":{"k":[1,2]},"createTime":1.7e12}`,
		`{"userId":"u","type":"1","beginTime":1.5,"count":"10","afterSeq":3}`,
		`{"userId":"u","type":null}`,
	} {
		addCutSeeds(f, []byte(s), func(b []byte) { f.Add(b) })
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c ChatBody
		if Unmarshal(b, &c) == nil {
			c.Extras = nil // raw JSON need not re-encode byte for byte
			out, err := Marshal(&c)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			var back ChatBody
			if err := Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, c) {
				t.Fatalf("round trip %q: %+v vs %+v (%v)", out, back, c, err)
			}
			if _, err := AppendChatForward(nil, &c); err != nil {
				t.Fatal(err)
			}
		}
		var m MessageReq
		_ = Unmarshal(b, &m)
		var u UserReq
		_ = Unmarshal(b, &u)
	})
}
