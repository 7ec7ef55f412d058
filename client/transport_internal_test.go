package client

import (
	"bytes"
	"testing"

	"jim/codec"
)

// A history page can be tens of megabytes; the connection must not keep a
// buffer that size once the page has been read.
func TestTCPReadBufferShrinks(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 2<<20)
	stream := codec.AppendTCP(nil, codec.CmdGetMessageResp, 0, false, big)
	stream = codec.AppendTCP(stream, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
	got, tr, err := readAllTCP(t, stream, nil, false, readBuf)
	if len(got) != 2 || !bytes.Equal(got[0].body, big) || string(got[1].body) != `{}` {
		t.Fatalf("read %d frames, err %v", len(got), err)
	}
	if c := cap(tr.buf); c != readBuf {
		t.Fatalf("read buffer kept %d bytes after the large frame, want %d", c, readBuf)
	}
}
