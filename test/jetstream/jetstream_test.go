// Package jetstream runs two real jimd processes as one cluster on an
// embedded NATS server with JetStream (fsync on every write, as the shipped
// configs set it) and checks that what one node acknowledged is readable
// through the other: history, and an offline queue written through node 1
// and fetched through node 2.
package jetstream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"jim/codec"
	"jim/internal/jimtest"
	"jim/internal/jimtest/natstest"
)

func startNode(t *testing.T, bin, natsURL, id string) *jimtest.Jimd {
	t.Helper()
	return jimtest.StartJimd(t, bin, id, "-nats", natsURL, "-store", "jetstream", "-node-id", id,
		"-log-level", "warn", "-heartbeat-timeout", "0", "-auth-timeout", "0", "-event-loops", "2")
}

type conn struct {
	c net.Conn
	r *bufio.Reader
}

func login(t *testing.T, addr, user string) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	cn := &conn{c: c, r: bufio.NewReader(c)}
	cn.send(t, codec.CmdLoginReq, fmt.Sprintf(`{"cmd":5,"userId":%q}`, user))
	cn.wait(t, codec.CmdLoginResp)
	return cn
}

func (c *conn) send(t *testing.T, cmd codec.Cmd, body string) {
	t.Helper()
	if _, err := c.c.Write(codec.AppendTCP(nil, cmd, 0, false, []byte(body))); err != nil {
		t.Fatal(err)
	}
}

type resp struct {
	Code int             `json:"code"`
	Data json.RawMessage `json:"data"`
}

// wait reads frames until one of cmd arrives and returns its reply.
func (c *conn) wait(t *testing.T, cmd codec.Cmd) resp {
	t.Helper()
	for {
		hdr := make([]byte, 7)
		if _, err := io.ReadFull(c.r, hdr); err != nil {
			t.Fatalf("waiting for cmd %d: %v", cmd, err)
		}
		n := int(hdr[3])<<24 | int(hdr[4])<<16 | int(hdr[5])<<8 | int(hdr[6])
		buf := make([]byte, 7+n)
		copy(buf, hdr)
		if _, err := io.ReadFull(c.r, buf[7:]); err != nil {
			t.Fatal(err)
		}
		f, _, err := codec.DecodeTCP(buf, 1<<26)
		if err != nil {
			t.Fatal(err)
		}
		if f.Cmd != cmd {
			continue
		}
		var r resp
		if err := json.Unmarshal(f.Body, &r); err != nil {
			t.Fatalf("reply %s: %v", f.Body, err)
		}
		return r
	}
}

func TestTwoNodesShareJetStream(t *testing.T) {
	natsURL := natstest.Start(t, natstest.Options{JetStream: true, SyncAlways: true})
	bin := jimtest.BuildJimd(t)
	n1 := startNode(t, bin, natsURL, "n1")
	n2 := startNode(t, bin, natsURL, "n2")

	// alice on node 1 writes to bob, who is online nowhere.
	alice := login(t, n1.Addr, "alice")
	const total = 20
	for i := 1; i <= total; i++ {
		id := fmt.Sprintf("m%d", i)
		alice.send(t, codec.CmdChatReq, fmt.Sprintf(`{"cmd":11,"to":"bob","chatType":2,"msgType":0,"content":%q,"id":%q}`, "hello "+id, id))
		r := alice.wait(t, codec.CmdChatResp)
		var a codec.ChatAck
		if r.Code != int(codec.StatusOK) && r.Code != int(codec.StatusOffline) {
			t.Fatalf("chat %d: code %d", i, r.Code)
		}
		if err := json.Unmarshal(r.Data, &a); err != nil || a.Seq != uint64(i) {
			t.Fatalf("chat %d: ack %s (%v)", i, r.Data, err)
		}
	}

	// History through node 2.
	alice2 := login(t, n2.Addr, "alice")
	alice2.send(t, codec.CmdGetMessageReq, `{"cmd":19,"type":1,"userId":"alice","fromUserId":"bob","count":100}`)
	r := alice2.wait(t, codec.CmdGetMessageResp)
	var md codec.MessageData
	if r.Code != int(codec.StatusGetHistoryMsgOK) || json.Unmarshal(r.Data, &md) != nil {
		t.Fatalf("history via node 2: %d %s", r.Code, r.Data)
	}
	if h := md.Friends["bob"]; len(h) != total || h[0].Content != "hello m1" || h[total-1].Seq != total {
		t.Fatalf("history via node 2: %d messages: %s", len(h), r.Data)
	}

	// bob's offline queue, written through node 1, fetched through node 2.
	bob := login(t, n2.Addr, "bob")
	bob.send(t, codec.CmdGetMessageReq, `{"cmd":19,"type":0,"userId":"bob","fromUserId":"alice"}`)
	r = bob.wait(t, codec.CmdGetMessageResp)
	md = codec.MessageData{}
	if r.Code != int(codec.StatusGetOfflineMsgOK) || json.Unmarshal(r.Data, &md) != nil {
		t.Fatalf("offline via node 2: %d %s", r.Code, r.Data)
	}
	if off := md.Friends["alice"]; len(off) != total || off[0].Content != "hello m1" {
		t.Fatalf("offline via node 2: %d messages: %s", len(off), r.Data)
	}
	// Fetched messages left the queue, for both nodes.
	bob1 := login(t, n1.Addr, "bob")
	deadline := time.Now().Add(5 * time.Second)
	for {
		bob1.send(t, codec.CmdGetMessageReq, `{"cmd":19,"type":0,"userId":"bob","fromUserId":"alice"}`)
		r = bob1.wait(t, codec.CmdGetMessageResp)
		md = codec.MessageData{}
		json.Unmarshal(r.Data, &md)
		if len(md.Friends["alice"]) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("offline queue not emptied: %s", r.Data)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A retry of an acknowledged message through the other node is not
	// stored again.
	alice2.send(t, codec.CmdChatReq, `{"cmd":11,"to":"bob","chatType":2,"msgType":0,"content":"hello m1","id":"m1"}`)
	r = alice2.wait(t, codec.CmdChatResp)
	var a codec.ChatAck
	if json.Unmarshal(r.Data, &a) != nil || a.Seq != 1 {
		t.Fatalf("retry via node 2: %d %s", r.Code, r.Data)
	}
}
