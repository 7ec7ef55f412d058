package codec

import (
	"testing"
)

func BenchmarkDecodeTCP(b *testing.B) {
	frame := AppendTCP(nil, CmdChatReq, 0, false, []byte(`{"chatType":2,"cmd":11,"content":"hello","from":"a","msgType":0,"to":"b"}`))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, n, err := DecodeTCP(frame, 0); n != len(frame) || err != nil {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkAppendTCP(b *testing.B) {
	body := []byte(`{"chatType":2,"cmd":11,"content":"hello","from":"a","msgType":0,"to":"b"}`)
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendTCP(dst[:0], CmdChatReq, 7, true, body)
	}
}

func BenchmarkWSDecode(b *testing.B) {
	frame := clientFrame(true, WSText, testMask, []byte(`{"chatType":2,"cmd":11,"content":"hello","from":"a","msgType":0,"to":"b"}`))
	var d WSDecoder
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, ok, n, err := d.Decode(frame); !ok || n != len(frame) || err != nil {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkParseRequest(b *testing.B) {
	buf := []byte(postReq)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, n, err := ParseRequest(buf, HTTPLimits{}); n != len(buf) || err != nil {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkChatUnmarshal(b *testing.B) {
	body := []byte(`{"chatType":"2","cmd":11,"content":"hello world","createTime":1700000000000,"from":"alice","msgType":0,"to":"bob"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var c ChatBody
		if err := Unmarshal(body, &c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChatForwardEncode(b *testing.B) {
	c := &ChatBody{ChatType: 2, Cmd: 11, Content: "hello world", CreateTime: 1700000000000, From: "alice", ID: "0123456789abcdef0123456789abcdef", To: "bob", Seq: 42}
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = AppendChatForward(dst[:0], c); err != nil {
			b.Fatal(err)
		}
	}
}
