// Package apidocs runs the curl examples of docs/api.md against real
// in-process servers and checks that each one prints what the document says.
package apidocs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

const (
	docPath = "../../docs/api.md"
	// docHost is the address the local examples use; docRemoteHost is the
	// one the "from another host" examples use.
	docHost       = "localhost:8888"
	docRemoteHost = "jim.example.com:8888"
	docAPIKey     = "secret"
)

// example is one ```sh block of the document and the ```json block after it.
type example struct {
	line   int    // of the ```sh fence
	server string // open, keyed or remote
	status int    // expected HTTP status
	cmd    string
	want   string
}

var markerRE = regexp.MustCompile(`^<!--\s*(.*?)\s*-->$`)

// parseDoc extracts the examples. Every ```sh block must be preceded by a
// marker comment such as <!-- server: keyed; status: 401 --> and followed by
// a ```json block.
func parseDoc(t *testing.T, text string) []example {
	t.Helper()
	lines := strings.Split(text, "\n")
	var out []example
	var marker map[string]string
	var cur *example
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if m := markerRE.FindStringSubmatch(l); m != nil && strings.HasPrefix(m[1], "server:") {
			marker = map[string]string{}
			for _, kv := range strings.Split(m[1], ";") {
				k, v, ok := strings.Cut(kv, ":")
				if !ok {
					t.Fatalf("api.md:%d: bad marker %q", i+1, l)
				}
				marker[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			continue
		}
		if l != "```sh" && l != "```json" {
			continue
		}
		start := i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("api.md:%d: unterminated code block", start+1)
		}
		block := strings.Join(body, "\n")
		if l == "```sh" {
			if cur != nil {
				t.Fatalf("api.md:%d: example has no ```json block after it", cur.line)
			}
			if marker == nil {
				t.Fatalf("api.md:%d: ```sh block without a <!-- server: … --> marker before it", start+1)
			}
			ex := &example{line: start + 1, server: marker["server"], status: 200, cmd: block}
			if s, ok := marker["status"]; ok {
				n, err := strconv.Atoi(s)
				if err != nil {
					t.Fatalf("api.md:%d: bad status %q", start+1, s)
				}
				ex.status = n
			}
			switch ex.server {
			case "open", "keyed", "remote":
			default:
				t.Fatalf("api.md:%d: unknown server %q", start+1, ex.server)
			}
			if !strings.HasPrefix(strings.TrimSpace(block), "curl ") {
				t.Fatalf("api.md:%d: a ```sh block must be one curl command", start+1)
			}
			marker = nil
			cur = ex
			continue
		}
		if cur != nil {
			cur.want = block
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		t.Fatalf("api.md:%d: example has no ```json block after it", cur.line)
	}
	return out
}

// externalIP returns an IPv4 address of this machine that is not loopback,
// or "" if there is none.
func externalIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
			continue
		}
		return n.IP.String()
	}
	return ""
}

// tcpUser is a logged-in J-IM TCP client.
type tcpUser struct {
	c  net.Conn
	br *bufio.Reader
}

func (u *tcpUser) send(cmd codec.Cmd, body string) error {
	_, err := u.c.Write(codec.AppendTCP(nil, cmd, 0, false, []byte(body)))
	return err
}

// waitFor reads frames until one has the command cmd and a body that ok
// accepts.
func (u *tcpUser) waitFor(cmd codec.Cmd, ok func(map[string]any) bool) error {
	_ = u.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer u.c.SetReadDeadline(time.Time{})
	for {
		hdr := make([]byte, 7)
		if _, err := io.ReadFull(u.br, hdr[:2]); err != nil {
			return err
		}
		if hdr[1]&0x20 != 0 {
			if _, err := io.ReadFull(u.br, make([]byte, 4)); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(u.br, hdr[2:7]); err != nil {
			return err
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[3:7]))
		if _, err := io.ReadFull(u.br, body); err != nil {
			return err
		}
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		if codec.Cmd(int8(hdr[2])) == cmd && ok(m) {
			return nil
		}
	}
}

// login connects user over TCP, logs in and joins the groups.
func login(t *testing.T, addr, user string, groups ...string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	u := &tcpUser{c: c, br: bufio.NewReader(c)}
	if err := u.send(codec.CmdLoginReq, fmt.Sprintf(`{"cmd":5,"userId":%q}`, user)); err != nil {
		t.Fatal(err)
	}
	if err := u.waitFor(codec.CmdLoginResp, func(m map[string]any) bool { return true }); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	for _, g := range groups {
		if err := u.send(codec.CmdJoinGroupReq, fmt.Sprintf(`{"cmd":7,"groupId":%q}`, g)); err != nil {
			t.Fatal(err)
		}
		err := u.waitFor(codec.CmdJoinGroupNotify, func(m map[string]any) bool {
			who, _ := m["user"].(map[string]any)
			return m["group"] == g && who != nil && who["userId"] == user
		})
		if err != nil {
			t.Fatalf("%s joining %s: %v", user, g, err)
		}
	}
	// Keep reading so that messages sent to the user never back up.
	go func() { _, _ = io.Copy(io.Discard, u.br) }()
}

// fixture sets up what the document says the examples assume: alice and
// bob connected over TCP, both members of group 100; carol never connected.
func fixture(t *testing.T, addr string) {
	t.Helper()
	login(t, addr, "alice", "100")
	login(t, addr, "bob", "100")
}

// varying names the fields whose values change from run to run; they are
// matched by presence only, as is any field documented as "…".
var varying = map[string]bool{"id": true, "seq": true}

// match reports the first difference between the documented value want and
// the actual value got.
func match(path string, want, got any) error {
	if s, ok := want.(string); ok && s == "…" {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %v", path, got)
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: missing", path, k)
			}
			if varying[k] {
				continue
			}
			if err := match(path+"."+k, wv, gv); err != nil {
				return err
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Errorf("%s.%s: not documented (value %v)", path, k, g[k])
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: want %d elements, got %v", path, len(w), got)
		}
		for i := range w {
			if err := match(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Errorf("%s: want %v, got %v", path, want, got)
		}
		return nil
	}
}

func decode(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

// statusMark separates the response body from what -w appends.
const statusMark = "\n@@apidocs@@ "

func TestAPIExamples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: run `make test-deps`")
	}
	_, self, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(self), docPath))
	if err != nil {
		t.Fatal(err)
	}
	examples := parseDoc(t, string(raw))
	// Every endpoint must have at least one example.
	for _, route := range []string{"/api/message/send", "/api/user/online", "/api/user/close", "/api/user/list", "/api/group/members"} {
		found := false
		for _, ex := range examples {
			found = found || strings.Contains(ex.cmd, route)
		}
		if !found {
			t.Errorf("docs/api.md has no example for %s", route)
		}
	}

	addrs := map[string]string{}
	for _, name := range []string{"open", "keyed"} {
		addr, err := jimtest.FreeAddr("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		key := ""
		if name == "keyed" {
			key = docAPIKey
		}
		jimtest.StartServer(t, gateway.Options{Addr: addr}, dispatch.Options{APIKey: key})
		fixture(t, addr)
		addrs[name] = addr
	}
	if ip := externalIP(); ip != "" {
		// The same machine, but reached through a non-loopback address, so
		// the server sees a non-loopback peer.
		if addr, err := jimtest.FreeAddr(ip); err == nil {
			jimtest.StartServer(t, gateway.Options{Addr: addr}, dispatch.Options{})
			addrs["remote"] = addr
		}
	}

	for _, ex := range examples {
		name := fmt.Sprintf("line%d", ex.line)
		t.Run(name, func(t *testing.T) {
			addr, ok := addrs[ex.server]
			if !ok {
				t.Skipf("no non-loopback address on this machine for the %s example", ex.server)
			}
			cmd := strings.ReplaceAll(ex.cmd, docHost, addr)
			cmd = strings.ReplaceAll(cmd, docRemoteHost, addr)
			// Report the status and content type after the body.
			cmd = strings.Replace(cmd, "curl ", `curl -w '`+strings.ReplaceAll(statusMark, "\n", `\n`)+`%{http_code} %{content_type}' `, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stderr bytes.Buffer
			c := exec.CommandContext(ctx, "sh", "-c", cmd)
			c.Stderr = &stderr
			out, err := c.Output()
			if err != nil {
				t.Fatalf("api.md:%d: %s: %v\n%s", ex.line, cmd, err, stderr.String())
			}
			body, trailer, found := strings.Cut(string(out), statusMark)
			if !found {
				t.Fatalf("api.md:%d: no status in curl output %q", ex.line, out)
			}
			code, ctype, _ := strings.Cut(strings.TrimSpace(trailer), " ")
			if code != strconv.Itoa(ex.status) {
				t.Errorf("api.md:%d: HTTP status %s, documented %d (body %s)", ex.line, code, ex.status, body)
			}
			if ctype != "application/json; charset=utf-8" {
				t.Errorf("api.md:%d: Content-Type %q", ex.line, ctype)
			}
			want, err := decode(ex.want)
			if err != nil {
				t.Fatalf("api.md:%d: documented JSON: %v", ex.line, err)
			}
			got, err := decode(body)
			if err != nil {
				t.Fatalf("api.md:%d: reply %q: %v", ex.line, body, err)
			}
			if err := match("$", want, got); err != nil {
				t.Errorf("api.md:%d: %v\ndocumented: %s\ngot:        %s", ex.line, err, ex.want, body)
			}
		})
	}
}
