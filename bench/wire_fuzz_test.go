package bench

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"jim/codec"
	"jim/internal/jimtest"
)

// maxFuzzStream bounds a fuzzed stream: every path of the parsers shows up
// in a few frames, and longer inputs only slow each run down.
const maxFuzzStream = 4 << 10

// addWireSeeds seeds s whole and cut inside its header and near its end;
// cuts elsewhere add seeds, not coverage.
func addWireSeeds(s []byte, add func([]byte)) {
	add(s)
	for i := 0; i < len(s); i++ {
		if i < 16 || i >= len(s)-2 {
			add(s[:i])
		}
	}
}

type wireFrame struct {
	kind int // cmd for TCP, opcode for WebSocket
	body []byte
}

type wireScan func(buf []byte) (kind int, body []byte, n int, err error)

func scanTCPFrame(buf []byte) (int, []byte, int, error) { return scanTCP(buf) }

func scanWSFrame(buf []byte) (int, []byte, int, error) {
	op, p, n, err := scanWS(buf)
	return int(op), p, n, err
}

// feedWire runs scan over data delivered in the chunks cuts makes, keeping
// the unscanned tail between chunks as client.onRequest does with c.pend.
// Every chunk is a fresh copy, because scanWS unmasks in place. It returns
// the frames, the bytes left unscanned (on an error, of those delivered so
// far) and the error that stopped it.
func feedWire(t *testing.T, data []byte, cuts []int, scan wireScan) ([]wireFrame, int, error) {
	t.Helper()
	var frames []wireFrame
	var pend []byte
	prev := 0
	for _, end := range append(cuts, len(data)) {
		buf := append([]byte(nil), data[prev:end]...)
		prev = end
		if len(pend) > 0 {
			pend = append(pend, buf...)
			buf = pend
		}
		used := 0
		for used < len(buf) {
			kind, body, n, err := scan(buf[used:])
			if err != nil {
				return frames, len(buf) - used, err
			}
			if n == 0 {
				break
			}
			if n < 0 || n > len(buf)-used || len(body) > n {
				t.Fatalf("n=%d body=%d with %d bytes", n, len(body), len(buf)-used)
			}
			frames = append(frames, wireFrame{kind, bytes.Clone(body)})
			used += n
		}
		if used > 0 || len(pend) == 0 {
			pend = append(pend[:0], buf[used:]...)
		}
		if len(pend) > 14+maxFrame {
			t.Fatalf("%d bytes pending", len(pend))
		}
	}
	return frames, len(pend), nil
}

// FuzzScanTCP exists because scanTCP is jimbench's own copy of the J-IM
// frame parser, fed whatever the server under test sends: it has to split
// frames exactly as codec.DecodeTCP does however the bytes are chunked, read
// back what codec.AppendTCP writes, and refuse an oversized length from the
// header alone instead of buffering up to it.
func FuzzScanTCP(f *testing.F) {
	seeds := [][]byte{
		codec.AppendTCP(nil, codec.CmdLoginResp, 0, false, []byte(`{"code":10007,"command":6}`)),
		codec.AppendTCP(codec.AppendTCP(nil, codec.CmdChatReq, -3, true, []byte(`{"command":11,"data":{"content":"t=42"}}`)), codec.CmdHeartbeatReq, 0, false, nil),
		{0x01, 0x51, 11, 0xff, 0xff, 0xff, 0xff},
		binary.BigEndian.AppendUint32([]byte{0x01, 0x51, 11}, maxFrame+1),
		{0x02, 0x51},
	}
	for _, s := range seeds {
		addWireSeeds(s, func(b []byte) { f.Add(b, uint64(len(b)), int8(11), []byte(`{"command":11}`), int32(0), false) })
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, cmd int8, body []byte, seq int32, hasSeq bool) {
		if len(data)+len(body) > maxFuzzStream {
			return
		}
		// One well-formed frame in front, then whatever the server sent.
		stream := codec.AppendTCP(nil, codec.Cmd(cmd), seq, hasSeq, body)
		stream = append(stream, data...)

		whole, wrest, werr := feedWire(t, stream, nil, scanTCPFrame)
		chunked, crest, cerr := feedWire(t, stream, jimtest.Cuts(len(stream), seed), scanTCPFrame)
		if !reflect.DeepEqual(whole, chunked) || werr != cerr || werr == nil && wrest != crest {
			t.Fatalf("whole %v %d %v\nchunked %v %d %v", werr, wrest, whole, cerr, crest, chunked)
		}
		if len(whole) == 0 || whole[0].kind != int(cmd) || !bytes.Equal(whole[0].body, body) {
			t.Fatalf("encoded cmd %d body %q, scanned %+v (%v)", cmd, body, whole, werr)
		}

		// The reference parser with the same limit agrees frame by frame.
		// The only allowed difference: one lone byte that is not the version
		// is refused at once by the codec while scanTCP waits for a second.
		off, i := 0, 0
		for {
			ref, n, rerr := codec.DecodeTCP(stream[off:], maxFrame)
			if rerr != nil {
				lone := len(stream)-off == 1 && werr == nil && wrest == 1
				if !lone && (werr == nil || wrest != len(stream)-off) {
					t.Fatalf("at %d: codec %v, scanTCP %v with %d left", off, rerr, werr, wrest)
				}
				break
			}
			if n == 0 {
				if werr != nil || wrest != len(stream)-off {
					t.Fatalf("at %d: codec wants more, scanTCP %v with %d left", off, werr, wrest)
				}
				break
			}
			if i >= len(whole) || whole[i].kind != int(ref.Cmd) || !bytes.Equal(whole[i].body, ref.Body) {
				t.Fatalf("frame %d at %d: codec %+v, scanTCP %+v", i, off, ref, whole[i:])
			}
			off += n
			i++
		}
		if i != len(whole) {
			t.Fatalf("codec %d frames, scanTCP %d", i, len(whole))
		}
	})
}

// FuzzScanWS exists because scanWS parses WebSocket frames straight from the
// server's byte stream, with no library in between, and unmasks masked
// frames in place: the split must not depend on how the bytes are chunked or
// on scanning a frame twice, what codec.AppendWSFrame and
// AppendWSClientFrame write must come back unchanged, and a length over
// maxFrame must be refused from the header alone.
func FuzzScanWS(f *testing.F) {
	seeds := [][]byte{
		codec.AppendWSFrame(nil, codec.WSText, []byte(`{"command":13}`)),
		codec.AppendWSFrame(nil, codec.WSPing, []byte("hi")),
		AppendWSClientFrame(codec.AppendWSFrame(nil, codec.WSText, bytes.Repeat([]byte("x"), 300)), wsOpPing, []byte("hi"), [4]byte{1, 2, 3, 4}),
		codec.AppendWSClose(nil, 1000, "bye"),
		{0x81, 0x7f, 0, 0, 0, 0, 0, 0x40, 0, 1},
		{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1},
		{0x81, 0xfe, 0, 3, 1, 2, 3, 4, 'a'},
	}
	for _, s := range seeds {
		addWireSeeds(s, func(b []byte) {
			f.Add(b, uint64(len(b)), byte(wsOpText), []byte(`{"command":11}`), uint32(0x01020304), false)
		})
	}
	// A masked frame scanned twice: clearing the mask bit after unmasking
	// made the second scan take the key for payload and end 4 bytes early.
	f.Add([]byte{}, uint64(0), byte(wsOpPing), []byte("hello"), uint32(0x11223344), true)
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, op byte, payload []byte, key uint32, masked bool) {
		if len(data)+len(payload) > maxFuzzStream {
			return
		}
		var stream []byte
		if masked {
			var k [4]byte
			binary.BigEndian.PutUint32(k[:], key)
			stream = AppendWSClientFrame(nil, op, payload, k)
		} else {
			stream = codec.AppendWSFrame(nil, codec.WSOp(op), payload)
		}
		stream = append(stream, data...)

		whole, wrest, werr := feedWire(t, stream, nil, scanWSFrame)
		chunked, crest, cerr := feedWire(t, stream, jimtest.Cuts(len(stream), seed), scanWSFrame)
		if !reflect.DeepEqual(whole, chunked) || werr != cerr || werr == nil && wrest != crest {
			t.Fatalf("whole %v %d %v\nchunked %v %d %v", werr, wrest, whole, cerr, crest, chunked)
		}
		if len(whole) == 0 || whole[0].kind != int(op&0x0f) || !bytes.Equal(whole[0].body, payload) {
			t.Fatalf("encoded op %d payload %q, scanned %+v (%v)", op&0x0f, payload, whole, werr)
		}
		if werr != nil && werr != errFrame {
			t.Fatalf("error %v", werr)
		}

		// Scanning a frame again, once it has been unmasked, gives the same
		// frame; so does a frame re-encoded in the server's form.
		buf := bytes.Clone(stream)
		for off := 0; ; {
			op1, p1, n1, err := scanWS(buf[off:])
			if err != nil || n1 == 0 {
				break
			}
			if len(p1) > maxFrame || n1-len(p1) > 14 || n1-len(p1) < 2 {
				t.Fatalf("at %d: header %d bytes, payload %d", off, n1-len(p1), len(p1))
			}
			p1 = bytes.Clone(p1)
			op2, p2, n2, err := scanWS(buf[off : off+n1])
			if err != nil || op2 != op1 || n2 != n1 || !bytes.Equal(p2, p1) {
				t.Fatalf("at %d: rescan op %d n %d %q %v, first op %d n %d %q", off, op2, n2, p2, err, op1, n1, p1)
			}
			re := codec.AppendWSFrame(nil, codec.WSOp(op1), p1)
			op3, p3, n3, err := scanWS(re)
			if err != nil || op3 != op1 || n3 != len(re) || !bytes.Equal(p3, p1) {
				t.Fatalf("at %d: re-encoded op %d n %d/%d %v", off, op3, n3, len(re), err)
			}
			off += n1
		}
	})
}

// FuzzParseInt exists because parseInt and indexOf read numbers out of
// server JSON without a JSON parser: whatever the bytes, a number is either
// read exactly as strconv reads it or refused, never wrapped around.
func FuzzParseInt(f *testing.F) {
	for _, s := range []string{
		`10007,"command":6}`, `"-12"}`, ` 1712345678901234567"`, `-`, `""`, `9223372036854775807`,
		`-9223372036854775808`, `-9223372036854775809`, `99999999999999999999`, `18446744073709551617`,
	} {
		f.Add([]byte(s), int64(0), uint16(0), uint8(3))
	}
	f.Add([]byte(`{"code":10007,"command":6,"msg":"ok"}`), int64(math.MinInt64), uint16(1), uint8(7))
	f.Fuzz(func(t *testing.T, b []byte, v int64, at uint16, n uint8) {
		if len(b) > maxFuzzStream {
			return
		}
		got, ok := parseInt(b)
		want, wok := refParseInt(b)
		if got != want || ok != wok {
			t.Fatalf("parseInt(%q) = %d %v, want %d %v", b, got, ok, want, wok)
		}
		for _, s := range []string{strconv.FormatInt(v, 10), `"` + strconv.FormatInt(v, 10) + `"`, "  " + strconv.FormatInt(v, 10) + `,`} {
			if got, ok := parseInt([]byte(s)); !ok || got != v {
				t.Fatalf("parseInt(%q) = %d %v", s, got, ok)
			}
		}

		// Needles as short as the keys jimbench looks for: indexOf is the
		// naive search, quadratic for long ones.
		i := min(int(at), len(b))
		j := min(i+int(n%16), len(b))
		for _, s := range []string{string(b[i:j]), `"code":`, `"t=`} {
			if got, want := indexOf(b, s), bytes.Index(b, []byte(s)); got != want {
				t.Fatalf("indexOf(%q, %q) = %d, want %d", b, s, got, want)
			}
		}
		tm, tok := sendTime(b)
		if k := bytes.Index(b, []byte(`"t=`)); k < 0 {
			if tok {
				t.Fatalf("sendTime(%q) = %d without a timestamp", b, tm)
			}
		} else if want, wok := refParseInt(b[k+3:]); tm != want || tok != wok {
			t.Fatalf("sendTime(%q) = %d %v, want %d %v", b, tm, tok, want, wok)
		}
	})
}

// refParseInt is parseInt's contract spelled with strconv: skip spaces and
// quotes, then an optional sign and the longest run of digits.
func refParseInt(b []byte) (int64, bool) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '"') {
		i++
	}
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	if k == j {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b[i:k]), 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}

// FuzzSendTime exists because latency is arrival time minus the timestamp
// jimbench embeds in each chat and reads back from the server's forward
// without decoding it, and a chat's ack counts by the client id the server
// echoes: whatever the names and ids around them, the server's encodings of
// both must give back exactly the numbers sent.
func FuzzSendTime(f *testing.F) {
	f.Add(int64(1712345678901234567), "bench-2", "bench-1", "0123456789abcdef0123456789abcdef", false, uint64(7), int64(1712345678901), 10000, "ok")
	f.Add(int64(0), "g-0", `x"t=5`, `"clientId":9`, true, uint64(0), int64(0), 0, `"code":1`)
	f.Add(int64(math.MaxInt64), "", "", "", false, uint64(math.MaxUint64), int64(-1), -1, "")
	f.Fuzz(func(t *testing.T, ts int64, name, from, msgID string, group bool, seq uint64, createTime int64, code int, msg string) {
		// The request exactly as sendLoop builds it.
		var req []byte
		if group {
			req = []byte(`{"cmd":11,"groupId":"` + name + `","chatType":1,"msgType":0,"id":"`)
		} else {
			req = []byte(`{"cmd":11,"to":"` + name + `","chatType":2,"msgType":0,"id":"`)
		}
		req = strconv.AppendInt(req, ts, 10)
		req = append(req, `","content":"t=`...)
		req = strconv.AppendInt(req, ts, 10)
		req = append(req, '"', '}')
		var cb codec.ChatBody
		if codec.Unmarshal(req, &cb) != nil || cb.Content != "t="+strconv.FormatInt(ts, 10) || cb.ID != strconv.FormatInt(ts, 10) {
			return // a name that breaks the JSON; jimbench's names never do
		}
		// What the server makes of it (dispatch.finishChat).
		clientID := cb.ID
		cb.From, cb.ID, cb.Seq, cb.Cmd = strings.ToValidUTF8(from, "?"), strings.ToValidUTF8(msgID, "?"), seq, codec.FlexInt(codec.CmdChatReq)
		if createTime > 0 {
			cb.CreateTime = codec.FlexInt(createTime)
		}
		fwd, err := codec.AppendChatForward(nil, &cb)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := codec.AppendResp(nil, &codec.Resp{Code: codec.Status(code), Command: codec.CmdChatResp,
			Msg: strings.ToValidUTF8(msg, "?"), Data: &codec.ChatAck{ClientID: clientID, ID: cb.ID, Seq: seq}})
		if err != nil {
			t.Fatal(err)
		}

		// Through both framings, as the client sees them.
		tcp := codec.AppendTCP(nil, codec.CmdChatReq, 0, false, fwd)
		tcp = codec.AppendTCP(tcp, codec.CmdChatResp, 0, false, ack)
		ws := codec.AppendWSFrame(nil, codec.WSText, fwd)
		ws = codec.AppendWSFrame(ws, codec.WSText, ack)
		for _, fr := range [][]byte{tcp, ws} {
			var bodies [2][]byte
			var cmds [2]int64
			off := 0
			for i := range bodies {
				var n int
				var err error
				if fr[0] == codec.TCPVersion {
					var c int
					c, bodies[i], n, err = scanTCP(fr[off:])
					cmds[i] = int64(c)
				} else {
					_, bodies[i], n, err = scanWS(fr[off:])
					var ok bool
					if cmds[i], ok = jsonInt(bodies[i], `"command":`); !ok {
						t.Fatalf("no command in %q", bodies[i])
					}
				}
				if err != nil || n == 0 {
					t.Fatalf("frame %d: n=%d %v", i, n, err)
				}
				off += n
			}
			if cmds != [2]int64{cmdChat, cmdChatResp} {
				t.Fatalf("commands %v", cmds)
			}
			if got, ok := sendTime(bodies[0]); !ok || got != ts {
				t.Fatalf("sendTime(%q) = %d %v, want %d", bodies[0], got, ok, ts)
			}
			if got, ok := jsonInt(bodies[1], `"clientId":`); !ok || got != ts {
				t.Fatalf("clientId in %q = %d %v, want %d", bodies[1], got, ok, ts)
			}
			got, ok := jsonInt(bodies[1], `"code":`)
			if code == 0 {
				if ok {
					t.Fatalf("code %d found in %q", got, bodies[1])
				}
			} else if !ok || got != int64(code) {
				t.Fatalf("code in %q = %d %v, want %d", bodies[1], got, ok, code)
			}
		}
	})
}
