package dispatch

import (
	"encoding/json"
	"net/url"
	"sync"
	"testing"

	"jim/codec"
)

// call runs one API request and waits for its reply.
func call(t *testing.T, d *Dispatcher, r APIRequest) (APIResponse, map[string]any) {
	t.Helper()
	var wg sync.WaitGroup
	var resp APIResponse
	wg.Add(1)
	d.API(r, func(x APIResponse) { resp = x; wg.Done() })
	wg.Wait()
	if resp.ContentType != "application/json; charset=utf-8" {
		t.Fatalf("content type %q", resp.ContentType)
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	return resp, m
}

func code(m map[string]any) int { f, _ := m["code"].(float64); return int(f) }

func TestAPIAccess(t *testing.T) {
	d, _ := newDispatcher(t, Options{APIKey: "k3y"})
	online := func(key string, loopback bool) (APIResponse, map[string]any) {
		return call(t, d, APIRequest{Path: "/api/user/online", Form: url.Values{"userid": {"a"}}, APIKey: key, Loopback: loopback})
	}
	for _, key := range []string{"", "k3", "k3y ", "K3Y"} {
		if resp, m := online(key, true); resp.Status != 401 || code(m) != int(codec.StatusUnauthorized) {
			t.Fatalf("key %q: %d %s", key, resp.Status, resp.Body)
		}
	}
	if resp, m := online("k3y", false); resp.Status != 200 || code(m) != 10001 {
		t.Fatalf("right key: %d %s", resp.Status, resp.Body)
	}

	open, _ := newDispatcher(t, Options{})
	if resp, m := call(t, open, APIRequest{Path: "/api/user/online", Form: url.Values{"userid": {"a"}}}); resp.Status != 403 || code(m) != int(codec.StatusForbidden) {
		t.Fatalf("no key, remote: %d %s", resp.Status, resp.Body)
	}
	if resp, _ := call(t, open, APIRequest{Path: "/api/user/online", Form: url.Values{"userid": {"a"}}, Loopback: true}); resp.Status != 200 {
		t.Fatalf("no key, loopback: %d", resp.Status)
	}
	if resp, m := call(t, open, APIRequest{Path: "/api/nope", Loopback: true}); resp.Status != 404 || code(m) != int(codec.StatusNotFound) {
		t.Fatalf("unknown path: %d %s", resp.Status, resp.Body)
	}
}

func TestAPIEndpoints(t *testing.T) {
	d, st := newDispatcher(t, Options{})
	a := login(t, d, "a")
	lo := func(path string, form url.Values, body string) (APIResponse, map[string]any) {
		return call(t, d, APIRequest{Path: path, Form: form, Body: []byte(body), Loopback: true})
	}
	resp, _ := lo("/api/user/online", url.Values{"userid": {"a"}}, "")
	if string(resp.Body) != `{"code":10019,"msg":"online 用户在线"}` {
		t.Fatalf("online %s", resp.Body)
	}
	resp, _ = lo("/api/user/online", nil, "")
	if string(resp.Body) != `{"code":10020,"msg":"Invalid verification! 不合法校验"}` {
		t.Fatalf("missing userid %s", resp.Body)
	}

	// Send: a private message from the system pseudo-sender, same path as cmd 11.
	resp, m := lo("/api/message/send", nil, `{"chatType":2,"to":"a","content":"notice"}`)
	if resp.Status != 200 || code(m) != 10000 || m["command"].(float64) != 12 {
		t.Fatalf("send %s", resp.Body)
	}
	if cb := forwarded(t, a.one(t)); cb.From != "system" || cb.Content != "notice" {
		t.Fatalf("api message from %q", cb.From)
	}
	resp, m = lo("/api/message/send", nil, `{"chatType":2,"to":"nobody","from":"ops","content":"x"}`)
	if code(m) != 10001 {
		t.Fatalf("offline send %s", resp.Body)
	}
	if _, m = lo("/api/message/send", nil, `garbage`); code(m) != 10002 {
		t.Fatalf("bad send %v", m)
	}
	// Group send needs no membership for the API.
	st.JoinGroup(t.Context(), "g", "a")
	if _, m = lo("/api/message/send", nil, `{"chatType":1,"groupId":"g","content":"x"}`); code(m) != 10000 {
		t.Fatalf("group send %v", m)
	}

	login(t, d, "b")
	_, m = lo("/api/user/list", url.Values{"offset": {"1"}, "count": {"5"}}, "")
	data := m["data"].(map[string]any)
	if data["total"].(float64) != 2 || len(data["users"].([]any)) != 1 || data["users"].([]any)[0].(map[string]any)["userId"] != "b" {
		t.Fatalf("user list %v", m)
	}
	_, m = lo("/api/group/members", url.Values{"groupId": {"g"}}, "")
	if data := m["data"].(map[string]any); data["total"].(float64) != 1 {
		t.Fatalf("members %v", m)
	}

	a.take()
	resp, _ = lo("/api/user/close", url.Values{"userid": {"a"}}, "")
	if string(resp.Body) != `{"code":10021,"msg":"close ok! 关闭成功"}` || !a.isClosed() {
		t.Fatalf("close %s", resp.Body)
	}
	if r := a.one(t); r.Command != 14 || r.Code != 10021 {
		t.Fatalf("kicked conn got %s", r.o.JSON)
	}
	if _, m = lo("/api/user/close", nil, ""); code(m) != 10020 {
		t.Fatalf("close without userid %v", m)
	}
}

// Without an API key only loopback is trusted, and not a browser on
// loopback: a page from anywhere could otherwise post messages here.
func TestAPIRefusesBrowserOriginWithoutKey(t *testing.T) {
	d, _ := newDispatcher(t, Options{})
	got := make(chan APIResponse, 1)
	d.API(APIRequest{Path: "/api/user/online", Form: url.Values{"userid": {"x"}}, Loopback: true, Origin: "http://evil.example"}, func(r APIResponse) { got <- r })
	if r := <-got; r.Status != 403 {
		t.Fatalf("browser request without a key: HTTP %d %s", r.Status, r.Body)
	}
}
