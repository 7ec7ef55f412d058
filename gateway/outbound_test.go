package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
)

// Members of a group that never read are disconnected as slow consumers as
// soon as what waits for all of them together passes MaxOutboundTotal, long
// before each reaches its own MaxOutbound; a member that reads, and the
// sender, are left alone and get every message. Without the total bound,
// 2,000 such members held 8.6 GB.
func TestOutboundBudget(t *testing.T) {
	// A member's join is done once a get-user sent after it is answered: a
	// connection's requests go to one worker, in order (heartbeats are
	// answered on the event loop, so they would not do).
	join := func(c *tcpClient) {
		c.send(codec.CmdJoinGroupReq, `{"cmd":7,"groupId":"g"}`)
		c.send(codec.CmdGetUserReq, `{"cmd":17,"userId":"nobody","type":0}`)
		c.expect(codec.CmdGetUserResp)
	}
	t.Cleanup(gateway.SetSocketSendBuffer(16 << 10))
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.MaxOutbound = 64 << 20 // far away: only the total can cut them
		o.MaxOutboundTotal = 2 << 20
		o.Registry = reg
	})
	const stuck = 6
	var silent []*tcpClient
	for i := range stuck {
		c := dialTCPRcvBuf(t, ts.Addr, 4096)
		c.login(fmt.Sprintf("silent%d", i))
		join(c)
		silent = append(silent, c)
	}
	reader := dialTCP(t, ts.Addr)
	reader.login("reader")
	join(reader)
	sender := dialTCP(t, ts.Addr)
	sender.login("sender")
	join(sender)

	content := strings.Repeat("x", 60<<10)
	body := `{"cmd":11,"chatType":1,"groupId":"g","content":"` + content + `"}`
	got := 0 // group messages the reader has received
	sent := 0
	for ; sent < 200 && metricValue(t, reg, "jim_slow_consumer_disconnects_total") < stuck; sent++ {
		sender.send(codec.CmdChatReq, body)
		sender.expect(codec.CmdChatResp)
		for got < sent+1 {
			if cmd, m := reader.read(); cmd == codec.CmdChatReq && data(m)["content"] == content {
				got++
			}
		}
	}
	if v := metricValue(t, reg, "jim_slow_consumer_disconnects_total"); v != stuck {
		t.Fatalf("%v slow consumers after %d messages, want the %d silent members", v, sent, stuck)
	}
	// 6 members at a 64 MiB cap would have taken over a thousand messages;
	// a 2 MiB total, about 2 MiB / 6 / 60 KB each, plus what their kernel
	// buffers took.
	if sent > 60 {
		t.Fatalf("%d messages before the silent members were cut", sent)
	}
	for _, c := range silent {
		if !c.closedByServer() {
			t.Fatal("a silent member is still connected")
		}
	}
	sender.send(codec.CmdHeartbeatReq, `{}`)
	sender.expect(codec.CmdHeartbeatReq)
	reader.send(codec.CmdHeartbeatReq, `{}`)
	reader.expect(codec.CmdHeartbeatReq)
	if v := metricValue(t, reg, "jim_outbound_queued_bytes"); v != 0 {
		t.Fatalf("jim_outbound_queued_bytes = %v with only readers left", v)
	}
}
