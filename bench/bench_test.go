package bench

import (
	"bytes"
	"math"
	"net/netip"
	"testing"
	"time"

	"jim/codec"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	// 1..100000 microseconds, uniformly: the q-quantile is q*100 ms.
	for i := int64(1); i <= 100000; i++ {
		h.Record(i * int64(time.Microsecond))
	}
	for _, tc := range []struct{ q, want float64 }{
		{0.5, 50}, {0.99, 99}, {0.999, 99.9}, {1, 100},
	} {
		got := h.QuantileMs(tc.q)
		if math.Abs(got-tc.want)/tc.want > 0.02 {
			t.Errorf("q%.3f = %.3f ms, want %.3f ms within 2%%", tc.q, got, tc.want)
		}
	}
	if h.Max() != 100*int64(time.Millisecond) || h.Min() != int64(time.Microsecond) {
		t.Errorf("min/max = %d/%d", h.Min(), h.Max())
	}
	if h.Count() != 100000 {
		t.Errorf("count = %d", h.Count())
	}

	// Small values are exact.
	var s Histogram
	for _, v := range []int64{3, 1, 2, 5, 4} {
		s.Record(v)
	}
	if s.Quantile(0.5) != 3 || s.Quantile(0) != 1 || s.Quantile(1) != 5 {
		t.Errorf("small quantiles: %d %d %d", s.Quantile(0), s.Quantile(0.5), s.Quantile(1))
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 {
		t.Error("empty histogram should report 0")
	}
}

func TestHistogramBucketsCoverValues(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1e6, 1e9, 1e12, math.MaxInt64 / 3, math.MaxInt64} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index(%d) = %d out of range", v, i)
		}
		up := histUpper(i)
		if up < v {
			t.Errorf("upper(index(%d)) = %d < value", v, up)
		}
		if v > 128 && float64(up-v)/float64(v) > 1.0/64 {
			t.Errorf("bucket of %d too wide: upper %d", v, up)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, direct Histogram
	for i := int64(0); i < 1000; i++ {
		a.Record(i * 1000)
		direct.Record(i * 1000)
		b.Record(i * 7919)
		direct.Record(i * 7919)
	}
	var viaSnap Histogram
	viaSnap.MergeSnapshot(a.Snapshot())
	viaSnap.MergeSnapshot(b.Snapshot())
	var viaMerge Histogram
	viaMerge.Merge(&a)
	viaMerge.Merge(&b)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		want := direct.Quantile(q)
		if got := viaSnap.Quantile(q); got != want {
			t.Errorf("snapshot merge q%v = %d, want %d", q, got, want)
		}
		if got := viaMerge.Quantile(q); got != want {
			t.Errorf("merge q%v = %d, want %d", q, got, want)
		}
	}
	if viaSnap.Count() != 2000 || viaSnap.Max() != direct.Max() || viaSnap.Min() != direct.Min() {
		t.Errorf("summary mismatch: %d %d %d", viaSnap.Count(), viaSnap.Max(), viaSnap.Min())
	}
}

func TestParseIPRanges(t *testing.T) {
	got, err := ParseIPRanges("127.0.0.2-127.0.0.5, 10.0.0.1,127.0.1.254-127.0.2.1,192.168.0.9-10")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "10.0.0.1",
		"127.0.1.254", "127.0.1.255", "127.0.2.0", "127.0.2.1", "192.168.0.9", "192.168.0.10"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i, w := range want {
		if got[i] != netip.MustParseAddr(w) {
			t.Errorf("[%d] = %v, want %s", i, got[i], w)
		}
	}
	if l, err := ParseIPRanges(""); err != nil || len(l) != 0 {
		t.Errorf("empty: %v %v", l, err)
	}
	for _, bad := range []string{"127.0.0.9-127.0.0.2", "x", "::1", "127.0.0.1-", "127.0.0.1-300", "10.0.0.0-10.255.255.255"} {
		if _, err := ParseIPRanges(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestWSClientFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 200000} {
		payload := bytes.Repeat([]byte("ab\x7fz"), n/4+1)[:n]
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		frame := AppendWSClientFrame([]byte("prefix"), wsOpText, payload, key)[len("prefix"):]
		if frame[1]&0x80 == 0 {
			t.Fatalf("n=%d: mask bit not set", n)
		}
		if n > 4 && bytes.Contains(frame, payload[:4]) && key != [4]byte{} {
			// The masked bytes must differ from the clear text.
			t.Errorf("n=%d: payload not masked", n)
		}
		d := codec.WSDecoder{RequireMask: true}
		msg, ok, used, err := d.Decode(frame)
		if err != nil || !ok || used != len(frame) {
			t.Fatalf("n=%d: decode ok=%v used=%d/%d err=%v", n, ok, used, len(frame), err)
		}
		if msg.Op != codec.WSText || !bytes.Equal(msg.Payload, payload) {
			t.Fatalf("n=%d: payload mismatch", n)
		}
		// Every proper prefix is incomplete, never an error.
		for _, cut := range []int{0, 1, 2, len(frame) / 2, len(frame) - 1} {
			if cut >= len(frame) {
				continue
			}
			var d2 codec.WSDecoder
			if _, ok, used, err := d2.Decode(frame[:cut]); ok || used != 0 || err != nil {
				t.Fatalf("n=%d cut=%d: ok=%v used=%d err=%v", n, cut, ok, used, err)
			}
		}
	}
}

func TestScanTCPBoundaries(t *testing.T) {
	var stream []byte
	bodies := []string{`{"command":6,"code":10007}`, "", `{"command":11,"data":{"content":"t=42"}}`}
	stream = codec.AppendTCP(stream, 6, 0, false, []byte(bodies[0]))
	stream = codec.AppendTCP(stream, 13, 7, true, nil)
	stream = codec.AppendTCP(stream, 11, -3, true, []byte(bodies[2]))
	wantCmds := []int{6, 13, 11}
	// Feed the stream cut at every position, as a socket might deliver it.
	for cut := 0; cut <= len(stream); cut++ {
		var pend []byte
		var cmds []int
		var got []string
		for _, chunk := range [][]byte{stream[:cut], stream[cut:]} {
			pend = append(pend, chunk...)
			for {
				cmd, body, n, err := scanTCP(pend)
				if err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				if n == 0 {
					break
				}
				cmds = append(cmds, cmd)
				got = append(got, string(body))
				pend = pend[n:]
			}
		}
		if len(cmds) != 3 || len(pend) != 0 {
			t.Fatalf("cut %d: got %v, %d left", cut, cmds, len(pend))
		}
		for i := range cmds {
			if cmds[i] != wantCmds[i] || got[i] != bodies[i] {
				t.Fatalf("cut %d frame %d: cmd %d body %q", cut, i, cmds[i], got[i])
			}
		}
	}
	if _, _, _, err := scanTCP([]byte{0x02, 0x51, 0, 0, 0, 0, 0}); err == nil {
		t.Error("bad version accepted")
	}
	if _, _, _, err := scanTCP([]byte{0x01, 0x51, 11, 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Error("negative length accepted")
	}
}

func TestScanWSBoundaries(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000)
	var stream []byte
	stream = codec.AppendWSFrame(stream, codec.WSText, []byte(`{"command":13}`))
	stream = codec.AppendWSFrame(stream, codec.WSText, big)
	stream = AppendWSClientFrame(stream, wsOpPing, []byte("hi"), [4]byte{1, 2, 3, 4})
	for _, cut := range []int{0, 1, 2, 5, 16, 17, 18, 20, len(stream) - 1, len(stream)} {
		buf := append([]byte(nil), stream...)
		var ops []byte
		var sizes []int
		off := 0
		for _, end := range []int{cut, len(buf)} {
			for {
				op, p, n, err := scanWS(buf[off:end])
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				ops = append(ops, op)
				sizes = append(sizes, len(p))
				if op == wsOpPing && string(p) != "hi" {
					t.Fatalf("masked ping payload %q", p)
				}
				off += n
			}
		}
		if len(ops) != 3 || sizes[1] != len(big) || ops[2] != wsOpPing || off != len(buf) {
			t.Fatalf("cut %d: ops %v sizes %v off %d", cut, ops, sizes, off)
		}
	}
}

func TestJSONFieldHelpers(t *testing.T) {
	b := []byte(`{"code":10007,"command":6,"msg":"ok"}`)
	if v, ok := jsonInt(b, `"command":`); !ok || v != 6 {
		t.Errorf("command = %d %v", v, ok)
	}
	if v, ok := jsonInt(b, `"code":`); !ok || v != 10007 {
		t.Errorf("code = %d %v", v, ok)
	}
	if v, ok := jsonInt([]byte(`{"code":"-12"}`), `"code":`); !ok || v != -12 {
		t.Errorf("quoted = %d %v", v, ok)
	}
	if _, ok := jsonInt(b, `"nope":`); ok {
		t.Error("missing key found")
	}
	fwd := []byte(`{"command":11,"data":{"chatType":2,"content":"t=1712345678901234567","from":"a"}}`)
	if v, ok := sendTime(fwd); !ok || v != 1712345678901234567 {
		t.Errorf("sendTime = %d %v", v, ok)
	}
	if _, ok := sendTime([]byte(`{"content":"hello"}`)); ok {
		t.Error("timestamp found in plain content")
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Scenario: "chat", Addrs: []string{"127.0.0.1:1"}, Conns: 10, Duration: time.Second, Rate: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Lo != 0 || ok.Hi != 10 || ok.ConnectRate != 5000 {
		t.Errorf("defaults not filled: %+v", ok)
	}
	for name, mod := range map[string]func(*Config){
		"scenario": func(c *Config) { c.Scenario = "x" },
		"proto":    func(c *Config) { c.Proto = "udp" },
		"addr":     func(c *Config) { c.Addrs = []string{"nohost"} },
		"conns":    func(c *Config) { c.Conns = 0 },
		"rate":     func(c *Config) { c.Rate = 0 },
		"pairs":    func(c *Config) { c.Conns = MaxConnsPerPair + 1 },
	} {
		c := Config{Scenario: "chat", Addrs: []string{"127.0.0.1:1"}, Conns: 10, Duration: time.Second, Rate: 1}
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}
