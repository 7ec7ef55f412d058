package dispatch

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/storage"
)

func TestHeartbeatHandshakeUnknownExact(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	c := newConn()
	// Heartbeats are answered inline (no barrier needed), even before login,
	// whatever the body (the Java client sends the raw byte 0x80).
	d.Handle(c, Packet{Cmd: codec.CmdHeartbeatReq, Body: []byte{0x80}})
	if got := c.take(); len(got) != 1 || got[0].Cmd != codec.CmdHeartbeatReq || string(got[0].JSON) != `{"command":13,"data":{"hbbyte":-128}}` {
		t.Fatalf("heartbeat reply %v", got)
	}
	d.Handle(c, Packet{Cmd: codec.CmdHandshakeReq})
	if got := c.take(); len(got) != 1 || string(got[0].JSON) != `{"command":2,"data":{"hbyte":-127}}` {
		t.Fatalf("handshake reply %v", got)
	}
	const unknown = `{"code":10017,"command":0,"msg":"cmd failed! 未知的cmd命令!"}`
	for _, cmd := range []codec.Cmd{0, 2, 12, 15, 20, 99, -5} {
		d.Handle(c, Packet{Cmd: cmd, Body: []byte(`{}`)})
		got := c.take()
		if len(got) != 1 || got[0].Cmd != codec.CmdUnknown || string(got[0].JSON) != unknown {
			t.Fatalf("cmd %d: reply %v", cmd, got)
		}
	}
	// WebSocket: the command comes from the JSON; bad JSON is the same reply.
	for _, payload := range []string{`not json`, `{"content":"x"}`, `[]`, ``} {
		d.HandleWS(c, []byte(payload))
		if got := c.take(); len(got) != 1 || string(got[0].JSON) != unknown {
			t.Fatalf("ws %q: reply %v", payload, got)
		}
	}
	d.HandleWS(c, []byte(`{"cmd":"13","hbbyte":"-127"}`))
	if got := c.take(); len(got) != 1 || got[0].Cmd != codec.CmdHeartbeatReq {
		t.Fatalf("ws heartbeat reply %v", got)
	}
}

func TestSeqEcho(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	c := newConn()
	d.Handle(c, Packet{Cmd: codec.CmdHeartbeatReq, Seq: 7, HasSeq: true})
	d.Handle(c, Packet{Cmd: codec.CmdLoginReq, Seq: 8, HasSeq: true, Body: []byte(`{"userId":"u"}`)})
	settle(d)
	got := c.take()
	if len(got) != 2 || !got[0].HasSeq || got[0].Seq != 7 || !got[1].HasSeq || got[1].Seq != 8 || got[1].Cmd != codec.CmdLoginResp {
		t.Fatalf("seq not echoed: %+v", got)
	}
	d.Handle(c, Packet{Cmd: codec.CmdHeartbeatReq})
	if got := c.take(); got[0].HasSeq {
		t.Fatal("seq on a reply to a request without one")
	}
}

func TestNotLoggedIn(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	c := newConn()
	for _, tc := range []struct {
		cmd  codec.Cmd
		resp int
	}{{codec.CmdChatReq, 12}, {codec.CmdGetUserReq, 18}, {codec.CmdGetMessageReq, 20}, {codec.CmdJoinGroupReq, 8}, {codec.CmdExitGroupReq, 21}} {
		do(d, c, tc.cmd, `{"chatType":2,"to":"x","groupId":"g","type":0,"userId":"x"}`)
		r := c.one(t)
		if r.Command != tc.resp || r.Code != int(codec.StatusNotLoggedIn) {
			t.Fatalf("cmd %d before login: %+v", tc.cmd, r)
		}
	}
	if c.isClosed() {
		t.Fatal("refusal closed the connection")
	}
	// Auth is allowed before login, with J-IM's reply.
	do(d, c, codec.CmdAuthReq, `{"cmd":3,"token":"tok"}`)
	r := c.one(t)
	var data struct{ Token string }
	r.data(t, &data)
	if r.Command != 4 || r.Code != 10009 || data.Token != "tokauthKey" {
		t.Fatalf("auth reply %+v %s", r, r.Data)
	}
	do(d, c, codec.CmdAuthReq, `{}`)
	if r := c.one(t); r.Code != 10010 {
		t.Fatalf("empty auth %+v", r)
	}
}

func TestLoginPipelinedWithChat(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	b := login(t, d, "b")
	a := newConn()
	// The Java client sends LOGIN and CHAT back to back: the chat must see
	// the login, so the gate is applied on the worker, in order.
	d.Handle(a, Packet{Cmd: codec.CmdLoginReq, Body: []byte(`{"userId":"a"}`)})
	d.Handle(a, Packet{Cmd: codec.CmdChatReq, Body: []byte(`{"chatType":2,"to":"b","content":"hi"}`)})
	settle(d)
	rs := a.replies(t)
	if len(rs) != 2 || rs[0].Code != 10007 || rs[1].Command != 12 || rs[1].Code != 10000 {
		t.Fatalf("pipelined replies %+v", rs)
	}
	if r := b.one(t); r.Command != 11 {
		t.Fatalf("receiver got %+v", r)
	}
}

func TestLogin(t *testing.T) {
	d, st := newDispatcher(t, Options{DefaultGroups: []string{"100"}, GroupNames: map[string]string{"100": "J-IM朋友圈"}})
	a := newConn()
	a.proto = "tcp"
	do(d, a, codec.CmdLoginReq, `{"cmd":5,"userId":"alice","password":"123"}`)
	rs := a.replies(t)
	// cmd 9 (joiner included) comes before cmd 6, as in J-IM.
	if len(rs) != 2 || rs[0].Command != 9 || rs[1].Command != 6 {
		t.Fatalf("login replies %+v", rs)
	}
	if rs[0].Code != 10011 || rs[0].Group != "100" || rs[0].User == nil || rs[0].User.UserID != "alice" || rs[0].User.Status != "online" {
		t.Fatalf("join notice %s", rs[0].o.JSON)
	}
	var lr codec.LoginResp
	if err := codec.Unmarshal(rs[1].o.JSON, &lr); err != nil {
		t.Fatal(err)
	}
	if lr.Code != 10007 || lr.Msg != "ok 登录成功!" || lr.User == nil || lr.User.UserID != "alice" || lr.User.Terminal != "tcp" ||
		len(lr.User.Groups) != 1 || lr.User.Groups[0].GroupID != "100" || lr.User.Groups[0].Name != "J-IM朋友圈" {
		t.Fatalf("login reply %s", rs[1].o.JSON)
	}
	if a.UserID() != "alice" || !d.Online("alice") || d.Sessions() != 1 {
		t.Fatal("not bound")
	}
	if gs, _ := st.UserGroups(t.Context(), "alice"); !slices.Equal(gs, []string{"100"}) {
		t.Fatalf("default group not durable: %v", gs)
	}

	// A second user's login notifies alice.
	b := login(t, d, "bob")
	if r := a.one(t); r.Command != 9 || r.User.UserID != "bob" {
		t.Fatalf("alice got %+v", r)
	}
	_ = b

	// Same user again on the same connection: fine. Another user: refused,
	// connection kept.
	do(d, a, codec.CmdLoginReq, `{"userId":"alice"}`)
	if rs := a.replies(t); rs[len(rs)-1].Code != 10007 {
		t.Fatalf("relogin %+v", rs)
	}
	do(d, a, codec.CmdLoginReq, `{"userId":"bob"}`)
	if r := a.one(t); r.Code != 10008 || a.isClosed() || a.UserID() != "alice" {
		t.Fatalf("login switch %+v closed=%v", r, a.isClosed())
	}
	if d.Sessions() != 2 {
		t.Fatalf("sessions %d", d.Sessions())
	}

	// Failure: 10008 then close.
	c := newConn()
	do(d, c, codec.CmdLoginReq, `{"password":"x"}`)
	if r := c.one(t); r.Code != 10008 || r.Command != 6 || r.Msg != "login failed ! 登录失败!" || !c.isClosed() {
		t.Fatalf("failed login %+v closed=%v", r, c.isClosed())
	}
	c = newConn()
	do(d, c, codec.CmdLoginReq, `{bad`)
	if r := c.one(t); r.Code != 10008 || !c.isClosed() {
		t.Fatalf("bad JSON login %+v", r)
	}
	// 2.x field name.
	c = newConn()
	do(d, c, codec.CmdLoginReq, `{"loginname":"carol"}`)
	if c.UserID() != "carol" {
		t.Fatal("loginname not accepted")
	}
}

func TestLoginFromQuery(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	c := newConn()
	d.LoginFromQuery(c, "web1", "123", "")
	settle(d)
	if r := c.one(t); r.Command != 6 || r.Code != 10007 || c.UserID() != "web1" {
		t.Fatalf("query login %+v", r)
	}
}

func TestClosedExitNoticeKeepsMembership(t *testing.T) {
	d, st := newDispatcher(t, Options{DefaultGroups: []string{"g"}})
	a1 := login(t, d, "a")
	a2 := login(t, d, "a")
	b := login(t, d, "b")
	a1.take()
	a2.take()
	d.Closed(a1)
	settle(d)
	if got := b.take(); len(got) != 0 {
		t.Fatalf("exit notice while a still has a connection: %s", got[0].JSON)
	}
	d.Closed(a2)
	settle(d)
	r := b.one(t)
	var data codec.ExitNotifyData
	r.data(t, &data)
	if r.Command != 10 || data.Group != "g" || data.User.UserID != "a" || data.User.Status != "offline" {
		t.Fatalf("exit notice %s", r.o.JSON)
	}
	if d.Online("a") || d.Sessions() != 1 {
		t.Fatal("a still online")
	}
	if m, _ := st.GroupMembers(t.Context(), "g"); !slices.Contains(m, "a") {
		t.Fatal("disconnect removed membership")
	}
	// Closing twice, or a never-logged-in connection, is harmless.
	d.Closed(a2)
	d.Closed(newConn())
	settle(d)
}

func TestCloseCommand(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a1 := login(t, d, "a")
	a2 := login(t, d, "a")
	b := login(t, d, "b")

	do(d, b, codec.CmdCloseReq, `{"userId":"a"}`)
	if r := b.one(t); r.Command != 14 || r.Code != int(codec.StatusForbidden) || b.isClosed() || a1.isClosed() {
		t.Fatalf("closing another user: %+v", r)
	}
	do(d, b, codec.CmdCloseReq, `{not json`)
	if r := b.one(t); r.Code != 10020 || b.isClosed() {
		t.Fatalf("bad close body %+v", r)
	}
	do(d, a1, codec.CmdCloseReq, `{"cmd":14,"userId":"a"}`)
	for _, c := range []*fakeConn{a1, a2} {
		if r := c.one(t); string(r.o.JSON) != `{"code":10021,"command":14,"msg":"close ok! 关闭成功"}` || !c.isClosed() {
			t.Fatalf("own close: %s closed=%v", r.o.JSON, c.isClosed())
		}
	}
	do(d, b, codec.CmdCloseReq, ``)
	if r := b.one(t); r.Code != 10021 || !b.isClosed() {
		t.Fatalf("plain close %+v", r)
	}
}

func TestPoolFullBusy(t *testing.T) {
	d, _ := newDispatcher(t, Options{Workers: 1, QueueLen: 1})
	started, release := make(chan struct{}), make(chan struct{})
	if !d.pool.trySubmit(0, func() { close(started); <-release }) {
		t.Fatal("submit")
	}
	<-started
	if !d.pool.trySubmit(0, func() {}) { // fills the queue
		t.Fatal("fill")
	}
	c := newConn()
	d.Handle(c, Packet{Cmd: codec.CmdChatReq, Seq: 3, HasSeq: true, Body: []byte(`{}`)})
	got := c.take() // answered inline, on the caller
	if len(got) != 1 || got[0].Cmd != codec.CmdChatResp || got[0].Seq != 3 ||
		string(got[0].JSON) != string(codec.StatusResp(codec.CmdChatResp, codec.StatusBusy)) {
		t.Fatalf("busy reply %+v", got)
	}
	// A close is never dropped, even with the queue full.
	d.Closed(c)
	close(release)
	settle(d)
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	d, _ := newDispatcher(t, Options{Registerer: reg})
	a := login(t, d, "a")
	login(t, d, "b")
	do(d, a, codec.CmdChatReq, `{"cmd":11,"chatType":2,"to":"b","msgType":0,"content":"hi"}`)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		if mf.GetName() == "jim_sessions" && mf.GetMetric()[0].GetGauge().GetValue() != 2 {
			t.Fatalf("jim_sessions = %v", mf.GetMetric()[0].GetGauge().GetValue())
		}
		// One chat message: one durable write and one reply timed.
		switch mf.GetName() {
		case "jim_store_append_seconds", "jim_chat_ack_seconds":
			if n := mf.GetMetric()[0].GetHistogram().GetSampleCount(); n != 1 {
				t.Errorf("%s counted %d messages, want 1", mf.GetName(), n)
			}
		}
	}
	for _, want := range []string{"jim_logins_total", "jim_messages_in_total", "jim_messages_out_total", "jim_sessions", "jim_worker_queue_full_total", "jim_deliveries_total", "jim_fanout_seconds", "jim_store_append_seconds", "jim_chat_ack_seconds"} {
		if !slices.Contains(names, want) {
			t.Errorf("metric %s missing from %v", want, names)
		}
	}
}

func TestCloseDrains(t *testing.T) {
	d := New(Options{Workers: 1})
	c := newConn()
	d.Handle(c, Packet{Cmd: codec.CmdLoginReq, Body: []byte(`{"userId":"x"}`)})
	d.Close()
	if got := c.take(); len(got) != 1 || !strings.Contains(string(got[0].JSON), "10007") {
		t.Fatalf("queued login not drained: %v", got)
	}
	d.Closed(c) // after Close it runs inline
	if d.Online("x") {
		t.Fatal("closed after stop not handled")
	}
}

// Ids are parts of storage keys: an empty one, one over MaxIDLen or one
// with a NUL (the separator of a private conversation's two users) is
// refused where it comes in, and nothing of it is stored.
func TestInvalidIDsRefused(t *testing.T) {
	d, st := newDispatcher(t, Options{})
	long := strings.Repeat("x", MaxIDLen+1)
	for _, uid := range []string{long, `a\u0000b`} {
		c := newConn()
		do(d, c, codec.CmdLoginReq, `{"cmd":5,"userId":"`+uid+`","password":"x"}`)
		if r := c.one(t); r.Code != int(codec.StatusLoginFailed) || !c.isClosed() {
			t.Fatalf("login as %.20q: %s, closed %v", uid, r.o.JSON, c.isClosed())
		}
	}
	a := login(t, d, "a")
	for _, body := range []string{
		`{"cmd":11,"chatType":2,"to":"` + long + `","content":"hi"}`,
		`{"cmd":11,"chatType":2,"to":"b\u0000c","content":"hi"}`,
		`{"cmd":11,"chatType":1,"groupId":"` + long + `","content":"hi"}`,
		`{"cmd":11,"chatType":2,"to":"b","id":"` + long + `","content":"hi"}`,
	} {
		do(d, a, codec.CmdChatReq, body)
		if r := a.one(t); r.Code != int(codec.StatusSendFailed) {
			t.Fatalf("chat %.60s: %s", body, r.o.JSON)
		}
	}
	if h, _ := st.History(t.Context(), storage.PrivateConv("a", "b\x00c"), storage.Query{}); len(h) != 0 {
		t.Fatalf("a message to an id with a NUL was stored: %v", h)
	}
	do(d, a, codec.CmdGetMessageReq, `{"cmd":19,"type":1,"userId":"a","fromUserId":"b\u0000c"}`)
	if r := a.one(t); r.Code != int(codec.StatusGetMessageFailed) {
		t.Fatalf("history with an id with a NUL: %s", r.o.JSON)
	}
	do(d, a, codec.CmdJoinGroupReq, `{"cmd":7,"groupId":"`+long+`"}`)
	if r := a.one(t); r.Command != int(codec.CmdJoinGroupResp) {
		t.Fatalf("join of a group with a long id: %s", r.o.JSON)
	}
	if gs, _ := st.UserGroups(t.Context(), "a"); len(gs) != 0 {
		t.Fatalf("joined %v", gs)
	}
}
