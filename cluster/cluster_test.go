package cluster

import (
	"testing"
	"time"

	"jim/codec"
	"jim/dispatch"
)

func TestFrameRoundTrip(t *testing.T) {
	in := dispatch.ClusterMsg{Kind: dispatch.ClusterGroup, Cmd: codec.CmdExitGroupNotify, Target: "g/1",
		Except: "üser", JSON: []byte(`{"command":10}`)}
	out, err := parseFrame(appendFrame(nil, &in))
	if err != nil || out.Kind != in.Kind || out.Cmd != in.Cmd || out.Target != in.Target ||
		out.Except != in.Except || string(out.JSON) != string(in.JSON) {
		t.Fatalf("got %+v, %v", out, err)
	}
	neg := dispatch.ClusterMsg{Kind: dispatch.ClusterUser, Cmd: -1, Target: "u"}
	if out, err := parseFrame(appendFrame(nil, &neg)); err != nil || out.Cmd != -1 || len(out.JSON) != 0 {
		t.Fatalf("negative cmd: %+v, %v", out, err)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 1, 11, 0, 0}, {1, 1, 11, 5, 'a'}, {1, 1, 11, 0, 9}} {
		if _, err := parseFrame(bad); err == nil {
			t.Fatalf("frame %v accepted", bad)
		}
	}
}

func TestKeys(t *testing.T) {
	for _, uid := range []string{"alice", "a.b c/ü*>", "100"} {
		k := userKey(uid, "n-1")
		if !validKey(k) {
			t.Fatalf("key %q not a valid KV key", k)
		}
		u, node, ok := parseKey(k)
		if !ok || u != uid || node != "n-1" {
			t.Fatalf("parseKey(%q) = %q %q %v", k, u, node, ok)
		}
	}
	if u, node, ok := parseKey(nodeKey("n-2")); !ok || u != "" || node != "n-2" {
		t.Fatalf("node key: %q %q %v", u, node, ok)
	}
	for _, bad := range []string{"x.y", "u.", "u.YQ", "u..n", "n."} {
		if _, _, ok := parseKey(bad); ok {
			t.Fatalf("parseKey(%q) accepted", bad)
		}
	}
	if validID("a.b") || validID("") || !validID(generateID()) {
		t.Fatal("node id validation")
	}
}

func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '=' || c == '/') {
			return false
		}
	}
	return true
}

func TestViewLiveness(t *testing.T) {
	v := newView("me", time.Second)
	now := time.Now()
	v.heartbeat("b", now)
	v.heartbeat("a", now.Add(-2*time.Second))
	v.set("u", "a", nil)
	v.set("u", "b", &codec.User{Nick: "U"})
	v.set("w", "me", nil)
	if u, ok := v.remote("u"); !ok || u == nil || u.Nick != "U" {
		t.Fatalf("remote u: %+v %v", u, ok)
	}
	if _, ok := v.remote("w"); ok {
		t.Fatal("own entry counted as remote")
	}
	if dead := v.sweep(now); len(dead) != 1 || dead[0] != "a" {
		t.Fatalf("sweep: %v", dead)
	}
	if users := v.dropNode("a"); len(users) != 1 || users[0] != "u" || v.entryCount() != 2 {
		t.Fatalf("drop: %v, %d entries", users, v.entryCount())
	}
	if v.firstLive() != "b" || v.liveNodes() != 2 {
		t.Fatalf("first live %q, %d live", v.firstLive(), v.liveNodes())
	}
}
