package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"jim/codec"
	"jim/storage"
)

func chatAck(t *testing.T, r reply) codec.ChatAck {
	t.Helper()
	var a codec.ChatAck
	r.data(t, &a)
	return a
}

func forwarded(t *testing.T, r reply) codec.ChatBody {
	t.Helper()
	if r.Command != 11 || r.Code != 0 || r.Msg != "" {
		t.Fatalf("not a forwarded chat: %s", r.o.JSON)
	}
	var cb codec.ChatBody
	r.data(t, &cb)
	return cb
}

func TestPrivateChatOnlineAndSpoofing(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a := login(t, d, "a")
	b1 := login(t, d, "b")
	b2 := login(t, d, "b")
	do(d, a, codec.CmdChatReq, `{"cmd":11,"from":"mallory","to":"b","chatType":"2","msgType":"0","content":"hi","id":"c-1","createTime":"1700000000000"}`)
	r := a.one(t)
	ack := chatAck(t, r)
	if r.Command != 12 || r.Code != 10000 || r.Msg != "ok 发送成功" || ack.ClientID != "c-1" || ack.Seq != 1 || len(ack.ID) != 32 {
		t.Fatalf("sender reply %s", r.o.JSON)
	}
	r1, r2 := b1.one(t), b2.one(t)
	if r1.o != r2.o {
		t.Fatal("receivers got different Outbounds: encoded more than once")
	}
	cb := forwarded(t, r1)
	if cb.From != "a" || cb.To != "b" || cb.Content != "hi" || cb.ID != ack.ID || cb.Seq != 1 || cb.CreateTime != 1700000000000 || cb.ChatType != 2 {
		t.Fatalf("forwarded %s", r1.o.JSON)
	}
}

func TestPrivateChatOfflineThenFetch(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a := login(t, d, "a")
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"c","content":"one"}`)
	r := a.one(t)
	if r.Code != 10001 || r.Msg != "offline 用户不在线" || chatAck(t, r).Seq != 1 {
		t.Fatalf("offline reply %s", r.o.JSON)
	}
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"c","content":"two"}`)
	a.take()

	c := login(t, d, "c")
	do(d, c, codec.CmdGetMessageReq, `{"cmd":19,"type":"0","userId":"c"}`)
	r = c.one(t)
	var md codec.MessageData
	r.data(t, &md)
	if r.Command != 20 || r.Code != 10016 || md.UserID != "c" || len(md.Friends["a"]) != 2 || md.Friends["a"][0].Content != "one" || md.Groups == nil {
		t.Fatalf("offline fetch %s", r.o.JSON)
	}
	// Delivered, so removed.
	do(d, c, codec.CmdGetMessageReq, `{"cmd":19,"type":0,"userId":"c"}`)
	r = c.one(t)
	if string(r.Data) != `{"friends":{},"groups":{},"userId":"c"}` {
		t.Fatalf("second fetch %s", r.Data)
	}
	// Still in history.
	do(d, c, codec.CmdGetMessageReq, `{"cmd":19,"type":1,"userId":"c","fromUserId":"a"}`)
	r = c.one(t)
	r.data(t, &md)
	if r.Code != 10018 || len(md.Friends["a"]) != 2 {
		t.Fatalf("history %s", r.o.JSON)
	}
}

func TestOfflineKeptWhenSendRefused(t *testing.T) {
	d, st := newDispatcher(t, Options{})
	a := login(t, d, "a")
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"c","content":"one"}`)
	c := login(t, d, "c")
	c.refuse = true
	do(d, c, codec.CmdGetMessageReq, `{"type":0,"userId":"c"}`)
	if m, _ := st.Offline(t.Context(), "c", storage.OfflineFilter{}); len(m) != 1 {
		t.Fatal("offline messages removed although the connection refused them")
	}
}

func TestGroupChatFanOut(t *testing.T) {
	d, st := newDispatcher(t, Options{})
	a1 := login(t, d, "a")
	a2 := login(t, d, "a")
	b := login(t, d, "b")
	do(d, a1, codec.CmdJoinGroupReq, `{"cmd":7,"groupId":"g","name":"G"}`)
	// The joiner's connections get the cmd-9 notice too; no cmd 8.
	for _, c := range []*fakeConn{a1, a2} {
		if r := c.one(t); r.Command != 9 || r.Group != "g" || r.User.UserID != "a" {
			t.Fatalf("join notice %s", r.o.JSON)
		}
	}
	do(d, b, codec.CmdJoinGroupReq, `{"group_id":"g"}`)
	a1.take()
	a2.take()
	b.take()
	// c is a member but offline.
	st.JoinGroup(t.Context(), "g", "c")

	do(d, a1, codec.CmdChatReq, `{"chatType":1,"groupId":"g","content":"hello","from":"zz"}`)
	rs := a1.replies(t)
	if len(rs) != 2 {
		t.Fatalf("sender got %d messages", len(rs))
	}
	var echo, ack reply
	for _, r := range rs {
		if r.Command == 11 {
			echo = r
		} else {
			ack = r
		}
	}
	if ack.Command != 12 || ack.Code != 10000 || chatAck(t, ack).Seq != 1 {
		t.Fatalf("ack %s", ack.o.JSON)
	}
	ra2, rb := a2.one(t), b.one(t)
	if echo.o == nil || echo.o != ra2.o || ra2.o != rb.o {
		t.Fatal("group message not one shared Outbound (or no echo to the sender)")
	}
	if cb := forwarded(t, rb); cb.From != "a" || cb.GroupID != "g" || cb.To != "" || cb.Seq != 1 {
		t.Fatalf("forwarded %s", rb.o.JSON)
	}
	off, _ := st.Offline(t.Context(), "c", storage.OfflineFilter{GroupID: "g"})
	if len(off) != 1 || off[0].Content != "hello" {
		t.Fatalf("offline copy for c: %v", off)
	}
	if off, _ := st.Offline(t.Context(), "b", storage.OfflineFilter{}); len(off) != 0 {
		t.Fatal("online member got an offline copy")
	}

	// Non-members may not post (J-IM had no check).
	x := login(t, d, "x")
	do(d, x, codec.CmdChatReq, `{"chatType":1,"groupId":"g","content":"spam"}`)
	if r := x.one(t); r.Code != int(codec.StatusForbidden) || r.Command != 12 {
		t.Fatalf("non-member %s", r.o.JSON)
	}
	if len(b.take()) != 0 {
		t.Fatal("non-member message delivered")
	}

	// Leaving: cmd-21 ack, cmd-10 notice to the rest, membership gone.
	do(d, b, codec.CmdExitGroupReq, `{"groupId":"g"}`)
	if r := b.one(t); r.Command != 21 || r.Code != int(codec.StatusLeaveGroupOK) {
		t.Fatalf("leave %s", r.o.JSON)
	}
	if r := a1.one(t); r.Command != 10 {
		t.Fatalf("exit notice %s", r.o.JSON)
	}
	a2.take()
	if m, _ := st.GroupMembers(t.Context(), "g"); slices.Contains(m, "b") {
		t.Fatal("membership kept after leave")
	}
	do(d, b, codec.CmdChatReq, `{"chatType":1,"groupId":"g","content":"x"}`)
	if r := b.one(t); r.Code != int(codec.StatusForbidden) {
		t.Fatalf("former member %s", r.o.JSON)
	}
}

func TestJoinBlankClosesAndMaxMembers(t *testing.T) {
	d, _ := newDispatcher(t, Options{MaxGroupMembers: 1})
	a := login(t, d, "a")
	b := login(t, d, "b")
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g"}`)
	a.take()
	do(d, b, codec.CmdJoinGroupReq, `{"groupId":"g"}`)
	r := b.one(t)
	if r.Command != 8 || r.Code != 10012 || r.Group != "g" {
		t.Fatalf("full group %s", r.o.JSON)
	}
	var res struct{ Result int }
	codec.Unmarshal(r.o.JSON, &res)
	if res.Result != codec.JoinResultFull {
		t.Fatalf("result %d", res.Result)
	}
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g"}`) // rejoining is not "full"
	if r := a.one(t); r.Command != 9 {
		t.Fatalf("rejoin %s", r.o.JSON)
	}
	do(d, b, codec.CmdJoinGroupReq, `{"groupId":"  "}`)
	if !b.isClosed() {
		t.Fatal("blank groupId did not close the connection")
	}
}

func TestBadChats(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a := login(t, d, "a")
	for _, body := range []string{`{bad`, `{"chatType":0,"to":"b"}`, `{"chatType":3,"to":"b"}`, `{"to":"b"}`, `{"chatType":2}`, `{"chatType":1}`} {
		do(d, a, codec.CmdChatReq, body)
		if r := a.one(t); r.Code != 10002 || r.Command != 12 {
			t.Fatalf("%s: %s", body, r.o.JSON)
		}
	}
}

func TestDedup(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a := login(t, d, "a")
	b := login(t, d, "b")
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"b","content":"x","id":"same"}`)
	first := chatAck(t, a.one(t))
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"b","content":"x","id":"same"}`)
	r := a.one(t)
	if r.Code != 10000 || chatAck(t, r) != first {
		t.Fatalf("retry ack %s, first %+v", r.o.JSON, first)
	}
	if got := b.take(); len(got) != 1 {
		t.Fatalf("receiver got %d copies", len(got))
	}
}

func TestHistoryPaging(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a := login(t, d, "a")
	b := login(t, d, "b")
	for i := 1; i <= 5; i++ {
		do(d, a, codec.CmdChatReq, fmt.Sprintf(`{"chatType":2,"to":"b","content":"%d","createTime":%d}`, i, i*1000))
	}
	a.take()
	b.take()
	hist := func(q string) string {
		do(d, b, codec.CmdGetMessageReq, `{"type":1,"userId":"b","fromUserId":"a"`+q+`}`)
		r := b.one(t)
		if r.Code != 10018 {
			t.Fatalf("%s: %s", q, r.o.JSON)
		}
		var md codec.MessageData
		r.data(t, &md)
		s := ""
		for _, m := range md.Friends["a"] {
			s += m.Content
		}
		return s
	}
	for q, want := range map[string]string{
		``:                                   "12345",
		`,"offset":1,"count":2`:              "23",
		`,"count":"2"`:                       "12",
		`,"afterSeq":3`:                      "45",
		`,"afterSeq":"3","count":1`:          "4",
		`,"beginTime":2000,"endTime":4000.0`: "234",
		`,"beginTime":2000,"offset":2`:       "45",
		`,"afterSeq":5`:                      "",
	} {
		if got := hist(q); got != want {
			t.Errorf("history%s = %q, want %q", q, got, want)
		}
	}
	// Someone else's messages, a group one is not in, or no conversation.
	for _, body := range []string{`{"type":1,"userId":"a","fromUserId":"b"}`, `{"type":1,"userId":"b","groupId":"g"}`, `{"type":1,"userId":"b"}`, `{"userId":"b"}`, `{"type":5,"userId":"b"}`} {
		do(d, b, codec.CmdGetMessageReq, body)
		if r := b.one(t); r.Code != 10015 || r.Command != 20 {
			t.Fatalf("%s: %s", body, r.o.JSON)
		}
	}
}

func TestGetUser(t *testing.T) {
	d, st := newDispatcher(t, Options{DefaultGroups: []string{"100"}, GroupNames: map[string]string{"100": "J-IM朋友圈"}})
	a := login(t, d, "a")
	login(t, d, "b")
	st.JoinGroup(t.Context(), "100", "z") // offline member
	a.take()
	get := func(typ string) (reply, codec.User) {
		do(d, a, codec.CmdGetUserReq, `{"cmd":17,"type":`+typ+`,"userId":"a"}`)
		r := a.one(t)
		var u codec.User
		if r.Data != nil {
			r.data(t, &u)
		}
		return r, u
	}
	ids := func(g *codec.Group) (s []string) {
		for _, u := range g.Users {
			s = append(s, u.UserID)
		}
		return
	}
	r, u := get(`"0"`)
	if r.Command != 18 || r.Code != 10005 || u.Status != "online" || u.Terminal != "ws" || len(u.Groups) != 1 ||
		u.Groups[0].Name != "J-IM朋友圈" || !slices.Equal(ids(u.Groups[0]), []string{"a", "b"}) || u.Groups[0].Online != 2 {
		t.Fatalf("type 0: %s", r.o.JSON)
	}
	if r, u = get(`1`); r.Code != 10006 || !slices.Equal(ids(u.Groups[0]), []string{"z"}) {
		t.Fatalf("type 1: %s", r.o.JSON)
	}
	if r, u = get(`2`); r.Code != 10003 || !slices.Equal(ids(u.Groups[0]), []string{"a", "b", "z"}) {
		t.Fatalf("type 2: %s", r.o.JSON)
	}
	// Users arrays are never null, even when empty.
	d2, _ := newDispatcher(t, Options{DefaultGroups: []string{"100"}})
	solo := login(t, d2, "solo")
	do(d2, solo, codec.CmdGetUserReq, `{"type":1,"userId":"solo"}`)
	if r := solo.one(t); !strings.Contains(string(r.Data), `"users":[]`) {
		t.Fatalf("empty users: %s", r.Data)
	}
	for _, body := range []string{`{"userId":"a"}`, `{"type":0}`, `{"type":7,"userId":"a"}`} {
		do(d, a, codec.CmdGetUserReq, body)
		if r := a.one(t); r.Code != 10004 || r.Command != 18 {
			t.Fatalf("%s: %s", body, r.o.JSON)
		}
	}
}

// failingStore refuses every Append.
type failingStore struct{ storage.Store }

func (failingStore) Append(context.Context, *storage.Message, []string) (storage.Ack, error) {
	return storage.Ack{}, errors.New("disk full")
}

func (f failingStore) AppendAsync(ctx context.Context, m *storage.Message, off []string, done func(storage.Ack, error)) {
	done(f.Append(ctx, m, off))
}

func TestStoreFailureNotDelivered(t *testing.T) {
	d, _ := newDispatcher(t, Options{Store: failingStore{storage.NewMemory()}})
	a := login(t, d, "a")
	b := login(t, d, "b")
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"b","content":"x"}`)
	if r := a.one(t); r.Code != int(codec.StatusStoreFailed) || r.Command != 12 {
		t.Fatalf("store failure reply %s", r.o.JSON)
	}
	if len(b.take()) != 0 {
		t.Fatal("delivered without being stored")
	}
}

// Past NoticeMaxMembers online members, a join is told only to the joiner:
// notifying everyone would be quadratic in the group size.
func TestJoinNoticesCappedInBigGroups(t *testing.T) {
	d, _ := newDispatcher(t, Options{NoticeMaxMembers: 2})
	a := login(t, d, "a")
	b := login(t, d, "b")
	c := login(t, d, "c")
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"big"}`)
	do(d, b, codec.CmdJoinGroupReq, `{"groupId":"big"}`)
	if rs := a.replies(t); len(rs) != 2 || rs[1].Command != 9 {
		t.Fatalf("a, small group: %v", rs)
	}
	b.take()
	do(d, c, codec.CmdJoinGroupReq, `{"groupId":"big"}`)
	if rs := c.replies(t); len(rs) != 1 || rs[0].Command != 9 || rs[0].User.UserID != "c" {
		t.Fatalf("the joiner must still hear of its join: %v", rs)
	}
	if n := len(a.take()) + len(b.take()); n != 0 {
		t.Fatalf("%d notices sent to members of a group over the cap", n)
	}
}
