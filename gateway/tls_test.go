package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/cpu"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

func startTLSServer(t testing.TB, tc *jimtest.Cert, mod func(*gateway.Options, *dispatch.Options)) *jimtest.Server {
	t.Helper()
	return startServer(t, func(o *gateway.Options, do *dispatch.Options) {
		o.TLSCertFile, o.TLSKeyFile = tc.CertFile, tc.KeyFile
		if mod != nil {
			mod(o, do)
		}
	})
}

func dialTLS(t testing.TB, addr string, conf *tls.Config) (*tcpClient, *tls.Conn) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{t: t, c: c, br: bufio.NewReader(c)}, c
}

func httpsClient(conf *tls.Config) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: false},
	}
}

func labeledCounter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// J-IM TCP, WebSocket and HTTP, each inside TLS and in the clear, all on one
// port and talking to each other.
func TestTLSOnSamePort(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	reg := prometheus.NewRegistry()
	ts := startTLSServer(t, cert, func(o *gateway.Options, _ *dispatch.Options) { o.Registry = reg })
	conf := cert.ClientConfig()

	alice, _ := dialTLS(t, ts.Addr, conf) // J-IM TCP over TLS
	alice.login("alice")
	bob := dialTCP(t, ts.Addr) // plain J-IM TCP
	bob.login("bob")

	hc := httpsClient(conf)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss://"+ts.Addr+"/?username=carol&password=123", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	carol := &wsClient{t: t, c: ws}
	if m := carol.expect(6); code(m) != 10007 {
		t.Fatalf("wss login: %v", m)
	}
	plainWS := dialWS(t, ts.Addr, "username=dan")
	plainWS.expect(6)

	// TLS TCP -> plain TCP.
	alice.send(codec.CmdChatReq, `{"cmd":11,"to":"bob","chatType":2,"content":"over tls"}`)
	if m := alice.expect(codec.CmdChatResp); code(m) != 10000 {
		t.Fatalf("chat ack: %v", m)
	}
	if d := data(bob.expect(codec.CmdChatReq)); d["content"] != "over tls" || d["from"] != "alice" {
		t.Fatalf("bob got %v", d)
	}
	// Plain TCP -> WSS.
	bob.send(codec.CmdChatReq, `{"cmd":11,"to":"carol","chatType":2,"content":"to wss"}`)
	if d := data(carol.expect(11)); d["content"] != "to wss" || d["from"] != "bob" {
		t.Fatalf("carol got %v", d)
	}
	// WSS -> TLS TCP, with a message bigger than one TLS record both ways.
	big := strings.Repeat("é", 40<<10)
	carol.send(`{"cmd":11,"to":"alice","chatType":2,"content":"` + big + `"}`)
	if m := carol.expect(12); code(m) != 10000 {
		t.Fatalf("wss chat ack: %v", m)
	}
	if d := data(alice.expect(codec.CmdChatReq)); d["content"] != big || d["from"] != "carol" {
		t.Fatalf("alice got %.80v", d)
	}
	// Plain WS -> WSS.
	plainWS.send(`{"cmd":11,"to":"carol","chatType":2,"content":"ws to wss"}`)
	if d := data(carol.expect(11)); d["content"] != "ws to wss" {
		t.Fatalf("carol got %v", d)
	}

	// HTTPS: health, a static file, and API calls answered asynchronously,
	// over one kept-alive connection.
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.TLS == nil {
			t.Fatalf("GET %s: not over TLS", url)
		}
		return resp.StatusCode, string(b)
	}
	base := "https://" + ts.Addr
	if st, body := get(base + "/healthz"); st != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("healthz %d %s", st, body)
	}
	if st, body := get(base + "/"); st != 200 || !strings.Contains(body, "<title>jim</title>") {
		t.Fatalf("index %d %s", st, body)
	}
	for i := 0; i < 3; i++ {
		if st, body := get(base + "/api/user/online?userid=alice"); st != 200 || !strings.Contains(body, "10019") {
			t.Fatalf("online %d %s", st, body)
		}
	}
	resp, err := hc.Post(base+"/api/message/send", "application/json",
		strings.NewReader(`{"cmd":11,"to":"alice","chatType":2,"content":"from https"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "10000") {
		t.Fatalf("api send: %s", b)
	}
	if d := data(alice.expect(codec.CmdChatReq)); d["content"] != "from https" {
		t.Fatalf("alice got %v", d)
	}
	// Plain HTTP still works on the same port.
	if resp, err := http.Get("http://" + ts.Addr + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("plain healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A graceful close from the server side: kicked over the API, the TLS
	// client reads the close ack and then a clean EOF (close_notify).
	if st, body := get(base + "/api/user/close?userid=alice"); st != 200 || !strings.Contains(body, "10021") {
		t.Fatalf("close %d %s", st, body)
	}
	if m := alice.expect(codec.CmdCloseReq); code(m) != 10021 {
		t.Fatalf("kick ack %v", m)
	}
	if !alice.closedByServer() {
		t.Fatal("kicked TLS user still connected")
	}
	bob.send(codec.CmdHeartbeatReq, `{}`)
	bob.expect(codec.CmdHeartbeatReq)
	if v := labeledCounter(t, reg, "jim_tls_handshakes_total", "result", "ok"); v < 3 {
		t.Fatalf("tls handshakes ok = %v", v)
	}
}

// trickleConn delivers every write a few bytes at a time, so the server sees
// TLS records split at every possible place.
type trickleConn struct {
	net.Conn
	chunk int
}

func (c *trickleConn) Write(b []byte) (int, error) {
	for off := 0; off < len(b); off += c.chunk {
		end := min(off+c.chunk, len(b))
		if _, err := c.Conn.Write(b[off:end]); err != nil {
			return off, err
		}
		time.Sleep(200 * time.Microsecond)
	}
	return len(b), nil
}

func TestTLSRecordsSplitAnywhere(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	ts := startTLSServer(t, cert, nil)
	raw, err := net.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(&trickleConn{Conn: raw, chunk: 7}, cert.ClientConfig())
	defer tc.Close()
	c := &tcpClient{t: t, c: tc, br: bufio.NewReader(tc)}
	// Login and heartbeats in one write: several frames in one record.
	var all []byte
	all = codec.AppendTCP(all, codec.CmdLoginReq, 0, false, []byte(`{"cmd":5,"userId":"slowpoke"}`))
	for i := 0; i < 3; i++ {
		all = codec.AppendTCP(all, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
	}
	if _, err := tc.Write(all); err != nil {
		t.Fatal(err)
	}
	counts := map[codec.Cmd]int{}
	for i := 0; i < 4; i++ {
		cmd, _ := c.read()
		counts[cmd]++
	}
	if counts[codec.CmdLoginResp] != 1 || counts[codec.CmdHeartbeatReq] != 3 {
		t.Fatalf("replies %v", counts)
	}
	// One frame split over many records.
	frame := codec.AppendTCP(nil, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
	for _, b := range frame {
		if _, err := tc.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	c.expect(codec.CmdHeartbeatReq)
}

// The negotiated suites: AES-GCM where the CPU has AES instructions (the
// fork on its own would pick ChaCha20), the client's choice otherwise, and
// nothing below TLS 1.2.
func TestTLSCipherSuite(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	ts := startTLSServer(t, cert, nil)
	aesHW := (runtime.GOARCH == "amd64" && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) ||
		(runtime.GOARCH == "arm64" && cpu.ARM64.HasAES && cpu.ARM64.HasPMULL)
	isGCM := func(s uint16) bool {
		return strings.Contains(tls.CipherSuiteName(s), "_GCM_")
	}
	for _, tt := range []struct {
		name string
		mod  func(*tls.Config)
		want func(uint16) bool
	}{
		{"tls13", func(*tls.Config) {}, nil},
		{"tls12", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, nil},
		{"tls12-chacha-only", func(c *tls.Config) {
			// Go clients order suites themselves; a client without AES
			// hardware puts ChaCha20 first, which the server honours. Here
			// the client offers nothing else.
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305}
		}, func(s uint16) bool { return s == tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305 }},
	} {
		conf := cert.ClientConfig()
		tt.mod(conf)
		c, tc := dialTLS(t, ts.Addr, conf)
		c.login("suite-" + tt.name)
		st := tc.ConnectionState()
		t.Logf("%s: %s, %s, curve %v (AES hardware: %v)", tt.name,
			tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID, aesHW)
		want := tt.want
		if want == nil {
			want = func(s uint16) bool { return isGCM(s) == aesHW }
		}
		if !want(st.CipherSuite) {
			t.Errorf("%s: negotiated %s", tt.name, tls.CipherSuiteName(st.CipherSuite))
		}
	}
	old := cert.ClientConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ts.Addr, old); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake accepted")
	}
}

// Session resumption works for both versions (tickets are the server's;
// nothing of a finished connection's handshake is needed).
func TestTLSResumption(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	ts := startTLSServer(t, cert, nil)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conf := cert.ClientConfig()
		conf.MaxVersion = v
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		for i := 0; i < 3; i++ {
			c, tc := dialTLS(t, ts.Addr, conf)
			// A round trip, so that a TLS 1.3 ticket has arrived.
			c.send(codec.CmdHeartbeatReq, `{}`)
			c.expect(codec.CmdHeartbeatReq)
			if resumed := tc.ConnectionState().DidResume; resumed != (i > 0) {
				t.Fatalf("%s dial %d: resumed %v", tls.VersionName(v), i, resumed)
			}
			tc.Close()
		}
	}
}

func TestTLSBadCertificate(t *testing.T) {
	good := jimtest.WriteCert(t, 1, "", "")
	other := jimtest.WriteCert(t, 2, "", "")
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", missing, good.KeyFile, "nope.pem"},
		{"missing key", good.CertFile, missing, "no such file"},
		{"key of another cert", good.CertFile, other.KeyFile, "private key does not match"},
		{"key without cert", "", good.KeyFile, "both a certificate file and a key file"},
		{"not PEM", good.KeyFile, good.KeyFile, good.KeyFile},
	} {
		o := gateway.Options{Addr: jimtest.FreePort(t), TLSCertFile: tt.cert, TLSKeyFile: tt.key}
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
		srv := gateway.New(o, dispatch.New(dispatch.Options{}))
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve() }()
		select {
		case serr := <-errc:
			if serr == nil || serr.Error() != err.Error() {
				t.Errorf("%s: Serve() = %v, want %v", tt.name, serr, err)
			}
		case <-time.After(5 * time.Second):
			_ = srv.Stop(context.Background())
			t.Fatalf("%s: Serve started", tt.name)
		}
	}
	o := gateway.Options{TLSCertFile: good.CertFile, TLSKeyFile: good.KeyFile}
	if err := o.Validate(); err != nil {
		t.Fatalf("good pair: %v", err)
	}
	if err := (&gateway.Options{}).Validate(); err != nil {
		t.Fatalf("no TLS: %v", err)
	}
	plain := gateway.New(gateway.Options{}, dispatch.New(dispatch.Options{}))
	if err := plain.ReloadTLS(); err == nil {
		t.Fatal("ReloadTLS without TLS succeeded")
	}
}

// What jimd does on SIGHUP: the files are replaced, ReloadTLS is called, and
// new connections see the new certificate while old ones carry on.
func TestTLSReload(t *testing.T) {
	first := jimtest.WriteCert(t, 1001, "", "")
	ts := startTLSServer(t, first, nil)
	serial := func(tc *tls.Conn) int64 {
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	oldClient, oldConn := dialTLS(t, ts.Addr, first.ClientConfig())
	oldClient.login("old")
	if s := serial(oldConn); s != 1001 {
		t.Fatalf("serial %d", s)
	}

	second := jimtest.WriteCert(t, 1002, first.CertFile, first.KeyFile)
	if err := ts.Srv.ReloadTLS(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	newClient, newConn := dialTLS(t, ts.Addr, second.ClientConfig())
	newClient.login("new")
	if s := serial(newConn); s != 1002 {
		t.Fatalf("after reload: serial %d, want 1002", s)
	}
	oldClient.send(codec.CmdHeartbeatReq, `{}`)
	oldClient.expect(codec.CmdHeartbeatReq)

	// A broken file is reported and the current certificate stays.
	if err := os.WriteFile(first.CertFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.Srv.ReloadTLS(); err == nil || !strings.Contains(err.Error(), first.CertFile) {
		t.Fatalf("reload of a broken file: %v", err)
	}
	_, again := dialTLS(t, ts.Addr, second.ClientConfig())
	if s := serial(again); s != 1002 {
		t.Fatalf("after a failed reload: serial %d", s)
	}
}

// The login deadline also bounds the TLS handshake: a client that stops in
// the middle of its handshake, or completes it and never logs in, is closed.
func TestTLSHandshakeTimeout(t *testing.T) {
	cert := jimtest.WriteCert(t, 1, "", "")
	reg := prometheus.NewRegistry()
	ts := startTLSServer(t, cert, func(o *gateway.Options, _ *dispatch.Options) {
		o.AuthTimeout = time.Second
		o.Registry = reg
	})
	// Half a ClientHello: a record header announcing more than follows.
	half := dialTCP(t, ts.Addr)
	half.c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
	// A complete handshake, then silence.
	_, silent := dialTLS(t, ts.Addr, cert.ClientConfig())
	start := time.Now()
	if !half.closedByServer() {
		t.Fatal("half handshake not closed")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("half handshake closed after %v", d)
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, silent); err != nil {
		t.Fatalf("silent TLS client: %v", err)
	}
	if v := labeledCounter(t, reg, "jim_disconnects_total", "reason", "auth_timeout"); v != 2 {
		t.Fatalf("auth_timeout disconnects = %v, want 2", v)
	}
	// Garbage instead of a handshake is refused at once.
	bad := dialTCP(t, ts.Addr)
	bad.c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef})
	if !bad.closedByServer() {
		t.Fatal("bad handshake not closed")
	}
	if v := labeledCounter(t, reg, "jim_tls_handshakes_total", "result", "error"); v != 1 {
		t.Fatalf("failed handshakes = %v", v)
	}
}

// rssBytes is this process's resident set size.
func rssBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// The clients of TestTLSIdleMemory run in a child process, so that the
// parent's RSS is the server's alone.
func TestHelperMemoryClients(t *testing.T) {
	addr, mode := os.Getenv("JIM_MEM_CLIENT_ADDR"), os.Getenv("JIM_MEM_CLIENT_MODE")
	if addr == "" {
		t.Skip("helper process for TestTLSIdleMemory")
	}
	var n int
	fmt.Sscanf(os.Getenv("JIM_MEM_CLIENT_N"), "%d", &n)
	var conf *tls.Config
	if mode == "tls" {
		conf = &tls.Config{InsecureSkipVerify: true}
	}
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var c net.Conn
			var err error
			if conf != nil {
				c, err = tls.Dial("tcp", addr, conf)
			} else {
				c, err = net.Dial("tcp", addr)
			}
			if err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			c.Write(codec.AppendTCP(nil, codec.CmdLoginReq, 0, false, []byte(fmt.Sprintf(`{"cmd":5,"userId":"m%d"}`, i))))
			hdr := make([]byte, 7)
			if _, err := io.ReadFull(c, hdr); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			body := make([]byte, int(hdr[3])<<24|int(hdr[4])<<16|int(hdr[5])<<8|int(hdr[6]))
			io.ReadFull(c, body)
			conns[i] = c
		}(i)
	}
	wg.Wait()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // hold the connections until the parent is done
}

// TestTLSIdleMemory logs the server's RSS and heap per idle logged-in
// connection, plain and TLS. Run it with -run TestTLSIdleMemory -v.
func TestTLSIdleMemory(t *testing.T) {
	if testing.Short() || os.Getenv("JIM_MEM_CLIENT_ADDR") != "" {
		t.Skip("measurement")
	}
	n := 2000
	if v := os.Getenv("JIM_MEM_CONNS"); v != "" {
		fmt.Sscanf(v, "%d", &n)
	}
	cert := jimtest.WriteCert(t, 1, "", "")
	ts := startTLSServer(t, cert, func(o *gateway.Options, _ *dispatch.Options) {
		o.HeartbeatTimeout = -1
		o.AuthTimeout = -1
	})
	measure := func(mode string) [3]float64 {
		runtime.GC()
		debug.FreeOSMemory()
		rss0, heap0 := rssBytes(t), heapInUse()
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMemoryClients$", "-test.v=false")
		cmd.Env = append(os.Environ(), "JIM_MEM_CLIENT_ADDR="+ts.Addr, "JIM_MEM_CLIENT_MODE="+mode, fmt.Sprintf("JIM_MEM_CLIENT_N=%d", n))
		stdin, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "ready" {
			if strings.HasPrefix(sc.Text(), "error") {
				t.Fatalf("client: %s", sc.Text())
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for ts.D.Sessions() < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := ts.D.Sessions(); got != n {
			t.Fatalf("%s: %d sessions", mode, got)
		}
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		rss1, heap1 := rssBytes(t), heapInUse()
		debug.FreeOSMemory()
		rss2 := rssBytes(t)
		if f := os.Getenv("JIM_MEM_PROFILE"); f != "" {
			pf, _ := os.Create(f + "." + mode)
			pprof.WriteHeapProfile(pf)
			pf.Close()
		}
		stdin.Close()
		_ = cmd.Wait()
		waitConnections(ts, 0, time.Until(deadline.Add(10*time.Second)))
		per := func(v int64) float64 { return float64(v) / float64(n) }
		return [3]float64{per(rss1 - rss0), per(rss2 - rss0), per(heap1 - heap0)}
	}
	p := measure("plain")
	tl := measure("tls")
	t.Logf("%d idle logged-in connections, server side, bytes per connection:", n)
	t.Logf("  plain: RSS %.0f, RSS after FreeOSMemory %.0f, Go heap in use %.0f", p[0], p[1], p[2])
	t.Logf("  TLS:   RSS %.0f, RSS after FreeOSMemory %.0f, Go heap in use %.0f", tl[0], tl[1], tl[2])
	// Generous bounds (measured: 1.1 kB plain, 4.3-4.6 kB TLS): they catch
	// the handshake state being kept again, or a per-connection buffer.
	if p[2] > 2500 || tl[2] > 8000 {
		t.Fatalf("heap per idle connection: plain %.0f B (bound 2,500), TLS %.0f B (bound 8,000)", p[2], tl[2])
	}
}

// BenchmarkTLSHandshake measures full handshakes per second (no resumption)
// with an ECDSA P-256 certificate; each iteration dials, completes the
// handshake, checks one round trip and closes. The crypto/tls clients run in
// the same process and take a share of the CPU.
func BenchmarkTLSHandshake(b *testing.B) {
	cert := jimtest.WriteCert(b, 1, "", "")
	for _, where := range []struct {
		name    string
		workers int
	}{{"workers", 0}, {"loops", -1}} {
		b.Run(where.name, func(b *testing.B) {
			ts := startTLSServer(b, cert, func(o *gateway.Options, _ *dispatch.Options) { o.TLSHandshakeWorkers = where.workers })
			benchmarkTLSHandshake(b, cert, ts.Addr)
		})
	}
}

func benchmarkTLSHandshake(b *testing.B, cert *jimtest.Cert, addr string) {
	for _, bb := range []struct {
		name string
		mod  func(*tls.Config)
	}{
		{"tls13-x25519mlkem768", func(*tls.Config) {}},
		{"tls13-x25519", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} }},
		{"tls12-x25519", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			conf := cert.ClientConfig()
			conf.ClientSessionCache = nil
			bb.mod(conf)
			hb := codec.AppendTCP(nil, codec.CmdHeartbeatReq, 0, false, []byte(`{}`))
			b.SetParallelism(8) // enough clients in flight to keep the server busy
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 256)
				for pb.Next() {
					c, err := tls.Dial("tcp", addr, conf)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Write(hb); err != nil {
						b.Error(err)
					}
					if _, err := c.Read(buf); err != nil {
						b.Error(err)
					}
					c.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
		})
	}
}
