package gateway_test

import (
	"fmt"
	"strconv"
	"testing"

	"jim/codec"
	"jim/gateway"
)

// A group message reaches every member's connection, TCP and WebSocket
// alike, exactly once and in send order, through the per-loop fan-out jobs
// (the group is larger than the size from which dispatch uses them), with
// several event loops and a burst that makes passes merge messages.
func TestGroupMulticastOrderAndCount(t *testing.T) {
	t.Run("one pass", func(t *testing.T) { testGroupMulticast(t) })
	// A budget smaller than one job: every job is carried to a later pass,
	// which must keep the order.
	t.Run("backlog over passes", func(t *testing.T) {
		old := gateway.SetPassBudget(5)
		t.Cleanup(func() { gateway.SetPassBudget(old) })
		testGroupMulticast(t)
	})
}

func testGroupMulticast(t *testing.T) {
	s := startServer(t, nil)
	const tcpN, wsN, msgs = 12, 6, 300
	tcps := make([]*tcpClient, tcpN)
	for i := range tcps {
		c := dialTCP(t, s.Addr)
		c.login("t" + strconv.Itoa(i))
		c.send(codec.CmdJoinGroupReq, `{"group_id":"big"}`)
		c.expect(codec.CmdJoinGroupNotify)
		tcps[i] = c
	}
	wss := make([]*wsClient, wsN)
	for i := range wss {
		w := dialWS(t, s.Addr, fmt.Sprintf("userId=w%d&password=x", i))
		w.expect(int(codec.CmdLoginResp))
		w.send(`{"cmd":7,"group_id":"big"}`)
		w.expect(int(codec.CmdJoinGroupNotify))
		wss[i] = w
	}
	sender := tcps[0]
	for i := range msgs {
		sender.send(codec.CmdChatReq, fmt.Sprintf(`{"chatType":1,"group_id":"big","msgType":0,"content":"m%d","id":"c%d"}`, i, i))
	}
	next := func(m map[string]any, who string, want *int) {
		d := data(m)
		if d["content"] != "m"+strconv.Itoa(*want) {
			t.Fatalf("%s: got %v, want m%d", who, d["content"], *want)
		}
		*want++
	}
	for i, c := range tcps {
		want := 0
		for want < msgs {
			cmd, m := c.read()
			switch cmd {
			case codec.CmdChatReq:
				next(m, "tcp "+strconv.Itoa(i), &want)
			case codec.CmdChatResp, codec.CmdJoinGroupNotify:
				// the sender's acks; notices of later joins
			default:
				t.Fatalf("tcp %d: unexpected cmd %d %v", i, cmd, m)
			}
		}
	}
	for i, w := range wss {
		want := 0
		for want < msgs {
			m := w.read()
			switch c, _ := m["command"].(float64); codec.Cmd(c) {
			case codec.CmdChatReq:
				next(m, "ws "+strconv.Itoa(i), &want)
			case codec.CmdJoinGroupNotify:
			default:
				t.Fatalf("ws %d: unexpected %v", i, m)
			}
		}
	}
	// Nothing more: one more message must be the next thing every member
	// reads, so no frame was delivered twice.
	sender.send(codec.CmdChatReq, `{"chatType":1,"group_id":"big","msgType":0,"content":"last","id":"last"}`)
	for i, c := range tcps[1:] {
		cmd, m := c.read()
		if cmd != codec.CmdChatReq || data(m)["content"] != "last" {
			t.Fatalf("tcp %d: after the burst got cmd %d %v", i+1, cmd, m)
		}
	}
	for i, w := range wss {
		m := w.read()
		if data(m)["content"] != "last" {
			t.Fatalf("ws %d: after the burst got %v", i, m)
		}
	}
}
