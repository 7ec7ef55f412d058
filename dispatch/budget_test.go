package dispatch

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"jim/codec"
)

// A reply of offline or history messages is bounded in bytes, not only in
// count: six queued messages of 900 KB would make a 5.4 MB reply, over a
// connection's default outbound limit of 4 MiB, and every fetch would end
// the connection with nothing acknowledged. They come in pages instead, and
// asking again goes on where the last page ended.
func TestReplyBytesBounded(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	a := login(t, d, "a")
	big := strings.Repeat("x", 900<<10)
	for i := 1; i <= 6; i++ {
		do(d, a, codec.CmdChatReq, fmt.Sprintf(`{"chatType":2,"to":"c","content":"%d%s"}`, i, big))
		if r := a.one(t); r.Code != 10001 {
			t.Fatalf("message %d: %s", i, r.o.JSON)
		}
	}
	// Quotes and control characters take more room as JSON than stored.
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"c","content":"7`+strings.Repeat(`\u0001`, 150<<10)+`"}`)
	a.take()

	c := login(t, d, "c")
	fetch := func(body string) ([]*codec.ChatBody, int) {
		t.Helper()
		do(d, c, codec.CmdGetMessageReq, body)
		r := c.one(t)
		if len(r.o.JSON) > DefaultMaxReplyBytes+64<<10 {
			t.Fatalf("reply of %d bytes", len(r.o.JSON))
		}
		var md codec.MessageData
		r.data(t, &md)
		return md.Friends["a"], len(r.o.JSON)
	}
	var got []string
	for round := 0; round < 10; round++ {
		page, n := fetch(`{"cmd":19,"type":0,"userId":"c"}`)
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("offline page of %d messages, %d bytes", len(page), n)
		}
		for _, m := range page {
			got = append(got, m.Content[:1])
		}
	}
	if strings.Join(got, "") != "1234567" {
		t.Fatalf("offline messages fetched in pages: %v", got)
	}
	// The latest page keeps the newest; a page from a seq keeps the oldest,
	// so afterSeq goes on from its last message.
	page, _ := fetch(`{"cmd":19,"type":1,"userId":"c","fromUserId":"a"}`)
	if len(page) == 0 || page[len(page)-1].Seq != 7 || page[0].Seq < 5 {
		t.Fatalf("latest page: %d messages from seq %d", len(page), page[0].Seq)
	}
	var seqs []uint64
	for after := uint64(0); after < 7; {
		page, _ := fetch(fmt.Sprintf(`{"cmd":19,"type":1,"userId":"c","fromUserId":"a","afterSeq":%d}`, after))
		if len(page) == 0 {
			t.Fatalf("empty page after seq %d", after)
		}
		for _, m := range page {
			seqs = append(seqs, m.Seq)
		}
		after = page[len(page)-1].Seq
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7]" {
		t.Fatalf("history by afterSeq: %v", seqs)
	}
}

// A get-user reply lists every group of the user but cuts the member lists
// to the reply budget as a whole.
func TestGetUserReplyBounded(t *testing.T) {
	d, st := newDispatcher(t, Options{MaxReplyBytes: 20_000})
	for g := range 10 {
		gid := fmt.Sprint("g", g)
		for m := range 200 {
			if err := st.JoinGroup(t.Context(), gid, fmt.Sprintf("member-%03d-%s", m, strings.Repeat("x", 40))); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.JoinGroup(t.Context(), gid, "asker"); err != nil {
			t.Fatal(err)
		}
	}
	c := login(t, d, "asker")
	do(d, c, codec.CmdGetUserReq, `{"cmd":17,"type":2,"userId":"asker"}`)
	r := c.one(t)
	if len(r.o.JSON) > 20_000+4_000 {
		t.Fatalf("get-user reply of %d bytes over a budget of 20,000", len(r.o.JSON))
	}
	var u codec.User
	r.data(t, &u)
	listed := 0
	for _, g := range u.Groups {
		listed += len(g.Users)
	}
	// 2,010 memberships of about 80 bytes each would be 160 kB.
	if len(u.Groups) != 10 || listed < 100 || listed > 300 {
		t.Fatalf("%d groups, %d members listed", len(u.Groups), listed)
	}
	for _, g := range u.Groups {
		if g.Online != 1 {
			t.Fatalf("group %s: %d online, want 1 (counted past the cut)", g.GroupID, g.Online)
		}
	}
}

// Time-filtered history reads scan; while half the workers run them, one
// more is refused as busy instead of taking the rest.
func TestTimeScansLimited(t *testing.T) {
	d, _ := newDispatcher(t, Options{Workers: 4})
	a := login(t, d, "a")
	do(d, a, codec.CmdChatReq, `{"chatType":2,"to":"b","content":"hi","createTime":5000}`)
	a.take()
	for range cap(d.scans) {
		d.scans <- struct{}{}
	}
	q := `{"cmd":19,"type":1,"userId":"a","fromUserId":"b","beginTime":1000,"endTime":9000}`
	do(d, a, codec.CmdGetMessageReq, q)
	if r := a.one(t); r.Code != int(codec.StatusBusy) || r.Command != int(codec.CmdGetMessageResp) {
		t.Fatalf("time scan with every scan slot taken: %s", r.o.JSON)
	}
	do(d, a, codec.CmdGetMessageReq, `{"cmd":19,"type":0,"userId":"a","fromUserId":"b"}`)
	if r := a.one(t); r.Code != int(codec.StatusBusy) {
		t.Fatalf("filtered offline fetch with every scan slot taken: %s", r.o.JSON)
	}
	// Unfiltered pages do not scan and are not limited.
	do(d, a, codec.CmdGetMessageReq, `{"cmd":19,"type":1,"userId":"a","fromUserId":"b"}`)
	if r := a.one(t); r.Code != int(codec.StatusGetHistoryMsgOK) {
		t.Fatalf("latest page with every scan slot taken: %s", r.o.JSON)
	}
	<-d.scans
	do(d, a, codec.CmdGetMessageReq, q)
	var md codec.MessageData
	r := a.one(t)
	r.data(t, &md)
	if r.Code != int(codec.StatusGetHistoryMsgOK) || len(md.Friends["b"]) != 1 {
		t.Fatalf("time scan with a slot free: %s", r.o.JSON)
	}
	if len(d.scans) != cap(d.scans)-1 {
		t.Fatalf("%d scan slots taken after the scan, want %d", len(d.scans), cap(d.scans)-1)
	}
}

// A user in very many groups can still log in: its own cmd-9 notices and
// the group list of its login reply are bounded by the reply budget, half
// each, while it rejoins every group and the other members hear of it. The
// get-user reply's group list is cut the same way. Before, a user in
// 100,000 groups was disconnected as a slow consumer at every login.
func TestManyGroupsLoginBounded(t *testing.T) {
	const groups, budget = 3000, 20_000
	d, st := newDispatcher(t, Options{MaxReplyBytes: budget})
	for g := range groups {
		if err := st.JoinGroup(t.Context(), fmt.Sprintf("group-%05d", g), "many"); err != nil {
			t.Fatal(err)
		}
	}
	last := fmt.Sprintf("group-%05d", groups-1)
	if err := st.JoinGroup(t.Context(), last, "other"); err != nil {
		t.Fatal(err)
	}
	other := login(t, d, "other")
	other.take()

	c := newConn()
	do(d, c, codec.CmdLoginReq, `{"cmd":5,"userId":"many","password":"x"}`)
	rs := c.replies(t)
	self, notices := 0, 0
	for _, r := range rs[:len(rs)-1] {
		if r.Command != int(codec.CmdJoinGroupNotify) {
			t.Fatalf("before the login reply: %s", r.o.JSON)
		}
		notices++
		self += len(r.o.JSON)
	}
	lr := rs[len(rs)-1]
	if lr.Code != int(codec.StatusLoginOK) {
		t.Fatalf("login: %s", lr.o.JSON)
	}
	// 3,000 notices of about 150 bytes and a list of about 40 bytes a group
	// would be 450 kB and 120 kB.
	if self > budget/2+1000 || notices < 50 || len(lr.o.JSON) > budget/2+2000 {
		t.Fatalf("login sent %d notices (%d bytes) and a reply of %d bytes, budget %d", notices, self, len(lr.o.JSON), budget)
	}
	var resp struct {
		User codec.User `json:"user"`
	}
	if err := json.Unmarshal(lr.o.JSON, &resp); err != nil {
		t.Fatal(err)
	}
	if n := len(resp.User.Groups); n < 100 || n >= groups || resp.User.Groups[0].GroupID != "group-00000" {
		t.Fatalf("login reply lists %d groups", n)
	}
	// Every group was rejoined: the other member of the last one heard of
	// it, though the notice to the user itself was past the budget.
	heard := false
	for _, r := range other.replies(t) {
		heard = heard || r.Command == int(codec.CmdJoinGroupNotify) && strings.Contains(string(r.o.JSON), last)
	}
	if !heard {
		t.Fatalf("the other member of %s did not hear of the rejoin", last)
	}
	do(d, c, codec.CmdGetUserReq, `{"cmd":17,"type":0,"userId":"many"}`)
	if r := c.one(t); len(r.o.JSON) > budget+4000 {
		t.Fatalf("get-user reply of %d bytes, budget %d", len(r.o.JSON), budget)
	}
}
