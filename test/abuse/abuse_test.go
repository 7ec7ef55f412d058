// Package abuse_test runs the gateway under attack: a couple of thousand
// hostile connections sending garbage, half frames, huge length prefixes and
// handshakes that never finish, while real users chat. The real users must
// see every message and no error; afterwards every hostile connection must be
// gone within the login deadline and the heap back near where it started.
package abuse_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

const (
	hostileConns = 2000
	authTimeout  = 2 * time.Second
	pairs        = 4
	chatMessages = 150 // per direction per pair
	chatInterval = 30 * time.Millisecond
	heapMargin   = 20 << 20
)

func TestMain(m *testing.M) {
	// Two thousand connections are four thousand descriptors in one process.
	jimtest.RaiseFileLimit()
	os.Exit(m.Run())
}

func TestAbuse(t *testing.T) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur < 2*hostileConns+500 {
		t.Skipf("open-file limit %d is too low for %d connections", r.Cur, hostileConns)
	}
	cert := jimtest.WriteCert(t, 1, "", "")
	reg := prometheus.NewRegistry()
	ts := jimtest.StartServer(t, gateway.Options{
		AuthTimeout: authTimeout,
		Registry:    reg,
		TLSCertFile: cert.CertFile,
		TLSKeyFile:  cert.KeyFile,
	}, dispatch.Options{})
	addr, srv := ts.Addr, ts.Srv

	// Real users: TCP and WebSocket, in pairs, both ways.
	var users []*user
	for p := 0; p < pairs; p++ {
		for side := 0; side < 2; side++ {
			name := fmt.Sprintf("u%d%c", p, 'a'+side)
			ws := p == 2 || (p == 3 && side == 1)
			users = append(users, connectUser(t, addr, name, ws))
		}
	}
	nReal := len(users)
	waitFor(t, 5*time.Second, "real users connected", func() bool { return srv.Connections() == nReal })
	baseline := heapInuse()
	t.Logf("baseline: %d connections, heap in use %d KiB", srv.Connections(), baseline>>10)

	hello := clientHello(t)
	var chat sync.WaitGroup
	chatCtx, stopChat := context.WithCancel(context.Background())
	defer stopChat()
	for i, u := range users {
		peer := users[i^1]
		chat.Add(1)
		go func() {
			defer chat.Done()
			u.chatWith(chatCtx, peer.name)
		}()
	}

	// The attack, while the users chat.
	time.Sleep(200 * time.Millisecond)
	var (
		hostile  sync.WaitGroup
		dialed   sync.WaitGroup
		cut      atomic.Int64 // closed by the server
		lingered atomic.Int64 // still open when the test gave up on them
		dialFail atomic.Int64
	)
	kinds := hostileKinds(hello)
	sem := make(chan struct{}, 200) // dials in flight
	attackStart := time.Now()
	for i := 0; i < hostileConns; i++ {
		sem <- struct{}{}
		hostile.Add(1)
		dialed.Add(1)
		go func() {
			defer hostile.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			<-sem
			dialed.Done()
			if err != nil {
				dialFail.Add(1)
				return
			}
			defer c.Close()
			k := kinds[i%len(kinds)]
			for _, chunk := range k.chunks(i) {
				if _, err := c.Write(chunk); err != nil {
					cut.Add(1) // already refused
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			// Never read what the server says; just wait for it to hang up.
			_ = c.SetReadDeadline(time.Now().Add(authTimeout + 8*time.Second))
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				lingered.Add(1)
				return
			}
			cut.Add(1)
		}()
	}
	dialed.Wait()
	lastDial := time.Now()
	t.Logf("%d hostile connections opened in %v", hostileConns, lastDial.Sub(attackStart).Round(time.Millisecond))

	// Every hostile connection is gone within the login deadline (plus the
	// timing wheel's one-second granularity and some slack).
	var drained time.Duration
	waitFor(t, authTimeout+4*time.Second, "hostile connections closed", func() bool {
		drained = time.Since(lastDial)
		return srv.Connections() == nReal
	})
	t.Logf("server back to %d connections %v after the last hostile dial", nReal, drained.Round(10*time.Millisecond))
	hostile.Wait()
	if n := dialFail.Load(); n > 0 {
		t.Errorf("%d hostile dials failed", n)
	}
	if n := lingered.Load(); n > 0 {
		t.Fatalf("%d hostile connections never closed by the server", n)
	}

	chat.Wait()
	for _, u := range users {
		u.waitAll(t, users, chatMessages)
	}
	for _, u := range users {
		u.check(t)
	}
	if n := srv.Connections(); n != nReal {
		t.Fatalf("%d connections after the attack, want the %d real users", n, nReal)
	}

	after := heapInuse()
	t.Logf("heap in use after the attack %d KiB (baseline %d KiB)", after>>10, baseline>>10)
	t.Logf("disconnects by reason: %s", disconnectReasons(t, reg))
	if after > baseline+heapMargin {
		t.Fatalf("heap in use %d MiB after the attack, baseline %d MiB", after>>20, baseline>>20)
	}
}

// kind is one way of misbehaving: the chunks written, with short pauses
// between them, before the connection goes silent.
type kind struct {
	name   string
	chunks func(i int) [][]byte
}

func hostileKinds(hello []byte) []kind {
	tcpHeader := func(cmd byte, length uint32) []byte {
		// version, flags (no sync, no compression), cmd, body length
		h := []byte{0x01, 0x00, cmd}
		return binary.BigEndian.AppendUint32(h, length)
	}
	wsUpgrade := "GET /?x=1 HTTP/1.1\r\nHost: jim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	random := func(i, n int) []byte {
		r := mrand.New(mrand.NewPCG(uint64(i), 7))
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		return b
	}
	one := func(b ...[]byte) [][]byte { return b }
	return []kind{
		{"garbage", func(i int) [][]byte { return one(random(i, 64+i%512)) }},
		{"garbage after a version byte", func(i int) [][]byte { return one(append([]byte{0x01}, random(i, 200)...)) }},
		{"half TCP frame", func(i int) [][]byte {
			return one(append(tcpHeader(byte(codec.CmdLoginReq), 100), `{"cmd":5,"us`...))
		}},
		{"huge TCP length", func(i int) [][]byte { return one(tcpHeader(byte(codec.CmdChatReq), 0x7fffffff), []byte("{}")) }},
		{"TCP header only", func(i int) [][]byte { return one(tcpHeader(byte(codec.CmdLoginReq), 4096)[:5]) }},
		{"HTTP headers that never end", func(i int) [][]byte {
			return one([]byte("GET /index.html HTTP/1.1\r\nHost: jim\r\n"), []byte("X-Slow: a"), []byte("b"))
		}},
		{"HTTP body that never comes", func(i int) [][]byte {
			return one([]byte("POST /api/chat HTTP/1.1\r\nHost: jim\r\nContent-Length: 500000\r\n\r\n{\"x\":"))
		}},
		{"huge HTTP header", func(i int) [][]byte {
			return one([]byte("GET / HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 64<<10)))
		}},
		{"WebSocket handshake, no frame", func(i int) [][]byte { return one([]byte(wsUpgrade)) }},
		{"WebSocket half frame", func(i int) [][]byte {
			return one([]byte(wsUpgrade), []byte{0x81, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 'x'})
		}},
		{"WebSocket huge length", func(i int) [][]byte {
			return one([]byte(wsUpgrade), []byte{0x82, 0xff, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4})
		}},
		{"TLS ClientHello fragment", func(i int) [][]byte { return one(hello[:5+i%(len(hello)-5)]) }},
		{"TLS ClientHello, no finish", func(i int) [][]byte { return one(hello) }},
		{"TLS record header only", func(i int) [][]byte { return one(hello[:3]) }},
		{"TLS huge record", func(i int) [][]byte { return one([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, random(i, 300)) }},
		{"nothing at all", func(i int) [][]byte { return nil }},
	}
}

// clientHello captures the first flight of a Go TLS client.
func clientHello(t *testing.T) []byte {
	t.Helper()
	cc := &captureConn{}
	tc := tls.Client(cc, &tls.Config{ServerName: "jim", InsecureSkipVerify: true})
	_ = tc.Handshake() // fails on the first read, after writing the hello
	if len(cc.buf) < 50 || cc.buf[0] != 0x16 {
		t.Fatalf("captured ClientHello %x", cc.buf)
	}
	return cc.buf
}

type captureConn struct {
	net.Conn
	buf []byte
}

func (c *captureConn) Write(b []byte) (int, error) { c.buf = append(c.buf, b...); return len(b), nil }
func (c *captureConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *captureConn) Close() error                { return nil }
func (c *captureConn) SetDeadline(time.Time) error { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error {
	return nil
}

// user is a real client that chats with its peer and checks every reply.
type user struct {
	name  string
	send  func(body []byte) error
	close func()

	mu      sync.Mutex
	got     map[string]int // chat messages received, by sender
	acks    int            // cmd 12 with code 10000
	sent    int
	errs    []string
	readErr error
	done    bool
}

func connectUser(t *testing.T, addr, name string, ws bool) *user {
	t.Helper()
	u := &user{name: name, got: map[string]int{}}
	login := make(chan struct{})
	var once sync.Once
	if ws {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/?username="+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadLimit(1 << 20)
		var wmu sync.Mutex
		u.send = func(b []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return c.Write(ctx, websocket.MessageText, b)
		}
		u.close = func() { c.CloseNow() }
		go func() {
			for {
				_, b, err := c.Read(context.Background())
				if err != nil {
					u.fail(err)
					return
				}
				var m map[string]any
				if err := json.Unmarshal(b, &m); err != nil {
					u.fail(fmt.Errorf("bad JSON %q", b))
					return
				}
				cmd, _ := m["command"].(float64)
				u.handle(int(cmd), m, func() { once.Do(func() { close(login) }) })
			}
		}()
	} else {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var wmu sync.Mutex
		u.send = func(b []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			cmd, _ := codec.PeekCmd(b)
			_, err := c.Write(codec.AppendTCP(nil, cmd, 0, false, b))
			return err
		}
		u.close = func() { c.Close() }
		go func() {
			br := bufio.NewReader(c)
			for {
				cmd, body, err := jimtest.ReadFrame(br)
				if err != nil {
					u.fail(err)
					return
				}
				var m map[string]any
				if err := json.Unmarshal(body, &m); err != nil {
					u.fail(fmt.Errorf("bad JSON %q", body))
					return
				}
				u.handle(int(cmd), m, func() { once.Do(func() { close(login) }) })
			}
		}()
		if err := u.send([]byte(`{"cmd":5,"userId":"` + name + `","password":"x"}`)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		u.mu.Lock()
		u.done = true
		u.mu.Unlock()
		u.close()
	})
	select {
	case <-login:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no login reply", name)
	}
	return u
}

func (u *user) fail(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.done && u.readErr == nil {
		u.readErr = err
	}
}

func (u *user) handle(cmd int, m map[string]any, loggedIn func()) {
	code, _ := m["code"].(float64)
	u.mu.Lock()
	defer u.mu.Unlock()
	switch cmd {
	case int(codec.CmdLoginResp):
		if int(code) != int(codec.StatusLoginOK) {
			u.errs = append(u.errs, fmt.Sprintf("login: %v", m))
			return
		}
		loggedIn()
	case int(codec.CmdChatReq):
		d, _ := m["data"].(map[string]any)
		if d == nil {
			d = m
		}
		from, _ := d["from"].(string)
		content, _ := d["content"].(string)
		want := fmt.Sprintf("%s->%s #%d", from, u.name, u.got[from])
		if content != want {
			u.errs = append(u.errs, fmt.Sprintf("got %q, want %q", content, want))
		}
		u.got[from]++
	case int(codec.CmdChatResp):
		if int(code) != int(codec.StatusOK) {
			u.errs = append(u.errs, fmt.Sprintf("chat reply %v", m))
			return
		}
		u.acks++
	}
}

// chatWith sends chatMessages private messages to peer at a steady pace.
func (u *user) chatWith(ctx context.Context, peer string) {
	tk := time.NewTicker(chatInterval)
	defer tk.Stop()
	for n := 0; n < chatMessages; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		body := fmt.Sprintf(`{"cmd":11,"chatType":2,"to":%q,"msgType":0,"content":"%s->%s #%d"}`, peer, u.name, peer, n)
		if err := u.send([]byte(body)); err != nil {
			u.fail(err)
			return
		}
		u.mu.Lock()
		u.sent++
		u.mu.Unlock()
	}
}

// waitAll waits until u has its peer's messages and the acks of its own.
func (u *user) waitAll(t *testing.T, users []*user, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		u.mu.Lock()
		total := 0
		for _, c := range u.got {
			total += c
		}
		ok := total >= n && u.acks >= u.sent
		u.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *user) check(t *testing.T) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.readErr != nil {
		t.Errorf("%s: connection error: %v", u.name, u.readErr)
	}
	for _, e := range u.errs {
		t.Errorf("%s: %s", u.name, e)
	}
	total := 0
	for _, c := range u.got {
		total += c
	}
	if u.sent != chatMessages || u.acks != u.sent || total != chatMessages {
		t.Errorf("%s: sent %d, acknowledged %d, received %d (want %d each)", u.name, u.sent, u.acks, total, chatMessages)
	}
}

func heapInuse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func disconnectReasons(t *testing.T, reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, mf := range mfs {
		if mf.GetName() != "jim_disconnects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					parts = append(parts, fmt.Sprintf("%s=%v", lp.GetValue(), m.GetCounter().GetValue()))
				}
			}
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
