package codec

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

const postReq = "POST /api/message/send?from=a&x=1 HTTP/1.1\r\n" +
	"Host: localhost:8888\r\n" +
	"Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n" +
	"Content-Length: 15\r\n" +
	"X-Empty:\r\n" +
	"\r\n" +
	"userid=u1&x=2&y"

const wsReq = "GET /?username=tom&password=1 HTTP/1.1\r\n" +
	"Host: example.com\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: keep-alive, Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n\r\n"

func mustParse(t *testing.T, s string) *Request {
	t.Helper()
	r, n, err := ParseRequest([]byte(s), HTTPLimits{})
	if err != nil || n != len(s) || r == nil {
		t.Fatalf("ParseRequest(%q): n=%d err=%v", s, n, err)
	}
	return r
}

func TestParseRequestPost(t *testing.T) {
	r := mustParse(t, postReq)
	if r.Method != "POST" || r.Path != "/api/message/send" || r.RawQuery != "from=a&x=1" || r.Minor != 1 {
		t.Fatalf("%+v", r)
	}
	if string(r.Body) != "userid=u1&x=2&y" || !r.KeepAlive || r.Upgrade {
		t.Fatalf("%+v", r)
	}
	if r.Header("host") != "localhost:8888" || r.Header("x-empty") != "" || len(r.Headers) != 4 {
		t.Fatalf("headers %+v", r.Headers)
	}
	if r.Query("from") != "a" || r.Query("userid") != "" {
		t.Fatal("Query")
	}
	f := r.Form()
	if f.Get("userid") != "u1" || f.Get("from") != "a" || !reflect.DeepEqual(f["x"], []string{"1", "2"}) || !f.Has("y") {
		t.Fatalf("Form = %v", f)
	}
}

func TestFormIgnoresOtherBodies(t *testing.T) {
	r := mustParse(t, "POST /api/message/send?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nuserid=u1")
	if f := r.Form(); f.Get("a") != "1" || f.Has("userid") {
		t.Fatalf("Form = %v", f)
	}
}

func TestParseRequestEverySplit(t *testing.T) {
	want := mustParse(t, postReq)
	for i := 0; i < len(postReq); i++ {
		r, n, err := ParseRequest([]byte(postReq[:i]), HTTPLimits{})
		if err != nil || n != 0 || r != nil {
			t.Fatalf("prefix %d: n=%d err=%v", i, n, err)
		}
	}
	// Grow the buffer in two chunks, as a reactor appends reads.
	for i := 0; i <= len(postReq); i++ {
		buf := []byte(postReq[:i])
		r, n, err := ParseRequest(buf, HTTPLimits{})
		if n == 0 && err == nil {
			buf = append(buf, postReq[i:]...)
			r, n, err = ParseRequest(buf, HTTPLimits{})
		}
		if err != nil || n != len(postReq) || !reflect.DeepEqual(r, want) {
			t.Fatalf("split %d: n=%d err=%v", i, n, err)
		}
	}
}

func TestParseRequestPipelined(t *testing.T) {
	get := "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
	stream := []byte(postReq + "\r\n" + get + postReq)
	var paths []string
	for len(stream) > 0 {
		r, n, err := ParseRequest(stream, HTTPLimits{})
		if err != nil || n == 0 {
			t.Fatalf("n=%d err=%v rest=%q", n, err, stream)
		}
		paths = append(paths, r.Path)
		stream = stream[n:]
	}
	if strings.Join(paths, ",") != "/api/message/send,/a,/api/message/send" {
		t.Fatal(paths)
	}
}

func TestParseRequestKeepAlive(t *testing.T) {
	cases := []struct {
		req  string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false},
		{"GET / HTTP/1.0\r\n\r\n", false},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
		{"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n", true},
	}
	for _, c := range cases {
		if r := mustParse(t, c.req); r.KeepAlive != c.want {
			t.Fatalf("%q: KeepAlive=%v", c.req, r.KeepAlive)
		}
	}
}

func TestParseRequestUpgrade(t *testing.T) {
	r := mustParse(t, wsReq)
	if !r.Upgrade || r.WSKey != "dGhlIHNhbXBsZSBub25jZQ==" || r.Query("username") != "tom" || !ValidWSKey(r.WSKey) {
		t.Fatalf("%+v", r)
	}
	for _, mutate := range []func(string) string{
		func(s string) string { return strings.Replace(s, "GET", "POST", 1) },
		func(s string) string { return strings.Replace(s, "Upgrade: websocket", "Upgrade: h2c", 1) },
		func(s string) string { return strings.Replace(s, "keep-alive, Upgrade", "keep-alive", 1) },
		func(s string) string { return strings.Replace(s, "Sec-WebSocket-Key", "X-Key", 1) },
	} {
		if r := mustParse(t, mutate(wsReq)); r.Upgrade {
			t.Fatalf("upgrade detected in %q", mutate(wsReq))
		}
	}
}

func TestParseRequestHeaderLimit(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: "
	pad := 8<<10 - len(head) - 4
	ok := head + strings.Repeat("a", pad) + "\r\n\r\n"
	if len(ok) != 8<<10 {
		t.Fatal(len(ok))
	}
	mustParse(t, ok)
	tooBig := head + strings.Repeat("a", pad+1) + "\r\n\r\n"
	if _, _, err := ParseRequest([]byte(tooBig), HTTPLimits{}); err != ErrHeaderTooLarge {
		t.Fatalf("err=%v", err)
	}
	// Without the terminator the limit fires as soon as 8 KiB are buffered.
	if _, _, err := ParseRequest([]byte(tooBig[:8<<10]), HTTPLimits{}); err != ErrHeaderTooLarge {
		t.Fatalf("err=%v", err)
	}
	if _, n, err := ParseRequest([]byte(tooBig[:8<<10-1]), HTTPLimits{}); err != nil || n != 0 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if _, _, err := ParseRequest([]byte(ok), HTTPLimits{MaxHeader: 100}); err != ErrHeaderTooLarge {
		t.Fatalf("custom limit: %v", err)
	}
}

func TestParseRequestBodyLimit(t *testing.T) {
	req := "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n"
	if _, _, err := ParseRequest([]byte(req), HTTPLimits{}); err != ErrHTTPBodyTooLarge {
		t.Fatalf("err=%v", err)
	}
	req = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"
	if _, _, err := ParseRequest([]byte(req), HTTPLimits{MaxBody: 10}); err != ErrHTTPBodyTooLarge {
		t.Fatalf("err=%v", err)
	}
}

func TestParseRequestBad(t *testing.T) {
	bad := map[string]error{
		"GET / HTTP/1.1\r\n\r\n":                                                         ErrBadRequest, // no Host
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n":                                   ErrBadRequest,
		"GET /\r\nHost: h\r\n\r\n":                                                       ErrBadRequest,
		"GET / HTTP/2.0\r\nHost: h\r\n\r\n":                                              ErrBadRequest,
		"GET  / HTTP/1.1\r\nHost: h\r\n\r\n":                                             ErrBadRequest,
		"GET / x HTTP/1.1\r\nHost: h\r\n\r\n":                                            ErrBadRequest,
		"G(T / HTTP/1.1\r\nHost: h\r\n\r\n":                                              ErrBadRequest,
		"GET foo HTTP/1.1\r\nHost: h\r\n\r\n":                                            ErrBadRequest,
		"GET / HTTP/1.1\r\nHost h\r\n\r\n":                                               ErrBadRequest,
		"GET / HTTP/1.1\r\nHost : h\r\n\r\n":                                             ErrBadRequest,
		"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n":                                   ErrBadRequest,
		"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n":                                          ErrBadRequest,
		"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n":                                        ErrBadRequest,
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n":                       ErrBadRequest,
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n":                       ErrBadRequest,
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n":     ErrBadRequest,
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab": ErrBadRequest,
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\nab":                   ErrBadRequest,
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n":               ErrUnsupportedEncoding,
	}
	for req, want := range bad {
		if _, _, err := ParseRequest([]byte(req), HTTPLimits{}); err != want {
			t.Errorf("%q: err=%v want %v", req, err, want)
		}
	}
	// Equal duplicates are allowed (RFC 9110 §8.6).
	r := mustParse(t, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nab")
	if string(r.Body) != "ab" {
		t.Fatal(r.Body)
	}
	// A malformed request line is refused before the head completes.
	if _, _, err := ParseRequest([]byte("GET /\r\nHost"), HTTPLimits{}); err != ErrBadRequest {
		t.Fatalf("early: %v", err)
	}
	r = mustParse(t, "GET http://h:1/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
	if r.Path != "/p" || r.RawQuery != "q=1" {
		t.Fatalf("absolute form: %+v", r)
	}
}

func TestAppendResponse(t *testing.T) {
	got := AppendResponse(nil, 200, "application/json; charset=utf-8", []byte(`{}`), true, "Set-Cookie", "a=b\r\nX: y")
	want := "HTTP/1.1 200 OK\r\nServer: jim\r\nX-Content-Type-Options: nosniff\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n" +
		"Connection: keep-alive\r\nSet-Cookie: a=b  X: y\r\n\r\n{}"
	if string(got) != want {
		t.Fatalf("%q", got)
	}
	got = AppendResponse([]byte("x"), 404, "", nil, false)
	want = "xHTTP/1.1 404 Not Found\r\nServer: jim\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	if string(got) != want {
		t.Fatalf("%q", got)
	}
	// The response parses back as HTTP (status line aside) with the right length.
	if !bytes.HasSuffix(AppendResponse(nil, 500, "text/plain", []byte("boom"), false), []byte("\r\n\r\nboom")) {
		t.Fatal("body")
	}
}

// TestAppendResponseOneAllocation checks that a response is built in one
// allocation however long its body and headers: it is on the path of every
// HTTP API call.
func TestAppendResponseOneAllocation(t *testing.T) {
	body := make([]byte, 3000)
	for _, extra := range [][]string{nil, {"Access-Control-Allow-Origin", "*", "X-Long", string(body[:500])}} {
		n := testing.AllocsPerRun(100, func() {
			AppendResponse(nil, 200, "application/json; charset=utf-8", body, true, extra...)
		})
		if n != 1 {
			t.Errorf("%v allocations with %d extra headers, want 1", n, len(extra)/2)
		}
	}
}
