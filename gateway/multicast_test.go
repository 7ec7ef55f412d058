package gateway_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
)

// A group message reaches every member's connection, TCP and WebSocket
// alike, exactly once and in send order, through the per-loop fan-out jobs
// (the group is larger than the size from which dispatch uses them), with
// several event loops and a burst that makes passes merge messages.
func TestGroupMulticastOrderAndCount(t *testing.T) {
	t.Run("one pass", func(t *testing.T) { testGroupMulticast(t, 0, false) })
	// Frames of 4 KiB, 240 KB per member while the test reads the members
	// one after another: the sockets fill, sends through io_uring come
	// back short or refused, and gnet must take the rest in order.
	t.Run("full sockets", func(t *testing.T) {
		t.Cleanup(gateway.SetSocketSendBuffer(16 << 10))
		testGroupMulticast(t, 4<<10, false)
	})
	// The same through one write call per connection.
	t.Run("write calls", func(t *testing.T) {
		t.Cleanup(gateway.SetSocketSendBuffer(16 << 10))
		testGroupMulticast(t, 4<<10, true)
	})
	// A budget smaller than one job: every job is carried to a later pass,
	// which must keep the order.
	t.Run("backlog over passes", func(t *testing.T) {
		old := gateway.SetPassBudget(5)
		t.Cleanup(func() { gateway.SetPassBudget(old) })
		testGroupMulticast(t, 0, false)
	})
	// Every fan-out pass paced (even a short one holds the next back by up
	// to 20 ms): held jobs, passes woken only for replies, and the timer
	// must keep the count and the order.
	t.Run("paced", func(t *testing.T) {
		t.Cleanup(gateway.SetPacing(0, 20*time.Millisecond, 1000))
		testGroupMulticast(t, 0, false)
	})
}

// testGroupMulticast pads every message's content with pad bytes; noRing
// turns io_uring off. With it on, where the kernel has it, the test fails
// unless the passes went through it.
func testGroupMulticast(t *testing.T, pad int, noRing bool) {
	s := startServer(t, func(o *gateway.Options, _ *dispatch.Options) { o.NoIOURing = noRing })
	padding := strings.Repeat("x", pad)
	const tcpN, wsN = 12, 6
	msgs, rcvBuf := 300, 0
	if pad > 0 {
		// 60 frames of pad bytes per member: far more than a 16 KiB send
		// buffer and the members' receive buffers, kept as small, whatever
		// the kernel's tcp_rmem would let a loopback receiver take in.
		msgs, rcvBuf = 60, 4<<10
	}
	tcps := make([]*tcpClient, tcpN)
	for i := range tcps {
		c := dialTCPRcvBuf(t, s.Addr, rcvBuf)
		c.login("t" + strconv.Itoa(i))
		c.send(codec.CmdJoinGroupReq, `{"group_id":"big"}`)
		c.expect(codec.CmdJoinGroupNotify)
		tcps[i] = c
	}
	wss := make([]*wsClient, wsN)
	for i := range wss {
		w := dialWSRcvBuf(t, s.Addr, fmt.Sprintf("userId=w%d&password=x", i), rcvBuf)
		w.expect(int(codec.CmdLoginResp))
		w.send(`{"cmd":7,"group_id":"big"}`)
		w.expect(int(codec.CmdJoinGroupNotify))
		wss[i] = w
	}
	next := func(m map[string]any, who string, want *int) {
		d := data(m)
		if d["content"] != "m"+strconv.Itoa(*want)+padding {
			t.Fatalf("%s: got %v, want m%d", who, d["content"], *want)
		}
		*want++
	}
	// readTCP reads member i's next frame, which must be the next message
	// of the burst, an ack of the sender's or a notice of a later join; it
	// reports whether it was an ack.
	wants := make([]int, tcpN)
	readTCP := func(i int) (ack bool) {
		cmd, m := tcps[i].read()
		switch cmd {
		case codec.CmdChatReq:
			next(m, "tcp "+strconv.Itoa(i), &wants[i])
		case codec.CmdChatResp:
			return true
		case codec.CmdJoinGroupNotify:
		default:
			t.Fatalf("tcp %d: unexpected cmd %d %v", i, cmd, m)
		}
		return false
	}
	sender := tcps[0]
	for i := range msgs {
		sender.send(codec.CmdChatReq, fmt.Sprintf(`{"chatType":1,"group_id":"big","msgType":0,"content":"m%d%s","id":"c%d"}`, i, padding, i))
		// Big frames wait for their ack, so a pass carries one or two of
		// them and the sockets fill in the ring's sends: more would make
		// the pass write each connection's share early, with its own call.
		for pad > 0 && !readTCP(0) {
		}
	}
	for i := range tcps {
		for wants[i] < msgs {
			readTCP(i)
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
	sends, short := gateway.RingSends(s.Srv)
	switch {
	case noRing && sends != 0:
		t.Fatalf("%d sends went through io_uring with it turned off", sends)
	case !noRing && gateway.RingAvailable() && sends == 0:
		t.Fatal("io_uring works here, but no pass used it")
	case !noRing && pad > 0 && gateway.RingAvailable() && short == 0:
		t.Fatal("no send through io_uring found a full socket: the test did not test that")
	}
	t.Logf("sends through io_uring: %d, short: %d", sends, short)
}

// A member whose connection closes between two messages is reported as
// refused by the cached fan-out split (so dispatch queues the message
// offline for it), and the others still get every message.
func TestGroupMulticastAfterClose(t *testing.T) {
	s := startServer(t, nil)
	const n = 10
	cs := make([]*tcpClient, n)
	for i := range cs {
		c := dialTCP(t, s.Addr)
		c.login("u" + strconv.Itoa(i))
		c.send(codec.CmdJoinGroupReq, `{"group_id":"g"}`)
		c.expect(codec.CmdJoinGroupNotify)
		cs[i] = c
	}
	say := func(text string) {
		cs[0].send(codec.CmdChatReq, `{"chatType":1,"group_id":"g","msgType":0,"content":"`+text+`"}`)
	}
	readChat := func(c *tcpClient) string {
		for {
			cmd, m := c.read()
			if cmd == codec.CmdChatReq {
				return data(m)["content"].(string)
			}
		}
	}
	say("a")
	for _, c := range cs {
		if got := readChat(c); got != "a" {
			t.Fatalf("got %q", got)
		}
	}
	cs[n-1].c.Close()
	// The server sees the close asynchronously; wait until it is offline.
	deadline := time.Now().Add(5 * time.Second)
	for s.D.Online("u"+strconv.Itoa(n-1)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	say("b")
	for _, c := range cs[:n-1] {
		if got := readChat(c); got != "b" {
			t.Fatalf("got %q", got)
		}
	}
	back := dialTCP(t, s.Addr)
	back.login("u" + strconv.Itoa(n-1))
	back.send(codec.CmdGetMessageReq, `{"type":0,"userId":"u`+strconv.Itoa(n-1)+`"}`)
	m := back.expect(codec.CmdGetMessageResp)
	if !strings.Contains(fmt.Sprint(m), "content:b") {
		t.Fatalf("offline messages of the member that left: %v", m)
	}
}
