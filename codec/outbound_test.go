package codec

import (
	"bytes"
	"strings"
	"testing"
)

// TestOutboundRoom checks that a frame built in the room is the frame
// NewOutbound builds by copying, with and without a sync seq, and that the
// WebSocket frame is unaffected.
func TestOutboundRoom(t *testing.T) {
	json := []byte(`{"command":11,"data":{"content":"hi"}}`)
	for _, c := range []struct {
		seq    int32
		hasSeq bool
	}{{0, false}, {-7, true}, {1 << 30, true}} {
		buf := append(make([]byte, TCPRoom), json...)
		o := NewOutboundRoom(CmdChatReq, c.seq, c.hasSeq, buf)
		ref := NewOutbound(CmdChatReq, json)
		ref.Seq, ref.HasSeq = c.seq, c.hasSeq
		if !bytes.Equal(o.JSON, json) {
			t.Fatalf("JSON %q", o.JSON)
		}
		if got, want := o.TCP(), ref.TCP(); !bytes.Equal(got, want) {
			t.Fatalf("seq %d/%v: TCP frame %x, want %x", c.seq, c.hasSeq, got, want)
		}
		if &o.TCP()[len(o.TCP())-1] != &buf[len(buf)-1] {
			t.Fatal("the TCP frame was copied out of the buffer")
		}
		if got, want := o.WS(), ref.WS(); !bytes.Equal(got, want) {
			t.Fatalf("WS frame %x, want %x", got, want)
		}
		f, n, err := DecodeTCP(o.TCP(), 1<<20)
		if err != nil || n != len(o.TCP()) || !bytes.Equal(f.Body, json) || f.HasSeq != c.hasSeq || f.Seq != c.seq {
			t.Fatalf("decoded %+v, %d, %v", f, n, err)
		}
	}
}

// TestAppendResp checks that AppendResp encodes as Marshal does.
func TestAppendResp(t *testing.T) {
	r := &Resp{Code: StatusOK, Command: CmdChatResp, Msg: StatusOK.Msg(),
		Data: &ChatAck{ClientID: `c"1<`, ID: "0123456789abcdef", Seq: 42}}
	want, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendResp([]byte("prefix"), r)
	if err != nil || string(got) != "prefix"+string(want) {
		t.Fatalf("%s, %v; want prefix%s", got, err, want)
	}
}

// TestChatForwardLen checks that a typical message, and one at the limits
// of every number, fits the estimate, so that encoding it takes one
// allocation.
func TestChatForwardLen(t *testing.T) {
	for _, c := range []*ChatBody{
		{ChatType: 2, Cmd: 11, Content: "a chat message of a typical length, about sixty bytes long.",
			CreateTime: 1764000000000, From: "alice", ID: "0123456789abcdef0123456789abcdef", To: "bob", Seq: 42},
		{ChatType: -1 << 63, Cmd: -1 << 63, Content: strings.Repeat("x", 5000), CreateTime: -1 << 63,
			From: "u", GroupID: "g", ID: "i", MsgType: -1 << 63, Seq: 1<<64 - 1, To: "t", Extras: []byte(`{"a":1}`)},
	} {
		n := ChatForwardLen(c)
		b, err := AppendChatForward(make([]byte, 0, n), c)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > n {
			t.Fatalf("encoded %d bytes, estimate %d", len(b), n)
		}
	}
}
