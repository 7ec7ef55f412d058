package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"jim/codec"
)

// fakeServer is a minimal J-IM peer for the integration tests: it speaks the
// TCP framing and the WebSocket upgrade on one port, accepts every login,
// answers heartbeats and relays private and group chats. It keeps the tests
// independent of the real gateway, which other packages test themselves.
type fakeServer struct {
	ln     net.Listener
	mu     sync.Mutex
	users  map[string]*fakeConn
	groups map[string][]*fakeConn
	wg     sync.WaitGroup
	logins atomic.Int64
	// The first closeFirst logins are answered with a close, the next
	// ignoreFirst not at all: a server that sheds load.
	closeFirst, ignoreFirst atomic.Int64
}

type fakeConn struct {
	c  net.Conn
	ws bool
	mu sync.Mutex
}

func (f *fakeConn) send(cmd codec.Cmd, body []byte) {
	var b []byte
	if f.ws {
		b = codec.AppendWSFrame(nil, codec.WSText, body)
	} else {
		b = codec.AppendTCP(nil, cmd, 0, false, body)
	}
	f.mu.Lock()
	_, _ = f.c.Write(b)
	f.mu.Unlock()
}

func startFake(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, users: map[string]*fakeConn{}, groups: map[string][]*fakeConn{}}
	var conns []net.Conn
	var cmu sync.Mutex
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	fc := &fakeConn{c: c}
	if first[0] == codec.TCPVersion {
		var buf []byte
		tmp := make([]byte, 32<<10)
		for {
			n, err := br.Read(tmp)
			if err != nil {
				return
			}
			buf = append(buf, tmp[:n]...)
			for {
				f, used, err := codec.DecodeTCP(buf, 0)
				if err != nil {
					return
				}
				if used == 0 {
					break
				}
				buf = buf[used:]
				s.handle(fc, f.Cmd, f.Body)
			}
		}
	}
	// WebSocket: read the request head, log in from the query, then frames.
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	fc.ws = true
	_, _ = c.Write(codec.AppendWSUpgrade(nil, req.Header.Get("Sec-WebSocket-Key")))
	if u := req.URL.Query().Get("username"); u != "" {
		s.login(fc, u)
	}
	var d codec.WSDecoder
	var buf []byte
	tmp := make([]byte, 32<<10)
	for {
		n, err := br.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
		for {
			msg, ok, used, err := d.Decode(buf)
			if err != nil {
				return
			}
			if used == 0 {
				break
			}
			buf = buf[used:]
			if ok && msg.Op == codec.WSText {
				cmd, _ := codec.PeekCmd(msg.Payload)
				s.handle(fc, cmd, msg.Payload)
			}
		}
	}
}

func (s *fakeServer) login(fc *fakeConn, user string) {
	s.logins.Add(1)
	s.mu.Lock()
	s.users[user] = fc
	s.mu.Unlock()
	fc.send(codec.CmdLoginResp, []byte(`{"code":10007,"command":6,"msg":"ok"}`))
}

func (s *fakeServer) handle(fc *fakeConn, cmd codec.Cmd, body []byte) {
	var m struct {
		UserID   string `json:"userId"`
		To       string `json:"to"`
		GroupID  string `json:"groupId"`
		ChatType int    `json:"chatType"`
	}
	_ = json.Unmarshal(body, &m)
	switch cmd {
	case codec.CmdLoginReq:
		if s.closeFirst.Add(-1) >= 0 {
			_ = fc.c.Close()
			return
		}
		if s.ignoreFirst.Add(-1) >= 0 {
			return
		}
		s.login(fc, m.UserID)
	case codec.CmdHeartbeatReq:
		fc.send(codec.CmdHeartbeatReq, []byte(`{"command":13,"data":{"hbbyte":-128}}`))
	case codec.CmdJoinGroupReq:
		s.mu.Lock()
		s.groups[m.GroupID] = append(s.groups[m.GroupID], fc)
		s.mu.Unlock()
	case codec.CmdChatReq:
		fwd := append(append([]byte(`{"command":11,"data":`), body...), '}')
		s.mu.Lock()
		var to []*fakeConn
		if m.ChatType == 1 {
			to = append(to, s.groups[m.GroupID]...)
		} else if c := s.users[m.To]; c != nil {
			to = append(to, c)
		}
		s.mu.Unlock()
		code := `10000`
		if len(to) == 0 {
			code = `10001`
		}
		fc.send(codec.CmdChatResp, []byte(`{"code":`+code+`,"command":12,"msg":"ok"}`))
		for _, c := range to {
			c.send(codec.CmdChatReq, fwd)
		}
	}
}

func runFake(t *testing.T, s *fakeServer, cfg Config) *Result {
	t.Helper()
	cfg.Addrs = []string{s.ln.Addr().String()}
	if cfg.Duration == 0 {
		cfg.Duration = 2 * time.Second
	}
	cfg.ConnectTimeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("%s/%s: %v", cfg.Scenario, cfg.Proto, err)
	}
	if res.ConnsEstablished != int64(cfg.Conns) || res.Errors != 0 {
		t.Fatalf("%s/%s: established %d/%d, errors %d %v", cfg.Scenario, cfg.Proto,
			res.ConnsEstablished, cfg.Conns, res.Errors, res.ErrorKinds)
	}
	return res
}

func TestIntegrationIdle(t *testing.T) {
	s := startFake(t)
	// The fake server runs in this process, so its RSS is ours.
	res := runFake(t, s, Config{Scenario: ScenarioIdle, Conns: 50, Heartbeat: 500 * time.Millisecond,
		ServerPIDs: []int{os.Getpid()}, SrcIPs: mustIPs(t, "127.0.0.2-127.0.0.3")})
	if res.Heartbeats == 0 {
		t.Error("no heartbeat replies")
	}
	if res.ServerRSSBytes == 0 {
		t.Error("server RSS not sampled")
	}
}

// A login the server drops or leaves unanswered is retried, and the run
// says how often and why.
func TestIntegrationConnectRetries(t *testing.T) {
	s := startFake(t)
	s.closeFirst.Store(4)
	s.ignoreFirst.Store(3)
	res := runFake(t, s, Config{Scenario: ScenarioIdle, Conns: 20, Heartbeat: time.Minute,
		ConnectRetries: 2, LoginTimeout: 300 * time.Millisecond, Duration: 500 * time.Millisecond})
	if res.ConnsLive != 20 {
		t.Errorf("open at the end: %d, want 20", res.ConnsLive)
	}
	want := map[string]int64{"closed before login": 4, "login timeout": 3}
	if res.ConnectRetries != 7 || !maps.Equal(res.RetryKinds, want) {
		t.Errorf("retries %d %v, want 7 %v", res.ConnectRetries, res.RetryKinds, want)
	}
	if got := s.logins.Load(); got != 20 {
		t.Errorf("server answered %d logins, want 20", got)
	}

	// Without retries the same faults are failures.
	s2 := startFake(t)
	s2.closeFirst.Store(2)
	cfg := Config{Scenario: ScenarioIdle, Conns: 5, Heartbeat: time.Minute, Duration: 200 * time.Millisecond,
		Addrs: []string{s2.ln.Addr().String()}, ConnectTimeout: 5 * time.Second}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnsEstablished != 3 || res.ErrorKinds["closed before login"] != 2 || res.ConnectRetries != 0 {
		t.Errorf("no retries: established %d, errors %v, retries %d", res.ConnsEstablished, res.ErrorKinds, res.ConnectRetries)
	}
}

func mustIPs(t *testing.T, s string) []netip.Addr {
	t.Helper()
	ips, err := ParseIPRanges(s)
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

func TestIntegrationChat(t *testing.T) {
	s := startFake(t)
	for _, proto := range []string{"tcp", "ws"} {
		res := runFake(t, s, Config{Scenario: ScenarioChat, Proto: proto, Conns: 20, Rate: 500,
			UserPrefix: "chat-" + proto + "-"})
		if res.Sent == 0 || res.Delivered == 0 || res.Delivered != res.ExpectedDelivered {
			t.Fatalf("%s: sent %d delivered %d expected %d", proto, res.Sent, res.Delivered, res.ExpectedDelivered)
		}
		if res.P50Ms <= 0 || res.P99Ms < res.P50Ms || res.MaxMs < res.P999Ms {
			t.Errorf("%s: odd latency p50 %v p99 %v p999 %v max %v", proto, res.P50Ms, res.P99Ms, res.P999Ms, res.MaxMs)
		}
		var out bytes.Buffer
		WriteTable(&out, res)
		if !strings.Contains(out.String(), "deliveries/s") {
			t.Errorf("table:\n%s", out.String())
		}
	}
}

func TestIntegrationGroup(t *testing.T) {
	s := startFake(t)
	res := runFake(t, s, Config{Scenario: ScenarioGroup, Conns: 30, GroupSize: 10, Rate: 100,
		Duration: time.Second})
	if res.Sent == 0 || res.Delivered < res.Sent*10*9/10 {
		t.Fatalf("sent %d delivered %d", res.Sent, res.Delivered)
	}
}

func TestIntegrationRefusedAndUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := Config{Scenario: ScenarioIdle, Addrs: []string{addr}, Conns: 3, Duration: time.Second,
		ConnectTimeout: 5 * time.Second}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "cannot connect") {
		t.Errorf("unreachable: %v", err)
	}

	// A server that refuses every login.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				_, _ = c.Read(buf)
				_, _ = c.Write(codec.AppendTCP(nil, codec.CmdLoginResp, 0, false,
					[]byte(`{"code":10008,"command":6,"msg":"login failed"}`)))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	cfg.Addrs = []string{ln.Addr().String()}
	_, err = Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "10008") {
		t.Errorf("refused login: %v", err)
	}
}
