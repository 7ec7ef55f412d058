package client

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"

	"jim/codec"
	"jim/internal/jimtest"
)

// maxFuzzInput bounds a fuzzed stream or body: every path of the parsers
// shows up in a few frames, and longer inputs only slow each run down.
const maxFuzzInput = 4 << 10

// chunkConn is a net.Conn whose Reads return data in the chunks cuts makes
// (shorter when the reader offers less room), then io.EOF. Only Read is
// implemented.
type chunkConn struct {
	net.Conn
	t       *testing.T
	data    []byte
	cuts    []int
	eofLast bool // return io.EOF together with the last bytes
	pos     int
	reads   int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	c.reads++
	if c.reads > 2*len(c.data)+8 {
		c.t.Fatalf("%d reads of a %d-byte stream: the reader does not make progress", c.reads, len(c.data))
	}
	for len(c.cuts) > 0 && c.cuts[0] <= c.pos {
		c.cuts = c.cuts[1:]
	}
	end := len(c.data)
	if len(c.cuts) > 0 {
		end = c.cuts[0]
	}
	n := copy(p, c.data[c.pos:end])
	c.pos += n
	if c.pos == len(c.data) && (n == 0 || c.eofLast) {
		return n, io.EOF
	}
	return n, nil
}

type tcpRead struct {
	cmd  codec.Cmd
	body []byte
}

// readAllTCP reads frames from a tcpTransport over stream until it fails.
// The bodies are kept as returned, so one that aliased the transport's
// reused buffer would show up as changed.
func readAllTCP(t *testing.T, stream []byte, cuts []int, eofLast bool, bufCap int) ([]tcpRead, *tcpTransport, error) {
	tr := &tcpTransport{c: &chunkConn{t: t, data: stream, cuts: cuts, eofLast: eofLast}, buf: make([]byte, 0, bufCap)}
	var out []tcpRead
	for {
		cmd, body, err := tr.read()
		if err != nil {
			return out, tr, err
		}
		out = append(out, tcpRead{cmd, body})
	}
}

// FuzzTCPTransportRead exists because tcpTransport.read parses whatever the
// server (or anything between it and the client) sends, growing a buffer it
// reuses: it must split frames exactly as codec.DecodeTCP does however the
// bytes arrive, return bodies that the next read does not overwrite, read
// back what codec.AppendTCP writes, and grow its buffer no further than the
// bytes that actually arrived.
func FuzzTCPTransportRead(f *testing.F) {
	seeds := [][]byte{
		codec.AppendTCP(nil, codec.CmdLoginResp, 0, false, []byte(`{"code":10007,"command":6,"msg":"ok"}`)),
		codec.AppendTCP(codec.AppendTCP(nil, codec.CmdChatReq, 5, true, []byte(`{"command":11,"data":{"content":"hi"}}`)), codec.CmdHeartbeatReq, 0, false, nil),
		{0x01, 0x51, 11, 0xff, 0xff, 0xff, 0xff},
		{0x01, 0x51, 11, 0x04, 0x00, 0x00, 0x01},
		{0x02},
		{0x01},
	}
	for _, s := range seeds {
		for i := 0; i <= len(s); i++ {
			if i < 12 || i == len(s) {
				f.Add(s[:i], uint64(i), int8(codec.CmdChatResp), []byte(`{"code":10000}`), int32(0), false, false)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, cmd int8, body []byte, seq int32, hasSeq, eofLast bool) {
		if len(data)+len(body) > maxFuzzInput {
			return
		}
		// One well-formed frame in front, then whatever the server sent.
		stream := codec.AppendTCP(nil, codec.Cmd(cmd), seq, hasSeq, body)
		stream = append(stream, data...)

		// The reference: codec.DecodeTCP over the whole stream, then EOF.
		var want []tcpRead
		var wantErr error = io.EOF
		for off := 0; ; {
			fr, n, err := codec.DecodeTCP(stream[off:], maxInbound)
			if err != nil {
				wantErr = err
				break
			}
			if n == 0 {
				break
			}
			want = append(want, tcpRead{fr.Cmd, fr.Body})
			off += n
		}
		if len(want) == 0 || want[0].cmd != codec.Cmd(cmd) || !bytes.Equal(want[0].body, body) {
			t.Fatalf("encoded cmd %d body %q, decoded %+v", cmd, body, want)
		}

		// A small first buffer makes the growth path run on small inputs.
		bufCap := 1 + int(seed%32)
		for _, cuts := range [][]int{nil, jimtest.Cuts(len(stream), seed)} {
			got, tr, err := readAllTCP(t, stream, cuts, eofLast, bufCap)
			if err != wantErr || !reflect.DeepEqual(got, want) {
				t.Fatalf("cuts %v: got %+v %v, want %+v %v", cuts, got, err, want, wantErr)
			}
			if c := cap(tr.buf); c > max(bufCap, 3*len(stream)) {
				t.Fatalf("buffer grew to %d for a %d-byte stream", c, len(stream))
			}
		}
	})
}

// fuzzClient is a Client as Dial leaves it, minus the network, with a
// connection whose transport is never used.
func fuzzClient(me string, notices bool) (*Client, *conn) {
	c := &Client{
		opts:     options{notices: notices},
		log:      slog.New(slog.DiscardHandler),
		ready:    make(chan struct{}),
		groups:   map[string]struct{}{},
		closedCh: make(chan struct{}),
		msgs:     make(chan Message, 4),
		me:       me,
	}
	c.track.convs = map[string]*convState{}
	return c, newConn(c, nil)
}

// delivered returns what handle pushed to the consumer.
func delivered(c *Client) []Message {
	var out []Message
	for {
		select {
		case m := <-c.msgs:
			out = append(out, m)
		default:
			return out
		}
	}
}

// FuzzConnHandle exists because conn.handle decodes every server message,
// chats and notices the server pushes as well as replies, in the reader
// goroutine: no body, framed over TCP or (without a command outside the
// JSON) over WebSocket, may panic it or block it; a body that is not a reply
// does nothing, and one that is wakes at most the one request it answers,
// with the reply as the server sent it.
func FuzzConnHandle(f *testing.F) {
	for _, s := range []string{
		`{"code":10007,"command":6,"msg":"ok","user":{"userId":"me","groups":[{"groupId":"g"},null]}}`,
		`{"command":11,"data":{"chatType":2,"from":"u","to":"me","content":"hi","seq":3}}`,
		`{"command":11,"data":null}`,
		`{"command":9,"group":"g","user":{"userId":"me"}}`,
		`{"command":9,"group":"g","user":null}`,
		`{"command":8,"code":10012,"group":"g","result":2}`,
		`{"command":10,"data":{"group":"g","user":{"userId":"u"}}}`,
		`{"command":10,"data":[]}`,
		`{"command":20,"code":10016,"data":{"friends":{"u":[null,{"seq":1}]},"groups":{}}}`,
		`{"command":-1}`, `{"command":300}`, `{"command":"12"}`, `[]`, `null`, ``, "\xff",
	} {
		f.Add([]byte(s), int8(-1), "me", true)
	}
	f.Fuzz(func(t *testing.T, body []byte, cmd int8, me string, notices bool) {
		if len(body) > maxFuzzInput {
			return
		}
		c, cn := fuzzClient(me, notices)
		// cmd -1 stands for WebSocket, whose frames carry no command.
		var ref reply
		decoded := codec.Unmarshal(body, &ref) == nil
		to := codec.Cmd(cmd)
		if to == noCmd {
			to = ref.Command
		}
		w, jw := make(waiter, 1), make(waiter, 1)
		cn.waiters[to] = []waiter{w}
		cn.joins[ref.Group] = []waiter{jw}

		cn.handle(codec.Cmd(cmd), body)

		var woken []*reply
		for _, w := range []waiter{w, jw} {
			select {
			case res := <-w:
				if res.r == nil || res.err != nil {
					t.Fatalf("woken with %+v", res)
				}
				woken = append(woken, res.r)
			default:
			}
		}
		msgs := delivered(c)
		if !decoded && (len(woken) > 0 || len(msgs) > 0) {
			t.Fatalf("undecodable %q woke %d requests and delivered %d messages", body, len(woken), len(msgs))
		}
		if len(woken) > 1 || len(msgs) > 1 {
			t.Fatalf("%q woke %d requests and delivered %d messages", body, len(woken), len(msgs))
		}
		if len(woken) == 1 && !reflect.DeepEqual(woken[0], &ref) {
			t.Fatalf("%q: woken with %+v, want %+v", body, woken[0], &ref)
		}
		switch to {
		case codec.CmdChatReq, codec.CmdJoinGroupNotify, codec.CmdJoinGroupResp, codec.CmdExitGroupNotify,
			codec.CmdHeartbeatReq, codec.CmdCloseReq:
		default:
			if decoded && len(woken) != 1 {
				t.Fatalf("reply %q (cmd %d) woke no request", body, to)
			}
		}
	})
}

// FuzzConnHandleEncoded exists because the client reads the server's
// messages with its own reply shape, not the types the server encodes them
// with: a chat, a reply, a join or a leave notice encoded as jim encodes
// them must reach the consumer or the waiting request with every field the
// server put in, over TCP and over WebSocket alike.
func FuzzConnHandleEncoded(f *testing.F) {
	f.Add("me", "u", "g", "hi", "1f3a", uint64(3), int64(1712345678901), 2, 10000, "ok", true, uint8(0))
	f.Add("me", "me", "", "", "", uint64(0), int64(0), 1, 10012, "", false, uint8(1))
	f.Add("", "u", "g", `{"command":12}`, "x", uint64(1<<63), int64(-1), 0, -5, `"code":1`, true, uint8(2))
	f.Add("me", "u", "g", "", "", uint64(0), int64(0), 0, 0, "", true, uint8(3))
	f.Fuzz(func(t *testing.T, me, from, group, content, id string, seq uint64, createTime int64, chatType, code int, msg string, tcp bool, kind uint8) {
		me, from, group = strings.ToValidUTF8(me, "?"), strings.ToValidUTF8(from, "?"), strings.ToValidUTF8(group, "?")
		content, id, msg = strings.ToValidUTF8(content, "?"), strings.ToValidUTF8(id, "?"), strings.ToValidUTF8(msg, "?")
		c, cn := fuzzClient(me, true)
		user := &codec.User{UserID: from, Nick: msg}

		var cmd codec.Cmd
		var body []byte
		var err error
		var wantMsg *Message
		var wantReply *reply
		var w waiter
		switch kind % 4 {
		case 0: // a chat pushed to us
			cb := codec.ChatBody{ChatType: codec.FlexInt(chatType), Cmd: codec.FlexInt(codec.CmdChatReq), Content: content,
				CreateTime: codec.FlexInt(createTime), From: from, GroupID: group, ID: id, Seq: seq, To: me}
			cmd = codec.CmdChatReq
			body, err = codec.AppendChatForward(nil, &cb)
			wantMsg = &Message{Kind: KindChat, Chat: cb}
		case 1: // a reply to a request of ours
			cmd = codec.Cmd(chatType)
			if cmd == noCmd || cmd == codec.CmdChatReq || cmd == codec.CmdJoinGroupNotify || cmd == codec.CmdJoinGroupResp ||
				cmd == codec.CmdExitGroupNotify || cmd == codec.CmdHeartbeatReq || cmd == codec.CmdCloseReq {
				cmd = codec.CmdChatResp
			}
			data := &codec.ChatAck{ClientID: content, ID: id, Seq: seq}
			body, err = codec.Marshal(&codec.Resp{Code: codec.Status(code), Command: cmd, Msg: msg, Data: data})
			raw, _ := codec.Marshal(data)
			wantReply = &reply{Code: codec.Status(code), Command: cmd, Msg: msg, Data: raw}
			w = make(waiter, 1)
			cn.waiters[cmd] = []waiter{w}
		case 2: // the notice that completes our join, or the refusal
			w = make(waiter, 1)
			cn.joins[group] = []waiter{w}
			if chatType%2 == 0 {
				cmd = codec.CmdJoinGroupNotify
				u := &codec.User{UserID: me}
				body, err = codec.Marshal(&codec.JoinNotify{Code: codec.Status(code), Command: cmd, Group: group, Msg: msg, User: u})
				wantReply = &reply{Code: codec.Status(code), Command: cmd, Group: group, Msg: msg, User: u}
				wantMsg = &Message{Kind: KindJoin, Group: group, User: u}
			} else {
				cmd = codec.CmdJoinGroupResp
				body, err = codec.Marshal(&codec.JoinGroupResp{Code: codec.Status(code), Command: cmd, Group: group, Msg: msg, Result: int(seq % 6)})
				wantReply = &reply{Code: codec.Status(code), Command: cmd, Group: group, Msg: msg, Result: int(seq % 6)}
			}
		case 3: // someone left a group
			cmd = codec.CmdExitGroupNotify
			body, err = codec.Marshal(&codec.Resp{Code: codec.Status(code), Command: cmd, Msg: msg,
				Data: &codec.ExitNotifyData{Group: group, User: user}})
			wantMsg = &Message{Kind: KindLeave, Group: group, User: user}
		}
		if err != nil {
			t.Fatalf("encoding: %v", err)
		}
		if !tcp {
			cmd = noCmd
		}
		cn.handle(cmd, body)

		got := delivered(c)
		if wantMsg == nil && len(got) != 0 || wantMsg != nil && (len(got) != 1 || !reflect.DeepEqual(got[0], *wantMsg)) {
			t.Fatalf("%s: delivered %+v, want %+v", body, got, wantMsg)
		}
		if w != nil {
			select {
			case res := <-w:
				if res.err != nil || res.r == nil {
					t.Fatalf("%s: woken with %+v", body, res)
				}
				if wantReply.Data != nil && !bytes.Equal(res.r.Data, wantReply.Data) {
					var a, b any
					if json.Unmarshal(res.r.Data, &a) != nil || json.Unmarshal(wantReply.Data, &b) != nil || !reflect.DeepEqual(a, b) {
						t.Fatalf("%s: data %s, want %s", body, res.r.Data, wantReply.Data)
					}
				}
				res.r.Data = wantReply.Data
				if !reflect.DeepEqual(res.r, wantReply) {
					t.Fatalf("%s: reply %+v, want %+v", body, res.r, wantReply)
				}
			default:
				t.Fatalf("%s: request not woken", body)
			}
		}
	})
}
