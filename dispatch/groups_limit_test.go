package dispatch

import (
	"strconv"
	"testing"

	"jim/codec"
)

func TestMaxGroupsPerUser(t *testing.T) {
	d, st := newDispatcher(t, Options{MaxGroupsPerUser: 2, DefaultGroups: []string{"lobby"}})
	a := login(t, d, "a")
	a.take()
	// The default group joined at login is a membership: one more fits.
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g1"}`)
	if r := a.one(t); r.Command != 9 || r.Group != "g1" {
		t.Fatalf("join g1 %s", r.o.JSON)
	}
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g2"}`)
	r := a.one(t)
	if r.Command != 8 || r.Code != int(codec.StatusJoinGroupFailed) || r.Group != "g2" {
		t.Fatalf("join beyond the limit %s", r.o.JSON)
	}
	var res struct{ Result int }
	if err := codec.Unmarshal(r.o.JSON, &res); err != nil || res.Result != codec.JoinResultFull {
		t.Fatalf("result %d (%v): %s", res.Result, err, r.o.JSON)
	}
	var lim struct{ Limit string }
	r.data(t, &lim)
	if lim.Limit != "groups_per_user" {
		t.Fatalf("data %s", r.Data)
	}
	if m, _ := st.UserGroups(t.Context(), "a"); len(m) != 2 {
		t.Fatalf("memberships %v", m)
	}
	// Rejoining a group the user is already in is not refused.
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g1"}`)
	if r := a.one(t); r.Command != 9 {
		t.Fatalf("rejoin %s", r.o.JSON)
	}
	// Leaving frees a slot.
	do(d, a, codec.CmdExitGroupReq, `{"groupId":"g1"}`)
	a.take()
	do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g2"}`)
	if r := a.one(t); r.Command != 9 || r.Group != "g2" {
		t.Fatalf("join after leave %s", r.o.JSON)
	}
	// Another user has its own count.
	b := login(t, d, "b")
	b.take()
	do(d, b, codec.CmdJoinGroupReq, `{"groupId":"g2"}`)
	if r := b.replies(t); len(r) == 0 || r[0].Command != 9 {
		t.Fatalf("b join %v", r)
	}
}

func TestMaxGroupsPerUserUnlimited(t *testing.T) {
	d, st := newDispatcher(t, Options{})
	a := login(t, d, "a")
	for i := 0; i < 50; i++ {
		do(d, a, codec.CmdJoinGroupReq, `{"groupId":"g`+strconv.Itoa(i)+`"}`)
	}
	for _, r := range a.replies(t) {
		if r.Command == 8 {
			t.Fatalf("refused without a limit: %s", r.o.JSON)
		}
	}
	if m, _ := st.UserGroups(t.Context(), "a"); len(m) != 50 {
		t.Fatalf("memberships %d", len(m))
	}
}
