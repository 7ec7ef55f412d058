package gateway_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/coder/websocket"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

func TestMain(m *testing.M) {
	// The many-connections test needs more than the usual soft limit.
	jimtest.RaiseFileLimit()
	os.Exit(m.Run())
}

// startServer runs jim on a free loopback port with a small static site;
// mod, when not nil, adjusts the options first.
func startServer(t testing.TB, mod func(*gateway.Options, *dispatch.Options)) *jimtest.Server {
	t.Helper()
	o := gateway.Options{
		Static: fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>jim</title>")}},
	}
	do := dispatch.Options{}
	if mod != nil {
		mod(&o, &do)
	}
	return jimtest.StartServer(t, o, do)
}

// tcpClient speaks raw J-IM TCP frames.
type tcpClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialTCP(t testing.TB, addr string) *tcpClient {
	t.Helper()
	return dialTCPRcvBuf(t, addr, 0)
}

// smallRcvBuf returns a dialer whose sockets get a receive buffer of rcvBuf
// bytes before they connect (so the window they advertise stays that
// small), or the default dialer when rcvBuf is 0. Tests that need the
// server's sockets to fill use it: how much a default loopback receiver
// takes in before it is read depends on the kernel's tcp_rmem.
func smallRcvBuf(rcvBuf int) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	return d
}

// dialTCPRcvBuf dials like dialTCP with smallRcvBuf(rcvBuf).
func dialTCPRcvBuf(t testing.TB, addr string, rcvBuf int) *tcpClient {
	t.Helper()
	c, err := smallRcvBuf(rcvBuf).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *tcpClient) send(cmd codec.Cmd, body string) {
	c.t.Helper()
	if _, err := c.c.Write(codec.AppendTCP(nil, cmd, 0, false, []byte(body))); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next frame's cmd and JSON body.
func (c *tcpClient) read() (codec.Cmd, map[string]any) {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 7)
	if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
		c.t.Fatalf("read header: %v", err)
	}
	if hdr[0] != 0x01 {
		c.t.Fatalf("version byte %#x", hdr[0])
	}
	if hdr[1]&0x20 != 0 {
		if _, err := io.ReadFull(c.br, make([]byte, 4)); err != nil {
			c.t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(c.br, hdr[2:7]); err != nil {
		c.t.Fatal(err)
	}
	n := binary.BigEndian.Uint32(hdr[3:7])
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		c.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		c.t.Fatalf("reply body %q: %v", body, err)
	}
	return codec.Cmd(int8(hdr[2])), m
}

// expect reads until a frame with the given cmd arrives (skipping notices).
func (c *tcpClient) expect(cmd codec.Cmd) map[string]any {
	c.t.Helper()
	for i := 0; i < 20; i++ {
		got, m := c.read()
		if got == cmd {
			return m
		}
	}
	c.t.Fatalf("cmd %d never arrived", cmd)
	return nil
}

func (c *tcpClient) login(user string) {
	c.t.Helper()
	c.send(codec.CmdLoginReq, fmt.Sprintf(`{"cmd":5,"userId":%q,"password":"123"}`, user))
	m := c.expect(codec.CmdLoginResp)
	if code(m) != 10007 {
		c.t.Fatalf("login %s: %v", user, m)
	}
}

// closedByServer reports whether the server closed the connection.
func (c *tcpClient) closedByServer() bool {
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c.br)
	// EOF is reported as nil by io.Copy. A server that closes with our
	// bytes still unread in its socket makes the kernel send a reset
	// instead of a FIN: closed all the same. Only the deadline means open.
	return err == nil || errors.Is(err, syscall.ECONNRESET)
}

func code(m map[string]any) int {
	f, _ := m["code"].(float64)
	return int(f)
}

type wsClient struct {
	t testing.TB
	c *websocket.Conn
}

func dialWS(t testing.TB, addr, query string) *wsClient {
	t.Helper()
	return dialWSRcvBuf(t, addr, query, 0)
}

// dialWSRcvBuf dials like dialWS with smallRcvBuf(rcvBuf).
func dialWSRcvBuf(t testing.TB, addr, query string, rcvBuf int) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts *websocket.DialOptions
	if rcvBuf > 0 {
		tr := &http.Transport{DialContext: smallRcvBuf(rcvBuf).DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		opts = &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}}
	}
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/?"+query, opts)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &wsClient{t: t, c: c}
}

func (w *wsClient) send(body string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(body)); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsClient) read() map[string]any {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		w.t.Fatalf("ws read: %v", err)
	}
	if typ != websocket.MessageText {
		w.t.Fatalf("server sent a %v frame", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		w.t.Fatalf("ws body %q: %v", b, err)
	}
	return m
}

func (w *wsClient) expect(cmd int) map[string]any {
	w.t.Helper()
	for i := 0; i < 20; i++ {
		m := w.read()
		if c, _ := m["command"].(float64); int(c) == cmd {
			return m
		}
	}
	w.t.Fatalf("command %d never arrived", cmd)
	return nil
}

func data(m map[string]any) map[string]any {
	d, _ := m["data"].(map[string]any)
	return d
}

func TestTCPAndWSChat(t *testing.T) {
	ts := startServer(t, nil)
	alice := dialTCP(t, ts.Addr)
	alice.login("alice")

	// The J-IM page logs in from the upgrade's query string.
	bob := dialWS(t, ts.Addr, "username=bob&password=123")
	if m := bob.expect(6); code(m) != 10007 {
		t.Fatalf("ws login: %v", m)
	}

	// TCP -> WS, with numbers as strings as the J-IM page sends them.
	alice.send(codec.CmdChatReq, `{"cmd":11,"from":"mallory","to":"bob","chatType":"2","msgType":"0","content":"hi bob"}`)
	if m := alice.expect(codec.CmdChatResp); code(m) != 10000 {
		t.Fatalf("chat ack: %v", m)
	}
	got := data(bob.expect(11))
	if got["content"] != "hi bob" || got["from"] != "alice" || got["to"] != "bob" {
		t.Fatalf("bob got %v (from must be the logged-in user)", got)
	}

	// WS -> TCP.
	bob.send(`{"cmd":11,"to":"alice","chatType":2,"msgType":0,"content":"hi alice"}`)
	if m := bob.expect(12); code(m) != 10000 {
		t.Fatalf("ws chat ack: %v", m)
	}
	got = data(alice.expect(codec.CmdChatReq))
	if got["content"] != "hi alice" || got["from"] != "bob" {
		t.Fatalf("alice got %v", got)
	}

	// Offline target.
	alice.send(codec.CmdChatReq, `{"cmd":11,"to":"carol","chatType":2,"content":"later"}`)
	if m := alice.expect(codec.CmdChatResp); code(m) != 10001 {
		t.Fatalf("offline ack: %v", m)
	}

	// Heartbeats on both protocols.
	alice.c.Write([]byte{0x01, 0x51, 13, 0, 0, 0, 1, 0x80}) // the Java client's raw heartbeat byte
	if m := alice.expect(codec.CmdHeartbeatReq); data(m)["hbbyte"] != float64(-128) {
		t.Fatalf("tcp heartbeat reply %v", m)
	}
	bob.send(`{"cmd":13,"hbbyte":"-127"}`)
	bob.expect(13)

	// Group chat: both join, the message reaches both (the sender too, as J-IM).
	alice.send(codec.CmdJoinGroupReq, `{"cmd":7,"groupId":"g1"}`)
	alice.expect(codec.CmdJoinGroupNotify)
	bob.send(`{"cmd":7,"groupId":"g1"}`)
	bob.expect(9)
	bob.send(`{"cmd":11,"groupId":"g1","chatType":"1","content":"hello group"}`)
	if d := data(bob.expect(11)); d["content"] != "hello group" || d["groupId"] != "g1" {
		t.Fatalf("bob's group echo: %v", d)
	}
	if d := data(alice.expect(codec.CmdChatReq)); d["content"] != "hello group" || d["from"] != "bob" {
		t.Fatalf("alice's group message: %v", d)
	}

	// Get user (type 2: all) shows the group with both members.
	alice.send(codec.CmdGetUserReq, `{"cmd":17,"userId":"alice","type":"2"}`)
	m := alice.expect(codec.CmdGetUserResp)
	if code(m) != 10003 || data(m)["userId"] != "alice" {
		t.Fatalf("get user: %v", m)
	}

	// Unknown command: J-IM's exact reply, connection kept.
	alice.send(15, `{"cmd":15}`)
	_, m = alice.read()
	for m["command"] != float64(0) {
		_, m = alice.read()
	}
	if code(m) != 10017 || m["msg"] != "cmd failed! 未知的cmd命令!" {
		t.Fatalf("unknown cmd reply %v", m)
	}
	alice.send(codec.CmdHeartbeatReq, `{}`)
	alice.expect(codec.CmdHeartbeatReq)
}

func TestTCPSplitAndStickyFrames(t *testing.T) {
	ts := startServer(t, nil)
	c := dialTCP(t, ts.Addr)
	var all []byte
	all = codec.AppendTCP(all, codec.CmdLoginReq, 0, false, []byte(`{"cmd":5,"userId":"u1"}`))
	for i := 0; i < 3; i++ {
		all = codec.AppendTCP(all, codec.CmdHeartbeatReq, 0, false, []byte(`{"cmd":13}`))
	}
	// One byte at a time, with pauses so they arrive as separate reads.
	for i := 0; i < 20; i++ {
		c.c.Write(all[i : i+1])
		time.Sleep(2 * time.Millisecond)
	}
	c.c.Write(all[20:]) // and the rest stuck together
	// Heartbeats are answered on the event loop and the login on a worker,
	// so only the counts are certain, not the order.
	counts := map[codec.Cmd]int{}
	for i := 0; i < 4; i++ {
		cmd, _ := c.read()
		counts[cmd]++
	}
	if counts[codec.CmdLoginResp] != 1 || counts[codec.CmdHeartbeatReq] != 3 {
		t.Fatalf("replies %v", counts)
	}
	// A frame with a sync seq gets its seq echoed.
	c.c.Write(codec.AppendTCP(nil, codec.CmdHeartbeatReq, 77, true, []byte(`{}`)))
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 6)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[1] != 0xF1 || binary.BigEndian.Uint32(hdr[2:6]) != 77 {
		t.Fatalf("seq frame header % x", hdr)
	}
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	ts := startServer(t, nil)
	good := dialTCP(t, ts.Addr)
	good.login("good")

	badVersion := dialTCP(t, ts.Addr)
	badVersion.c.Write([]byte{0x01, 0x51, 5, 0, 0, 0, 2, '{', '}'})
	badVersion.c.Write([]byte{0x02, 0x51, 13, 0, 0, 0, 0})
	if !badVersion.closedByServer() {
		t.Fatal("bad version byte: connection not closed")
	}

	huge := dialTCP(t, ts.Addr)
	huge.c.Write([]byte{0x01, 0x51, 11, 0x7f, 0xff, 0xff, 0xff}) // 2 GiB announced
	if !huge.closedByServer() {
		t.Fatal("oversize length: connection not closed")
	}

	garbage := dialTCP(t, ts.Addr)
	garbage.c.Write([]byte("\x00\xffhello"))
	if !garbage.closedByServer() {
		t.Fatal("garbage first bytes: connection not closed")
	}

	// Not logged in: refused, not served.
	anon := dialTCP(t, ts.Addr)
	anon.send(codec.CmdChatReq, `{"cmd":11,"to":"good","chatType":2,"content":"x"}`)
	if m := anon.expect(codec.CmdChatResp); code(m) != int(codec.StatusNotLoggedIn) {
		t.Fatalf("chat before login: %v", m)
	}

	good.send(codec.CmdHeartbeatReq, `{}`)
	good.expect(codec.CmdHeartbeatReq)
}

func TestHTTPOnSamePort(t *testing.T) {
	ts := startServer(t, nil)
	base := "http://" + ts.Addr
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := get("/healthz"); st != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("healthz %d %s", st, body)
	}
	if st, body := get("/"); st != 200 || !strings.Contains(body, "<title>jim</title>") {
		t.Fatalf("index %d %s", st, body)
	}
	if st, _ := get("/nope.txt"); st != 404 {
		t.Fatalf("missing file: %d", st)
	}

	u := dialTCP(t, ts.Addr)
	u.login("dave")
	if st, body := get("/api/user/online?userid=dave"); st != 200 || !strings.Contains(body, "10019") {
		t.Fatalf("online %d %s", st, body)
	}
	if st, body := get("/api/user/online?userid=nobody"); !strings.Contains(body, "10001") {
		t.Fatalf("offline %d %s", st, body)
	}
	resp, err := http.Post(base+"/api/message/send", "application/json",
		strings.NewReader(`{"cmd":11,"to":"dave","chatType":2,"content":"from http"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "10000") {
		t.Fatalf("api send: %s", b)
	}
	if d := data(u.expect(codec.CmdChatReq)); d["content"] != "from http" {
		t.Fatalf("dave got %v", d)
	}
	if st, body := get("/metrics"); st != 200 || !strings.Contains(body, "jim_connections") {
		t.Fatalf("metrics %d %.200s", st, body)
	}
	if st, body := get("/api/user/close?userid=dave"); st != 200 || !strings.Contains(body, "10021") {
		t.Fatalf("close %d %s", st, body)
	}
	if m := u.expect(codec.CmdCloseReq); code(m) != 10021 {
		t.Fatalf("kick ack %v", m)
	}
	if !u.closedByServer() {
		t.Fatal("kicked user still connected")
	}
}

func TestIdleAndLoginTimeouts(t *testing.T) {
	ts := startServer(t, func(o *gateway.Options, _ *dispatch.Options) {
		o.AuthTimeout = time.Second
		o.HeartbeatTimeout = 2 * time.Second
	})
	anon := dialTCP(t, ts.Addr)
	anon.send(codec.CmdHeartbeatReq, `{}`)
	anon.expect(codec.CmdHeartbeatReq)
	start := time.Now()
	if !anon.closedByServer() {
		t.Fatal("connection without login not closed")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("login deadline took %v", d)
	}

	idle := dialTCP(t, ts.Addr)
	idle.login("sleepy")
	busy := dialTCP(t, ts.Addr)
	busy.login("busy")
	stop := time.Now().Add(4 * time.Second)
	for time.Now().Before(stop) {
		busy.send(codec.CmdHeartbeatReq, `{}`)
		busy.expect(codec.CmdHeartbeatReq)
		time.Sleep(500 * time.Millisecond)
	}
	if !idle.closedByServer() {
		t.Fatal("idle connection not closed")
	}
	busy.send(codec.CmdHeartbeatReq, `{}`)
	busy.expect(codec.CmdHeartbeatReq)
}

func TestManyConnections(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 500
	}
	ts := startServer(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 200)
	conns := make([]net.Conn, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", ts.Addr, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			var b []byte
			b = codec.AppendTCP(b, codec.CmdLoginReq, 0, false, []byte(fmt.Sprintf(`{"cmd":5,"userId":"u%d"}`, i)))
			b = codec.AppendTCP(b, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
			if _, err := c.Write(b); err != nil {
				errs <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			seen := map[codec.Cmd]bool{}
			for !seen[codec.CmdLoginResp] || !seen[codec.CmdHeartbeatReq] {
				hdr := make([]byte, 7)
				if _, err := io.ReadFull(br, hdr); err != nil {
					errs <- fmt.Errorf("conn %d: %w", i, err)
					return
				}
				if _, err := io.ReadFull(br, make([]byte, binary.BigEndian.Uint32(hdr[3:]))); err != nil {
					errs <- err
					return
				}
				seen[codec.Cmd(hdr[2])] = true
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := ts.D.Sessions(); got != n {
		t.Fatalf("sessions = %d, want %d", got, n)
	}
	for _, c := range conns {
		c.Close()
	}
	if c := waitConnections(ts, 0, 10*time.Second); c != 0 {
		t.Fatalf("%d connections left open", c)
	}
}

// waitConnections waits up to timeout for the server's open connections to
// come down to want, and returns how many are open.
func waitConnections(ts *jimtest.Server, want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for ts.Srv.Connections() > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return ts.Srv.Connections()
}
